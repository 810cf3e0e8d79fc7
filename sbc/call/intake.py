"""An initial INVITE's intake: from identification to a call that hunts, or a refusal.

    carrier           sbc                               state store
      |--INVITE------->|  identify, admit (sbc.call.ingress)
      |<--------100----|  the call exists; its limits:
      |                |--Acquire(ports, cps)-------------->|   (none: no round trip)
      |                |<-------------------granted/denied--|
      |<--503 + Q.850--|  denied: refused (Retry-After, cause 34), a CDR says why
      |                |  granted: hunting starts (sbc.call.hunt)

A relationship with a balance is asked first, by the one process that keeps the node's book
(sbc.balance.Keeper: the lone runtime, or the supervisor of workers):
``Credit -> granted`` (its first increment held) or 403 ``balance_suspended``; then the
limits as above. Its hold is settled by its CDR when it ends.

An egress trunk group with limits is asked the same way while hunting (``acquire``); one
at its limit is skipped (``call.egress_skipped``). Refused INVITEs that never became calls
get a record of their own (``cdr.refused``); an INVITE from no known trunk group gets none.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any, Protocol

from sbc import cdr
from sbc.admission import Refusal, identify, limit_refusal
from sbc.call import hunt, identity, ingress, reliable, replaces, sessiontimer
from sbc.call.gate import Gate
from sbc.call.host import CallHost
from sbc.call.model import Call, LeaseRequest, ReliableLeg
from sbc.call.outbox import Outbox
from sbc.config.schema import Trigger, TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.hold import balance_hold
from sbc.sip.ids import new_id
from sbc.sip.message import Request
from sbc.sip.transaction import ServerTransaction, Target
from sbc.state import Acquire, Credit, Denied, Notify, Release, Scope


class Host(CallHost, Protocol):
    """What the intake needs of the call controller, beyond a CallHost's."""

    calls: dict[str, Call]
    dialogs: replaces.Dialogs
    refusals: Counter[tuple[str, str]]
    cdrs: list[dict[str, Any]]
    gate: Gate
    draining: bool

    @property
    def wall_offset(self) -> float: ...

    def candidates(self, snap: Snapshot, names: list[str], now: float) -> hunt.Candidates: ...


class Intake:
    def __init__(self, out: Outbox, host: Host) -> None:
        self.out = out
        self.host = host
        self._tokens = itertools.count(1)  # Acquire tokens, never on the wire
        self._leases: dict[int, LeaseRequest] = {}
        self._credits: dict[int, tuple[Call, TrunkGroup]] = {}  # Credit tokens awaiting a verdict

    def invite(self, tx: ServerTransaction, req: Request, src: Target, now: float) -> None:
        snap = self.out.snapshot
        user = ingress.dialled_user(req)
        found = identify(snap, src.transport, src.host, src.port, user)
        if found is None:
            found = self.host.gate.registered_caller(tx, req, src, now, user)
            if found is None:
                return
        tg, dnis = found
        self.host.stats.attempt(tg.name, "ingress", tg.capacity_group, now)
        wall = now + self.host.wall_offset
        pinned = req.get("Replaces") is not None  # RFC 3891: it goes where that call is
        verdict = ingress.admit(snap, tg, dnis, req, wall, self.host.draining, pinned)
        if isinstance(verdict, ingress.TooManyHops):
            self.out.respond(tx, 483, now)
            return
        if isinstance(verdict, ingress.Refused):
            for trigger in verdict.triggers:
                self._trigger(trigger, tg, verdict.ani, verdict.dnis, req.call_id, wall)
            self.refuse(tx, tg, verdict.refusal, now)
            return
        session = sessiontimer.as_uas(req, tg.session_timer)
        if isinstance(session, sessiontimer.TooSmall):  # RFC 4028 §9
            self.out.respond(tx, 422, now, headers=[("Min-SE", str(session.min_se))])
            return
        sel, ani, dnis = verdict.selection, verdict.ani, verdict.dialled
        for trigger in sel.triggers:
            self._trigger(trigger, tg, ani, dnis, req.call_id, wall)
        for name in sel.guarded:
            self.host.refusals[(name, "max_cost")] += 1
            self.out.notice(
                "call.egress_skipped",
                None,
                sip_call_id=req.call_id,
                trunk_group=name,
                reason="max_cost",
            )
        policy = snap.balances.get(tg.relationship) if snap.balances else None
        replacing = replaces.find(self.host.dialogs, self.host.calls, req, tg)
        if isinstance(replacing, replaces.Refused):
            self.out.notice("call.replaces_refused", None, sip_call_id=req.call_id,
                            trunk_group=tg.name, status=replacing.status)  # fmt: skip
            self.out.respond(tx, replacing.status, now, replacing.reason)
            return
        if replacing is not None:  # only to the replaced call's far party
            r = replacing.to
            found_trunks: hunt.Candidates = [(r.trunk_group, r.index, r)]
        else:
            found_trunks = self.host.candidates(snap, sel.trunk_groups, now)
        call = ingress.new_call(snap, tg, tx, verdict, found_trunks, now, new_id)
        if replacing is not None:
            call.replacing = (replacing.to, replacing.header)
            self.out.notice("call.replaces", call, replaced=replacing.replaced.id)
        if session is not None:
            session.update = sessiontimer.allows_update(req)
            call.sessions = {"a": session}
        supports, requires = reliable.wanted(req)
        if supports:
            call.reliable = ReliableLeg(supports, requires)
        if not found_trunks and any(
            snap.trunk_groups[n].direction == "origination" for n in sel.trunk_groups
        ):
            call.reason = "not_registered"  # a DID of a PBX that holds no registration
        self.host.calls[call.id] = call
        self.host.bind(call, (req.call_id, call.a_dialog.local_tag), "a")
        self.out.notice(
            "call.start",
            call,
            trunk_group=tg.name,
            ani=ani,
            dnis=sel.dnis,
            source=str(src),
            sip_call_id=req.call_id,
            route=sel.matched,
        )
        self.out.respond(tx, 100, now, tag=False)  # 100 never carries a To tag (§8.2.6.2)
        if policy is not None:  # sbc.balance: the credit left, less the calls up, first
            hold = balance_hold(snap.tariffs.get(tg.name), sel.dnis, wall)
            call.held = hold is not None
            token = next(self._tokens)
            self._credits[token] = (call, tg)
            self.out.commands.append(Credit(token, call.id, tg.relationship, policy, hold))
        else:
            self._limits(call, tg, now)

    def _limits(self, call: Call, tg: TrunkGroup, now: float) -> None:
        limits = call.snap.limits[tg.name]
        if limits:
            self.acquire(call, tg, call.id, limits)
        else:  # nothing to count against: no lease, no round trip
            self._admitted(call, now)

    def refuse(
        self,
        tx: ServerTransaction,
        tg: TrunkGroup,
        refusal: Refusal,
        now: float,
        call: Call | None = None,
    ) -> None:
        self.host.refusals[(tg.name, refusal.label)] += 1
        self.out.notice(
            "call.refused", call, trunk_group=tg.name, reason=refusal.label, status=refusal.status
        )
        if call is None:
            req = tx.request
            ruri = req.ruri
            self.host.cdrs.append(
                cdr.refused(
                    call_id=new_id(),
                    sip_call_id=req.call_id,
                    relationship=tg.relationship,
                    trunk_group=tg.name,
                    source=str(tx.source),
                    ani=identity.ani(tg, req),
                    dnis=(ruri.user or ruri.opaque) if ruri is not None else "",
                    at=now + self.host.wall_offset,
                    status=refusal.status,
                    reason=refusal.label,
                )
            )
            self.out.respond(tx, refusal.status, now, refusal.reason, headers=refusal.headers)
        else:
            call.refused, call.reason = True, refusal.label
            self.host.fail_caller(call, refusal.status, now, refusal.reason, refusal.headers)

    # --- admission: leases in the state store -------------------------------------------------

    def acquire(self, call: Call, tg: TrunkGroup, lease: str, limits: tuple[Scope, ...]) -> None:
        token = next(self._tokens)
        request = LeaseRequest(call, tg, lease, limits)
        self._leases[token] = request
        self.out.commands.append(Acquire(token, lease, request.scopes))

    def acquired(self, token: int, denied: Denied | None, now: float) -> None:
        """The state store's verdict on an Acquire: admit (or refuse) the call, or go on
        hunting through (or past) the egress trunk group it asked for."""
        request = self._leases.pop(token, None)
        if request is None:
            credited = self._credits.pop(token, None)
            if credited is not None:
                self._credited(credited[0], credited[1], denied, now)
            return
        call, tg = request.call, request.trunk_group
        if denied is None:
            if call.state in ("ending", "ended") or call.cancelled:
                self.out.commands.append(Release(request.lease, request.scopes))
                self.host.maybe_end(call, now)
                return
            call.leases = {**call.leases, request.lease: request.scopes}
        if tg is call.ingress:
            if call.state != "admitting":
                return
            if denied is not None:
                self.refuse(call.a_tx, tg, limit_refusal(denied), now, call)
            else:
                self._admitted(call, now)
            return
        else:
            call.egress = {**call.egress, tg.name: denied}
            if denied is not None:
                self.host.refusals[(tg.name, denied.label)] += 1
                self.out.notice(
                    "call.egress_skipped", call, trunk_group=tg.name, reason=denied.label
                )
            if call.state != "routing":
                return
        self.host.hunt_on(call, now)

    def _credited(self, call: Call, tg: TrunkGroup, denied: Denied | None, now: float) -> None:
        """The book's keeper answered a Credit: the limits next, or 403. A granted hold is
        released by the call's CDR, whatever becomes of the call."""
        if call.state != "admitting" or call.cancelled:
            self.host.maybe_end(call, now)
        elif denied is not None:
            self.refuse(call.a_tx, tg, Refusal(403, "Forbidden", "balance_suspended"), now, call)
        else:
            self._limits(call, tg, now)

    def _admitted(self, call: Call, now: float) -> None:
        call.state = "routing"
        if not call.candidates and call.forward is None and call.reason == "not_registered":
            self.out.notice("call.not_registered", call, dnis=call.dnis)
            self.host.fail_caller(call, 480, now, "Temporarily Unavailable")
            return
        if not call.candidates and call.forward is None:
            self.out.notice("call.no_route", call, dnis=call.dnis, routeplan=call.ingress.routeplan)
            call.reason = "no_route"
            self.host.fail_caller(call, 404, now, "No Route")
            return
        self.host.hunt_on(call, now)

    def _trigger(
        self,
        trigger: Trigger,
        tg: TrunkGroup,
        ani: str,
        dnis: str,
        sip_call_id: str,
        wall: float,
    ) -> None:
        """A routing trigger matched (the 911 case): log it now and post the webhook in the
        background; the call itself goes on without waiting."""
        fields = {"trigger": trigger.name, "trunk_group": tg.name, "ani": ani, "dnis": dnis}
        self.out.notice("routing.trigger", None, sip_call_id=sip_call_id, **fields)
        if trigger.webhook:
            self.out.commands.append(Notify(trigger.webhook, {**fields, "time": wall}))
