"""The per-call SIP trace ring behind `sbc ctl call ID`: for each recent call, the first line
of its last ``per_call`` messages on both legs, keyed by the A-leg's Call-ID (the HEP
correlation id, sbc.hep.Capture). Pure and bounded: at most ``calls`` calls, the one heard
from least recently dropped first, so a call in progress stays while it speaks."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

CALLS = 1000  # calls kept: with 32 lines each, a few MB at most

Entry = tuple[float, bool, str, str, str]  # (wall time, inbound, peer, Call-ID, first line)


class Ring:
    def __init__(self, per_call: int, calls: int = CALLS) -> None:
        self.per_call = per_call
        self.calls = calls
        self.rings: OrderedDict[str, deque[Entry]] = OrderedDict()

    def add(self, correlation: str, entry: Entry) -> None:
        ring = self.rings.get(correlation)
        if ring is None:
            ring = self.rings[correlation] = deque(maxlen=self.per_call)
            if len(self.rings) > self.calls:
                self.rings.popitem(last=False)
        else:
            self.rings.move_to_end(correlation)
        ring.append(entry)

    def ladder(self, correlation: str) -> list[dict[str, Any]]:
        """The call's messages, oldest first; leg ``a`` carries the correlation id itself."""
        return [
            {
                "time": t,
                "direction": "in" if inbound else "out",
                "peer": peer,
                "leg": "a" if cid == correlation else "b",
                "sip_call_id": cid,
                "message": line,
            }
            for t, inbound, peer, cid, line in self.rings.get(correlation, ())
        ]


def first_line(data: bytes) -> str:
    end = data.find(b"\r\n", 0, 512)
    return data[: end if end >= 0 else 200].decode("utf-8", "replace")
