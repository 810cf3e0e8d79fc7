"""A call whose media stopped: rtpengine's RTP timeout ends it as a dead session timer
does. Pure.

With ``node.media.rtp_timeout`` set, an answered call anchored at rtpengine is asked about
(ng ``query``) once that many seconds have passed since its answer, and then again that
long after the last packet rtpengine relayed. No packet for ``rtp_timeout`` seconds, or the
call gone from rtpengine (its own ``--timeout`` deleted it): BYE on both legs, ``hangup:
sbc``, reason ``media_timeout``. An rtpengine that does not answer ends no call: the next
check is one ``rtp_timeout`` later.

    caller          sbc               rtpengine            vendor
      |  (no RTP)    |--query---------->|                     |
      |              |<--last packet: T-|   now - T >= rtp_timeout
      |<--BYE--------|---------------------------------BYE--->|
"""

from __future__ import annotations

from typing import Protocol

from media import ng
from sbc.call.media import Media, Reply
from sbc.call.model import Call, Hangup
from sbc.call.outbox import Outbox
from sbc.sip.timers import TimerHeap


class Host(Protocol):
    def hang_up(self, call: Call, side: Hangup, now: float, *, reason: str = "") -> None: ...


class MediaWatch:
    def __init__(self, out: Outbox, media: Media, host: Host, timers: TimerHeap) -> None:
        self.out = out
        self.media = media
        self.host = host
        self._timers = timers

    def start(self, call: Call, now: float) -> None:
        """The call is answered: its first look is one rtp_timeout away."""
        limit = call.snap.config.node.media.rtp_timeout
        if limit and call.answered is not None and call.answered.anchored:
            call.media_watch = self._timers.arm(now + limit, call, "media_check", self)

    def ended(self, call: Call) -> None:
        self._timers.cancel(call.media_watch)
        call.media_watch = None

    def _timer_media_check(self, call: Call, now: float) -> None:
        call.media_watch = None
        if call.state == "answered" and call.anchored:
            cmd = ng.query(call.id, call.a_tag)
            self.media.ask(call, cmd, lambda r, now: self._checked(call, r, now), True, raw=True)

    def _checked(self, call: Call, reply: Reply, now: float) -> None:
        if call.state != "answered":
            return
        limit = call.snap.config.node.media.rtp_timeout
        if reply is None:  # rtpengine away: that is no reason to end a call
            call.media_watch = self._timers.arm(now + limit, call, "media_check", self)
            return
        if reply.get(b"result") != b"ok":  # rtpengine no longer has the call
            self._end(call, now, "gone")
            return
        answered = (now if call.answered_at is None else call.answered_at) + self.out.wall_offset
        last = max(float(ng.last_packet(reply)), answered)
        idle = now + self.out.wall_offset - last
        if idle >= limit:
            self._end(call, now, f"no RTP for {idle:.0f} s")
            return
        call.media_watch = self._timers.arm(now + limit - idle, call, "media_check", self)

    def _end(self, call: Call, now: float, why: str) -> None:
        self.out.notice("call.media_timeout", call, detail=why)
        call.reason = "media_timeout"
        self.host.hang_up(call, "sbc", now, reason="Media Timeout")
