"""The B-legs: each attempt's INVITE, its timers, and what its answers mean. Pure.

An attempt is one INVITE to one trunk (sbc.call.attempt draws its ladder). This module
sends it (after rtpengine rewrote the caller's offer, when media is anchored), runs its
B-timer, Max PDD and Timer C (and the answered call's Max Call Duration), CANCELs it,
answers a trunk's digest challenge once, relays its provisionals and its answer to the
caller, and ACKs (or ACKs and hangs up) every 2xx.
What happens to the call then, hunting on or failing the caller, is the controller's: it
is the ``Host`` this module reports to.

    caller            sbc                vendor
      |--INVITE------->|--INVITE---------->|   new Call-ID, tags, Via, Contact
      |<--------180----|<--------------180-|   (SDP through rtpengine when anchored)
      |<--------200----|<--------------200-|
      |                |--ACK------------->|   at once when the INVITE had the offer
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from media import ng
from media.ng import ip_family, side
from routing.health import Key
from routing.monitor import Monitor
from sbc import manipulate
from sbc.call import attempt as ladder
from sbc.call import forking, headers, hunt, identity, media, redirect, sessiontimer
from sbc.call.headers import ALLOW, crossing, sips_uri, tcp_twin, trunk_target
from sbc.call.host import CallHost
from sbc.call.media import Media
from sbc.call.mediawatch import MediaWatch
from sbc.call.model import SHARED_EMPTY, Attempt, Call, Cancel, Hangup, Outcome, Phase
from sbc.call.outbox import Outbox
from sbc.call.redirect import Redirect
from sbc.call.reliable import Reliable
from sbc.call.sessiontimer import SessionTimers
from sbc.config.schema import TrunkGroup
from sbc.sip.dialog import Dialog
from sbc.sip.digest import authorization, pick_challenge
from sbc.sip.ids import new_id
from sbc.sip.message import Response, make_response, resend
from sbc.sip.stateless import make_cancel, settled
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import ClientTransaction, State
from sbc.state import Answered


class Host(CallHost, Protocol):
    """What the B-legs need of the call controller, beyond a CallHost's."""

    def hang_up(self, call: Call, side: Hangup, now: float, *, reason: str = "") -> None: ...

    def unbind(self, call: Call, key: tuple[str, str]) -> None: ...

    def observe(self, key: Key, ok: bool, error: str) -> None: ...

    def expect(self, call: Call, host: str) -> None: ...

    @property
    def monitor(self) -> Monitor: ...


class BLegs:
    def __init__(
        self, out: Outbox, media_: Media, host: Host, timers: TimerHeap, sessions: SessionTimers
    ) -> None:
        self.out = out
        self.media = media_
        self.host = host
        self._timers = timers  # the controller's: B-timer, Max PDD, Timer C, Max Call Duration
        self.sessions = sessions  # RFC 4028 on both legs
        self.reliable = Reliable(out, timers, out.layer.timers.t1)  # RFC 3262 on both legs
        self.watch = MediaWatch(out, media_, host, timers)  # rtp_timeout
        self.correlation: dict[str, str] = {}  # a live B-leg's Call-ID -> its A-leg's (HEP)

    def ended(self, call: Call) -> None:
        """The call is over: its long timers go (the heap must not keep it alive)."""
        self._timers.cancel(call.max_duration)
        self.sessions.ended(call)
        self.reliable.ended(call)
        self.watch.ended(call)
        for a in call.attempts:
            self.correlation.pop(a.invite.call_id, None)

    def originate(
        self, call: Call, etg: TrunkGroup, index: int, now: float, to: Redirect | None = None
    ) -> None:
        """A new attempt to trunk ``index`` of ``etg`` (or where a 3xx pointed, ``to``): the
        caller's offer goes through rtpengine first when either side anchors, then the
        INVITE."""
        trunk = etg.trunks[index]
        if to is None and call.replacing is not None:  # RFC 3891: the replaced call's vendor
            to = call.replacing[0]
        target = to.target if to is not None else trunk_target(trunk)
        mine = own(etg, trunk.type, to, call)
        invite = headers.b_leg_invite(
            call, etg, trunk, self.out.snapshot, new_id, self.out.contact(target), to,
            self.out.via(target, own=mine),
        )  # fmt: skip
        # RFC 3261 §18.1.1: an INVITE over 1300 bytes (the path MTU unknown) goes over TCP
        # where the trunk group reaches this vendor that way too (a tcp trunk, same address)
        twin = tcp_twin(etg, index, self.out.snapshot) if to is None else None
        if twin is not None and len(invite.to_bytes()) > headers.UDP_MAX:
            index, trunk = twin, etg.trunks[twin]
            target = trunk_target(trunk)
            invite = headers.b_leg_invite(
                call, etg, trunk, self.out.snapshot, new_id, self.out.contact(target), to
            )
        a = call.a_invite
        attempt = Attempt(call, len(call.attempts) + 1, etg, index, target, invite, now)
        attempt.own = mine
        attempt.redirected_by = to.by if to is not None else None
        attempt.b_side = side(
            call.snap.media[etg.name], target.host if etg.nat else "", ip_family(target.host)
        )
        call.attempts.append(attempt)
        call.current = attempt
        if not call.unanchored and ng.anchored(call.a_side, attempt.b_side):
            attempt.anchored = True
            attempt.branch = f"{call.id}.{attempt.n}"
            if a.body:  # the caller's offer, rewritten for this vendor, before the INVITE
                self.media.offer_for(attempt, lambda reply, now: self._offered(attempt, reply, now))
                return
        self._send_attempt(attempt, now)

    def _offered(self, attempt: Attempt, reply: dict[bytes, Any] | None, now: float) -> None:
        """rtpengine rewrote (or failed to rewrite) the caller's offer for this attempt."""
        call = attempt.call
        if call.cancelled or call.state != "routing" or attempt is not call.current:
            attempt.phase = Phase.FAILED  # never sent
            attempt.outcome = attempt.outcome or "cancelled"
            self.host.maybe_end(call, now)
            return
        body = reply.get(b"sdp") if reply is not None else None
        if not isinstance(body, bytes):
            if media.rejects(call):
                attempt.phase = Phase.FAILED  # never sent
                attempt.outcome = "media"
                attempt.status = 503
                call.reason = "media"
                self.host.fail_caller(call, 503, now, "Media Unavailable")
                return
            call.unanchored = True  # node.media.on_failure: unanchored
            attempt.anchored = False
        else:
            attempt.invite = replace(attempt.invite, body=body)
            self.media.free_stale(call)
        self._send_attempt(attempt, now)

    def _send_attempt(self, attempt: Attempt, now: float) -> None:
        call = attempt.call
        etg, invite, target = attempt.trunk_group, attempt.invite, attempt.target
        attempt.started = now
        attempt.tx = self.out.send(invite, target, now, ctx=attempt)
        self.host.stats.attempt(etg.name, "egress", etg.capacity_group, now)
        self.host.bind(call, (invite.call_id, invite.from_.tag or ""), "b", attempt)
        self.correlation[invite.call_id] = call.a_invite.call_id
        limits = etg.limits
        if limits.b_timer:
            self._timers.arm(now + limits.b_timer, attempt, "b_timer", self)
        ring = forking.ring_limit(call, attempt)  # another contact of the account waits
        if ring:
            self._timers.arm(now + ring, attempt, "next_contact", self)
        pdd_due = ladder.max_pdd_at(attempt)
        if pdd_due is not None:
            self._timers.arm(pdd_due, attempt, "max_pdd", self)
        self.out.notice(
            "call.attempt",
            call,
            attempt=attempt.n,
            trunk_group=etg.name,
            trunk=str(target),
            b_call_id=invite.call_id,
            anchored=attempt.anchored,
        )

    def _timer_next_contact(self, attempt: Attempt, now: float) -> None:
        if ladder.live(attempt) and attempt is attempt.call.current:
            self.give_up(attempt, "no_answer", 480, now)

    def _timer_b_timer(self, attempt: Attempt, now: float) -> None:
        if ladder.b_timer_due(attempt):
            self.host.observe(attempt.target.key, False, "call b_timer")
            self.give_up(attempt, "b_timer", 408, now)

    def _restart_timer_c(self, attempt: Attempt, now: float) -> None:
        """A provisional from the vendor: Timer C runs (again) from now (RFC 3261 §16.6
        item 11). One heap entry per attempt: a fire before the due time re-arms."""
        seconds = attempt.call.snap.config.node.timers.timer_c
        if not seconds or attempt.done:
            return
        attempt.timer_c_due = now + seconds
        if attempt.timer_c is None:
            attempt.timer_c = self._timers.arm(now + seconds, attempt, "timer_c", self)

    def _timer_timer_c(self, attempt: Attempt, now: float) -> None:
        """Rung for Timer C with no final answer: CANCEL it and hunt on (408 if none is
        left), as a proxy would (§16.6 item 11, §16.7 item 10)."""
        attempt.timer_c = None
        if not ladder.live(attempt):
            return
        if now < attempt.timer_c_due:
            attempt.timer_c = self._timers.arm(attempt.timer_c_due, attempt, "timer_c", self)
            return
        self.out.notice("call.timer_c", attempt.call, attempt=attempt.n, trunk=str(attempt.target))
        self.give_up(attempt, "timer_c", 408, now)

    def _timer_max_pdd(self, attempt: Attempt, now: float) -> None:
        if ladder.max_pdd_due(attempt):
            caller_due = ladder.caller_pdd_at(attempt.call)
            if caller_due is not None and now >= caller_due:  # the caller's: no more hunting
                hunt.stop(attempt.call)
            self.give_up(attempt, "max_pdd", 408, now)

    def give_up(self, attempt: Attempt, outcome: Outcome, status: int, now: float) -> None:
        """Leave an attempt that is still pending: CANCEL it if it sent a provisional (§9.1),
        else stop retransmitting and wait for a late answer only to clean it up."""
        if ladder.leave(attempt, outcome, status):
            self.send_cancel(attempt, now)
        elif attempt.cancel is Cancel.PENDING and attempt.tx is not None:
            # No provisional yet: stop retransmitting; the call need not wait for it. (With
            # a CANCEL already sent, the call waits for the vendor's 487, as it must.)
            attempt.tx.quiet = True
        self.failed(attempt, status, "", now, timeout=True)

    def send_cancel(self, attempt: Attempt, now: float) -> None:
        """The CANCEL the ladder asked for, once (sbc.call.attempt)."""
        self.out.send(make_cancel(attempt.invite), attempt.target, now, ctx=None)

    def failed(
        self,
        attempt: Attempt,
        status: int,
        reason: str,
        now: float,
        *,
        timeout: bool = False,
        response: Response | None = None,
        advance: bool | None = None,
    ) -> None:
        call = attempt.call
        attempt.phase = Phase.FAILED
        attempt.ended_at = now
        self._timers.cancel(attempt.timer_c)
        attempt.timer_c = None
        if attempt.status is None:
            attempt.status = status
        if not attempt.outcome:
            attempt.outcome = "code"
        self.out.notice(
            "call.attempt_failed", call, attempt=attempt.n, status=status, outcome=attempt.outcome
        )
        if attempt.tx is None or attempt.tx.state in (State.COMPLETED, State.TERMINATED):
            self.closed(attempt)
        if attempt.anchored and call.media_used and call.state == "routing" and not call.cancelled:
            # Free this attempt's ports only, once the next attempt's branch exists (see
            # stale_branches); if none follows, the call's own delete frees them.
            call.stale_branches += (attempt.branch,)
        if call.cancelled or call.state != "routing":
            self.host.maybe_end(call, now)
            return
        if hunt.failed(
            call,
            status,
            timeout=timeout,
            rang=attempt.provisional_at is not None,
            response=response,
            advance=advance,
        ):
            self.host.hunt_on(call, now)
        else:
            step = hunt.exhausted(call)
            self.host.fail_caller(call, step.status, now, step.reason, step.headers)

    def closed(self, attempt: Attempt) -> None:
        """A failed attempt's transaction is over: its dialog key is no longer the call's,
        and of its INVITE only what the record names is kept (no CANCEL can follow)."""
        if attempt is not attempt.call.answered:
            attempt.invite = settled(attempt.invite)
            self.host.unbind(attempt.call, (attempt.invite.call_id, attempt.invite.from_.tag or ""))

    def response(self, attempt: Attempt, resp: Response, tx: ClientTransaction, now: float) -> None:
        """A response to the attempt's INVITE (``tx``: its transaction, which keeps our ACK
        for a 2xx while it is Accepted; the attempt may have let go of it)."""
        call = attempt.call
        status = resp.status
        if attempt.done:  # an attempt we left: clean it up, never relay
            if status < 200:
                if ladder.heard(attempt, status, now):  # the CANCEL that waited for it
                    self.send_cancel(attempt, now)
            elif status < 300:
                if attempt is call.answered:  # a retransmitted 2xx: ACK again, if we have one
                    if tx.ack is not None and attempt.dialog is not None:
                        self.out.ack(tx.ack, attempt.dialog.destination())
                else:
                    self.ack_and_bye(attempt, resp, tx, now)
            else:
                self.closed(attempt)
                self.host.maybe_end(call, now)
            return
        if status < 200:
            if ladder.heard(attempt, status, now):  # the caller cancelled before it rang
                self.send_cancel(attempt, now)
            self._restart_timer_c(attempt, now)
            if status == 100 or call.cancelled:
                return
            if not self.reliable.vendor_provisional(attempt, resp, now):
                return  # a reliable one seen already: PRACKed, relayed
            if call.first_provisional_at is None:
                call.first_provisional_at = now
            if attempt.anchored and resp.body and not call.unanchored:

                def relay_18x(body: bytes | None, now: float) -> None:
                    if attempt.done or call.state != "routing":
                        return
                    if body is None:  # early media lost; the 2xx decides the call's fate
                        body = b"" if media.rejects(call) else resp.body
                    self.relay_to_a(call, resp, now, body)

                self.media.vendor_sdp(attempt, resp, relay_18x)
            else:
                self.relay_to_a(call, resp, now)
            return
        if status < 300:
            self._on_answer(attempt, resp, tx, now)
            return
        if status in (401, 407) and not call.cancelled and self._authenticate(attempt, resp, now):
            return
        if status == 422 and not call.cancelled and self._longer_session(attempt, resp, now):
            return
        attempt.outcome = "cancelled" if call.cancelled else "code"
        advance = self._redirected(attempt, resp) if status < 400 and not call.cancelled else None
        status = manipulate.sip_code(call.snap.rules[attempt.trunk_group.name], status)
        self.failed(attempt, status, resp.reason, now, response=resp, advance=advance)

    def _redirected(self, attempt: Attempt, resp: Response) -> bool:
        """A 3xx: hunt on (to its Contacts first, when followed) or relay it (see
        sbc.call.redirect)."""
        call, etg = attempt.call, attempt.trunk_group
        if etg.redirects == "relay":
            return False
        if etg.redirects == "follow":
            resolved = self.host.monitor.dns.addresses  # host trunks' addresses
            found = redirect.targets(etg, resp, attempt.n, call.followed, resolved)
            if found:
                attempt.outcome = "redirected"
                call.followed += len(found)
                call.redirects = (*found, *call.redirects)
                self.out.notice(
                    "call.redirected",
                    call,
                    attempt=attempt.n,
                    status=resp.status,
                    to=[str(r.target) for r in found],
                )
        return True

    def _authenticate(self, attempt: Attempt, resp: Response, now: float) -> bool:
        """Answer a trunk's 401/407 with its credentials: the same INVITE again with CSeq + 1
        and a new branch (RFC 3261 §22.2). Once per attempt; a second challenge is final."""
        trunk = attempt.trunk_group.trunks[attempt.trunk]
        if not (trunk.username and trunk.password):
            return False
        asked = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        challenge = pick_challenge(resp.get_all(asked))
        if challenge is None or not ladder.challenged(attempt):
            return False
        invite = attempt.invite
        value = authorization(challenge, "INVITE", invite.uri, trunk.username, trunk.password)
        header = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        attempt.invite = resend(
            invite,
            self.out.via(attempt.target, own=attempt.own),
            invite.cseq + 1,
            [(header, value)],
        )
        attempt.tx = self.out.send(attempt.invite, attempt.target, now, ctx=attempt)
        self.out.notice("call.attempt_auth", attempt.call, attempt=attempt.n, status=resp.status)
        return True

    def _longer_session(self, attempt: Attempt, resp: Response, now: float) -> bool:
        """A vendor's 422 (RFC 4028 §7.4): the INVITE again, once, with the Session-Expires
        it asked for and CSeq + 1."""
        wanted = sessiontimer.retry_headers(resp, attempt.trunk_group.session_timer)
        if wanted is None or attempt.stretched:
            return False
        attempt.stretched = True
        invite = attempt.invite
        via = self.out.via(attempt.target, own=attempt.own)
        attempt.invite = resend(invite, via, invite.cseq + 1, list(wanted))
        attempt.tx = self.out.send(attempt.invite, attempt.target, now, ctx=attempt)
        self.out.notice("call.attempt_422", attempt.call, attempt=attempt.n, asked=wanted[0][1])
        return True

    def relay_to_a(self, call: Call, resp: Response, now: float, body: bytes | None = None) -> None:
        a = call.a_invite
        headers = identity.to_caller(call, crossing(resp))  # connected identity (RFC 3325)
        headers.append(("Contact", self.out.contact_value(call.source, sips_uri(a.uri))))
        headers += [("Record-Route", str(rr)) for rr in a.record_routes]
        body = resp.body if body is None else body
        if resp.status >= 200:
            headers.append(("Allow", ALLOW))
            headers += sessiontimer.answer_headers(call.sessions.get("a"))
            sessiontimer.sent(call, "a", body)
        rel = self.reliable
        if resp.status < 200 and rel.reliably(call, resp, body):
            if body:  # an offer or answer: our SDP on this leg from now on (RFC 3262 §5)
                sessiontimer.sent(call, "a", body)

            def go(now: float) -> None:
                if call.state == "routing" and not call.cancelled:
                    with_rseq = [*headers, *rel.headers(call)]
                    answer = make_response(
                        call.a_invite, resp.status, resp.reason,
                        to_tag=call.a_dialog.local_tag, headers=with_rseq, body=body,
                    )  # fmt: skip
                    rel.send(call, call.a_tx, answer, now)

            if not rel.hold(call, go, False):
                go(now)
            return

        def respond(now: float) -> None:
            self.out.respond(
                call.a_tx, resp.status, now, resp.reason,
                headers=headers, to_tag=call.a_dialog.local_tag, body=body,
            )  # fmt: skip

        if not (200 <= resp.status < 300 and rel.hold(call, respond, True)):
            respond(now)

    def _media_lost(self, call: Call, attempt: Attempt, now: float) -> None:
        """The vendor answered but rtpengine could not anchor it, and on_failure is reject:
        hang up the vendor and fail the caller with 503 (it never saw the 2xx)."""
        dialog = attempt.dialog
        assert dialog is not None
        if call.ack_wait.pop("a", None) is not None:
            self._ack(attempt, attempt.tx, b"")
        self.out.bye(call, dialog, attempt.target.transport, now)
        call.answered_at = None
        call.hangup = "sbc"
        self.host.fail_caller(call, 503, now, "Media Unavailable")

    def _on_answer(
        self, attempt: Attempt, resp: Response, tx: ClientTransaction, now: float
    ) -> None:
        call = attempt.call
        attempt.dialog = Dialog.as_uac(
            attempt.invite, resp, attempt.target, attempt.trunk_group.nat, attempt.own
        )
        self.host.expect(attempt.call, attempt.dialog.target_host)
        early = attempt.early
        if early is not None and early.remote.tag == resp.to.tag:  # its PRACKs used CSeqs
            attempt.dialog.local_cseq = early.local_cseq
        attempt.status = resp.status
        attempt.outcome = "answered"
        attempt.phase = Phase.ANSWERED
        self._timers.cancel(attempt.timer_c)
        attempt.timer_c = None
        if call.cancelled or call.answered is not None:
            self.ack_and_bye(attempt, resp, tx, now)
            return
        call.answered = attempt
        call.state = "answered"
        # Hunting is over: the trunks not tried, the egress verdicts and the last failure
        # (a whole response) are no longer anyone's business while the call is up.
        call.candidates.clear()
        call.egress = SHARED_EMPTY
        call.last_failure = None
        call.answered_at = now
        if call.held:  # its credit hold grows from now on (sbc.balance)
            self.out.commands.append(Answered(call.id, now))
        call.final_status = resp.status
        call.a_tx.ctx = call
        if call.a_invite.body:
            self._ack(attempt, tx, b"")
        else:  # late offer: the answer comes in the caller's ACK (RFC 3264 §3)
            call.ack_wait = {
                **call.ack_wait,
                "a": (attempt.dialog, attempt.invite.cseq, attempt.target),
            }
        # Answered: what a BYE, a re-INVITE or the record needs is in the dialog and in the
        # INVITE's identity, which its transaction kept when it settled (Accepted).
        attempt.invite = tx.request
        if attempt.early_answered and resp.body:  # offer, answer in 18x, PRACK: not a new one
            self.relay_to_a(call, without_sdp(resp), now)
        elif attempt.anchored and resp.body and not call.unanchored:
            if not call.a_invite.body:
                call.late_offer = "b"

            def relay_2xx(body: bytes | None, now: float) -> None:
                if call.state != "answered":
                    return
                if body is None:
                    if media.rejects(call):
                        self._media_lost(call, attempt, now)
                        return
                    call.unanchored = True
                    body = resp.body
                self.relay_to_a(call, resp, now, body)

            self.media.vendor_sdp(attempt, resp, relay_2xx)
        else:
            self.relay_to_a(call, resp, now)
        b = sessiontimer.as_uac(resp, attempt.trunk_group.session_timer)
        if b is not None:
            b.update = sessiontimer.allows_update(resp)
            call.sessions = {**call.sessions, "b": b}
            ours = attempt.invite.body if call.a_invite.body else attempt.early_sdp
            sessiontimer.sent(call, "b", ours)  # the INVITE's offer, or a PRACK's answer
        self.sessions.start(call, now)
        self.watch.start(call, now)
        limit = ladder.max_call_duration(attempt)
        if limit:
            call.max_duration = self._timers.arm(now + limit, call, "max_duration", self)
        pdd = round((call.first_provisional_at or now) - call.started, 3)
        ingress, egress = call.ingress, attempt.trunk_group
        self.host.stats.completion(ingress.name, "ingress", ingress.capacity_group, pdd, now)
        b_pdd = (attempt.provisional_at or now) - attempt.started
        self.host.stats.completion(egress.name, "egress", egress.capacity_group, b_pdd, now)
        self.out.notice("call.answer", call, attempt=attempt.n, trunk_group=egress.name, pdd=pdd)

    def _ack(self, attempt: Attempt, tx: ClientTransaction | None, body: bytes) -> None:
        """ACK the attempt's 2xx; ``tx`` (its INVITE's) keeps it for that 2xx's
        retransmissions until Timer M (§13.2.2.4)."""
        dialog = attempt.dialog
        assert dialog is not None
        ack = dialog.request(
            "ACK",
            self.out.via(attempt.target, dialog),
            None,
            cseq=attempt.invite.cseq,
            body=body,
            headers=[("Content-Type", "application/sdp")] if body else (),
        )
        self.out.ack(ack, dialog.destination(), tx)

    def ack_and_bye(
        self, attempt: Attempt, resp: Response, tx: ClientTransaction, now: float
    ) -> None:
        """A 2xx for an attempt we no longer want: confirm it and hang it up (§15)."""
        if attempt.dialog is None:
            attempt.dialog = Dialog.as_uac(
                attempt.invite, resp, attempt.target, attempt.trunk_group.nat, attempt.own
            )
        if tx.ack is not None:  # a retransmission of that 2xx
            self.out.ack(tx.ack, attempt.dialog.destination())
            return
        self._ack(attempt, tx, b"")
        self.out.bye(attempt.call, attempt.dialog, attempt.target.transport, now)
        self.closed(attempt)

    def _timer_max_duration(self, call: Call, now: float) -> None:
        if call.state == "answered":
            self.out.notice("call.max_duration", call)
            self.host.hang_up(call, "sbc", now, reason="Max Call Duration")


def own(etg: TrunkGroup, kind: str, to: Redirect | None, call: Call) -> bool:
    """Does an attempt leave from the worker's own port (node.worker_port)? Toward a vendor
    we reach, yes. Not toward a peer that reached us (a registered PBX's contact, ``to.by``
    None with a Request-URI of its own; a replaced call's caller), nor one behind NAT or
    registered with (its pinhole or binding is our listening port). Over TCP/TLS the
    connection is the worker's anyway: ``Outbox.via`` names our own port over UDP only."""
    registered = to is not None and to.by is None and to.ruri is not None
    return kind == "ip" and not etg.nat and not registered and call.replacing is None


def without_sdp(resp: Response) -> Response:
    """A vendor's 2xx repeating the SDP of an offer and answer already made in a reliable
    18x and its PRACK (RFC 3262 §5, RFC 6337 §3.1): relayed without it."""
    kept = [(n, v) for n, v in resp.headers if n != "Content-Type"]
    return replace(resp, headers=kept, body=b"")
