"""sbc.sip.timers.TimerHeap: a quiet node's purge drops every cancelled entry (a few below
the compaction threshold would each pin an allocator arena); live timers fire as before."""

from __future__ import annotations

from sbc.sip.timers import TimerHeap


class Owner:
    def __init__(self) -> None:
        self.fired: list[tuple[str, float]] = []

    def _timer_ping(self, obj: str, now: float) -> None:
        self.fired.append((obj, now))


def test_purge_drops_cancelled_entries_and_keeps_live_ones() -> None:
    owner = Owner()
    heap = TimerHeap(owner)
    entries = [heap.arm(float(n), f"t{n}", "ping") for n in range(10)]
    for e in entries[:6]:  # six cancelled: under the compaction threshold (64), so kept
        heap.cancel(e)
    assert len(heap._heap) == 10 and len(heap) == 4
    heap.purge()
    assert len(heap._heap) == 4 and len(heap) == 4 and heap.next_deadline() == 6.0
    heap.cancel(entries[0])  # already cancelled: still a no-op
    heap.fire(100.0)
    assert owner.fired == [("t6", 100.0), ("t7", 100.0), ("t8", 100.0), ("t9", 100.0)]
    assert len(heap) == 0 and heap.next_deadline() is None
    heap.purge()  # nothing cancelled: nothing to do
