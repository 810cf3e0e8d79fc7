"""RFC 3261 §17 timer values, in one frozen object passed to whoever needs them."""

from __future__ import annotations

import heapq
import itertools
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

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L and M."""
        return 64 * self.t1


class TimerHeap:
    """Deadlines for one pure layer: ``arm(when, obj, kind)`` schedules ``owner._timer_<kind>
    (obj, now)``; the I/O side asks ``next_deadline()`` and calls ``fire(now)``. Entries are
    never removed early: a handler checks its object's state and ignores a stale timer."""

    __slots__ = ("_heap", "_owner", "_seq")

    def __init__(self, owner: object) -> None:
        self._owner = owner
        self._heap: list[tuple[float, int, Any, str]] = []
        self._seq = itertools.count()

    def arm(self, when: float, obj: Any, kind: str) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), obj, kind))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def fire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, obj, kind = heapq.heappop(heap)
            getattr(self._owner, "_timer_" + kind)(obj, now)
