"""HEPv3 (sbc.hep): what is encoded decodes back, chunk by chunk, per the HEP3 spec."""

from __future__ import annotations

import socket
import struct

import msgspec
import pytest

from sbc import hep
from sbc.config.schema import Config
from sbc.sip.transaction import Target

SIP = b"INVITE sip:1555@10.0.0.2 SIP/2.0\r\nCall-ID: abc@x\r\n\r\n"


def chunks(data: bytes) -> dict[int, bytes]:
    """The packet's chunks by type, read here independently of sbc.hep.decode."""
    assert data[:4] == b"HEP3"
    assert struct.unpack(">H", data[4:6])[0] == len(data)
    out, pos = {}, 6
    while pos < len(data):
        vendor, kind, length = struct.unpack(">HHH", data[pos : pos + 6])
        assert vendor == 0 and length >= 6
        out[kind] = data[pos + 6 : pos + length]
        pos += length
    assert pos == len(data)
    return out


def test_ipv4_udp_round_trip() -> None:
    data = hep.encode(
        SIP, transport="udp", src=("192.0.2.1", 5060), dst=("10.0.0.2", 5081),
        at=1_700_000_000.25, capture_id=2001, correlation="a-leg@x", password="pw",
    )  # fmt: skip
    c = chunks(data)
    assert c[0x0001] == b"\x02" and c[0x0002] == b"\x11"
    assert c[0x0003] == bytes([192, 0, 2, 1]) and c[0x0004] == bytes([10, 0, 0, 2])
    assert c[0x0007] == struct.pack(">H", 5060) and c[0x0008] == struct.pack(">H", 5081)
    assert c[0x0009] == struct.pack(">I", 1_700_000_000)
    assert c[0x000A] == struct.pack(">I", 250_000)
    assert c[0x000B] == b"\x01" and c[0x000C] == struct.pack(">I", 2001)
    assert c[0x000E] == b"pw" and c[0x000F] == SIP and c[0x0011] == b"a-leg@x"
    p = hep.decode(data)
    assert p == hep.Packet(
        family=2, protocol=17, src="192.0.2.1", dst="10.0.0.2", sport=5060, dport=5081,
        seconds=1_700_000_000, micros=250_000, capture_id=2001, payload=SIP,
        correlation="a-leg@x", password="pw", proto_type=1,
    )  # fmt: skip


def test_ipv6_tcp_without_optional_chunks() -> None:
    data = hep.encode(
        SIP, transport="tcp", src=("::1", 5060), dst=("2001:db8::5", 5070), at=10.0,
        capture_id=1,
    )  # fmt: skip
    c = chunks(data)
    assert 0x000E not in c and 0x0011 not in c and 0x0003 not in c
    assert len(c[0x0005]) == 16 and len(c[0x0006]) == 16
    p = hep.decode(data)
    assert (p.family, p.protocol, p.src, p.dst) == (10, 6, "::1", "2001:db8::5")
    assert (p.correlation, p.password, p.payload) == ("", "", SIP)


def test_decode_refuses_what_is_not_hep3() -> None:
    good = hep.encode(
        SIP, transport="udp", src=("1.2.3.4", 1), dst=("1.2.3.5", 2), at=0, capture_id=0
    )
    for bad in (b"HEP2" + good[4:], good[:-1], good[:6] + b"\x00\x00\x00\x01\xff\xff" + good[12:]):
        with pytest.raises(ValueError):
            hep.decode(bad)


def test_capture_correlates_a_b_leg_to_the_a_leg_call_id() -> None:
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(2)
    port = collector.getsockname()[1]
    node = Config().node
    node = msgspec.structs.replace(
        node, hep=msgspec.structs.replace(node.hep, address=f"127.0.0.1:{port}", capture_id=9)
    )
    cap = hep.Capture({"b-leg": "a-leg"})
    cap.configure(node)
    b_msg = b"SIP/2.0 200 OK\r\nCall-ID: b-leg\r\nCSeq: 1 INVITE\r\n\r\n"
    cap.take(b_msg, Target("udp", "127.0.0.1", 5081), inbound=True)
    p = hep.decode(collector.recv(65535))
    assert (p.correlation, p.capture_id, p.sport, p.dport) == ("a-leg", 9, 5081, 5060)
    cap.take(SIP, Target("udp", "127.0.0.1", 5070), inbound=False)
    p = hep.decode(collector.recv(65535))
    assert (p.correlation, p.sport, p.dport) == ("abc@x", 5060, 5070)  # an A-leg: its own
    assert dict((n, v) for n, _, v in cap.gauges())["sbc_hep_sent_total"] == 2
    cap.configure(None)
    assert cap.sender is None
    collector.close()
