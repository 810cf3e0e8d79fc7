"""The rtpengine side of calls: which ng command each SIP event needs, and their order. Pure.

Commands go out through the Outbox as ``MediaCommand``s and come back with ``reply``. SIP
for a call waits, in order, behind its command in flight (``busy``/``later``), so a 180
never overtakes the 183 whose SDP is being rewritten, and a call is not forgotten while an
answer is due. A failed attempt's branch (its ``via-branch``) is deleted only once the next
attempt's branch exists (``free_stale``): rtpengine deletes the whole call with its last
branch, and a delete racing the next offer could take that one too.

    SIP                                   ng (README, Media through rtpengine)
    caller's INVITE with SDP              offer   (from-tag caller, via-branch call.n)
    vendor's 18x/2xx with SDP             answer  (to-tag vendor), or offer (late offer)
    re-INVITE / UPDATE with SDP           offer from the sender, answer on its 2xx
    a failed attempt, once a later        delete of its via-branch only
      branch exists
    the call ends                         delete; its counters go into the record
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

from media import ng, sdp
from media.ng import MediaCommand
from sbc.call.model import Attempt, Call, Leg
from sbc.call.outbox import Outbox
from sbc.sip.message import Response

Reply = dict[bytes, Any] | None  # rtpengine's ok reply, or None: no node answered, or it refused
Then = Callable[[Reply, float], None]


def sdp_of(reply: Reply) -> bytes | None:
    body = reply.get(b"sdp") if reply is not None else None
    return body if isinstance(body, bytes) else None


def rejects(call: Call) -> bool:
    """node.media.on_failure is reject: a call whose media cannot be anchored fails (503)."""
    return call.snap.config.node.media.on_failure == "reject"


class Media:
    """The ng commands in flight, for all calls."""

    def __init__(self, out: Outbox) -> None:
        self.out = out
        self._tokens = itertools.count(1)
        self._pending: dict[int, tuple[Call, Then, bool]] = {}
        self._raw: set[int] = set()  # tokens whose ``then`` takes any reply (``ask``)
        self.failures: Counter[str] = Counter()  # unavailable | error

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def ask(
        self, call: Call, cmd: dict[str, Any], then: Then, cleanup: bool = False, raw: bool = False
    ) -> None:
        """Send ``cmd``; ``then(reply, now)`` runs with its ok reply (or None). A ``cleanup``
        (a failed attempt's branch delete) holds nothing up, and its error after the call's
        own delete is expected: rtpengine may run the two in either order. ``raw``: ``then``
        gets an error reply too (a query's "unknown call" is an answer), and no notice."""
        token = next(self._tokens)
        if raw:
            self._raw.add(token)
        self._pending[token] = (call, then, cleanup)
        call.media_busy += not cleanup
        self.out.commands.append(MediaCommand(token, call.id, cmd))

    def reply(self, token: int, reply: Reply, now: float) -> None:
        """rtpengine's reply to a MediaCommand (None: no node answered): run its ``then``,
        then the SIP that waited behind it."""
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        call, then, cleanup = entry
        call.media_busy -= not cleanup
        if token in self._raw:
            self._raw.discard(token)
            then(reply, now)
            return
        ok = reply is not None and reply.get(b"result") == b"ok"
        if reply is not None:
            call.media_used = True
        if not ok and cleanup and call.media_deleted and reply is not None:
            ok = True  # it lost the race to the call's own delete: nothing was left to free
        if not ok:
            why = "unavailable" if reply is None else "error"
            self.failures[why] += 1
            detail = reply.get(b"error-reason", b"") if reply is not None else b""
            self.out.notice(
                "media.failed",
                call,
                reason=why,
                error=detail.decode("utf-8", "replace") if isinstance(detail, bytes) else "",
                action=call.snap.config.node.media.on_failure,
            )
        then(reply if ok else None, now)
        while not call.media_busy and call.media_queue:
            step, *rest = call.media_queue
            call.media_queue = tuple(rest)
            step(now)

    @staticmethod
    def busy(call: Call) -> bool:
        return bool(call.media_busy or call.media_queue)

    @staticmethod
    def later(call: Call, step: Callable[[float], None]) -> None:
        """Run ``step(now)`` once the call's commands in flight have their answers."""
        call.media_queue += (step,)

    def free_stale(self, call: Call) -> None:
        """The current attempt's branch exists at rtpengine: delete the failed attempts'
        branches, which now cannot be the call's last."""
        if not call.media_deleted:  # else the call's own delete took them
            for branch in call.stale_branches:
                cmd = ng.delete(call.id, call.a_tag, branch=branch)
                self.ask(call, cmd, lambda reply, now: None, cleanup=True)
        call.stale_branches = ()

    # --- the commands -------------------------------------------------------------------------

    def offer_for(self, attempt: Attempt, then: Then) -> None:
        """The caller's offer, rewritten for this attempt's vendor, before its INVITE."""
        call = attempt.call
        body = call.a_invite.body
        flags = ng.offer_flags(call.a_side, attempt.b_side, sdp.codecs(body))
        self.ask(call, ng.offer(call.id, call.a_tag, body, flags, branch=attempt.branch), then)

    def vendor_sdp(
        self, attempt: Attempt, resp: Response, then: Callable[[bytes | None, float], None]
    ) -> None:
        """A vendor's SDP: the answer to the caller's offer, or with a late offer (INVITE
        without SDP) the vendor's own offer (RFC 3261 §13.2.1)."""
        call = attempt.call
        b_tag = resp.to.tag or ""
        if call.a_invite.body:
            flags = ng.answer_flags(attempt.b_side, call.a_side)
            cmd = ng.answer(call.id, call.a_tag, b_tag, resp.body, flags, branch=attempt.branch)
        else:
            flags = ng.offer_flags(attempt.b_side, call.a_side, sdp.codecs(resp.body))
            cmd = ng.offer(
                call.id, b_tag, resp.body, flags, to_tag=call.a_tag, branch=attempt.branch
            )

        def rewritten(reply: Reply, now: float) -> None:
            if reply is not None:
                self.free_stale(call)
            then(sdp_of(reply), now)

        self.ask(call, cmd, rewritten)

    def offer(
        self, call: Call, sender: Leg, body: bytes, then: Then, early: Attempt | None = None
    ) -> None:
        """A new offer in the dialog (re-INVITE, UPDATE; hold, resume, codec change), or
        the offer in a 2xx to an offerless re-INVITE, from ``sender`` to the other leg.
        ``early``: an UPDATE before the answer, in that attempt's early dialog and branch."""
        far: Leg = "b" if sender == "a" else "a"
        codecs = sdp.codecs(body)
        flags = ng.offer_flags(_side(call, sender, early), _side(call, far, early), codecs)
        cmd = ng.offer(
            call.id,
            _tag(call, sender, early),
            body,
            flags,
            to_tag=_tag(call, far, early),
            branch=early.branch if early is not None else "",
        )
        self.ask(call, cmd, then)

    def answer(
        self,
        call: Call,
        sender: Leg,
        offerer: Leg,
        body: bytes,
        then: Then,
        early: Attempt | None = None,
    ) -> None:
        """``sender``'s answer to the offer ``offerer`` made."""
        flags = ng.answer_flags(_side(call, sender, early), _side(call, offerer, early))
        cmd = ng.answer(
            call.id,
            _tag(call, offerer, early),
            _tag(call, sender, early),
            body,
            flags,
            branch=early.branch if early is not None else "",
        )
        self.ask(call, cmd, then)

    def delete(self, call: Call, then: Then) -> None:
        """The call ended: free its ports (the reply carries its counters)."""
        call.media_deleted = True
        self.ask(call, ng.delete(call.id, call.a_tag), then)


def _tag(call: Call, leg: Leg, early: Attempt | None) -> str:
    """A leg's monologue at rtpengine; before the answer the vendor's is the early dialog's."""
    if leg == "b" and early is not None:
        return (early.early.remote.tag or "") if early.early is not None else ""
    return call.tag(leg)


def _side(call: Call, leg: Leg, early: Attempt | None) -> ng.Side:
    return early.b_side if leg == "b" and early is not None else call.side(leg)
