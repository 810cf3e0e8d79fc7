"""Session timers (RFC 4028), negotiated on each leg on its own. Pure.

A B2BUA has two sessions to keep alive, so each leg gets its interval and its refresher
from its own peer and its trunk group's ``session_timer``: the caller's leg as the UAS of
its INVITE (§9), the vendor's as the UAC of ours (§7; what our INVITE offers is
sbc.call.headers.session_offer). Where we are the refresher we send
an UPDATE at half the interval (a re-INVITE with the SDP we last sent that leg when the
peer does not allow UPDATE, §7.4); where the peer is, a successful re-INVITE or UPDATE
must arrive before the interval ends less min(32, interval/3) s (§10). If none does, or a
refresh of ours gets 408 or 481, the call ends with BYE on both legs (``hangup: sbc``,
reason ``session_timer``): a call whose peer vanished stops holding its port.

    caller            sbc                         vendor
      |--INVITE------->|--INVITE------------------>|  Supported: timer
      |  SE: 90        |  SE: 1800;refresher=uac   |  (the vendor's trunk group asks)
      |                |<-200 SE: 1800;refresher=uac|  we refresh this leg
      |<--200 SE: 90;refresher=uac, Require: timer  |  the caller refreshes its own
      |   ...no refresh from the caller for 90 - 30 s...
      |<--BYE----------|--BYE--------------------->|
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sbc.call.model import Call, Headers, Leg, Session
from sbc.call.outbox import Outbox
from sbc.config.schema import SessionTimer
from sbc.sip.message import Message, Request, Response, option_tags
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import ClientTransaction

MIN_SE = 90  # §4: the smallest interval anyone may ask for


class Host(Protocol):
    def hang_up(
        self, call: Call, side: Any, now: float, *, skip: Leg | None = None, reason: str = ""
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class TooSmall:
    """The caller's Session-Expires is below our Min-SE: 422 with it (§9)."""

    min_se: int


@dataclass(slots=True, eq=False)
class Refresh:
    """Our refresh of a leg, awaiting its answer (a transaction's context)."""

    session: Session


def supports(msg: Message) -> bool:
    return "timer" in option_tags(msg, "Supported") or "timer" in option_tags(msg, "Require")


def parse_se(value: str | None) -> tuple[int, str] | None:
    """Session-Expires = delta-seconds *(;se-params): (interval, refresher or "")."""
    if not value:
        return None
    head, *params = value.split(";")
    head = head.strip(" \t")
    if not head.isdigit() or len(head) > 9:
        return None
    refresher = ""
    for p in params:
        k, _, v = p.partition("=")
        if k.strip(" \t").lower() == "refresher":
            refresher = v.strip(" \t").lower()
    return int(head), refresher if refresher in ("uac", "uas") else ""


def _min_se(msg: Message) -> int:
    value = (msg.get("Min-SE") or "").split(";")[0].strip(" \t")
    return int(value) if value.isdigit() and len(value) < 10 else MIN_SE


def as_uas(req: Request, cfg: SessionTimer) -> Session | TooSmall | None:
    """The caller's leg: the interval and refresher we answer its INVITE with, a 422, or
    no timer (neither side asked)."""
    asked = parse_se(req.get("Session-Expires"))
    if asked is None and not cfg.expires:
        return None  # the usual case, decided without reading more headers
    peer = supports(req)
    floor = max(cfg.min_se, _min_se(req))
    if asked is not None:
        interval, refresher = asked
        if interval < cfg.min_se:
            return TooSmall(cfg.min_se)
        if cfg.expires and cfg.expires < interval:  # §9: we may lower it, not below Min-SE
            interval = max(cfg.expires, floor)
        ours = refresher == "uas" or (not refresher and not peer)
        return Session("a", interval, ours, peer)
    if cfg.expires:  # §9: it did not ask, we do; a caller without the extension is ours
        return Session("a", max(cfg.expires, floor), not peer, peer)
    return None


def as_uac(resp: Response, cfg: SessionTimer) -> Session | None:
    """The vendor's leg, from its 2xx (§7.2): its refresher, or ours unilaterally when it
    did not take part but the trunk group asked for a timer."""
    agreed = parse_se(resp.get("Session-Expires"))
    if agreed is not None:
        interval, refresher = agreed
        return Session("b", max(interval, MIN_SE), refresher != "uas", True)
    if cfg.expires:
        return Session("b", max(cfg.expires, cfg.min_se), True, False)
    return None


def retry_headers(resp: Response, cfg: SessionTimer) -> Headers | None:
    """A vendor's 422 (§7.4): our INVITE again with its Min-SE; None if it asks for more
    than a day or did not say what it wants."""
    wanted = _min_se(resp)
    if resp.get("Min-SE") is None or wanted > 86400:
        return None
    interval = max(wanted, cfg.expires)
    return [("Session-Expires", str(interval)), ("Min-SE", str(wanted))]


def answer_headers(s: Session | None) -> Headers:
    """On our 2xx to a leg's INVITE or UPDATE: the interval and who refreshes, relative to
    that request (uac = its sender, the peer)."""
    if s is None:
        return []
    out = [("Session-Expires", f"{s.interval};refresher={'uas' if s.ours else 'uac'}")]
    if s.peer_supports:
        out.append(("Require", "timer"))
    return out


def request_headers(s: Session | None) -> Headers:
    """On a re-INVITE or UPDATE we send on a leg (uac = us, the sender)."""
    if s is None:
        return []
    refresher = "uac" if s.ours else "uas"
    return [("Supported", "timer"), ("Session-Expires", f"{s.interval};refresher={refresher}")]


class SessionTimers:
    """Arms each leg's timer and acts on it, on the controller's heap."""

    def __init__(self, out: Outbox, host: Host, timers: TimerHeap) -> None:
        self.out = out
        self.host = host
        self._timers = timers

    def start(self, call: Call, now: float) -> None:
        """The call is answered: both legs' timers run from now."""
        for s in call.sessions.values():
            s.call = call
            self._arm(s, now)

    def refreshed(self, call: Call, now: float) -> None:
        """A re-INVITE or UPDATE succeeded across the call: both sessions are refreshed."""
        for s in call.sessions.values():
            self._arm(s, now)

    def ended(self, call: Call) -> None:
        for s in call.sessions.values():
            self._timers.cancel(s.handle)
            s.handle = None
            s.call = None

    def _arm(self, s: Session, now: float) -> None:
        self._timers.cancel(s.handle)
        if s.ours:
            s.handle = self._timers.arm(now + s.interval / 2, s, "refresh", self)
        else:
            grace = min(32, s.interval / 3)
            s.handle = self._timers.arm(now + s.interval - grace, s, "expire", self)

    def _timer_expire(self, s: Session, now: float) -> None:
        s.handle = None
        call = s.call
        if call is not None and call.state == "answered":
            self.out.notice("call.session_expired", call, leg=s.leg, interval=s.interval)
            self._end(call, now)

    def _end(self, call: Call, now: float) -> None:
        call.reason = "session_timer"
        self.host.hang_up(call, "sbc", now, reason="Session Timer")

    def _timer_refresh(self, s: Session, now: float) -> None:
        """Half the interval is gone on a leg we refresh: UPDATE (or re-INVITE) it."""
        s.handle = None
        call = s.call
        if call is None or call.state != "answered":
            return
        dialog = call.a_dialog if s.leg == "a" else call.b_dialog
        if dialog is None:
            return
        transport = call.source.transport if s.leg == "a" else dialog.peer.transport
        method = "UPDATE" if s.update or not s.sdp else "INVITE"
        body = s.sdp if method == "INVITE" else b""
        extra = request_headers(s)
        if body:
            extra = [*extra, ("Content-Type", "application/sdp")]
        req = dialog.request(
            method,
            self.out.via(transport, dialog),
            self.out.contact(transport, dialog=dialog),
            headers=extra,
            body=body,
        )
        self.out.send(req, dialog.destination(), now, ctx=Refresh(s))
        # Until its answer comes, the session still ends at its interval (§10).
        s.handle = self._timers.arm(now + s.interval / 2, s, "expire", self)

    def response(self, ref: Refresh, resp: Response, tx: ClientTransaction, now: float) -> None:
        """The answer to our refresh: 2xx renews the leg (and is ACKed if it was an INVITE);
        408 or 481 means the peer is gone (§10); anything else leaves the session as it is
        until it expires."""
        s, call = ref.session, ref.session.call
        if resp.status < 200 or call is None:
            return
        dialog = call.a_dialog if s.leg == "a" else call.b_dialog
        if tx.request.method == "INVITE" and resp.status < 300 and dialog is not None:
            ack = dialog.request(
                "ACK", self.out.via(dialog.peer, dialog), None, cseq=tx.request.cseq
            )
            self.out.ack(ack, dialog.destination())
        if call.state != "answered":
            return
        if resp.status < 300:
            agreed = parse_se(resp.get("Session-Expires"))
            if agreed is not None:
                s.interval = max(agreed[0], MIN_SE)
            self._arm(s, now)
        elif resp.status in (408, 481):
            self.failed(ref, now)

    def failed(self, ref: Refresh, now: float) -> None:
        """Our refresh timed out or could not be sent."""
        call = ref.session.call
        if call is not None and call.state == "answered":
            self.out.notice("call.session_expired", call, leg=ref.session.leg, refresh="failed")
            self._end(call, now)


def allows_update(msg: Message) -> bool:
    return "update" in option_tags(msg, "Allow")


def sent(call: Call, leg: Leg, body: bytes) -> None:
    """We sent ``body`` (SDP) on ``leg``: a re-INVITE refresh would send it again."""
    s = call.sessions.get(leg)
    if s is not None and body:
        s.sdp = body
