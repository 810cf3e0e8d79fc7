"""RFC 3261 §17 timer values, in one frozen object passed to whoever needs them."""

from __future__ import annotations

import heapq
import itertools
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2 and T4 of RFC 3261 §17.1.1.1 / Table 4; every other timer derives from them."""

    t1: float = 0.5
    """RTT estimate: first retransmit interval (Timers A, E, G) and base of 64*T1."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum time a message stays in the network (Timers I and K)."""
    d: float = 32.0
    """Timer D: how long a completed INVITE client transaction absorbs retransmitted finals
    over UDP (at least 32 s, §17.1.1.2; 0 over reliable transports)."""

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L and M."""
        return 64 * self.t1


# "_timer_" + kind, made once per kind: a fresh name string per firing would be kept by
# CPython's type attribute cache (4096 entries), and each one pins an allocator arena that
# a burst of calls opened, long after the calls ended.
_HANDLERS: dict[str, str] = {}


def _handler(kind: str) -> str:
    name = _HANDLERS.get(kind)
    if name is None:
        name = _HANDLERS[kind] = sys.intern("_timer_" + kind)
    return name


TimerHandle = list[Any]  # [when, seq, obj, kind, owner]: what ``arm`` returns, ``cancel`` takes


class TimerHeap:
    """Deadlines for one pure layer: ``arm(when, obj, kind)`` schedules ``owner._timer_<kind>
    (obj, now)``; the I/O side asks ``next_deadline()`` and calls ``fire(now)``. Pieces of a
    layer that share its heap (so its timers fire in deadline order) pass themselves as the
    entry's ``owner``. A handler
    checks its object's state and ignores a stale timer, so most timers are simply left to
    run out; a long one (Max Call Duration, Timer C) is cancelled when its object ends, so the
    heap does not keep an ended call alive for hours. Cancelled entries drop their object at
    once and leave the heap when they reach its top, or when they are a third of it (checked
    on cancel and after firing: every answered call cancels its Timer C, 180 s out, and a
    held call's live entry, if any, must not keep that dead one in the heap)."""

    __slots__ = ("_cancelled", "_heap", "_owner", "_seq")

    def __init__(self, owner: object) -> None:
        self._owner = owner
        self._heap: list[TimerHandle] = []
        self._seq = itertools.count()
        self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def arm(self, when: float, obj: Any, kind: str, owner: object = None) -> TimerHandle:
        entry: TimerHandle = [when, next(self._seq), obj, kind, owner or self._owner]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: TimerHandle | None) -> None:
        """Forget a timer that has not fired; a fired or cancelled one is left alone."""
        if entry is None or not entry[3]:
            return
        entry[2], entry[3], entry[4] = None, "", None
        self._cancelled += 1
        self._compact()

    def _compact(self) -> None:
        """Drop cancelled entries once they are a third of the heap: O(n) every n/3
        cancellations, so O(1) per cancel, and at most half as many dead entries as live."""
        heap = self._heap
        if self._cancelled > 64 and 3 * self._cancelled > len(heap):
            heap[:] = [e for e in heap if e[3]]
            heapq.heapify(heap)
            self._cancelled = 0

    def purge(self) -> None:
        """Drop every cancelled entry now (a quiet node: sbc.memory.quiet). The few left below
        ``_compact``'s threshold would each pin an allocator arena of the burst that armed
        them; the heap's own list is rebuilt too, sized for what is left."""
        if self._cancelled:
            heap = [e for e in self._heap if e[3]]
            heapq.heapify(heap)
            self._heap = heap
            self._cancelled = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not heap[0][3]:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def fire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            kind = entry[3]
            if not kind:
                self._cancelled -= 1
                continue
            obj, owner = entry[2], entry[4]
            entry[2], entry[3], entry[4] = None, "", None  # fired: a later cancel() is a no-op
            getattr(owner, _handler(kind))(obj, now)
        self._compact()
