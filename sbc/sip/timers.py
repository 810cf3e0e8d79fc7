"""RFC 3261 §17 timer values, in one frozen object passed to whoever needs them."""

from __future__ import annotations

import heapq
import itertools
import sys
from collections import deque
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
    layer that share it (so its timers fire in deadline order) pass themselves as the
    entry's ``owner``. A handler checks its object's state and ignores a stale timer, so
    most timers are simply left to run out; a long one (Max Call Duration, Timer C) is
    cancelled when its object ends, so an ended call is not kept alive for hours.

    Most timers of a kind have one fixed delay (64*T1 for Timers B, F, H, J, L, M; T1 for
    the first retransmission), so they are armed in deadline order: each kind has a FIFO
    lane, O(1) to arm and to fire, and only an entry that would fall before its lane's last
    (a kind with varying delays) goes to a heap. A heap of every timer cost a list
    comparison per level per push and pop: perf put them at 9 % of a busy node's CPU.
    ``fire`` merges the lanes and the heap in deadline order.

    Cancelled entries drop their object at once and leave when they reach their lane's or
    the heap's head, or when they are a third of all entries (checked on cancel and after
    firing: every answered call cancels its Timer C, 180 s out, and a held call's live
    entry must not keep that dead one)."""

    __slots__ = ("_cancelled", "_count", "_heap", "_lanes", "_next", "_owner", "_seq")

    def __init__(self, owner: object) -> None:
        self._owner = owner
        self._heap: list[TimerHandle] = []
        self._lanes: dict[str, deque[TimerHandle]] = {}
        self._seq = itertools.count()
        self._cancelled = 0
        self._count = 0  # entries held, cancelled ones included
        self._next: float | None = None  # the earliest live deadline; None: to be found

    def __len__(self) -> int:
        return self._count - self._cancelled

    def arm(self, when: float, obj: Any, kind: str, owner: object = None) -> TimerHandle:
        entry: TimerHandle = [when, next(self._seq), obj, kind, owner or self._owner]
        lane = self._lanes.get(kind)
        if lane is None:
            lane = self._lanes[kind] = deque()
        if not lane or lane[-1][0] <= when:
            lane.append(entry)
        else:
            heapq.heappush(self._heap, entry)
        self._count += 1
        if self._count == 1 or (self._next is not None and when < self._next):
            self._next = when
        return entry

    def cancel(self, entry: TimerHandle | None) -> None:
        """Forget a timer that has not fired; a fired or cancelled one is left alone."""
        if entry is None or not entry[3]:
            return
        entry[2], entry[3], entry[4] = None, "", None
        self._cancelled += 1
        if entry[0] == self._next:
            self._next = None
        self._compact()

    def _compact(self) -> None:
        """Drop cancelled entries once they are a third of all: O(n) every n/3
        cancellations, so O(1) per cancel, and at most half as many dead entries as live."""
        if self._cancelled > 64 and 3 * self._cancelled > self._count:
            self.purge()

    def purge(self) -> None:
        """Drop every cancelled entry now (a quiet node: sbc.memory.quiet). The few left below
        ``_compact``'s threshold would each pin an allocator arena of the burst that armed
        them; the lists are rebuilt too, sized for what is left."""
        if self._cancelled:
            heap = [e for e in self._heap if e[3]]
            heapq.heapify(heap)
            self._heap = heap
            self._lanes = {k: deque(e for e in q if e[3]) for k, q in self._lanes.items() if q}
            self._count -= self._cancelled
            self._cancelled = 0

    def _lane_head(self, lane: deque[TimerHandle]) -> TimerHandle | None:
        """A lane's first live entry, dropping the cancelled ones before it."""
        while lane:
            if lane[0][3]:
                return lane[0]
            lane.popleft()
            self._cancelled -= 1
            self._count -= 1
        return None

    def _heap_head(self) -> TimerHandle | None:
        """The heap's first live entry, dropping the cancelled ones before it."""
        heap = self._heap
        while heap:
            if heap[0][3]:
                return heap[0]
            heapq.heappop(heap)
            self._cancelled -= 1
            self._count -= 1
        return None

    def next_deadline(self) -> float | None:
        if self._next is None and self._count > self._cancelled:
            first = self._heap_head()
            best = first[0] if first is not None else None
            for lane in self._lanes.values():
                head = self._lane_head(lane)
                if head is not None and (best is None or head[0] < best):
                    best = head[0]
            self._next = best
        return self._next if self._count > self._cancelled else None

    def fire(self, now: float) -> None:
        if self._next is not None and self._next > now:
            return
        while True:
            due: list[TimerHandle] = []
            sources = 0
            for lane in self._lanes.values():
                head = self._lane_head(lane)
                if head is not None and head[0] <= now:
                    sources += 1
                    while lane and lane[0][0] <= now:
                        due.append(lane.popleft())
            head = self._heap_head()
            if head is not None and head[0] <= now:
                sources += 1
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
            if not due:
                break
            self._count -= len(due)
            if sources > 1:
                due.sort(key=_order)
            for entry in due:
                kind = entry[3]
                if not kind:  # cancelled, or by a handler that fired before it
                    self._cancelled -= 1
                    continue
                obj, owner = entry[2], entry[4]
                entry[2], entry[3], entry[4] = None, "", None  # fired: a later cancel is a no-op
                getattr(owner, _handler(kind))(obj, now)
        self._next = None
        self._compact()


def _order(entry: TimerHandle) -> tuple[float, int]:
    return entry[0], entry[1]
