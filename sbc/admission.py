"""Which trunk group is this, and may it call now? Pure decisions over a snapshot.

Identification (Perimeter guide, Trunk Group chapter): an ingress INVITE belongs to the
origination trunk group whose IP trunk matches its source address, port (0 = any) and
protocol, and whose tech prefix starts the Request-URI user; the prefix is stripped before
routing. A specific port beats "any port" and a longer tech prefix beats a shorter one;
`sbc check` refuses the configurations where that would still be ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbc.config.schema import TrunkGroup
from sbc.config.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    label: str  # metric/log label: why


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
