"""Which trunk group is this, and may it call now? Pure decisions over a snapshot.

Identification (Perimeter guide, Trunk Group chapter): an ingress INVITE belongs to the
origination trunk group whose IP trunk matches its source address, port (0 = any) and
protocol, and whose tech prefix starts the Request-URI user; the prefix is stripped before
routing. A specific port beats "any port" and a longer tech prefix beats a shorter one;
`sbc check` refuses the configurations where that would still be ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sbc.config.schema import TimeWindow, TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.state import Denied

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    label: str  # metric/log label: why
    headers: tuple[tuple[str, str], ...] = ()


# Over a limit: 503 with Retry-After (RFC 3261 §21.5.4) and the Q.850 cause for "no
# circuit/channel available" (RFC 3326), so upstream switches route advance instead of retrying.
NO_CIRCUIT = ("Reason", 'Q.850;cause=34;text="No circuit/channel available"')


def identify(
    snap: Snapshot, transport: str, ip: str, port: int, user: str
) -> tuple[TrunkGroup, str] | None:
    """The origination trunk group of a call from (transport, ip, port) dialling ``user``,
    and the user with the tech prefix stripped; None when no trunk group claims it."""
    for claim in snap.ingress.get((transport, ip), ()):
        if (claim.port == 0 or claim.port == port) and user.startswith(claim.tech_prefix):
            return claim.trunk_group, user[len(claim.tech_prefix) :]
    return None


def is_peer(snap: Snapshot, transport: str, ip: str, port: int) -> bool:
    """Does any trunk group, of either direction, have a trunk at this address?"""
    return any(c.port in (0, port) for c in snap.peers.get((transport, ip), ()))


def static_refusal(snap: Snapshot, tg: TrunkGroup) -> Refusal | None:
    """Refusals that depend only on configuration: disabled trunk group or relationship."""
    if tg.status != "enabled":
        return Refusal(403, "Forbidden", "trunk_group_disabled")
    if snap.relationship_status.get(tg.relationship, "enabled") != "enabled":
        return Refusal(403, "Forbidden", "relationship_disabled")
    return None


def time_refusal(tg: TrunkGroup, wall: float) -> Refusal | None:
    """403 outside every time_of_day window (empty list: always open)."""
    if not tg.time_of_day or any(within(w, wall) for w in tg.time_of_day):
        return None
    return Refusal(403, "Forbidden", "time_of_day")


def within(window: TimeWindow, wall: float) -> bool:
    """Is wall-clock time ``wall`` (Unix seconds) inside the window, in its own time zone?
    start is inclusive, end exclusive; a window whose end is before its start spans midnight
    and belongs to the day it starts on."""
    local = datetime.fromtimestamp(wall, ZoneInfo(window.timezone))
    minute = local.hour * 60 + local.minute
    start, end = _minutes(window.start), _minutes(window.end)
    today, yesterday = DAYS[local.weekday()], DAYS[local.weekday() - 1]
    if start < end:
        return today in window.days and start <= minute < end
    return (today in window.days and minute >= start) or (yesterday in window.days and minute < end)


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:5])


def limit_refusal(denied: Denied) -> Refusal:
    retry = "1" if denied.limit == "cps" else "5"
    return Refusal(503, "Service Unavailable", denied.label, (("Retry-After", retry), NO_CIRCUIT))
