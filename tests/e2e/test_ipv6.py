"""IPv6 and dual stack end to end on ::1 with real sipp and rtpengine (RFC 3261 §25.1,
RFC 5118): calls within IPv6 and across families, and RFC 5118 §4 messages over the wire.

One sbc, two workers (SO_REUSEPORT on both families), listening on UDP 127.0.0.1:7100 and
UDP [::1]:7100 (the same port: the IPv6 socket is IPV6_V6ONLY) and TCP [::1]:7101;
switch_ip 127.0.0.1, so IPv6 peers are told [::1] (the IPv6 listener's address). Media is
anchored by a private rtpengine with an IPv4 and an IPv6 interface (ng 127.0.0.1:7190).
Trunk groups: carrier-v6 (source ::1), carrier-v4 (source 127.0.0.1); the DNIS's first digit
picks the vendor: 6... -> vendor-v6 at [::1]:7111, 4... -> vendor-v4 at 127.0.0.1:7112.

    caller [::1]:7121 (or 127.0.0.1:7122)   sbc :7100                  vendor [::1]:7111
      |--INVITE sip:6000@[::1]:7100-------->|  (c=IN IP6 ::1 / IP4)      |
      |   Via: SIP/2.0/UDP [::1]:7121;rport |--INVITE sip:6000@[::1]:7111----------->|
      |                                     |   Via: SIP/2.0/UDP [::1]:7100;rport    |
      |                                     |   Contact: <sip:sbc01@[::1]:7100>      |
      |                                     |   c=IN IP6 ::1 (rtpengine, address family IP6)
      |<--100 (received=::1;rport=7121)-----|<------------------------------180/200--|
      |<-200 Contact <sip:sbc01@[::1]:7100>-|   (the IPv4 caller: 127.0.0.1:7100,     |
      |--ACK / BYE------------------------->|    c=IN IP4 127.0.0.1)                  |
      |<--200 BYE---------------------------|--ACK / BYE---------------------------->|

The reverse crossing: caller [::1]:7123 -> sbc -> vendor-v4 127.0.0.1:7112, whose B-leg
names 127.0.0.1:7100 and leaves from the IPv4 socket.

Failover across families, each in a lone process (workers: 1): a dual-stack node on :7102
(the same rtpengine) whose IPv6 caller's first trunk [::1]:7113 is dead and second
127.0.0.1:7114 answers; an IPv4-only node on :7140 whose IPv6 trunk fails at once.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.e2e

SIP, TCP, NG = 7100, 7101, 7190
V6_VENDOR, V4_VENDOR = 7111, 7112

CONFIG = f"""
node:
  listen:
    - {{address: 127.0.0.1, port: {SIP}, transport: udp}}
    - {{address: "::1", port: {SIP}, transport: udp}}
    - {{address: "::1", port: {TCP}, transport: tcp}}
  switch_ip: 127.0.0.1
  workers: 2
  drain_timeout: 1
  cdr: {{path: cdr.jsonl}}
  rtpengine: [{{address: "127.0.0.1:{NG}"}}]
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
media_profiles:
  - {{name: anchored, anchoring: true}}
trunk_groups:
  - {{name: carrier-v6, relationship: carrier-a, direction: origination, routeplan: r,
     media_profile: anchored, trunks: [{{ip: "0:0::1", protocol: udp}},
                                      {{ip: "::1", protocol: tcp}}]}}
  - {{name: carrier-v4, relationship: carrier-a, direction: origination, routeplan: r,
     media_profile: anchored, trunks: [{{ip: 127.0.0.1}}]}}
  - {{name: vendor-v6, relationship: vendor-x, direction: termination,
     trunks: [{{ip: "::1", port: {V6_VENDOR}}}]}}
  - {{name: vendor-v4, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: {V4_VENDOR}}}]}}
routeplans:
  - name: r
    routes:
      - {{prefix: "6", trunk_groups: [vendor-v6]}}
      - {{prefix: "4", trunk_groups: [vendor-v4]}}
"""


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Rtpengine]:
    rtp = harness.Rtpengine(
        NG, tmp_path_factory.mktemp("rtpengine"), 44000, 44999, ("127.0.0.1", "::1")
    )
    yield rtp.start()
    rtp.stop()


@pytest.fixture(scope="module")
def sbc(
    tmp_path_factory: pytest.TempPathFactory, rtpengine: harness.Rtpengine
) -> Iterator[harness.Sbc]:
    workdir = tmp_path_factory.mktemp("sbc")
    config = workdir / "config"
    config.mkdir()
    (config / "sbc.yaml").write_text(CONFIG)
    proc = harness.start_sbc(workdir, config, port=SIP)
    yield proc
    assert proc.alive(), "sbc died during the tests"
    assert proc.stop() == 0


def sipp(scenario: str, local: str, port: int, media: int) -> list[str]:
    """sipp bound to ``local`` (IPv6 too: sipp brackets [local_ip] itself), RTP on ``media``
    (inside this test's port range), tracing every message."""
    return [
        harness.sipp_binary(),
        "-sf",
        str(harness.SCENARIOS / scenario),
        "-i",
        local,
        "-mi",
        local,
        "-p",
        str(port),
        "-mp",
        str(media),
        "-nostdin",
        "-trace_msg",
        "-trace_err",
    ]


def call(
    tmp_path: Path,
    caller: tuple[str, int],
    dnis: str,
    vendor: tuple[str, int],
    scenarios: tuple[str, str] = ("uac.xml", "uas.xml"),
    sbc_port: int = SIP,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """One call, caller -> sbc (on ``sbc_port``) -> vendor, both sipp; their traced
    messages."""
    vdir, cdir = tmp_path / "vendor", tmp_path / "caller"
    vdir.mkdir()
    cdir.mkdir()
    uas = subprocess.Popen(
        [*sipp(scenarios[1], vendor[0], vendor[1], 7160), "-m", "1", "-d", "200"],
        cwd=vdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        host = f"[{caller[0]}]" if ":" in caller[0] else caller[0]
        remote = f"{'[::1]' if ':' in caller[0] else '127.0.0.1'}:{sbc_port}"
        out = subprocess.run(
            [
                *sipp(scenarios[0], caller[0], caller[1], 7170),
                remote,
                "-s",
                dnis,
                "-m",
                "1",
                "-d",
                "200",
                "-timeout",
                "15s",
                "-timeout_error",
            ],
            cwd=cdir,
            capture_output=True,
            timeout=30,
        )
        assert out.returncode == 0, (host, out.stdout[-2000:], _errors(cdir))
        uas.wait(timeout=10)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()
    return _trace(cdir), _trace(vdir)


def _trace(d: Path) -> list[tuple[str, str]]:
    (log,) = d.glob("*_messages.log")
    return harness.sipp_messages(log)


def _errors(d: Path) -> str:
    return "".join(f.read_text(errors="replace")[-2000:] for f in d.glob("*_errors.log"))


def first(msgs: list[tuple[str, str]], direction: str, start: str) -> str:
    for d, text in msgs:
        if d == direction and text.startswith(start):
            return text
    raise AssertionError(f"no {direction} {start!r} in {[t[:40] for _, t in msgs]}")


def answer(msgs: list[tuple[str, str]], method: str) -> str:
    for d, text in msgs:
        if (
            d == "received"
            and text.startswith("SIP/2.0 200")
            and method in harness.header(text, "CSeq")
        ):
            return text
    raise AssertionError(f"no 200 to {method}")


def sdp_c(text: str) -> str:
    found = re.search(r"^c=(.*)$", text, re.M)
    return found.group(1).strip() if found else ""


def cdrs(sbc: harness.Sbc, count: int) -> list[dict[str, object]]:
    path = sbc.log_path.parent / "cdr.jsonl"

    def lines() -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    assert harness.wait_for(lambda: len(lines()) >= count), f"{count} CDRs expected"
    return [json.loads(x) for x in lines()]


def our_contact(value: str, host: str) -> bool:
    """Our Contact on this node of two workers: its user names the call's (sbc00, sbc01)."""
    return re.fullmatch(rf"<sip:sbc0[01]@{re.escape(host)}:{SIP}>", value) is not None


def test_ipv6_caller_to_ipv6_vendor(sbc: harness.Sbc, tmp_path: Path) -> None:
    before = len(cdrs(sbc, 0))
    caller, vendor = call(tmp_path, ("::1", 7121), "6000", ("::1", V6_VENDOR))
    ok = answer(caller, "INVITE")
    # Our Contact toward an IPv6 caller: an IPv6 reference (RFC 3261 §25.1).
    assert our_contact(harness.header(ok, "Contact"), "[::1]"), ok
    # received= with an IPv6 address is written bare (RFC 3261 §18.2.1, RFC 5118 §4.5).
    via = harness.header(ok, "Via")
    assert via.startswith("SIP/2.0/UDP [::1]:7121;") and "received=::1" in via, via
    assert "rport=7121" in via, via
    assert sdp_c(ok) == "IN IP6 ::1", ok  # rtpengine's IPv6 interface
    invite = first(vendor, "received", "INVITE ")
    assert invite.startswith(f"INVITE sip:6000@[::1]:{V6_VENDOR} SIP/2.0"), invite
    assert harness.header(invite, "Via").startswith(f"SIP/2.0/UDP [::1]:{SIP};branch="), invite
    assert our_contact(harness.header(invite, "Contact"), "[::1]"), invite
    assert "@[::1]>" in harness.header(invite, "From"), invite
    assert sdp_c(invite) == "IN IP6 ::1", invite
    for method in ("ACK ", "BYE "):
        req = first(vendor, "received", method)
        assert harness.header(req, "Via").startswith(f"SIP/2.0/UDP [::1]:{SIP};"), req
    answer(caller, "BYE")
    (cdr,) = cdrs(sbc, before + 1)[before:]
    assert cdr["trunk_group"] == "carrier-v6" and cdr["egress_trunk_group"] == "vendor-v6"
    assert cdr["egress_trunk"] == f"[::1]:{V6_VENDOR}" and cdr["disposition"] == "answered"


def test_ipv4_caller_to_ipv6_vendor(sbc: harness.Sbc, tmp_path: Path) -> None:
    """Across families: the B-leg names our IPv6 address and leaves from our IPv6 socket;
    rtpengine turns the caller's IPv4 SDP into IPv6 and the vendor's back."""
    caller, vendor = call(tmp_path, ("127.0.0.1", 7122), "6001", ("::1", V6_VENDOR))
    invite = first(vendor, "received", "INVITE ")
    assert harness.header(invite, "Via").startswith(f"SIP/2.0/UDP [::1]:{SIP};branch="), invite
    assert our_contact(harness.header(invite, "Contact"), "[::1]"), invite
    assert sdp_c(invite) == "IN IP6 ::1", invite
    ok = answer(caller, "INVITE")
    assert our_contact(harness.header(ok, "Contact"), "127.0.0.1"), ok
    assert sdp_c(ok) == "IN IP4 127.0.0.1", ok
    assert "[" not in harness.header(ok, "Via"), ok
    answer(caller, "BYE")
    assert first(vendor, "received", "BYE ")


def test_ipv6_caller_to_ipv4_vendor(sbc: harness.Sbc, tmp_path: Path) -> None:
    caller, vendor = call(tmp_path, ("::1", 7123), "4000", ("127.0.0.1", V4_VENDOR))
    invite = first(vendor, "received", "INVITE ")
    assert harness.header(invite, "Via").startswith(f"SIP/2.0/UDP 127.0.0.1:{SIP};"), invite
    assert our_contact(harness.header(invite, "Contact"), "127.0.0.1"), invite
    assert sdp_c(invite) == "IN IP4 127.0.0.1", invite
    ok = answer(caller, "INVITE")
    assert our_contact(harness.header(ok, "Contact"), "[::1]"), ok
    assert sdp_c(ok) == "IN IP6 ::1", ok
    answer(caller, "BYE")


def test_an_ipv6_vendor_hangs_up(sbc: harness.Sbc, tmp_path: Path) -> None:
    """The vendor's BYE (an in-dialog request from an IPv6 trunk) is accepted and reaches
    the IPv6 caller at its Contact, an IPv6 reference, with our IPv6 Via."""
    caller, vendor = call(
        tmp_path, ("::1", 7125), "6002", ("::1", V6_VENDOR), ("uac_callee_bye.xml", "uas_bye.xml")
    )
    bye = first(caller, "received", "BYE ")
    assert bye.startswith("BYE sip:15550001000@[::1]:7125"), bye
    assert harness.header(bye, "Via").startswith(f"SIP/2.0/UDP [::1]:{SIP};branch="), bye
    assert answer(vendor, "BYE")


# RFC 5118 §4 messages (OPTIONS in place of the RFC's REGISTERs: sbc answers a trunk's
# OPTIONS itself), sent from [::1] to [::1]:7100: each one's verdict.
RFC5118 = {
    "4.1 valid IPv6 reference": ("sip:[2001:db8::10]", 200),
    "4.2 IPv6 without brackets": ("sip:2001:db8::10", 400),
    "4.3 port ambiguous (no port)": ("sip:[2001:db8::10:5070]", 200),
    "4.4 port unambiguous": ("sip:[2001:db8::10]:5070", 200),
    "4.10 IPv4 in an IPv6 reference": ("sip:[2001:db8::192.0.2.1]", 200),
}


def rfc5118(ruri: str, cid: str, port: int, received: str = "received=2001:db8::9:255") -> bytes:
    return (
        f"OPTIONS {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP [::1]:{port};rport;branch=z9hG4bK{cid}\r\n"
        f"Via: SIP/2.0/UDP [2001:db8::9:1];{received};branch=z9hG4bKas3-111\r\n"
        f"From: <sip:user@example.com>;tag={cid[:8]}\r\n"
        "To: <sip:user@example.com>\r\n"
        f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        'Contact: "Caller" <sip:caller@[2001:db8::1]>\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_rfc5118_messages_over_ipv6(sbc: harness.Sbc) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 7130))
        s.settimeout(2)
        cases = {**{k: (*v, "received=2001:db8::9:255") for k, v in RFC5118.items()}}
        # §4.5: received= with and without the IPv6 reference's brackets
        cases["4.5 received bracketed"] = ("sip:[2001:db8::10]", 200, "received=[2001:db8::9:255]")
        got = {}
        for name, (ruri, _, received) in cases.items():
            cid = uuid.uuid4().hex
            s.sendto(rfc5118(ruri, cid, 7130, received), ("::1", SIP))
            reply = s.recv(65535).decode()
            assert cid in reply
            got[name] = int(reply[8:11])
            if got[name] == 200:
                via = reply.split("\r\n")[1]
                assert via.startswith("Via: SIP/2.0/UDP [::1]:7130;rport=7130;"), via
                assert "received=::1" in via, via
        assert got == {k: v[1] for k, v in cases.items()}


def test_ipv6_tcp_caller(sbc: harness.Sbc, tmp_path: Path) -> None:
    """An OPTIONS over TCP to [::1]:7101 is answered on the same connection, our Via
    stamping and Contact in IPv6 form."""
    with socket.create_connection(("::1", TCP), timeout=2) as s:
        port = s.getsockname()[1]
        cid = uuid.uuid4().hex
        s.sendall(rfc5118("sip:[::1]:7101;transport=tcp", cid, port).replace(
            b"SIP/2.0/UDP [::1]", b"SIP/2.0/TCP [::1]", 1))  # fmt: skip
        reply = s.recv(65535).decode()
    assert reply.startswith("SIP/2.0 200"), reply
    assert cid in reply


LONE, DEAD_V6, LIVE_V4 = 7102, 7113, 7114
LONE_CONFIG = f"""
node:
  listen:
    - {{address: 127.0.0.1, port: {LONE}, transport: udp}}
    - {{address: "::1", port: {LONE}, transport: udp}}
  switch_ip: 127.0.0.1
  workers: 1
  drain_timeout: 1
  cdr: {{path: cdr.jsonl}}
  rtpengine: [{{address: "127.0.0.1:{NG}"}}]
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
media_profiles:
  - {{name: anchored, anchoring: true}}
trunk_groups:
  - {{name: carrier-v6, relationship: carrier-a, direction: origination, routeplan: r,
     media_profile: anchored, trunks: [{{ip: "::1"}}]}}
  - {{name: vendor-mixed, relationship: vendor-x, direction: termination, hunting: failover,
     limits: {{b_timer: 1}},
     trunks: [{{ip: "::1", port: {DEAD_V6}}}, {{ip: 127.0.0.1, port: {LIVE_V4}}}]}}
routeplans:
  - name: r
    routes: [{{prefix: "", trunk_groups: [vendor-mixed]}}]
"""


@pytest.fixture(scope="module")
def lone(
    tmp_path_factory: pytest.TempPathFactory, rtpengine: harness.Rtpengine
) -> Iterator[harness.Sbc]:
    """A single-process sbc on :7102 sharing the module's rtpengine."""
    yield from harness.serving(tmp_path_factory.mktemp("lone"), LONE_CONFIG, LONE)


def test_ipv6_caller_fails_over_from_a_dead_ipv6_trunk_to_an_ipv4_one(
    lone: harness.Sbc, rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    """One process (no workers). vendor-mixed hunts failover: [::1]:7113 (nothing there)
    first, then 127.0.0.1:7114. The first B-leg is IPv6 with an IPv6 offer from rtpengine;
    B-timer (1 s) ends it; the second is IPv4 end to end, its SDP IPv4, and the caller's
    answer still IPv6:

        caller [::1]:7126        sbc :7102               [::1]:7113     127.0.0.1:7114
          |--INVITE (c=IN IP6)--->|--INVITE (Via [::1]:7102, c=IN IP6 ::1)-->X         |
          |<--100-----------------|   (1 s: B-timer, attempt 1 outcome b_timer)         |
          |                       |--INVITE (Via 127.0.0.1:7102, c=IN IP4 127.0.0.1)-->|
          |<--180/200 (c=IN IP6 ::1, Contact [::1]:7102)-------------------180/200---|
          |--ACK / BYE----------->|--ACK / BYE (IPv4)------------------------------->|
    """
    before = len(cdrs(lone, 0))
    caller, vendor = call(tmp_path, ("::1", 7126), "4100", ("127.0.0.1", LIVE_V4), sbc_port=LONE)
    invite = first(vendor, "received", "INVITE ")
    assert invite.startswith(f"INVITE sip:4100@127.0.0.1:{LIVE_V4} SIP/2.0"), invite
    assert harness.header(invite, "Via").startswith(f"SIP/2.0/UDP 127.0.0.1:{LONE};"), invite
    assert harness.header(invite, "Contact") == f"<sip:sbc@127.0.0.1:{LONE}>", invite
    assert sdp_c(invite) == "IN IP4 127.0.0.1", invite
    ok = answer(caller, "INVITE")
    assert harness.header(ok, "Contact") == f"<sip:sbc@[::1]:{LONE}>", ok
    assert sdp_c(ok) == "IN IP6 ::1", ok
    answer(caller, "BYE")
    assert first(vendor, "received", "BYE ")
    (cdr,) = cdrs(lone, before + 1)[before:]
    attempts = [(a["trunk"], a["outcome"]) for a in cdr["attempts"]]  # type: ignore[attr-defined]
    assert attempts == [(f"[::1]:{DEAD_V6}", "b_timer"), (f"127.0.0.1:{LIVE_V4}", "answered")]
    assert cdr["disposition"] == "answered"
    assert harness.wait_for(lambda: rtpengine.calls() == [])  # every branch deleted


V4_ONLY = f"""
node:
  listen: [{{address: 127.0.0.1, port: 7140, transport: udp}}]
  workers: 1
  drain_timeout: 1
  cdr: {{path: cdr.jsonl}}
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-v4, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{{ip: 127.0.0.1}}]}}
  - {{name: vendors, relationship: vendor-x, direction: termination, hunting: failover,
     trunks: [{{ip: "::1", port: {V6_VENDOR}}}, {{ip: 127.0.0.1, port: {V4_VENDOR}}}]}}
routeplans:
  - {{name: r, routes: [{{prefix: "", trunk_groups: [vendors]}}]}}
"""


def test_a_vendor_of_a_family_we_do_not_listen_on_fails_over(tmp_path: Path) -> None:
    """A lone process (workers: 1) listening on IPv4 only: the IPv6 trunk has no socket of
    its family, so its attempt fails at once as a transport failure and the IPv4 trunk
    takes the call; after the BYE the node holds no call (it stops at once)."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "sbc.yaml").write_text(V4_ONLY)
    node = harness.start_sbc(tmp_path / "sbc", config, port=7140)
    try:
        vdir, cdir = tmp_path / "vendor", tmp_path / "caller"
        vdir.mkdir()
        cdir.mkdir()
        with harness.sipp_servers("uas.xml", [V4_VENDOR], vdir, ["-mp", "7160"], 1):
            out = subprocess.run(
                [*sipp("uac.xml", "127.0.0.1", 7124, 7170), "127.0.0.1:7140", "-s", "5000",
                 "-m", "1", "-d", "200", "-timeout", "15s", "-timeout_error"],
                cwd=cdir, capture_output=True, timeout=30,
            )  # fmt: skip
            assert out.returncode == 0, (out.stdout[-2000:], _errors(cdir))
            # The caller ends on our 200 to its BYE, which we send before the vendor has
            # our BYE (each leg's BYE is its own, RFC 3261 §15.1.2). Stopping the vendor
            # now could lose that BYE and keep the call until Timer F (what made this test
            # flaky): the CDR, written once the vendor's 200 came, first.
            (cdr,) = cdrs(node, 1)
        attempts = cdr["attempts"]
        assert isinstance(attempts, list)
        assert [(a["outcome"], a["trunk"]) for a in attempts] == [
            ("transport", f"[::1]:{V6_VENDOR}"),
            ("answered", f"127.0.0.1:{V4_VENDOR}"),
        ], attempts
        (err,) = node.events("transport.error")
        assert err["detail"] == "no listener of this address family", err
    finally:
        assert node.stop() == 0, node.log_path.read_text()[-3000:]
