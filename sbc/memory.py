"""What the node holds in memory, for the admin endpoint's ``/memory`` and lab/memcheck.

RSS alone cannot tell a leak from an allocator that keeps freed pages: this counts the live
objects of the call path's own types (a walk of the collector's lists, a few ms per 100k
objects: fine for an admin request, never done on the call path) next to the sizes of the
maps that hold them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from sbc.sip import parser
from sbc.sip.timers import TimerHeap

if TYPE_CHECKING:
    from sbc.call.controller import CallController
    from sbc.hep import Capture
    from sbc.sip.transaction import TransactionLayer
    from sbc.trace import Ring

COUNTED = frozenset(
    (
        "Call",
        "Attempt",
        "Relay",
        "Dialog",
        "ClientTransaction",
        "ServerTransaction",
        "Request",
        "Response",
    )
)


TOP_TYPES = 15  # types listed by /memory's census
TRIM_AFTER = 1000  # calls + transactions held at once since the last trim that make a trim
TRIM_EVERY = 60.0  # seconds between trims while the node still holds something


class TrimPolicy:
    """When to hand the memory a burst used back to the system. Fed the node's load (calls
    plus transactions held) once per check, with the time. After a peak of at least
    ``after``: once the node holds nothing, at once; before that, when the load fell to a
    tenth of its peak since the last trim, at most once per ``every`` seconds (each trim is a
    full collection: not for every check of a node that stays busy)."""

    def __init__(self, after: int = TRIM_AFTER, every: float = TRIM_EVERY) -> None:
        self.after = after
        self.every = every
        self.peak = 0
        self.busy = False  # a peak of ``after`` since the node last held nothing
        self.last = float("-inf")

    def check(self, load: int, now: float) -> bool:
        self.peak = max(self.peak, load)
        self.busy = self.busy or self.peak >= self.after
        if not load:
            trim, self.busy, self.peak = self.busy, False, 0
        else:
            trim = self.peak >= self.after and load * 10 <= self.peak
            trim = trim and now - self.last >= self.every
            if trim:
                self.peak = load
        if trim:
            self.last = now
        return trim


def _libc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _libc_trim()


def trim() -> tuple[int, int]:
    """glibc's malloc_trim(0): free pages in the C heap go back to the system (message
    buffers, large dicts and lists live there; pymalloc's arenas return by themselves when
    empty). RSS before and after, in kB; a no-op where there is no glibc."""
    before = rss_kb()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
    return before, rss_kb()


def compact(maps: list[dict[Any, Any]]) -> None:
    """A dict never shrinks its table when entries go: one that held 10,000 calls keeps room
    for them. Re-filled after ``clear()`` (which frees the table), it is sized for what it
    holds now; the same object, so whoever shares it is unaffected."""
    for m in maps:
        kept = m.copy()
        m.clear()
        m.update(kept)


def quiet(
    controller: CallController, layer: TransactionLayer, trace: Ring | None = None
) -> tuple[int, int]:
    """A busy node gone quiet gives memory back (TrimPolicy says when). CPython returns an
    allocator arena (1 MiB) only once every object in it is gone, so what outlives a burst
    of calls pins the burst's arenas: the parser's caches are emptied, the call path's maps
    compacted, cancelled timers dropped, the type attribute cache cleared (it keeps each name
    looked up), a full collection, the trace ring repacked, then ``trim()`` for the C
    heap. RSS before and after, in kB."""
    before = rss_kb()
    parser.forget_recent()
    compact(_maps(controller, layer))
    for owner in (controller, layer):
        heap = getattr(owner, "_timers", None)
        if isinstance(heap, TimerHeap):
            heap.purge()
    sys._clear_type_cache()
    gc.collect()  # the garbage in cycles goes first: the ring is rebuilt in what is left
    if trace is not None:
        trace.repack()
    return before, trim()[1]


async def keep(
    controller: CallController, layer: TransactionLayer, log: Any, hep: Capture | None = None
) -> None:
    """Every 10 s: once a busy node's load dropped, give the memory it used back
    (TrimPolicy, quiet), logged as memory.trimmed."""
    policy = TrimPolicy()
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(10.0)
        load = len(controller.calls) + sum(layer.counts)
        if policy.check(load, loop.time()):
            before, after = quiet(controller, layer, hep.trace if hep is not None else None)
            log.info("memory.trimmed", rss_kb_before=before, rss_kb_after=after, load=load)


# The maps that hold per-call and per-transaction entries, by owner attribute and name (the
# controller's calls and dialogs are new dicts once its last call ends).
_MAPS = (
    ("blegs", ("correlation",)),
    ("gate", ("held",)),
    ("intake", ("_leases",)),
    ("media", ("_pending",)),
    ("out", ("_contacts",)),
)
_LAYER_MAPS = ("_client", "_server", "_accepted")


def _maps(controller: CallController, layer: TransactionLayer) -> list[dict[Any, Any]]:
    found: list[Any] = [getattr(layer, name, None) for name in _LAYER_MAPS]
    for owner, names in _MAPS:
        obj = getattr(controller, owner)
        found += [getattr(obj, name, None) for name in names]
    return [m for m in found if isinstance(m, dict)]


def rss_kb() -> int:
    """Resident set size from /proc (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def report(controller: CallController, layer: TransactionLayer) -> dict[str, Any]:
    everything: Counter[str] = Counter(type(obj).__name__ for obj in gc.get_objects())
    live = {name: everything[name] for name in COUNTED}
    client, server = layer.counts
    states = Counter(call.state for call in controller.calls.values())
    return {
        "rss_kb": rss_kb(),
        "live_objects": {name: live[name] for name in sorted(COUNTED)},
        # what else the collector tracks, most numerous first: a leak shows up here by type
        "top_types": dict(everything.most_common(TOP_TYPES)),
        "allocated_blocks": sys.getallocatedblocks(),
        "calls": len(controller.calls),
        "call_states": dict(sorted(states.items())),
        "transaction_states": layer.states(),
        "dialogs": len(controller.dialogs),
        "transactions": {"client": client, "server": server},
        "timers": {"controller": controller.timers_pending, "transactions": layer.timers_pending},
        "lockout_entries": controller.gate.lockout.size,
        "gc": {"counts": list(gc.get_count()), "frozen": gc.get_freeze_count()},
    }


def tune_gc() -> None:
    """Calls are short-lived object graphs freed mostly by reference counting: keep the
    long-lived startup heap out of the cyclic collector and run it less often, so a full
    collection does not stall the loop while datagrams queue up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
