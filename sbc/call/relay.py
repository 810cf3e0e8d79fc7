"""In-dialog requests of an answered call, carried from one leg to the other. Pure.

    caller            sbc              vendor          (either way round)
      |--re-INVITE---->|                  |   our own Via, Contact, CSeq on the far leg;
      |                |--re-INVITE------>|   only the allow-list of headers crosses
      |                |<-------------200-|
      |                |--ACK------------>|   at once when the re-INVITE had the offer,
      |<----------200--|                  |   else held for the caller's ACK (its answer)
      |--ACK---------->|                  |

With anchored media an offer (hold, resume, codec change) goes through rtpengine first, and
the answer on its way back; a re-INVITE without an offer gets rtpengine's offer from the far
side's 2xx and its answer from the ACK (late offer, RFC 3264 §3). A request that arrives
before the call is answered gets 491, after it ended 481 (the BYE is the controller's);
only an UPDATE or INFO crosses in the early dialog (RFC 3311 §5), its offer through the
attempt's own rtpengine branch.
"""

from __future__ import annotations

from collections.abc import Callable

from sbc.call import identity, refer, sessiontimer
from sbc.call.headers import crossing, local, sips_uri, uri_host
from sbc.call.media import Media, Reply, rejects, sdp_of
from sbc.call.model import Attempt, Call, Headers, Leg, Relay, other
from sbc.call.outbox import Outbox
from sbc.call.reliable import Reliable
from sbc.call.sessiontimer import SessionTimers
from sbc.sip.dialog import Dialog
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import ClientTransaction, ServerTransaction


class Relayer:
    def __init__(
        self,
        out: Outbox,
        media: Media,
        media_lost: Callable[[Call, float], None],
        sessions: SessionTimers,
        reliable: Reliable,
    ) -> None:
        self.out = out
        self.media = media
        self.media_lost = media_lost  # hang the call up: an ACK's answer could not be anchored
        self.sessions = sessions  # a successful re-INVITE or UPDATE refreshes both legs
        self.reliable = reliable  # the caller's PRACKs

    def request(
        self, call: Call, leg: Leg, tx: ServerTransaction, req: Request, now: float
    ) -> None:
        """``req`` came in on ``leg``: send it on the other one."""
        if req.method == "PRACK":  # hop by hop (RFC 3262): ours, never relayed
            if leg == "a":
                attempt = call.current
                offer = bool(req.body) and (attempt is None or attempt.prack_held is None)
                acked = self.reliable.prack(call, tx, req, now, answer=not offer)
                if acked is not None and offer:
                    self._prack_offer(call, tx, req, now)
                elif acked is not None and acked.body:
                    self._prack_answer(call, req, now)
            else:  # we send the vendor no reliable provisionals
                self.out.respond(tx, 481, now, tag=False)
            return
        if call.state != "answered":
            early = _early(call, req)
            if early is None:
                self.out.respond(tx, 481 if call.state in ("ending", "ended") else 491, now)
                return
            tx.ctx = call  # RFC 3311 §5: an UPDATE (or INFO) in the early dialog crosses
            relay = Relay(call, tx, other(leg), early=early)
            if req.body and early.anchored and not call.unanchored:
                self._offer(relay, leg, req, now)
            else:
                self._send(relay, req, req.body, now)
            return
        extra: list[tuple[str, str]] = []
        if req.method == "REFER":
            # A transfer would reach past the B2BUA to a party of the sender's choosing;
            # only trunk groups with ``refer: relay`` may ask for one, and then it names
            # us (sbc.call.refer). Refused: 403 (RFC 3515 §2.4.2).
            d = _dialog(call, other(leg))
            far = _transport(call, other(leg), d)
            found = None
            if _refer_policy(call, leg) == "relay":
                host, port = local(self.out.snapshot, far, d.destination().host)
                found = refer.mapped(req, uri_host(host), port, leg)
            if found is None:
                self.out.respond(tx, 403, now, "Forbidden", tag=False)
                return
            extra = found
        tx.ctx = call
        relay = Relay(call, tx, other(leg))
        if req.method in ("INVITE", "UPDATE") and req.body and call.anchored:
            self._offer(relay, leg, req, now)
            return
        self._send(relay, req, req.body, now, extra)

    def _prack_offer(self, call: Call, tx: ServerTransaction, req: Request, now: float) -> None:
        """A new offer in the caller's PRACK (§5: after a reliable 18x with the answer): our
        PRACK to the vendor went long ago, so it crosses as an UPDATE in the vendor's early
        dialog (RFC 3311), whose answer comes back in the 200 to the PRACK."""
        attempt = _early(call, req, "UPDATE")
        if attempt is None:
            self.out.respond(tx, 488, now, "Not Acceptable Here", tag=False)
            return
        tx.ctx = call
        relay = Relay(call, tx, "b", early=attempt)
        if attempt.anchored and not call.unanchored:
            self._offer(relay, "a", req, now, "UPDATE")
        else:
            self._send(relay, req, req.body, now, method="UPDATE")

    def _prack_answer(self, call: Call, req: Request, now: float) -> None:
        """The caller's PRACK of a reliable 18x with SDP: when that SDP was the vendor's
        offer, the PRACK's answer crosses in our PRACK (RFC 3262 §5), through rtpengine on
        the attempt's branch when anchored (if it cannot rewrite it, it goes as it is)."""
        attempt = call.current
        if attempt is None or attempt.prack_held is None or attempt.done:
            return
        if req.body and attempt.anchored and not call.unanchored:

            def send(reply: Reply, now: float) -> None:
                self.reliable.answered(attempt, sdp_of(reply) or req.body, now)

            self.media.answer(call, "a", "b", req.body, send, attempt)
            return
        self.reliable.answered(attempt, req.body, now)

    def _offer(self, relay: Relay, leg: Leg, req: Request, now: float, method: str = "") -> None:
        """A new offer from ``leg``: rtpengine rewrites it for the far side first."""
        call, tx, early = relay.call, relay.server, relay.early
        relay.media = True

        def send(reply: Reply, now: float) -> None:
            body = sdp_of(reply)
            if body is None:
                if rejects(call) or early is not None:  # the call goes on with its media
                    self.out.respond(tx, 503, now, "Media Unavailable", tag=False)
                    return
                call.unanchored = True
                relay.media = False
                body = req.body
            if early is not None and (early.done or call.current is not early):
                self.out.respond(tx, 481, now, tag=False)  # that early dialog is gone
            elif early is not None or call.state == "answered":
                self._send(relay, req, body, now, method=method)
            else:
                self.out.respond(tx, 481, now, tag=False)

        self.media.offer(call, leg, req.body, send, early)

    def _send(
        self,
        relay: Relay,
        req: Request,
        body: bytes,
        now: float,
        extra: Headers = (),
        method: str = "",
    ) -> None:
        call, far = relay.call, relay.to_leg
        early = relay.early.early if relay.early is not None else None
        dialog = early if far == "b" and early is not None else _dialog(call, far)
        transport = _transport(call, far, dialog)
        method = method or req.method
        out = dialog.request(
            method,
            self.out.via(transport, dialog),
            self.out.contact(transport, dialog=dialog),
            headers=[
                *identity.in_dialog(call, far, crossing(req)),
                *extra,
                *_timer(call, far, method),
            ],
            body=body,
        )
        sessiontimer.sent(call, far, body)
        self.out.send(out, dialog.destination(), now, ctx=relay)

    def response(self, relay: Relay, resp: Response, tx: ClientTransaction, now: float) -> None:
        """The far leg answered a relayed request: answer the near one."""
        if resp.status == 100:
            return
        call, server = relay.call, relay.server
        to_leg, from_leg = relay.to_leg, other(relay.to_leg)
        method = server.request.method
        anchored = relay.media if relay.early is not None else call.anchored
        offers = ("INVITE", "UPDATE", "PRACK")  # a PRACK's offer crossed as an UPDATE
        if resp.body and resp.status < 300 and method in offers and anchored:

            def respond(reply: Reply, now: float) -> None:
                body = sdp_of(reply)
                if body is None:
                    # The far side has already accepted the new session: its 2xx can only
                    # be relayed as it is, so from here on the call's SDP passes untouched,
                    # whatever on_failure says (refusing needs the 503 before it answers).
                    call.unanchored = True
                    body = resp.body
                self._respond(relay, resp, tx, now, body)

            if relay.media:  # the answer to the offer rtpengine rewrote
                self.media.answer(call, to_leg, from_leg, resp.body, respond, relay.early)
                return
            if not server.request.body and resp.status >= 200:  # re-INVITE without offer
                call.late_offer = to_leg
                self.media.offer(call, to_leg, resp.body, respond)
                return
        self._respond(relay, resp, tx, now, resp.body)

    def _respond(
        self, relay: Relay, resp: Response, tx: ClientTransaction, now: float, body: bytes
    ) -> None:
        call, server = relay.call, relay.server
        extra = identity.in_dialog(call, other(relay.to_leg), crossing(resp))
        if server.request.method in ("INVITE", "UPDATE") and resp.status < 300:
            sips = relay.to_leg == "b" and sips_uri(call.a_invite.uri)  # the caller's dialog
            extra.append(("Contact", self.out.contact_value(server.source, sips)))
        if server.request.method == "INVITE" and 200 <= resp.status < 300:
            dialog = _dialog(call, relay.to_leg)
            if server.request.body:
                ack = dialog.request(
                    "ACK", self.out.via(dialog.peer, dialog), None, cseq=tx.request.cseq
                )
                self.out.ack(ack, dialog.destination())
            else:  # the ACK brings the answer: hold ours for it
                held = (dialog, tx.request.cseq, dialog.destination())
                call.ack_wait = {**call.ack_wait, other(relay.to_leg): held}
        if server.request.method in ("INVITE", "UPDATE") and 200 <= resp.status < 300:
            near = other(relay.to_leg)
            extra += sessiontimer.answer_headers(call.sessions.get(near))
            sessiontimer.sent(call, near, body)
            if call.state == "answered":
                self.sessions.refreshed(call, now)  # RFC 4028 §10: both sessions live on
        answer = make_response(server.request, resp.status, resp.reason, headers=extra, body=body)
        self.out.relay_response(server, answer, now)

    def ack(self, call: Call, leg: Leg, req: Request, now: float) -> None:
        """The ACK we held for this leg's 2xx: send it on, its answer rewritten by rtpengine
        when the other leg's 2xx carried the offer (late offer, RFC 3264 §3)."""
        held = call.ack_wait.pop(leg, None)
        if held is None:
            return
        dialog, cseq, _ = held
        offerer = call.late_offer
        if offerer and offerer != leg and req.body and call.anchored:
            call.late_offer = None

            def send(reply: Reply, now: float) -> None:
                body = sdp_of(reply)
                self.send_ack(call, dialog, cseq, req, req.body if body is None else body)
                if body is None and rejects(call):
                    self.media_lost(call, now)

            self.media.answer(call, leg, offerer, req.body, send)
            return
        self.send_ack(call, dialog, cseq, req, req.body)

    def send_ack(self, call: Call, dialog: Dialog, cseq: int, req: Request, body: bytes) -> None:
        to_leg: Leg = "a" if dialog is call.a_dialog else "b"
        extra = identity.in_dialog(call, to_leg, crossing(req))
        ack = dialog.request(
            "ACK", self.out.via(dialog.peer, dialog), None, headers=extra, body=body, cseq=cseq
        )
        answered = call.answered
        keep = None  # the answered INVITE's own ACK (late offer) answers its retransmissions
        if answered is not None and dialog is answered.dialog and cseq == answered.invite.cseq:
            keep = answered.tx
        self.out.ack(ack, dialog.destination(), keep)


def _early(call: Call, req: Request, method: str = "") -> Attempt | None:
    """The attempt whose early dialog an UPDATE or INFO before the answer crosses to (or
    from): the current one, once a provisional named its dialog."""
    attempt = call.current
    crossing = (method or req.method) in ("UPDATE", "INFO")
    if call.state != "routing" or not crossing or attempt is None:
        return None
    if attempt.done or attempt.early is None:
        return None
    return attempt


def _timer(call: Call, far: Leg, method: str) -> Headers:
    """A re-INVITE or UPDATE we send on ``far`` says that leg's session timer (RFC 4028 §8)."""
    if method in ("INVITE", "UPDATE"):
        return sessiontimer.request_headers(call.sessions.get(far))
    return []


def _transport(call: Call, leg: Leg, dialog: Dialog) -> str:
    """The transport our requests on ``leg`` (through ``dialog``) go over."""
    return call.source.transport if leg == "a" else dialog.peer.transport


def _refer_policy(call: Call, leg: Leg) -> str:
    """The ``refer`` setting of the trunk group the REFER came from."""
    if leg == "a":
        return call.ingress.refer
    answered = call.answered
    return answered.trunk_group.refer if answered is not None else "reject"


def _dialog(call: Call, leg: Leg) -> Dialog:
    dialog = call.a_dialog if leg == "a" else call.b_dialog
    assert dialog is not None  # an answered call has both
    return dialog
