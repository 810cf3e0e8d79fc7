"""Reliable provisional responses (RFC 3262, 100rel), on each leg on its own. Pure.

sbc is a B2BUA, so PRACK is hop by hop. Toward a vendor we are the UAC: our INVITE says
``Supported: 100rel``, and every reliable provisional it sends (``Require: 100rel`` with
an RSeq) gets our PRACK in the early dialog it names, whatever the caller supports (§4).
Toward the caller we are the UAS: a caller that requires 100rel gets every 18x reliably,
one that supports it gets the reliable ones and those with SDP; each carries our own RSeq,
is retransmitted from T1 doubling until its PRACK comes (at most 64*T1, §3), and the next
reliable provisional, or a 2xx after one with SDP, waits for that PRACK.

    caller             sbc                      vendor
      |--INVITE-------->|--INVITE--------------->|  Supported: 100rel
      |  Require: 100rel|<--183 RSeq: 7, SDP-----|  Require: 100rel
      |                 |--PRACK RAck: 7 1 INVITE>|
      |<--183 RSeq: 1---|<-------------200 PRACK-|
      |--PRACK RAck: 1 1 INVITE->|               |
      |<--200 PRACK-----|                        |
      |<--200 INVITE----|<--------------200 INVITE|

A late offer (the caller's INVITE without SDP) offers 100rel to the vendor only when the
caller supports it: a reliable 18x may then bring the vendor's offer, whose answer must be
in our PRACK (§5). That PRACK waits for the caller's, which answers the same offer (through
rtpengine on the attempt's branch when anchored: sbc.call.relay):

    caller             sbc                      vendor
      |--INVITE, no SDP>|--INVITE, no SDP------->|  Supported: 100rel
      |                 |<--183 RSeq: 7, offer---|  (rtpengine: offer from the vendor)
      |<--183 RSeq: 1, offer|                    |
      |--PRACK + answer>|                        |  (rtpengine: answer from the caller)
      |<--200 PRACK-----|--PRACK RAck: 7 1 INVITE, answer->|
      |                 |<-------------200 PRACK-|
      |<--200 INVITE----|<--------------200 INVITE|  no SDP (or the same again: not relayed)
"""

from __future__ import annotations

from collections.abc import Callable

from sbc.call.model import Attempt, Call, ReliableLeg
from sbc.call.outbox import Outbox
from sbc.sip.dialog import Dialog
from sbc.sip.message import Request, Response, option_tags
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import ServerTransaction


def wanted(req: Request) -> tuple[bool, bool]:
    """(supports, requires) 100rel, from the caller's INVITE."""
    required = "100rel" in option_tags(req, "Require")
    return required or "100rel" in option_tags(req, "Supported"), required


def rseq_of(resp: Response) -> int | None:
    """The RSeq of a reliable provisional (§7.1), or None for an unreliable one."""
    if resp.status == 100 or resp.status >= 200 or "100rel" not in option_tags(resp, "Require"):
        return None
    value = (resp.get("RSeq") or "").strip(" \t")
    return int(value) if value.isdigit() and len(value) < 11 else None


class Reliable:
    """Sends and retransmits the caller's reliable provisionals; PRACKs the vendor's."""

    def __init__(self, out: Outbox, timers: TimerHeap, t1: float = 0.5) -> None:
        self.out = out
        self._timers = timers
        self.t1 = t1

    # --- toward the vendor: we PRACK ----------------------------------------------------------

    def vendor_provisional(self, attempt: Attempt, resp: Response, now: float) -> bool:
        """A provisional from the vendor: remember the early dialog it names (an UPDATE
        before the answer uses it), and PRACK it if it is reliable (§4). False for one to
        drop: a retransmission or one out of order (its PRACK is already under way)."""
        early = attempt.early
        if resp.to.tag and (early is None or early.remote.tag != resp.to.tag):
            early = attempt.early = Dialog.as_uac(
                attempt.invite, resp, attempt.target, attempt.trunk_group.nat, attempt.own
            )
        rseq = rseq_of(resp)
        if rseq is None or early is None:
            return True
        last = attempt.rseq
        if last is not None and rseq != last + 1:
            return False  # §4: a retransmission (<= last) or out of order (> last + 1)
        attempt.rseq = rseq
        rack = f"{rseq} {attempt.invite.cseq} INVITE"
        c = attempt.call.reliable
        offer = resp.body and not attempt.invite.body and not attempt.early_answered
        if offer and c is not None and c.supports:
            attempt.prack_held = (rack, early)  # §5: our PRACK must carry the answer
            return True
        self._prack(attempt, rack, early, b"", now)
        return True

    def answered(self, attempt: Attempt, body: bytes, now: float) -> None:
        """The caller's PRACK answered the offer in the vendor's reliable 18x: our held
        PRACK goes with ``body`` (rewritten by rtpengine when anchored)."""
        held, attempt.prack_held = attempt.prack_held, None
        attempt.early_answered, attempt.early_sdp = True, body
        if held is not None and not attempt.done:
            self._prack(attempt, held[0], held[1], body, now)

    def _prack(self, attempt: Attempt, rack: str, early: Dialog, body: bytes, now: float) -> None:
        headers = [("RAck", rack)]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        via = self.out.via(attempt.target, early)
        prack = early.request("PRACK", via, None, headers=headers, body=body)
        self.out.send(prack, early.destination(), now, ctx=None)

    # --- toward the caller: we are PRACKed ----------------------------------------------------

    def reliably(self, call: Call, resp: Response, body: bytes) -> bool:
        """Should this 18x reach the caller reliably? One that requires 100rel gets them
        all; one that supports it the vendor's reliable ones, and those with the answer to
        its offer. An unreliable 18x's SDP after a late offer is no offer (RFC 3261
        §13.2.1: a preview; the 2xx brings the offer): made reliable, the caller would
        take it as one and answer it in a PRACK nobody would read."""
        c = call.reliable
        if c is None or resp.status == 100:
            return False
        answer = bool(body) and bool(call.a_invite.body)
        return c.requires or (c.supports and (rseq_of(resp) is not None or answer))

    def hold(self, call: Call, send: Callable[[float], None], final_2xx: bool) -> bool:
        """Must ``send`` wait for the PRACK of the provisional in flight? The next reliable
        provisional does (§3), and so does a 2xx after one with SDP."""
        c = call.reliable
        if c is None or c.pending is None:
            return False
        if final_2xx and not c.pending.body:
            return False
        c.waiting.append(send)
        return True

    def send(self, call: Call, tx: ServerTransaction, resp: Response, now: float) -> None:
        """Send ``resp`` (built with ``headers``) and keep it until its PRACK."""
        c = call.reliable
        assert c is not None
        c.pending, c.call = resp, call
        c.interval = self.t1
        c.given_up = now + 64 * self.t1
        self.out.relay_response(tx, resp, now)
        c.handle = self._timers.arm(now + c.interval, c, "again", self)

    def headers(self, call: Call) -> list[tuple[str, str]]:
        """Require and the next RSeq, for a provisional about to go reliably."""
        c = call.reliable
        assert c is not None
        c.rseq += 1
        return [("Require", "100rel"), ("RSeq", str(c.rseq))]

    def _timer_again(self, c: ReliableLeg, now: float) -> None:
        c.handle = None
        call = c.call
        if c.pending is None or call is None or call.cancelled:
            return
        if call.state not in ("routing", "answered"):  # (answered: its 2xx may be waiting)
            return
        if now >= c.given_up:  # §3: never PRACKed; the call goes on (the 2xx is not held)
            c.pending = None
            self._release(c, now)
            return
        self.out.relay_response(call.a_tx, c.pending, now)
        c.interval *= 2
        c.handle = self._timers.arm(now + c.interval, c, "again", self)

    def prack(
        self, call: Call, tx: ServerTransaction, req: Request, now: float, answer: bool = True
    ) -> Response | None:
        """The caller's PRACK: 200 if its RAck names the provisional we await (§3), else
        481; what waited for it goes out. Returns the provisional it acknowledged.
        ``answer`` False: the 200 is the caller's (its PRACK brings an offer, §5)."""
        c = call.reliable
        rack = (req.get("RAck") or "").split()
        pending = c.pending if c is not None else None
        if (
            c is None
            or pending is None
            or len(rack) != 3
            or rack[0] != str(c.rseq)
            or rack[1] != str(call.a_invite.cseq)
            or rack[2].upper() != "INVITE"
        ):
            self.out.respond(tx, 481, now, tag=False)
            return None
        if answer:
            self.out.respond(tx, 200, now, tag=False)
        self._timers.cancel(c.handle)
        c.handle, c.pending = None, None
        self._release(c, now)
        return pending

    def _release(self, c: ReliableLeg, now: float) -> None:
        waiting, c.waiting = c.waiting, []
        for i, send in enumerate(waiting):
            send(now)
            if c.pending is not None:  # it sent a reliable one again: the rest wait
                c.waiting.extend(waiting[i + 1 :])
                return

    def ended(self, call: Call) -> None:
        c = call.reliable
        if c is not None:
            self._timers.cancel(c.handle)
            c.handle, c.call, c.pending = None, None, None
            c.waiting.clear()
