"""IPv6 and dual stack, pure: the RFC 5118 §4 torture messages through the parser, the
headers we write (RFC 3261 §25.1 IPv6reference), our address per peer family
(sbc.config.families), rtpengine's address family, and calls across families in the pure
rig (fake time, no sockets).

    caller [::1]:5070         sbc (127.0.0.1:5060 and [::1]:5060)       vendor-6 [2001:db8::5]:5081
      |--INVITE (Via [::1]:5070;rport)-->|                                     |
      |<--100 (received=::1;rport=5070)--|--INVITE (Via [::1]:5060, Contact    |
      |                                  |   <sip:sbc@[::1]:5060>)------------>|
      |                                  |   (vendor-4 127.0.0.1:5082: Via 127.0.0.1:5060)
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, cast

import pytest

from media import ng
from sbc import hep
from sbc.call import headers
from sbc.config.families import advertised, canonical, family
from sbc.config.loader import ConfigError, load_config
from sbc.config.snapshot import Snapshot
from sbc.listeners import Listeners, udp_socket
from sbc.sip.errors import SipError
from sbc.sip.grammar import parse_uri, parse_via
from sbc.sip.message import Request, Response
from sbc.sip.parser import check_request, parse_message
from sbc.sip.stateless import stamp_raw
from sbc.sip.transaction import Target
from sbc.transport import Sink, UdpEndpoint
from tests.helpers import Lab

# --- RFC 5118 §4 ------------------------------------------------------------------------------


VIA = "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111"
CONTACT = '"Caller" <sip:caller@[2001:db8::1]>'


def register(ruri: str, via: str = VIA, contact: str = CONTACT, body: str = "") -> bytes:
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"REGISTER {ruri} SIP/2.0\r\n"
        "To: sip:user@example.com\r\nFrom: sip:user@example.com;tag=81x2\r\n"
        f"Via: {via}\r\nCall-ID: SSG9559905523997077@hlau_4100\r\nMax-Forwards: 70\r\n"
        f"Contact: {contact}\r\nCSeq: 98176 REGISTER\r\n{ctype}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def verdict(data: bytes) -> int:
    """200 when the message parses and passes the request checks, else the 4xx we'd send."""
    try:
        msg = parse_message(data)
        assert isinstance(msg, Request)
        check_request(msg)
    except SipError as e:
        return e.status
    return 200


def test_rfc5118_4_1_valid_ipv6_reference() -> None:
    msg = parse_message(register("sip:[2001:db8::10]"))
    assert isinstance(msg, Request) and msg.ruri is not None
    assert msg.ruri.host == "[2001:db8::10]" and msg.ruri.port is None
    assert msg.contacts[0].uri.host == "[2001:db8::1]"
    assert msg.vias[0].host == "[2001:db8::9:1]" and msg.vias[0].port is None


def test_rfc5118_4_2_ipv6_without_brackets_is_refused() -> None:
    assert verdict(register("sip:2001:db8::10")) == 400


def test_rfc5118_4_3_and_4_4_port_ambiguity() -> None:
    """§4.3: inside the brackets ``:5070`` is part of the address (a port-less reference);
    §4.4: after them it is the port."""
    no_port = parse_uri("sip:[2001:db8::10:5070]")
    assert (no_port.host, no_port.port) == ("[2001:db8::10:5070]", None)
    with_port = parse_uri("sip:[2001:db8::10]:5070")
    assert (with_port.host, with_port.port) == ("[2001:db8::10]", 5070)
    assert verdict(register("sip:[2001:db8::10:5070]")) == 200
    assert verdict(register("sip:[2001:db8::10]:5070")) == 200


@pytest.mark.parametrize("received", ["2001:db8::9:255", "[2001:db8::9:255]"])
def test_rfc5118_4_5_received_with_or_without_brackets(received: str) -> None:
    """RFC 3261's received is IPv6address (bare); RFC 5118 §4.5 says accept both."""
    via = f"SIP/2.0/UDP [2001:db8::9:1];received={received};branch=z9hG4bKas3-111"
    msg = parse_message(register("sip:[2001:db8::10]", via=via))
    assert isinstance(msg, Request)
    assert msg.vias[0].params["received"] == received
    assert verdict(register("sip:[2001:db8::10]", via=via)) == 200


def test_rfc5118_4_6_and_4_9_ipv6_and_ipv4_mapped_sdp() -> None:
    for c in ("IN IP6 2001:db8::20", "IN IP6 ::ffff:192.0.2.2"):
        body = f"v=0\r\no=assistant 971731711378798081 0 {c}\r\ns=-\r\nc={c}\r\nt=0 0\r\n"
        body += "m=audio 32810 RTP/AVP 0\r\n"
        assert verdict(register("sip:[2001:db8::10]", body=body)) == 200


def test_rfc5118_4_7_multiple_addresses_and_4_10_dotted_tail() -> None:
    contact = '"Caller" <sip:caller@[2001:db8::1]>, <sip:caller@192.0.2.1>'
    assert verdict(register("sip:[2001:db8::10]", contact=contact)) == 200
    tail = parse_uri("sip:user@[2001:db8::192.0.2.1]:5070")
    assert (tail.host, tail.port) == ("[2001:db8::192.0.2.1]", 5070)
    for bad in ("sip:user@[2001:db8::1", "sip:user@[2001:db8::1]x", "sip:user@[zz::1]"):
        with pytest.raises(SipError):
            parse_uri(bad)


def test_via_sent_by_ipv6_with_and_without_port() -> None:
    v = parse_via("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKx")
    assert (v.host, v.port) == ("[2001:db8::9:1]", 5070)
    v = parse_via("SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKx")
    assert (v.host, v.port) == ("[2001:db8::9:1]", None)


def test_stamp_writes_an_ipv6_received_bare() -> None:
    """§18.2.1: received= names the source IP as an IPv6address, no brackets; a sent-by of
    the source's own address in brackets asks for none unless rport does."""
    raw = "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKx"
    assert stamp_raw(raw, "::1", 5070) == raw
    assert stamp_raw(raw + ";rport", "::1", 5071) == (
        "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKx;rport=5071;received=::1"
    )
    assert stamp_raw(raw, "2001:db8::7", 5070).endswith(";received=2001:db8::7")


# --- configuration ----------------------------------------------------------------------------

DUAL = """
node:
  listen:
    - {address: 127.0.0.1, port: 5060, transport: udp}
    - {address: "::1", port: 5060, transport: udp}
    - {address: "0:0:0:0:0:0:0:1", port: 5070, transport: tcp}
  flood: {exempt: [127.0.0.1, "::1"]}
  rtpengine: [{address: "127.0.0.1:2223"}]
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-6, relationship: carrier-a, direction: origination, routeplan: r,
     media_profile: anchored, trunks: [{ip: "0::1"}]}
  - {name: carrier-4, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor-6, relationship: vendor-x, direction: termination,
     trunks: [{ip: "2001:DB8::5", port: 5081}]}
  - {name: vendor-4, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
media_profiles: [{name: anchored, anchoring: true}]
routeplans:
  - name: r
    routes: [{prefix: "6", trunk_groups: [vendor-6]}, {prefix: "4", trunk_groups: [vendor-4]}]
"""


def dual(tmp_path: Path, text: str = DUAL) -> Snapshot:
    (tmp_path / "sbc.yaml").write_text(text)
    return Snapshot.build(load_config(tmp_path))


def test_ip_literals_are_spelled_as_sockets_spell_them(tmp_path: Path) -> None:
    snap = dual(tmp_path)
    assert [x.address for x in snap.config.node.listen] == ["127.0.0.1", "::1", "::1"]
    assert ("udp", "::1") in snap.ingress  # "0::1" in the file, "::1" from a socket
    assert snap.hosts["vendor-6"] == frozenset({"2001:db8::5"})
    assert canonical(snap.config) == snap.config  # already canonical


def test_each_family_has_its_address_and_ports(tmp_path: Path) -> None:
    snap = dual(tmp_path)
    assert snap.addresses == {4: "127.0.0.1", 6: "::1"}
    assert headers.local(snap, "udp", "2001:db8::5") == ("::1", 5060)
    assert headers.local(snap, "tcp", "2001:db8::5") == ("::1", 5070)
    assert headers.local(snap, "udp", "192.0.2.1") == ("127.0.0.1", 5060)
    assert headers.local(snap, "udp") == ("127.0.0.1", 5060)  # no peer: switch_ip's family


def test_via_and_contact_bracket_ipv6(tmp_path: Path) -> None:
    snap = dual(tmp_path)
    v = headers.via(snap, "udp", "b1", "2001:db8::5")
    assert v.raw == "SIP/2.0/UDP [::1]:5060;branch=z9hG4bKb1;rport"
    assert parse_via(v.raw).host == v.host == "[::1]"
    assert str(headers.contact(snap, "tcp", peer="::1").uri) == "sip:sbc@[::1]:5070;transport=tcp"
    assert str(headers.contact(snap, "udp", peer="10.0.0.1").uri) == "sip:sbc@127.0.0.1:5060"
    assert headers.uri_host("[::1]") == "[::1]" and headers.uri_host("::1") == "[::1]"


def test_switch_ip6_and_wildcards(tmp_path: Path) -> None:
    wild = DUAL.replace('"::1", port: 5060', '"::", port: 5060').replace(
        '"0:0:0:0:0:0:0:1"', '"::"'
    )
    with pytest.raises(ConfigError, match=r"node.listen\[1\].address: .*switch_ip6"):
        dual(tmp_path, wild)
    snap = dual(tmp_path, wild.replace("  flood:", '  switch_ip6: "2001:db8::1"\n  flood:'))
    assert advertised(snap.config) == {4: "127.0.0.1", 6: "2001:db8::1"}
    with pytest.raises(ConfigError, match="switch_ip6: must be an IPv6 address"):
        dual(tmp_path, DUAL.replace("  flood:", "  switch_ip6: 10.0.0.1\n  flood:"))
    # switch_ip IPv6, an IPv4 listener: its own address is what IPv4 peers hear
    snap = dual(tmp_path, DUAL.replace("  flood:", '  switch_ip: "::1"\n  flood:'))
    assert snap.addresses == {4: "127.0.0.1", 6: "::1"}
    assert family("[::1]") == 6 and family("10.0.0.1") == 4


def test_rtpengine_is_told_each_sides_address_family() -> None:
    a, b = ng.Side(None, "", "IP4"), ng.Side(None, "", "IP6")
    assert ng.offer_flags(a, b, [])["address family"] == "IP6"
    assert ng.answer_flags(b, a)["address family"] == "IP4"
    assert "address family" not in ng.offer_flags(a, ng.UNMANAGED, [])
    assert ng.ip_family("2001:db8::5") == "IP6" and ng.ip_family("10.0.0.1") == "IP4"


# --- calls across families, pure rig -----------------------------------------------------------

CALLER6 = Target("udp", "::1", 5070)
VENDOR6 = Target("udp", "2001:db8::5", 5081)
VENDOR4 = Target("udp", "127.0.0.1", 5082)
SDP4 = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


def invite6(dnis: str, body: bytes = b"") -> bytes:
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"INVITE sip:{dnis}@[::1]:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP [::1]:5070;branch=z9hG4bK6a;rport\r\n"
        "From: <sip:15550001000@[::1]>;tag=c6\r\nTo: <sip:" + dnis + "@[::1]>\r\n"
        "Call-ID: six@[::1]\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@[::1]:5070>\r\n"
        f"Max-Forwards: 70\r\n{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def lab(tmp_path: Path, text: str = DUAL) -> Lab:
    (tmp_path / "sbc.yaml").write_text(text)
    return Lab(load_config(tmp_path))


def sent(out: list[tuple[Any, Target]], to: Target) -> list[Any]:
    return [m for m, t in out if t == to]


def test_ipv6_caller_to_ipv6_vendor(tmp_path: Path) -> None:
    rig = lab(tmp_path, DUAL.replace("media_profile: anchored, ", ""))
    out = rig.feed(invite6("6000"), CALLER6)
    (trying,) = sent(out, CALLER6)
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.vias[0].raw.endswith(";rport=5070;received=::1")
    (inv,) = sent(out, VENDOR6)
    assert isinstance(inv, Request)
    assert str(inv.uri) == "sip:6000@[2001:db8::5]:5081"
    assert inv.vias[0].raw.startswith("SIP/2.0/UDP [::1]:5060;branch=z9hG4bK")
    assert str(inv.contacts[0].uri) == "sip:sbc@[::1]:5060"
    assert inv.from_.uri.host == "[::1]"
    ok = (
        f"SIP/2.0 200 OK\r\nVia: {inv.vias[0].raw}\r\nFrom: {inv.get('From')}\r\n"
        f"To: {inv.get('To')};tag=v6\r\nCall-ID: {inv.call_id}\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:v@[2001:db8::5]:5081>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    out = rig.feed(ok, VENDOR6)
    (answer,) = [m for m in sent(out, CALLER6) if isinstance(m, Response)]
    assert answer.status == 200 and answer.get("Contact") == "<sip:sbc@[::1]:5060>"
    ack_a = (
        "ACK sip:sbc@[::1]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5070;branch=z9hG4bK6b;rport\r\n"
        f"From: <sip:15550001000@[::1]>;tag=c6\r\nTo: {answer.get('To')}\r\n"
        "Call-ID: six@[::1]\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    out = rig.feed(ack_a, CALLER6)
    # the vendor's ACK goes to its Contact, an IPv6 reference, unbracketed as a target
    (ack,) = [m for m in sent(out, VENDOR6) if isinstance(m, Request)]
    assert ack.method == "ACK" and ack.vias[0].host == "[::1]"


def test_ipv6_caller_to_ipv4_vendor_and_anchored_media(tmp_path: Path) -> None:
    rig = lab(tmp_path)
    out = rig.feed(invite6("4000", SDP4), CALLER6)
    # anchored: rtpengine's offer first, told the vendor's family
    (cmd,) = rig.ng
    assert cmd.cmd["command"] == "offer" and cmd.cmd["address family"] == "IP4"
    assert not sent(out, VENDOR4)


def test_a_family_we_do_not_listen_on_gets_no_socket() -> None:
    class Wire:  # a datagram transport that only records (compiled, Listeners takes
        def __init__(self) -> None:  # a real UdpEndpoint: the fake is below it)
            self.sent: list[tuple[str | int, ...]] = []

        def sendto(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            self.sent.append(addr)

    four, six = Wire(), Wire()
    ls = Listeners()
    for fam, wire in ((4, four), (6, six)):
        ls.out[fam] = UdpEndpoint(cast(Sink, None))  # nothing is received here
        ls.out[fam].connection_made(cast(asyncio.DatagramTransport, wire))
    assert ls.send(b"x", VENDOR6) and ls.send(b"x", VENDOR4)
    assert (four.sent, six.sent) == ([("127.0.0.1", 5082)], [("2001:db8::5", 5081)])
    del ls.out[6]
    assert not ls.send(b"x", VENDOR6)
    assert str(VENDOR6) == "udp:[2001:db8::5]:5081"


def test_ipv6_sockets_take_ipv6_only() -> None:
    """Bound to ::1 on an ephemeral port, no traffic: IPV6_V6ONLY is set, so a wildcard
    listener never sees IPv4 peers as ::ffff:a.b.c.d."""
    sock = udp_socket("::1", 0, shared=True)
    try:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        sock.close()


def test_hep_copies_name_our_address_of_the_peers_family(tmp_path: Path) -> None:
    cap = hep.Capture({})
    cap.configure(dual(tmp_path).config.node)
    assert cap.local[("udp", True)] == ("::1", 5060)
    assert cap.local[("udp", False)] == ("127.0.0.1", 5060)
    assert cap.local[("tcp", True)] == ("::1", 5070)
