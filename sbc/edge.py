"""The first look at every message: who sent it, decided before we spend a parse on it. Pure.

With ``unknown_source: drop``, a message from an address that no trunk group has and no
registration is bound to is dropped on its source address and its first word alone: no
answer, so nothing is retransmitted and nothing is amplified toward a spoofed address, and
its 64 KB of headers cost one slice, not a parse. The one way in for a stranger is REGISTER,
and only while registration trunk groups exist (a PBX registers from wherever it is). A
source the registrar locked out (sbc.lockout) loses its REGISTERs and INVITEs the same way.

Drops are counted by reason (``sbc_sip_dropped_total``) and logged once per source address per
``LOG_EVERY`` seconds, the line saying how many were dropped since the last one, so a flood
leaves counters, not a journal full of lines. A source over ``node.flood`` (sbc.flood) is
banned and its packets dropped before even this screen: counted, never logged one by one.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

DropReason = Literal["unknown_source", "auth_blocked", "in_dialog", "flood"]
REASONS: tuple[DropReason, ...] = ("unknown_source", "auth_blocked", "in_dialog", "flood")
LOG_EVERY = 60.0  # seconds between two log lines about drops from one address
LOG_KEYS = 4096  # addresses remembered for that; a spoofed flood must not grow the map


def method_of(data: bytes) -> bytes:
    """The first word of a message: a request's method, or b"SIP/2.0" for a response
    (leading CRLFs skipped, RFC 3261 §7.5); b"" when there is none in the first 32 bytes."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b" ", start, start + 32)
    return data[start:end] if end > start else b""


class Drops:
    """What was dropped unanswered, by reason, and when each address was last logged."""

    def __init__(self) -> None:
        self.counts: Counter[DropReason] = Counter()
        self._logged: dict[str, list[float]] = {}  # host -> [last line at, drops since]
        self._pruned_at = float("-inf")

    def drop(self, reason: DropReason, host: str, now: float) -> int:
        """Count one drop; when it deserves a log line (the first from ``host`` in
        ``LOG_EVERY`` seconds), the number of drops from ``host`` that line stands for (this
        one and those since the last line); else 0."""
        self.counts[reason] += 1
        last = self._logged.get(host)
        if last is not None:
            last[1] += 1
            if now - last[0] < LOG_EVERY:
                return 0
            n = int(last[1])
            last[0], last[1] = now, 0.0
            return n
        if len(self._logged) >= LOG_KEYS:
            if now - self._pruned_at < 1.0:
                return 0  # too many strangers at once: the counter says how many
            self._pruned_at = now  # at most once a second, or a spoofed flood pays per packet
            self._logged = {h: t for h, t in self._logged.items() if now - t[0] < LOG_EVERY}
            if len(self._logged) >= LOG_KEYS:
                return 0
        self._logged[host] = [now, 0.0]
        return 1
