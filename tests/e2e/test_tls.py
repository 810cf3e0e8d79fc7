"""TLS (RFC 3261 §26, RFC 5630) end to end: a caller over TLS, TLS vendors with certificate
and host-name verification, failover past a vendor whose certificate fails, mutual TLS, and a
reload that re-reads the certificates. Certificates come from the openssl CLI; the SIP peers
are Python ssl sockets (tests/e2e/tlspeers.py: Debian's sipp has no TLS).

sbc listens on 127.0.0.1:7000 (UDP: the harness's readiness OPTIONS) and :7001 (TLS), with
two workers sharing each socket (SO_REUSEPORT; the reload goes through the supervisor).
Vendors: 127.0.0.1:7011 presents a certificate of another CA ("bad"), :7012 a good one for
IP 127.0.0.1; trunk group vendor-tls hunts them in that order (failover).

    caller (TLS client)        sbc :7001 (tls)            bad :7011       good :7012
      |--TLS handshake--------->|  (sbc.pem, CA ca.pem)      |               |
      |--INVITE sip:1555..;transport=tls->|                  |               |
      |<----------------100-----|--TLS handshake------------>|               |
      |                         |<--certificate of other-ca: verify fails    |
      |                         |   attempt 1: outcome transport (logged)    |
      |                         |--TLS handshake (IP SAN 127.0.0.1 ok)------>|
      |                         |--INVITE  Via: SIP/2.0/TLS, Contact transport=tls-->|
      |                         |<-------------------------------100 / 200---|
      |<--200 (Contact ;transport=tls)                                        |
      |--ACK / BYE ------------>|--ACK / BYE (same connection)--------------->|
      |<--200 BYE---------------|<----------------------------------200 BYE--|

Mutual TLS (node.tls.require_client_cert): a caller with no certificate never gets a
handshake through; one with a certificate of ca.pem places the call.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

from tests.e2e import tlspeers

pytestmark = pytest.mark.e2e

UDP, TLS = 7000, 7001
BAD, GOOD = 7011, 7012
MTLS_UDP, MTLS_TLS = 7002, 7003  # the mutual-TLS node, next to the module's one


def config(udp: int = UDP, tls: int = TLS, mtls: bool = False) -> str:
    return (
        CONFIG.replace("UDP_PORT", str(udp))
        .replace("TLS_PORT", str(tls))
        .replace("MTLS", "true" if mtls else "false")
    )


CONFIG = f"""
node:
  listen:
    - {{address: 127.0.0.1, port: UDP_PORT, transport: udp}}
    - {{address: 127.0.0.1, port: TLS_PORT, transport: tls}}
  workers: 2
  drain_timeout: 1
  cdr: {{path: cdr.jsonl}}
  tls:
    certificate: tls/sbc.pem
    private_key: tls/sbc.key
    ca: tls/ca.pem
    verify_peer: true
    require_client_cert: MTLS
    handshake_timeout: 1
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-tls, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1, port: 0, protocol: tls}}]}}
  - {{name: vendor-tls, relationship: vendor-x, direction: termination, hunting: failover,
     trunks: [{{ip: 127.0.0.1, port: {BAD}, protocol: tls}},
              {{ip: 127.0.0.1, port: {GOOD}, protocol: tls}}]}}
routeplans:
  - {{name: default, routes: [{{prefix: "", trunk_groups: [vendor-tls]}}]}}
"""


def certificates(d: Path) -> Path:
    """ca (ours and the vendors'), other-ca (nobody trusts it); sbc, good, caller signed
    by ca; bad signed by other-ca. All for IP 127.0.0.1 and localhost."""
    d.mkdir(parents=True, exist_ok=True)
    tlspeers.make_ca(d, "ca")
    tlspeers.make_ca(d, "other-ca")
    for name in ("sbc", "good", "caller"):
        tlspeers.make_cert(d, name, "ca")
    tlspeers.make_cert(d, "bad", "other-ca")
    return d


def start(
    workdir: Path, udp: int = UDP, tls_port: int = TLS, mtls: bool = False
) -> tuple[harness.Sbc, Path]:
    directory = workdir / "config"
    tls = certificates(directory / "tls")
    (directory / "sbc.yaml").write_text(config(udp, tls_port, mtls))
    return harness.start_sbc(workdir, directory, port=udp), tls


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Sbc, Path]]:
    sbc, tls = start(tmp_path_factory.mktemp("sbc"))
    yield sbc, tls
    assert sbc.alive(), "sbc died during the tests"
    assert sbc.stop() == 0


@pytest.fixture()
def vendors(node: tuple[harness.Sbc, Path]) -> Iterator[tuple[tlspeers.Uas, tlspeers.Uas]]:
    tls = node[1]
    bad = tlspeers.Uas(BAD, tls / "bad.pem", tls / "bad.key")
    good = tlspeers.Uas(GOOD, tls / "good.pem", tls / "good.key")
    yield bad, good
    bad.close()
    good.close()


def cdrs(sbc: harness.Sbc, count: int) -> list[dict[str, object]]:
    path = sbc.log_path.parent / "cdr.jsonl"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(x) for x in lines]
        time.sleep(0.05)
    raise AssertionError(f"{count} CDRs expected in {path}")


def test_check_refuses_tls_without_node_tls(tmp_path: Path) -> None:
    text = config()
    without = text.split("  tls:\n")[0] + text.split("handshake_timeout: 1\n", 1)[1]
    (tmp_path / "sbc.yaml").write_text(without)
    out = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "check", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(harness.ROOT)},
    )
    assert out.returncode != 0
    assert "sbc.yaml:5: node.listen[1].transport: " in out.stderr, out.stderr
    assert "node.tls" in out.stdout + out.stderr


def test_a_stalled_handshake_is_closed_after_handshake_timeout(
    node: tuple[harness.Sbc, Path],
) -> None:
    """A caller that opens TCP to the TLS port and never says ClientHello holds a socket
    until node.tls.handshake_timeout (1 s here; asyncio's own default is 60 s)."""
    with socket.create_connection(("127.0.0.1", TLS), timeout=10) as s:
        opened = time.monotonic()
        try:
            got = s.recv(1)
        except ConnectionResetError:
            got = b""
        took = time.monotonic() - opened
    assert got == b"" and 0.8 <= took < 5, (got, took)
    assert node[0].alive()


def test_a_tls_call_fails_over_past_a_bad_certificate(
    node: tuple[harness.Sbc, Path], vendors: tuple[tlspeers.Uas, tlspeers.Uas]
) -> None:
    sbc, tls = node
    bad, good = vendors
    stream = tlspeers.connect(TLS, tlspeers.client_context(tls / "ca.pem"))
    got = tlspeers.call(stream, TLS, "15551230000")
    finals = [m for m in got if m.startswith("SIP/2.0 200") and "INVITE" in m.split("CSeq:")[1]]
    assert finals, got
    # Our Contact toward a TLS caller names TLS (RFC 3261 §19.1.1 transport parameter).
    assert "transport=tls" in tlspeers.header(finals[0], "Contact"), finals[0]
    assert any(m.startswith("SIP/2.0 200") and "BYE" in tlspeers.header(m, "CSeq") for m in got)
    # The bad vendor never got past the handshake: nothing of SIP reached it.
    assert bad.received == [] and bad.handshakes == 0
    (invite,) = good.requests("INVITE")
    assert tlspeers.header(invite, "Via").startswith(f"SIP/2.0/TLS 127.0.0.1:{TLS};")
    assert "transport=tls" in tlspeers.header(invite, "Contact")
    assert harness.wait_for(lambda: len(good.requests("BYE")) == 1)
    assert len(good.requests("ACK")) == 1
    assert good.handshakes == 1  # INVITE, ACK and BYE went over one connection
    (cdr,) = cdrs(sbc, 1)
    attempts = cdr["attempts"]
    assert isinstance(attempts, list)
    assert [(a["n"], a["outcome"]) for a in attempts] == [(1, "transport"), (2, "answered")]
    assert attempts[0]["trunk"].endswith(f":{BAD}") and attempts[1]["trunk"].endswith(f":{GOOD}")
    (error,) = [e for e in sbc.events("transport.error") if str(BAD) in str(e["target"])]
    assert "CERTIFICATE_VERIFY_FAILED" in str(error["detail"]), error
    stream.sock.close()


def test_reload_reads_new_certificates(
    node: tuple[harness.Sbc, Path], vendors: tuple[tlspeers.Uas, tlspeers.Uas]
) -> None:
    """The same file names, a new certificate of other-ca: after SIGHUP a new connection
    gets it (a client trusting only ca refuses it), then the old one comes back."""
    sbc, tls = node
    ours = (tls / "sbc.pem").read_bytes(), (tls / "sbc.key").read_bytes()
    (tls / "sbc.pem").write_bytes((tls / "bad.pem").read_bytes())
    (tls / "sbc.key").write_bytes((tls / "bad.key").read_bytes())
    try:
        sbc.proc.send_signal(signal.SIGHUP)
        assert sbc.wait_events("config.reloaded", 1), sbc.log_path.read_text()
        # Each worker swaps as the supervisor's snapshot reaches it: wait for every one.
        assert harness.wait_for(lambda: all(serves(tls / "other-ca.pem") for _ in range(6)))
        with pytest.raises(ssl.SSLCertVerificationError):  # a client trusting only ca
            tlspeers.connect(TLS, tlspeers.client_context(tls / "ca.pem"))
    finally:
        (tls / "sbc.pem").write_bytes(ours[0])
        (tls / "sbc.key").write_bytes(ours[1])
    sbc.proc.send_signal(signal.SIGHUP)
    assert sbc.wait_events("config.reloaded", 2)
    assert harness.wait_for(lambda: all(serves(tls / "ca.pem") for _ in range(6)))


def serves(ca: Path) -> bool:
    """Does a new connection to the TLS port get a certificate that ``ca`` signed?"""
    try:
        tlspeers.connect(TLS, tlspeers.client_context(ca)).sock.close()
    except ssl.SSLError:
        return False
    return True


def test_mutual_tls_refuses_a_caller_without_a_certificate(tmp_path: Path) -> None:
    sbc, tls = start(tmp_path, MTLS_UDP, MTLS_TLS, mtls=True)
    good = tlspeers.Uas(GOOD, tls / "good.pem", tls / "good.key")
    try:
        anonymous = tlspeers.connect(MTLS_TLS, tlspeers.client_context(tls / "ca.pem"))
        # TLS 1.3: the server's refusal arrives after the client's handshake, at first read.
        assert tlspeers.call(anonymous, MTLS_TLS, "15551230000") == []
        with_cert = tlspeers.client_context(tls / "ca.pem", tls / "caller.pem", tls / "caller.key")
        stream = tlspeers.connect(MTLS_TLS, with_cert)
        got = tlspeers.call(stream, MTLS_TLS, "15551230000")
        assert any(m.startswith("SIP/2.0 200") for m in got), got
        assert len(good.requests("INVITE")) == 1
    finally:
        good.close()
        assert sbc.stop() == 0


TEAMS_UDP, TEAMS_TLS, TEAMS_VENDOR, NG = 7004, 7005, 7013, 7090
TEAMS = f"""
node:
  listen:
    - {{address: 127.0.0.1, port: {TEAMS_UDP}, transport: udp}}
    - {{address: 127.0.0.1, port: {TEAMS_TLS}, transport: tls}}
  workers: 1
  drain_timeout: 1
  cdr: {{path: cdr.jsonl}}
  rtpengine: [{{address: "127.0.0.1:{NG}"}}]
  tls: {{certificate: tls/sbc.pem, private_key: tls/sbc.key, ca: tls/ca.pem}}
relationships: [{{name: carrier-a}}, {{name: teams}}]
media_profiles:
  - {{name: plain}}
  - {{name: teams-srtp, srtp: true}}
trunk_groups:
  - {{name: carrier-tls, relationship: carrier-a, direction: origination, routeplan: default,
     media_profile: plain, trunks: [{{ip: 127.0.0.1, port: 0, protocol: tls}}]}}
  - {{name: teams, relationship: teams, direction: termination, media_profile: teams-srtp,
     monitoring: {{enabled: true, interval: 1}},
     trunks: [{{ip: 127.0.0.1, port: {TEAMS_VENDOR}, protocol: tls}}]}}
routeplans:
  - {{name: default, routes: [{{prefix: "", trunk_groups: [teams]}}]}}
"""


def test_teams_direct_routing_tls_srtp_and_options(tmp_path: Path) -> None:
    """Like Microsoft Teams Direct Routing: the vendor is reached only over TLS with its
    certificate verified, pinged with OPTIONS over that TLS connection, and gets SRTP (SDES,
    RTP/SAVP) while the caller keeps plain RTP; rtpengine (our own, ng :7090) bridges them.

        caller --TLS, RTP/AVP--> sbc :7005 --TLS, RTP/SAVP + a=crypto--> "teams" :7013
                                     |--OPTIONS (every 1 s, same connection)-->|
    """
    engine = harness.Rtpengine(NG, tmp_path / "rtpengine", 43000, 43999).start()
    tls = certificates(tmp_path / "config" / "tls")
    (tmp_path / "config" / "sbc.yaml").write_text(TEAMS)
    teams = tlspeers.Uas(TEAMS_VENDOR, tls / "good.pem", tls / "good.key", sdp=tlspeers.SRTP_SDP)
    sbc = harness.start_sbc(tmp_path, tmp_path / "config", port=TEAMS_UDP)
    try:
        assert harness.wait_for(lambda: len(teams.requests("OPTIONS")) >= 1, timeout=5)
        ping = teams.requests("OPTIONS")[0]
        assert tlspeers.header(ping, "Via").startswith(f"SIP/2.0/TLS 127.0.0.1:{TEAMS_TLS};")
        stream = tlspeers.connect(TEAMS_TLS, tlspeers.client_context(tls / "ca.pem"))
        got = tlspeers.call(stream, TEAMS_TLS, "15551230000")
        answers = [m for m in got if m.startswith("SIP/2.0 200") and "INVITE" in m]
        assert answers, got
        assert "RTP/AVP" in answers[0] and "a=crypto" not in answers[0]  # the caller: RTP
        (invite,) = teams.requests("INVITE")
        assert "m=audio" in invite and "RTP/SAVP" in invite and "a=crypto:" in invite
        assert harness.wait_for(lambda: len(teams.requests("BYE")) == 1)
        assert teams.handshakes == 1  # pings, INVITE, ACK and BYE: one TLS connection
        (cdr,) = cdrs(sbc, 1)
        assert [a["outcome"] for a in cdr["attempts"]] == ["answered"]  # type: ignore[union-attr]
        stream.sock.close()
    finally:
        teams.close()
        assert sbc.stop() == 0
        engine.stop()
