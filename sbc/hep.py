"""HEPv3 (the Homer Encapsulation Protocol, version 3): a copy of each SIP message for a
Homer / heplify-server collector. ``encode``/``decode`` are pure; ``HepSender`` is the thin
I/O half (a non-blocking UDP socket: a full socket buffer drops the copy and counts it,
never delays the call path).

A packet is ``"HEP3"``, its total length (uint16, network order), then chunks, each
``vendor id (uint16, 0 = generic) | type id (uint16) | length (uint16, header included) |
value``. The generic chunk types sbc sends (HEP3 spec, "Generic chunk types"):

    0x0001 IP family (uint8: 2 IPv4, 10 IPv6)   0x0002 IP protocol (uint8: 17 UDP, 6 TCP)
    0x0003/0x0004 IPv4 source/destination       0x0005/0x0006 IPv6 source/destination
    0x0007/0x0008 source/destination port       0x0009/0x000a timestamp seconds/microseconds
    0x000b protocol type (uint8: 1 SIP)         0x000c capture agent id (uint32)
    0x000e auth key (password)                  0x000f payload (the SIP message)
    0x0011 correlation id: the A-leg's Call-ID on both legs, so Homer joins them
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sbc.config.loader import host_port
from sbc.sip.steer import call_id
from sbc.trace import Ring, head

if TYPE_CHECKING:
    from sbc.config.node import Node
    from sbc.sip.transaction import Target

MAGIC = b"HEP3"
CHUNK = struct.Struct(">HHH")
U8, U16, U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
PROTO_SIP = 1
IP_PROTOCOLS = {"udp": 17, "tcp": 6, "tls": 6}
FAMILIES = {socket.AF_INET: 2, socket.AF_INET6: 10}


@dataclass(frozen=True, slots=True)
class Packet:
    """What a HEPv3 packet says (``decode``'s answer; ``encode``'s arguments)."""

    family: int  # 2 or 10
    protocol: int  # 17 or 6
    src: str
    dst: str
    sport: int
    dport: int
    seconds: int
    micros: int
    capture_id: int
    payload: bytes
    correlation: str = ""
    password: str = ""
    proto_type: int = PROTO_SIP


def _chunk(kind: int, value: bytes) -> bytes:
    return CHUNK.pack(0, kind, 6 + len(value)) + value


def _address(host: str) -> tuple[int, bytes]:
    """(family code, packed address); a host that is no IP literal is sent as 0.0.0.0."""
    for af in (socket.AF_INET, socket.AF_INET6):
        try:
            return FAMILIES[af], socket.inet_pton(af, host)
        except OSError:
            continue
    return 2, bytes(4)


def encode(
    payload: bytes,
    *,
    transport: str,
    src: tuple[str, int],
    dst: tuple[str, int],
    at: float,
    capture_id: int,
    correlation: str = "",
    password: str = "",
) -> bytes:
    """One SIP message as a HEPv3 packet. Source and destination must be one family (a
    peer of the other family gets the source's family with the unspecified address)."""
    fam, s_ip = _address(src[0])
    dfam, d_ip = _address(dst[0])
    if dfam != fam:
        d_ip = bytes(len(s_ip))
    v4 = fam == 2
    seconds = int(at)
    parts = [
        _chunk(0x0001, U8.pack(fam)),
        _chunk(0x0002, U8.pack(IP_PROTOCOLS.get(transport, 17))),
        _chunk(0x0003 if v4 else 0x0005, s_ip),
        _chunk(0x0004 if v4 else 0x0006, d_ip),
        _chunk(0x0007, U16.pack(src[1])),
        _chunk(0x0008, U16.pack(dst[1])),
        _chunk(0x0009, U32.pack(seconds)),
        _chunk(0x000A, U32.pack(int((at - seconds) * 1_000_000))),
        _chunk(0x000B, U8.pack(PROTO_SIP)),
        _chunk(0x000C, U32.pack(capture_id)),
    ]
    if password:
        parts.append(_chunk(0x000E, password.encode()))
    if correlation:
        parts.append(_chunk(0x0011, correlation.encode()))
    parts.append(_chunk(0x000F, payload))
    body = b"".join(parts)
    return MAGIC + U16.pack(6 + len(body)) + body


def decode(data: bytes) -> Packet:
    """A HEPv3 packet's generic chunks (ValueError if it is not one)."""
    if data[:4] != MAGIC or len(data) < 6:
        raise ValueError("not a HEP3 packet")
    (total,) = U16.unpack_from(data, 4)
    if total != len(data):
        raise ValueError(f"length {total} but {len(data)} bytes")
    chunks: dict[int, bytes] = {}
    pos = 6
    while pos < total:
        vendor, kind, length = CHUNK.unpack_from(data, pos)
        if length < 6 or pos + length > total:
            raise ValueError(f"chunk 0x{kind:04x} overruns the packet")
        if vendor == 0:
            chunks[kind] = data[pos + 6 : pos + length]
        pos += length
    fam = chunks[0x0001][0]
    af = socket.AF_INET if fam == 2 else socket.AF_INET6
    src, dst = (0x0003, 0x0004) if fam == 2 else (0x0005, 0x0006)
    return Packet(
        family=fam,
        protocol=chunks[0x0002][0],
        src=socket.inet_ntop(af, chunks[src]),
        dst=socket.inet_ntop(af, chunks[dst]),
        sport=U16.unpack(chunks[0x0007])[0],
        dport=U16.unpack(chunks[0x0008])[0],
        seconds=U32.unpack(chunks[0x0009])[0],
        micros=U32.unpack(chunks[0x000A])[0],
        capture_id=U32.unpack(chunks[0x000C])[0],
        payload=chunks[0x000F],
        correlation=chunks.get(0x0011, b"").decode(),
        password=chunks.get(0x000E, b"").decode(),
        proto_type=chunks[0x000B][0],
    )


class HepSender:
    """Fire-and-forget copies to one collector over a non-blocking UDP socket."""

    def __init__(self, host: str, port: int, capture_id: int, password: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self.sock.connect((host, port))  # UDP: no packet; ICMP errors then show on send
        self.capture_id = capture_id
        self.password = password
        self.sent = 0
        self.dropped = 0

    def capture(
        self,
        data: bytes,
        transport: str,
        src: tuple[str, int],
        dst: tuple[str, int],
        at: float,
        correlation: str,
    ) -> None:
        packet = encode(
            data,
            transport=transport,
            src=src,
            dst=dst,
            at=at,
            capture_id=self.capture_id,
            correlation=correlation,
            password=self.password,
        )
        try:
            self.sock.send(packet)
            self.sent += 1
        except OSError:  # full buffer (EAGAIN), collector down (ECONNREFUSED), too big
            self.dropped += 1

    def close(self) -> None:
        self.sock.close()


class Capture:
    """The runtime's HEP tap: what each message's copy says besides the message (addresses,
    time, the correlation id: the A-leg's Call-ID, looked up for a B-leg's in ``correlation``,
    sbc.call.blegs)."""

    def __init__(self, correlation: dict[str, str]) -> None:
        self.correlation = correlation
        self.sender: HepSender | None = None
        self.key: tuple[str, int, str] = ("", 0, "")
        # our listening address per (transport, IPv6?): a copy names one family (dual stack)
        self.local: dict[tuple[str, bool], tuple[str, int]] = {}
        self.sent = self.dropped = 0  # of senders replaced by a reload
        self.trace: Ring | None = None  # `sbc ctl call` (node.control.trace)
        self.active = False  # a sender or a trace: the runtime taps every message

    def configure(self, node: Node | None) -> None:
        """Start, keep, change or (None) stop capturing as ``node.hep`` and
        ``node.control.trace`` say."""
        if node is not None:
            self.local = {
                (x.transport, ":" in x.address): (x.address, x.port) for x in reversed(node.listen)
            }
        per_call = node.control.trace if node is not None and node.control.socket else 0
        if not per_call:
            self.trace = None
        elif self.trace is None or self.trace.per_call != per_call:
            self.trace = Ring(per_call)
        self._sender(node)
        self.active = self.sender is not None or self.trace is not None

    def _sender(self, node: Node | None) -> None:
        h = node.hep if node is not None else None
        key = (h.address, h.capture_id, h.password) if h is not None else ("", 0, "")
        if key == self.key:
            return
        self.key = key
        if self.sender is not None:
            self.sent += self.sender.sent
            self.dropped += self.sender.dropped
            self.sender.close()
            self.sender = None
        hp = host_port(key[0]) if key[0] else None
        if hp is not None:
            self.sender = HepSender(hp[0], hp[1], key[1], key[2])

    def take(self, data: bytes, peer: Target, inbound: bool) -> None:
        """A copy of one message received from or sent to ``peer``."""
        raw = call_id(data)
        cid = raw.decode("latin-1") if raw is not None else ""
        trace = self.trace
        corr = self.correlation.get(cid, cid)
        # Inbound, only what opens a call or belongs to one traced already: a stranger's
        # flood of OPTIONS or REGISTERs does not push real calls out of the ring.
        if (
            trace is not None
            and cid
            and (not inbound or corr in trace.rings or data.startswith(b"INVITE "))
        ):
            where = f"{peer.transport}:{peer.host}:{peer.port}"
            trace.add(corr, time.time(), inbound, where, cid, head(data))
        sender = self.sender
        if sender is None:
            return
        local = self.local.get((peer.transport, ":" in peer.host)) or ("0.0.0.0", 0)
        remote = (peer.host, peer.port)
        src, dst = (remote, local) if inbound else (local, remote)
        sender.capture(data, peer.transport, src, dst, time.time(), corr)

    def gauges(self) -> list[tuple[str, str, float]]:
        s = self.sender
        if s is None and not self.key[0] and not self.sent:
            return []
        sent = self.sent + (s.sent if s is not None else 0)
        dropped = self.dropped + (s.dropped if s is not None else 0)
        return [
            ("sbc_hep_sent_total", "SIP copies sent to the HEP collector.", float(sent)),
            (
                "sbc_hep_dropped_total",
                "SIP copies dropped: the HEP socket was full or the collector unreachable.",
                float(dropped),
            ),
        ]
