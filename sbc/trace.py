"""The per-call SIP trace ring behind `sbc ctl call ID`: for each recent call, the first line
of its last ``per_call`` messages on both legs, keyed by the A-leg's Call-ID (the HEP
correlation id, sbc.hep.Capture). Pure and bounded: at most ``calls`` calls, the one heard
from least recently dropped first, so a call in progress stays while it speaks.

Compact: a call's ladder is one ``bytearray`` of packed entries (time, direction, peer,
the Call-ID only when it is not the correlation id, the first line's bytes), decoded only
when asked for. Two objects per call instead of a deque and five per message: a ring of
1000 ladders is about a third of the size, and ``repack`` can move it (below)."""

from __future__ import annotations

import struct
from array import array
from collections import OrderedDict
from typing import Any

CALLS = 1000  # calls kept: with 32 lines each, a few MB at most
LINE = 200  # bytes of a first line kept when it has no CRLF in its first 512

# an entry: its length, wall time, inbound, peer's length, Call-ID's length (0: the
# correlation id itself, an A-leg message); then peer, Call-ID and first line, as bytes
_HEAD = struct.Struct("<HdBBH")
_COUNT = struct.Struct("<H")  # a ladder opens with its number of entries
_pack = _HEAD.pack


class Ring:
    def __init__(self, per_call: int, calls: int = CALLS) -> None:
        self.per_call = per_call
        self.calls = calls
        self.rings: OrderedDict[str, bytearray] = OrderedDict()

    def add(
        self, correlation: str, when: float, inbound: bool, peer: str, call_id: str, line: bytes
    ) -> None:
        """One message of call ``correlation``: to or from ``peer`` (transport:host:port),
        its Call-ID (the B-leg's, or the correlation id itself) and first line."""
        cid = b"" if call_id == correlation else call_id.encode("latin-1", "replace")[:0xFFFF]
        where = peer.encode()[:0xFF]
        ring = self.rings.get(correlation)
        if ring is None:
            ring = self.rings[correlation] = bytearray(2)
            if len(self.rings) > self.calls:
                self.rings.popitem(last=False)
        else:
            self.rings.move_to_end(correlation)
        count = ring[0] | ring[1] << 8  # little-endian, as _COUNT
        if count >= self.per_call:  # the oldest entry goes
            del ring[2 : 2 + (ring[2] | ring[3] << 8)]
        else:
            ring[0], ring[1] = (count + 1) & 0xFF, (count + 1) >> 8
        size = _HEAD.size + len(where) + len(cid) + len(line)
        ring += _pack(size, when, inbound, len(where), len(cid))
        ring += where
        ring += cid
        ring += line

    def ladder(self, correlation: str) -> list[dict[str, Any]]:
        """The call's messages, oldest first; leg ``a`` carries the correlation id itself."""
        ring = self.rings.get(correlation)
        out: list[dict[str, Any]] = []
        at = _COUNT.size
        while ring is not None and at < len(ring):
            size, when, inbound, n_peer, n_cid = _HEAD.unpack_from(ring, at)
            p = at + _HEAD.size
            peer = ring[p : p + n_peer].decode("utf-8", "replace")
            cid = ring[p + n_peer : p + n_peer + n_cid].decode("latin-1") or correlation
            line = ring[p + n_peer + n_cid : at + size].decode("utf-8", "replace")
            at += size
            out.append(
                {
                    "time": when,
                    "direction": "in" if inbound else "out",
                    "peer": peer,
                    "leg": "a" if cid == correlation else "b",
                    "sip_call_id": cid,
                    "message": line,
                }
            )
        return out

    def repack(self) -> None:
        """The same ladders in new objects. CPython's allocator returns a 1 MiB arena only
        when every object in it is gone, and a ring filled during a burst of calls has its
        ~2,000 objects in as many places of the burst's arenas: each pins one. Copied out to
        one buffer (a large one: from the C heap), freed, and rebuilt, they land packed in
        what is left (sbc.memory.quiet, once the node is quiet)."""
        keys = "".join(self.rings)  # large: from the C heap, like the arrays and the blob
        key_lengths = array("I", map(len, self.rings))
        lengths = array("I", map(len, self.rings.values()))
        blob = b"".join(self.rings.values())
        self.rings.clear()
        self.rings = OrderedDict()
        k = at = 0
        for k_n, n in zip(key_lengths, lengths, strict=True):
            self.rings[keys[k : k + k_n]] = bytearray(blob[at : at + n])
            k += k_n
            at += n


def first_line(data: bytes) -> str:
    return head(data).decode("utf-8", "replace")


def head(data: bytes) -> bytes:
    """A message's first line, without its CRLF (at most ``LINE`` bytes without one)."""
    end = data.find(b"\r\n", 0, 512)
    return data[: end if end >= 0 else LINE]
