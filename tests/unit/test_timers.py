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
    assert heap._count == 10 and len(heap) == 4
    heap.purge()
    assert heap._count == 4 and len(heap) == 4 and heap.next_deadline() == 6.0
    heap.cancel(entries[0])  # already cancelled: still a no-op
    heap.fire(100.0)
    assert owner.fired == [("t6", 100.0), ("t7", 100.0), ("t8", 100.0), ("t9", 100.0)]
    assert len(heap) == 0 and heap.next_deadline() is None
    heap.purge()  # nothing cancelled: nothing to do


class Mixed:
    """Records every firing of three kinds; ``chain`` arms another due timer when fired."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, float]] = []
        self.heap = TimerHeap(self)

    def _timer_a(self, obj: str, now: float) -> None:
        self.fired.append((obj, now))

    _timer_b = _timer_a

    def _timer_chain(self, obj: str, now: float) -> None:
        self.fired.append((obj, now))
        self.heap.arm(now, obj + "+", "a")


def test_kinds_fire_in_deadline_order_across_lanes_and_the_heap() -> None:
    """Each kind's FIFO lane takes the timers armed in deadline order; one that would fall
    before its lane's last goes to the heap. Firing merges them: deadline order, equal
    deadlines in the order armed."""
    m = Mixed()
    h = m.heap
    h.arm(10.0, "a10", "a")
    h.arm(30.0, "a30", "a")
    h.arm(20.0, "a20", "a")  # before its lane's last: the heap
    h.arm(15.0, "b15", "b")
    h.arm(20.0, "b20", "b")  # the same deadline as a20, armed after it
    h.arm(5.0, "b5", "b")  # the heap too
    assert len(h) == 6 and h.next_deadline() == 5.0
    h.fire(4.9)
    assert m.fired == []
    h.fire(25.0)
    assert [name for name, _ in m.fired] == ["b5", "a10", "b15", "a20", "b20"]
    assert len(h) == 1 and h.next_deadline() == 30.0


def test_cancelling_the_earliest_moves_the_next_deadline() -> None:
    m = Mixed()
    first = m.heap.arm(1.0, "x", "a")
    m.heap.arm(2.0, "y", "b")
    assert m.heap.next_deadline() == 1.0
    m.heap.cancel(first)
    assert m.heap.next_deadline() == 2.0 and len(m.heap) == 1
    m.heap.fire(3.0)
    assert m.fired == [("y", 3.0)] and m.heap.next_deadline() is None


def test_a_timer_armed_due_by_a_handler_fires_in_the_same_call() -> None:
    m = Mixed()
    m.heap.arm(1.0, "c", "chain")
    m.heap.fire(1.0)
    assert m.fired == [("c", 1.0), ("c+", 1.0)] and len(m.heap) == 0
