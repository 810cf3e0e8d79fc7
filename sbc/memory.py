"""What the node holds in memory, for the admin endpoint's ``/memory`` and lab/memcheck.

RSS alone cannot tell a leak from an allocator that keeps freed pages: this counts the live
objects of the call path's own types (a walk of the collector's lists, a few ms per 100k
objects: fine for an admin request, never done on the call path) next to the sizes of the
maps that hold them.
"""

from __future__ import annotations

import gc
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sbc.call.controller import CallController
    from sbc.sip.transaction import TransactionLayer

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
    live: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in COUNTED:
            live[name] += 1
    client, server = layer.counts
    return {
        "rss_kb": rss_kb(),
        "live_objects": {name: live[name] for name in sorted(COUNTED)},
        "calls": len(controller.calls),
        "dialogs": len(controller.dialogs),
        "transactions": {"client": client, "server": server},
        "timers": {"controller": controller.timers_pending, "transactions": layer.timers_pending},
        "lockout_entries": controller.lockout.size,
        "gc": {"counts": list(gc.get_count()), "frozen": gc.get_freeze_count()},
    }
