"""The B2BUA call controller: the call and dialog maps, the dispatch of transaction events,
and the timers. Pure: events and ``now`` in; SIP, notices and commands out (sbc.call.outbox).

A call is one UAS dialog with the caller (the A-leg) and one UAC dialog per hunting attempt
(B-legs). Nothing crosses between legs but an allow-list of headers and the body, so Via,
Contact, Record-Route, Call-ID, tags and CSeq of one side never reach the other: topology
hiding by construction (shared/DESIGN.md, decision 2). Each decision lives next door:

    gate        who may send what: edge screen, REGISTER, digest, lockout
    indialog    whether an in-dialog request is its dialog's peer's (RFC 3261 §12.2.2)
    ingress     an identified INVITE's verdict, and the call it becomes
    intake      admission leases in the state store, refusals and their records
    hunt        which trunk next, and what the caller hears when none is left
    blegs       each attempt's INVITE, timers, answers, CANCEL, ACK (attempt: its ladder)
    media       rtpengine commands, in order per call
    relay       in-dialog requests of an answered call, and held ACKs
    ending      hanging up, failing the caller, forgetting the call, its record
    registration, routing.monitor: our registrations at vendors, OPTIONS pings

The ladder of a basic call (tests/unit/test_controller.py draws the others):

    carrier-a            sbc                 vendor
      |--INVITE---------->|                     |
      |<---------100------|--INVITE------------>|   new Call-ID, tags, Via, Contact
      |                   |<-----------------100|
      |<---------180------|<-----------------180|
      |<---------200------|<-----------------200|
      |                   |--ACK--------------->|   at once when the INVITE had the offer
      |--ACK------------->|                     |
      |--BYE------------->|--BYE--------------->|
      |<---------200------|<-----------------200|
"""

from __future__ import annotations

from collections import Counter
from typing import Any, assert_never

from media import ng
from media.ng import MediaCommand
from routing.health import Key
from routing.hunting import HuntState
from routing.monitor import Monitor, Probe, SendProbe, watched
from sbc.alarms import Alarms
from sbc.call import attempt as ladder
from sbc.call import ending, forking, hunt, indialog, registration
from sbc.call.blegs import BLegs
from sbc.call.gate import Gate
from sbc.call.headers import sips_uri, trunk_target
from sbc.call.intake import Intake
from sbc.call.media import Media
from sbc.call.model import (
    Attempt,
    Bye,
    Call,
    Hangup,
    Headers,
    Leg,
    Notice,
    Outcome,
    Relay,
    ports_in_use,
)
from sbc.call.outbox import Outbox
from sbc.call.redirect import Redirect
from sbc.call.registration import Action as RegistrationAction
from sbc.call.registration import Registration, Registrations
from sbc.call.relay import Relayer
from sbc.call.sessiontimer import Refresh, SessionTimers
from sbc.config.schema import TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.registrar import Registrar
from sbc.sip.ids import new_id
from sbc.sip.message import Request, Response
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import (
    AckNotReceived,
    ClientTransaction,
    Event,
    MessageRefused,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    Target,
    TransactionLayer,
    TransactionTimedOut,
    TransportFailed,
)
from sbc.state import Command, Denied, Notify, Release
from sbc.state.memory import MemoryStore
from sbc.stats import Stats

# What our client transactions carry as their ``ctx``: what each request was for (a CANCEL
# carries nothing; its INVITE's transaction decides).
Context = Attempt | Relay | Bye | Registration | Probe | Refresh | None


class CallController:
    """All calls of one node."""

    def __init__(
        self, layer: TransactionLayer, snapshot: Snapshot, store: MemoryStore | None = None
    ) -> None:
        self.layer = layer
        self.out = Outbox(layer, snapshot)  # SIP, notices and commands, buffered
        self._timers = TimerHeap(self)  # every timer of the call path, in one deadline order
        self.registrar = Registrar(store or MemoryStore())
        self.hunt = HuntState()
        self.calls: dict[str, Call] = {}
        # (Call-ID, our tag) -> the call, its leg, and for a B-leg its attempt
        self.dialogs: dict[tuple[str, str], tuple[Call, Leg, Attempt | None]] = {}
        self.refusals: Counter[tuple[str, str]] = Counter()  # (trunk group, reason)
        self.registrations = Registrations(self.out, self._timers, new_id)  # ours, at vendors
        self.monitor = Monitor(self._timers)  # OPTIONS pings and trunk health; survives reloads
        self.leader = True  # False in workers but the first: they neither ping nor register
        self.media = Media(self.out)  # rtpengine commands in flight, in order per call
        self.sessions = SessionTimers(self.out, self, self._timers)  # RFC 4028, per leg
        self.blegs = BLegs(self.out, self.media, self, self._timers, self.sessions)
        self.relayer = Relayer(
            self.out, self.media, self._media_lost_on_ack, self.sessions, self.blegs.reliable
        )
        self.intake = Intake(self.out, self)
        self.stats = Stats()  # per trunk group totals and 5-minute windows
        self.alarms = Alarms()  # metric triggers raised
        self.cdrs: list[dict[str, Any]] = []  # finished calls' records, for the CDR writer
        self.draining = False  # SIGTERM: new calls get 503 + Retry-After
        self.out_of_service: set[tuple[str, str]] = set()  # `sbc ctl trunk disable`; kept
        self._ticking = False
        self.dialog_hosts: Counter[str] = Counter()  # hosts of live calls' legs
        self.gate = Gate(self.out, self.registrar, self.dialog_hosts, self._timers)  # + floods
        layer.accept = self.gate.screen  # every message meets it before the parser
        layer.server_header = snapshot.config.node.server_header

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The configuration new calls get (calls in progress keep their own)."""
        return self.out.snapshot

    @snapshot.setter
    def snapshot(self, snap: Snapshot) -> None:
        self.out.snapshot = snap
        self.layer.server_header = snap.config.node.server_header

    @property
    def notices(self) -> list[Notice]:
        return self.out.notices

    @property
    def commands(self) -> list[Command | MediaCommand]:
        return self.out.commands

    @property
    def wall_offset(self) -> float:
        """Wall clock = now + wall_offset (time of day, registrations, CDR times)."""
        return self.out.wall_offset

    @wall_offset.setter
    def wall_offset(self, offset: float) -> None:
        self.out.wall_offset = offset

    def pop_notices(self) -> list[Notice]:
        out, self.out.notices = self.out.notices, []
        return out

    def pop_cdrs(self) -> list[dict[str, Any]]:
        out, self.cdrs = self.cdrs, []
        return out

    def pop_commands(self) -> list[Command | MediaCommand]:
        """For the state store (answers: ``on_acquired``) and rtpengine (``on_media``)."""
        out, self.out.commands = self.out.commands, []
        return out

    def on_media(self, token: int, reply: dict[bytes, Any] | None, now: float) -> None:
        """rtpengine's reply to a MediaCommand (None: no node answered)."""
        self.media.reply(token, reply, now)

    def get_timer(self) -> float | None:
        return self._timers.next_deadline()

    @property
    def timers_pending(self) -> int:
        """Timers armed and not cancelled: a quiet node holds only its periodic ones."""
        return len(self._timers)

    def handle_timer(self, now: float) -> None:
        self._timers.fire(now)
        self._registered(self.registrations.take(), now)
        for action in self.monitor.take():
            if isinstance(action, SendProbe):
                self.out.probe(action.probe, now)
            else:
                self.out.transition(action)

    def bind(
        self, call: Call, key: tuple[str, str], leg: Leg, attempt: Attempt | None = None
    ) -> None:
        self.dialogs[key] = (call, leg, attempt)
        call.keys.append(key)
        if attempt is None:
            self.expect(call, call.source.host)
            self.expect(call, call.a_dialog.target_host)
        else:
            self.expect(call, attempt.target.host)

    def unbind(self, call: Call, key: tuple[str, str]) -> None:
        if self.dialogs.get(key, (None,))[0] is call:
            del self.dialogs[key]

    def expect(self, call: Call, host: str) -> None:
        """``host`` speaks in this call's dialogs: the edge answers it until the call ends,
        whatever a reload does to the trunk groups (sbc.call.gate)."""
        if host not in call.hosts:
            call.hosts.append(host)
            self.dialog_hosts[host] += 1

    def process(self, events: list[Event]) -> None:
        """The transaction layer's events, in order (a closed union, sbc.sip.transaction)."""
        for ev in events:
            match ev:
                case ResponseReceived():
                    self._on_response(ev.response, ev.transaction, ev.at)
                case RequestReceived():
                    self._on_request(ev)
                case TransactionTimedOut() | TransportFailed():
                    self._on_failure(ev)
                case AckNotReceived():
                    call = ev.transaction.ctx
                    if isinstance(call, Call) and call.state == "answered":
                        self.out.notice("call.ack_timeout", call)
                        self.hang_up(call, "sbc", ev.at, reason="no ACK")
                case MessageRefused():
                    self.out.notice(
                        "sip.dropped" if ev.is_response else "sip.refused",
                        None,
                        status=ev.status,
                        detail=ev.detail,
                        source=f"{ev.source.host}:{ev.source.port}",
                        sip_call_id=ev.call_id,
                    )
                case _:
                    assert_never(ev)

    # --- requests -----------------------------------------------------------------------------

    def _on_request(self, ev: RequestReceived) -> None:
        req = ev.request
        now = ev.at
        if req.method == "ACK":
            self._on_ack(req, ev.source, now)
            return
        tx = ev.transaction
        assert tx is not None
        to_tag = req.to.tag
        if to_tag is not None:
            found = indialog.leg_of(self.dialogs, req, ev.source)
            if found == "out_of_order":
                self.out.respond(tx, 500, now, "Out of Order")  # §12.2.2
                return
            if isinstance(found, str):
                self.gate.not_ours(tx, ev.source, now)
                return
            call, leg = found
            if req.method == "BYE":
                self._on_bye(call, leg, tx, now)
            else:
                self.relayer.request(call, leg, tx, req, now)
            return
        if req.method == "CANCEL":
            self._on_cancel(tx, req, now)
            return
        src = ev.source
        if sips_uri(req.uri) and src.transport != "tls":  # TLS on every hop (RFC 5630 §3.1)
            self.out.respond(tx, 416, now, "SIPS Requires TLS")
            return
        if req.method == "INVITE":
            self.intake.invite(tx, req, src, now)
            return
        if req.method == "REGISTER":
            self.gate.register(tx, req, src, now)
            return
        self.gate.outside_call(tx, req, src, now, self.draining)

    def on_acquired(self, token: int, denied: Denied | None, now: float) -> None:
        """The state store's verdict on an Acquire (sbc.call.intake)."""
        self.intake.acquired(token, denied, now)

    def on_bound(self, token: int, now: float) -> None:
        """The state store shared a registration's binding (sbc.state.Bind)."""
        self.gate.bound(token, now)

    def candidates(self, snap: Snapshot, names: list[str], now: float) -> hunt.Candidates:
        wall = now + self.wall_offset
        store, oos = self.registrar.store, self.out_of_service
        up = hunt.Usable(self.monitor.is_up, self.registrations.is_up, store, wall, oos)
        return hunt.candidates(snap, names, self.hunt, up, wall, self.monitor.dns.ordered)

    def registered(self, call: Call, tg: TrunkGroup, index: int, now: float) -> Redirect | None:
        """A call to a PBX's account: its first contact, then the others (sbc.call.forking)."""
        found = forking.contacts(tg, index, self.registrar.store, now + self.wall_offset)
        call.redirects = (*found[1:], *call.redirects)
        return found[0] if found else None

    # --- hunting ------------------------------------------------------------------------------

    def hunt_on(self, call: Call, now: float) -> None:
        """Originate to the next candidate whose trunk group has a port for this call; ask
        the state store first for a trunk group not tried yet. None left: fail the caller."""
        while True:
            step = hunt.next_step(call)
            if isinstance(step, hunt.NeedLease):
                etg = step.trunk_group
                self.intake.acquire(call, etg, f"{call.id}/{etg.name}", step.scopes)
                return
            if isinstance(step, hunt.Exhausted):
                self.fail_caller(call, step.status, now, step.reason, step.headers)
                return
            if isinstance(step, hunt.Originate):
                dest, etg = step.redirect, step.trunk_group
                if dest is None and etg.direction == "origination":  # a registered PBX
                    dest = self.registered(call, etg, step.index, now)
                    if dest is None:  # unregistered since routing
                        call.last_failure, call.reason = (480, None, False), "not_registered"
                        continue
                self.blegs.originate(call, etg, step.index, now, dest)
                return
            fwd = step.forwarding
            self.out.notice("call.forwarded", call, to=fwd.forward_to, trunk_group=fwd.trunk_group)
            hunt.forward(call, fwd, self.candidates(call.snap, [fwd.trunk_group], now))

    def _on_failure(self, ev: TransactionTimedOut | TransportFailed) -> None:
        """No final answer (Timer B/F: 408) or no way to send (503) for one of our requests."""
        ctx: Context = ev.transaction.ctx
        timeout = isinstance(ev, TransactionTimedOut)
        why: Outcome = "timeout" if timeout else "transport"
        status = 408 if timeout else 503
        match ctx:
            case Attempt() if not ctx.done and ctx.call.cancelled:
                ctx.outcome = "cancelled"  # our CANCEL was never answered (§9.1)
                self.blegs.failed(ctx, 487, "", ev.at, timeout=True)
            case Attempt() if not ctx.done:
                ctx.outcome = why
                self.observe(ctx.target.key, False, "call " + why)
                self.blegs.failed(ctx, status, "", ev.at, timeout=True)
            case Attempt():
                self.blegs.closed(ctx)
                self.maybe_end(ctx.call, ev.at)
            case Relay():
                self.out.respond(ctx.server, status, ev.at)
            case Bye():
                self._bye_done(ctx.call, ev.at)
            case Refresh():
                self.sessions.failed(ctx, ev.at)
            case Registration():
                self._registered(self.registrations.on_failure(ctx, why, ev.at), ev.at)
            case Probe():
                self.out.transition(self.monitor.answered(ctx, False, why))
            case None:  # a CANCEL: its INVITE's own transaction decides
                pass

    def fail_caller(
        self, call: Call, status: int, now: float, reason: str | None = None, headers: Headers = ()
    ) -> None:
        ending.fail_caller(self.out, call, status, now, reason, headers)
        self.maybe_end(call, now)

    # --- B-leg responses ----------------------------------------------------------------------

    def _on_response(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        """A response to one of our requests, by what the request was for. SIP of a call
        waits behind its rtpengine command in flight (sbc.call.media)."""
        ctx: Context = tx.ctx
        match ctx:
            case Attempt():
                attempt = ctx
                if self.media.busy(attempt.call):
                    self.media.later(
                        attempt.call, lambda now: self.blegs.response(attempt, resp, tx, now)
                    )
                else:  # the common case: nothing in flight, no closure
                    self.blegs.response(attempt, resp, tx, now)
            case Relay():
                relay = ctx
                if self.media.busy(relay.call):
                    self.media.later(
                        relay.call, lambda now: self.relayer.response(relay, resp, tx, now)
                    )
                else:
                    self.relayer.response(relay, resp, tx, now)
            case Bye() if resp.status >= 200:
                self._bye_done(ctx.call, now)
            case Refresh():
                self.sessions.response(ctx, resp, tx, now)
            case Registration():
                self._registered(self.registrations.on_response(ctx, resp, now), now)
            case Probe() if resp.status >= 200:
                # Any answer means alive, except 503: overloaded or out of service (§21.5.4)
                ok = resp.status != 503
                self.out.transition(self.monitor.answered(ctx, ok, f"{resp.status} {resp.reason}"))

    # --- trunk monitoring ---------------------------------------------------------------------

    def observe(self, key: Key, ok: bool, error: str) -> None:
        """One outcome for a monitored trunk from live traffic. A follower's counts here until
        the leader's next view; the leader's machine, told of it (sbc.worker), decides."""
        t = self.monitor.observe(key, ok, error)
        if self.leader:
            self.out.transition(t)
        else:  # logged once, by the leader
            self.out.notice("trunk.observed", None, key=key, ok=ok, error=error)

    # --- outbound registrations ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """Bring outbound registrations and trunk monitoring in line with the snapshot: at
        startup and on reload (health carries over; a trunk no longer monitored stops)."""
        trunk_groups = self.snapshot.config.trunk_groups
        if self.leader:
            self.monitor.reconcile(watched(trunk_groups, trunk_target), now)
            self._registered(self.registrations.reconcile(trunk_target, now), now)
        else:  # another worker pings and registers; we hunt with its view (sbc.workview)
            self.monitor.monitored = watched(trunk_groups, trunk_target)
        self._tick_if_needed(now)

    # --- statistics and metric triggers -------------------------------------------------------

    def ports_in_use(self) -> dict[tuple[str, str], int]:
        return ports_in_use(self.calls.values())

    def _tick_if_needed(self, now: float) -> None:
        if not self._ticking and Alarms.configured(self.snapshot.config):
            self._ticking = True
            self._timers.arm(now + 1, None, "tick")

    def _timer_tick(self, _: None, now: float) -> None:
        """Once a second while metric triggers exist: sample ports, evaluate the triggers."""
        config = self.snapshot.config
        self.stats.sample(self.ports_in_use(), now)
        wall = now + self.wall_offset
        for alarm in self.alarms.evaluate(config, self.stats, now, wall):
            payload = alarm.payload(wall)
            fields = {k: v for k, v in payload.items() if k not in ("event", "time")}
            self.out.notice(str(payload["event"]), None, **fields)  # the webhook's fields
            if alarm.trigger.webhook:
                self.out.commands.append(Notify(alarm.trigger.webhook, payload))
        if Alarms.configured(config):
            self._timers.arm(now + 1, None, "tick")
        else:
            self._ticking = False

    def _registered(self, actions: list[RegistrationAction], now: float) -> None:
        registration.carry_out(self.out, actions, now)

    def _on_ack(self, req: Request, source: Target, now: float) -> None:
        if (req.call_id, req.to.tag or "") not in self.dialogs:
            return  # a late or stray ACK: ACKs are never answered
        found = indialog.leg_of(self.dialogs, req, source)
        if isinstance(found, str):
            self.gate.dropped("in_dialog", source, now, "ACK")
            return
        call, leg = found
        if leg not in call.ack_wait:
            return
        if self.media.busy(call):  # behind the 2xx whose SDP is in flight
            self.media.later(call, lambda now: self.relayer.ack(call, leg, req, now))
        else:
            self.relayer.ack(call, leg, req, now)

    def _media_lost_on_ack(self, call: Call, now: float) -> None:
        self.hang_up(call, "sbc", now, reason="Media Unavailable")

    def _on_cancel(self, tx: ServerTransaction, req: Request, now: float) -> None:
        invite_tx = self.layer.find_invite(req)
        src = tx.source
        if invite_tx is None or (invite_tx.source.transport, invite_tx.source.host) != (
            src.transport,
            src.host,
        ):  # §9.2 matches on the branch; only the INVITE's sender may cancel it
            self.gate.not_ours(tx, src, now)
            return
        self.out.respond(tx, 200, now)  # §9.2: the CANCEL itself succeeds
        call = invite_tx.ctx
        if (
            not isinstance(call, Call)
            or call.state not in ("admitting", "routing")
            or call.cancelled
        ):
            return
        call.hangup = "caller"
        self.out.notice("call.cancel", call)
        self._abandon(call, 487, now)

    def _abandon(
        self, call: Call, status: int, now: float, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Give up a call still in setup: CANCEL its pending attempt (or do so as soon as
        it says 100, §9.1) and answer the caller ``status``."""
        call.cancelled = True
        attempt = call.current
        if attempt is not None and ladder.cancel(attempt):
            self.blegs.send_cancel(attempt, now)
        self.fail_caller(call, status, now, headers=headers)

    # --- shutdown -----------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Calls still held, plus rtpengine answers still due (a call's record waits for its
        delete): zero means a drained node may exit without losing a CDR."""
        return len(self.calls) + self.media.in_flight

    def shutdown(self, now: float) -> None:  # the drain timeout passed
        retry = (("Retry-After", str(self.snapshot.config.node.drain_retry_after)),)
        for call in list(self.calls.values()):
            self.stop(call, "shutdown", now, retry)

    def stop(
        self, call: Call, reason: str, now: float, headers: tuple[tuple[str, str], ...] = ()
    ) -> bool:
        """sbc ends a call (drain, `sbc ctl kill`): BYE both legs of an answered one, 503 to
        one in setup (its attempt cancelled); hangup sbc, ``reason``. False: ending already."""
        setup = call.state in ("admitting", "routing") and not call.cancelled
        if call.state != "answered" and not setup:
            return False
        call.reason, call.hangup = reason, "sbc"
        if setup:
            self._abandon(call, 503, now, headers)
        else:
            self.hang_up(call, "sbc", now, reason=reason)
        return True

    def _on_bye(self, call: Call, leg: Leg, tx: ServerTransaction, now: float) -> None:
        self.out.respond(tx, 200, now)
        if call.state == "routing" and leg == "b":
            return  # a BYE in an early dialog we never relayed: nothing to hang up
        if call.state in ("ending", "ended"):
            return
        self.hang_up(call, "caller" if leg == "a" else "callee", now, skip=leg)

    def hang_up(
        self, call: Call, side: Hangup, now: float, *, skip: Leg | None = None, reason: str = ""
    ) -> None:
        """End an answered call: BYE every leg except ``skip`` (which hung up itself)."""
        if ending.hang_up(self.out, call, side, now, skip, reason):
            self.maybe_end(call, now)

    def _bye_done(self, call: Call, now: float) -> None:
        call.byes -= 1
        self.maybe_end(call, now)

    # --- the end ------------------------------------------------------------------------------

    def maybe_end(self, call: Call, now: float) -> None:
        """Forget the call once nobody needs us: the caller has its final answer or its BYE,
        every BYE we sent is answered, and no attempt is still pending at a vendor."""
        if not ending.can_forget(call) or self.calls.pop(call.id, None) is None:
            return
        self.blegs.ended(call)
        call.state = "ended"
        call.ended_at = call.ended_at or now
        answered = call.answered
        if answered is not None and call.answered_at is not None:
            seconds = call.ended_at - call.answered_at
            ingress, egress = call.ingress, answered.trunk_group
            self.stats.ended(ingress.name, "ingress", ingress.capacity_group, seconds, now)
            self.stats.ended(egress.name, "egress", egress.capacity_group, seconds, now)
        for key in call.keys:
            if self.dialogs.get(key, (None,))[0] is call:
                del self.dialogs[key]
        if not self.calls:  # idle: give a peak's tables back (dicts never shrink)
            self.calls, self.dialogs = {}, {}
        for host in call.hosts:
            self.dialog_hosts[host] -= 1
            if not self.dialog_hosts[host]:
                del self.dialog_hosts[host]
        for lease, held in call.leases.items():
            self.out.commands.append(Release(lease, held))
        call.leases.clear()
        if call.media_used and not call.media_deleted:
            # The ports are free already; the record waits for rtpengine's counters.
            def deleted(reply: dict[bytes, Any] | None, now: float) -> None:
                if reply is not None:
                    call.media_stats = ng.stats(reply)
                self._end_notice(call)

            self.media.delete(call, deleted)
            return
        self._end_notice(call)

    def _end_notice(self, call: Call) -> None:
        record, fields = ending.record(call, self.wall_offset)
        self.cdrs.append(record)
        self.out.notice("call.end", call, **fields)
