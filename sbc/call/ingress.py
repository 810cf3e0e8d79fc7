"""An initial INVITE's way in: which trunk group is it, and may it call now? Pure.

In order (Perimeter guide, Trunk Group and Routing chapters; README, Admission):

1. the dialled user: the Request-URI user, tel-style parameters cut, %-escapes undone (a
   tech prefix "7001#" arrives as 7001%23, RFC 3261 §19.1.2);
2. identification by source address and tech prefix (sbc.admission.identify; the caller
   falls back to the registrar for registration trunk groups);
3. static refusals: draining (503 + Retry-After), disabled trunk group or relationship,
   outside every time-of-day window (403);
4. Max-Forwards 0: 483 (RFC 3261 §16.3), no call;
5. the ingress manipulations of ANI and DNIS, then the routeplan (filters, numbering,
   forwarding, routes); its triggers fire whether or not a filter then refuses the call.

The limits (ports, CPS) come after this, through the state store: they need a round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from media import sdp
from media.ng import ip_family, side
from routing.select import Selection, select
from sbc import manipulate
from sbc.admission import NO_CIRCUIT, Refusal, static_refusal, time_refusal
from sbc.call import identity
from sbc.call.model import Call
from sbc.call.redirect import Redirect
from sbc.config.schema import Trigger, TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.lcr import arrange
from sbc.sip.dialog import Dialog
from sbc.sip.message import Request
from sbc.sip.transaction import ServerTransaction


@dataclass(frozen=True, slots=True)
class Admitted:
    """Route it: ``selection`` says where; ``dialled`` is the DNIS before routing changed
    it (the number a forwarding Diversion names)."""

    ani: str
    dialled: str
    selection: Selection


@dataclass(frozen=True, slots=True)
class Refused:
    refusal: Refusal
    triggers: tuple[Trigger, ...] = ()
    ani: str = ""
    dnis: str = ""


@dataclass(frozen=True, slots=True)
class TooManyHops:
    """Max-Forwards reached 0: answered 483, not a call (no record, no refusal count)."""


Verdict = Admitted | Refused | TooManyHops


def dialled_user(req: Request) -> str:
    ruri = req.ruri
    user = ruri.user if ruri is not None and ruri.is_sip else (ruri.opaque if ruri else "")
    user = user.split(";", 1)[0]  # tel-style parameters in the user part
    return unquote(user) if "%" in user else user


def admit(
    snap: Snapshot,
    tg: TrunkGroup,
    dnis: str,
    req: Request,
    wall: float,
    draining: bool,
    pinned: bool = False,
) -> Verdict:
    """The verdict on an INVITE identified as ``tg``, dialling ``dnis`` (tech prefix
    stripped), at wall-clock time ``wall``; ``pinned``: it replaces a dialog (RFC 3891) and
    goes where that call is (sbc.call.replaces), whatever its Request-URI would route to."""
    if draining:
        retry = (("Retry-After", str(snap.config.node.drain_retry_after)),)
        return Refused(Refusal(503, "Service Unavailable", "draining", retry))
    refusal = static_refusal(snap, tg) or time_refusal(tg, wall)
    if refusal is not None:
        return Refused(refusal)
    if req.max_forwards == 0:
        return TooManyHops()
    ani = identity.ani(tg, req)  # From's user, or the PAI's with ani_from_pai
    rules = snap.rules[tg.name]
    if rules:
        ani = manipulate.apply(rules, "ani", ani)
        dnis = manipulate.apply(rules, "dnis", dnis)
    if pinned:
        return Admitted(ani, dnis, Selection(dnis, matched="replaces"))
    sel = select(snap.plans[tg.routeplan], ani, dnis, sdp.connection_ip(req.body), wall)
    if sel.refusal is not None:
        status, reason, label = sel.refusal
        return Refused(Refusal(status, reason, label), tuple(sel.triggers), ani, dnis)
    if snap.tariffs and sel.trunk_groups:  # least-cost order, margin guard (sbc.lcr)
        done = arrange(snap, tg.name, sel.trunk_groups, sel.dnis, wall, sel.lcr)
        sel.trunk_groups, sel.guarded = done.names, done.guarded
        if not done.names and sel.on_failure is None:
            refusal = Refusal(503, "Service Unavailable", "max_cost", (NO_CIRCUIT,))
            return Refused(refusal, tuple(sel.triggers), ani, dnis)
    return Admitted(ani, dnis, sel)


def new_call(
    snap: Snapshot,
    tg: TrunkGroup,
    tx: ServerTransaction,
    admitted: Admitted,
    candidates: list[tuple[TrunkGroup, int, Redirect | None]],
    now: float,
    new_id: Callable[[], str],
) -> Call:
    """The call an admitted INVITE becomes: our tag on the caller's dialog, its media side,
    the candidates to hunt, and forwarding (on failure, or the unconditional one that
    already chose this route)."""
    req, src, sel = tx.request, tx.source, admitted.selection
    forwarded = sel.matched == "forwarding"
    call_id = new_id()  # also our tag toward the caller: a REFER's Replaces names it
    call = Call(
        id=call_id,
        snap=snap,
        ingress=tg,
        source=src,
        a_tx=tx,
        a_dialog=Dialog.as_uas(req, call_id, src, tg.nat),
        ani=admitted.ani,
        dnis=sel.dnis,
        started=now,
        candidates=candidates,
        forward=sel.on_failure,
        a_side=side(snap.media[tg.name], src.host if tg.nat else "", ip_family(src.host)),
        a_tag=req.from_.tag or req.call_id,
        diversion=(admitted.dialled, "unconditional") if forwarded else None,
        received_ani=identity.ani(tg, req),
    )
    tx.ctx = call
    return call
