"""Hunting: which trunk a call tries next, and what the caller hears when none is left. Pure.

sippy's rule (shared/STYLE.md §8), with the guide's route advance: while the caller's leg is
unanswered and not cancelled, candidates remain, and the last failure is a route-advance
code (``route_advance.codes``) or a timeout (B-timer, Max PDD, Timer B/C, transport),
originate to the next candidate. An egress trunk group with limits is asked for a port
first (``NeedLease``); one at its limit is skipped. When the routes are used up, forwarding
on failure gets one go (``Forward``); then the caller gets the last failure
(``Exhausted``): 503 when it was a route-advance code and ``normalize_sip_code`` is on, and
503 with the Q.850 "no circuit" cause when every egress trunk group left was full.

    next_step(call) -> NeedLease | Originate | Forward | Exhausted
    failed(call, status, ...) -> True to hunt on (the failure is kept for Exhausted)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from routing.health import Key
from routing.hunting import HuntState, hunt_order
from sbc.admission import limit_refusal, static_refusal, time_refusal
from sbc.call import forking
from sbc.call.headers import DIVERSION_REASON, crossing, trunk_target
from sbc.call.model import Call
from sbc.call.redirect import Redirect
from sbc.config.schema import Forwarding, Trunk, TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.sip.message import Response
from sbc.sip.transaction import Target
from sbc.state import Scope
from sbc.state.memory import MemoryStore

# (egress trunk group, trunk index, where: None for the trunk's own address, or one address
# of a trunk named by host, routing.srv), in order
Candidates = list[tuple[TrunkGroup, int, Redirect | None]]
Resolved = Callable[[Trunk], list[Target]]  # a host trunk's addresses, RFC 2782 order


@dataclass(frozen=True, slots=True)
class NeedLease:
    """Ask the state store for a port on this trunk group (its verdict comes back through
    ``Intake.acquired``, which hunts on)."""

    trunk_group: TrunkGroup
    scopes: tuple[Scope, ...]


@dataclass(frozen=True, slots=True)
class Originate:
    trunk_group: TrunkGroup
    index: int
    redirect: Redirect | None = None  # a 3xx's Contact (sbc.call.redirect), not the trunk


@dataclass(frozen=True, slots=True)
class Forward:
    """The routes failed: forwarding on failure, once, to ``forwarding.forward_to``."""

    forwarding: Forwarding


@dataclass(frozen=True, slots=True)
class Exhausted:
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


Step = NeedLease | Originate | Forward | Exhausted


@dataclass(frozen=True, slots=True)
class Usable:
    """May a trunk be tried now? An IP trunk that monitoring has not taken down, a
    registration trunk whose registration at the vendor is up, or a PBX's account with a
    live binding (sbc.call.redirect.registered)."""

    trunk_up: Callable[[Key], bool]
    registered_at_vendor: Callable[[str, int], bool]
    bindings: MemoryStore
    wall: float
    out_of_service: set[tuple[str, str]]  # `sbc ctl trunk disable`: (trunk group, trunk or "")

    def __call__(self, tg: TrunkGroup, index: int) -> bool:
        t = tg.trunks[index]
        oos = self.out_of_service
        if oos and ((tg.name, "") in oos or (tg.name, trunk_label(tg, index)) in oos):
            return False
        if t.type == "ip":
            return t.host != "" or not tg.monitoring.enabled or self.trunk_up(trunk_target(t).key)
        if tg.direction == "origination":
            return bool(self.bindings.contacts_of(tg.name, t.username, self.wall))
        return self.registered_at_vendor(tg.name, index)


def trunk_label(tg: TrunkGroup, index: int) -> str:
    """How `sbc ctl` and the CDR name a trunk: ``host:port`` (an IP trunk; IPv6 as
    ``[host]:port``) or its username."""
    t = tg.trunks[index]
    if t.type != "ip":
        return t.username
    target = trunk_target(t)
    return f"{target.uri_host}:{target.port}"


def candidates(
    snap: Snapshot,
    names: list[str],
    state: HuntState,
    usable: Usable | Callable[[TrunkGroup, int], bool],
    wall: float,
    resolved: Resolved | None = None,
) -> Candidates:
    """Every usable trunk of the egress trunk groups, in route order, each group's trunks
    in its hunting order. Disabled trunk groups and relationships are left out, and so is a
    trunk group outside every one of its time_of_day windows at wall-clock time ``wall``.
    A trunk named by host takes its place in that order as each address it resolved to,
    in ``resolved``'s order, less those monitoring took down (health is per address)."""
    out: Candidates = []
    for name in names:
        etg = snap.trunk_groups[name]
        if static_refusal(snap, etg) is not None or time_refusal(etg, wall) is not None:
            continue
        order = hunt_order(name, etg.hunting, [t.weight for t in etg.trunks], state)
        for i in order:
            if not usable(etg, i):
                continue
            t = etg.trunks[i]
            if not (t.type == "ip" and t.host):
                out.append((etg, i, None))
                continue
            up = usable.trunk_up if etg.monitoring.enabled and isinstance(usable, Usable) else None
            for target in resolved(t) if resolved is not None else []:
                if up is None or up(target.key):
                    out.append((etg, i, Redirect(etg, i, target, None)))
    return out


def next_step(call: Call) -> Step:
    """Where the call goes now. An Originate's candidate is taken off the list; a vendor's
    redirection comes before the routes left (its trunk group already has the call's port)."""
    if call.redirects:
        r, call.redirects = call.redirects[0], call.redirects[1:]
        return Originate(r.trunk_group, r.index, r)
    while call.candidates:
        etg = call.candidates[0][0]
        if etg.name not in call.egress:
            scopes = call.snap.limits[etg.name]
            if scopes:
                return NeedLease(etg, scopes)
            call.egress = {**call.egress, etg.name: None}  # nothing to count: always a port
        if call.egress[etg.name] is None:
            etg, index, where = call.candidates.pop(0)
            return Originate(etg, index, where)
        call.candidates.pop(0)  # that trunk group is full for this call
    fwd = call.forward
    if fwd is None or (call.last_failure is not None and not call.last_failure[2]):
        return exhausted(call)
    return Forward(fwd)


def stop(call: Call) -> None:
    """The caller will wait no longer (its Max PDD): no route left, no forwarding; the
    failure that ends the current attempt is what the caller hears."""
    call.candidates.clear()
    call.redirects = ()
    call.forward = None


def forward(call: Call, fwd: Forwarding, found: Candidates) -> None:
    """Turn the call toward its forwarding number (once), with ``found`` as candidates;
    the Diversion it will carry names the number dialled and why (RFC 5806 §4)."""
    call.forward = None
    status = call.last_failure[0] if call.last_failure is not None else 0
    call.diversion = (call.dnis, DIVERSION_REASON.get(status, "unavailable"))
    call.dnis = fwd.forward_to
    call.candidates = found


def failed(
    call: Call,
    status: int,
    *,
    timeout: bool,
    rang: bool,
    response: Response | None,
    advance: bool | None = None,
) -> bool:
    """An attempt failed with ``status`` (``timeout``: no final answer; ``rang``: it had
    sent 180/183; ``advance``: decided already, as for a 3xx): hunt on? The failure is
    kept for ``exhausted``."""
    tg = call.ingress
    status, response, own = forking.best(call, status, response)  # one account's contacts
    if advance is None and forking.forks_on(call, status):  # the account's next contact
        call.last_failure = (status, response, True)
        return True
    timeout = timeout and own
    if advance is None:
        advance = timeout or bool(call.snap.advance[tg.name].match(str(status)))
    if advance and tg.route_advance.stop_on_18x_failure and rang:
        advance = False
    call.last_failure = (status, response, advance)
    return advance


def exhausted(call: Call) -> Exhausted:
    """What the caller hears when hunting ends."""
    failure = call.last_failure
    if failure is None or (failure[2] and any(call.egress.values())):
        denied = next((d for d in call.egress.values() if d is not None), None)
        if denied is not None:
            return Exhausted(503, None, limit_refusal(denied).headers)
        return Exhausted(503)
    status, response, advance = failure
    if advance and call.ingress.route_advance.normalize_sip_code:
        return Exhausted(503)
    if response is not None:
        headers = crossing(response)
        if 300 <= response.status < 400:  # redirects: relay; the caller needs the Contacts
            headers += [("Contact", str(c)) for c in response.contacts]
        return Exhausted(status, response.reason, tuple(headers))
    return Exhausted(status)
