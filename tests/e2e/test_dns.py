"""Trunks named by host (RFC 3263) with a real DNS server: Debian's dnsmasq on 127.0.0.1:7253.

dnsmasq (no upstream, no /etc/hosts) serves:

    vendor.test            NAPTR 10 10 "S" "SIP+D2U" "" _sip._udp.vendor.test
    _sip._udp.vendor.test  SRV 1 10 7281 one.vendor.test     (priority 1: first)
                           SRV 2 10 7282 two.vendor.test     (priority 2: then)
    one/two.vendor.test    A 127.0.0.1
    _sip._udp.ttl.test     SRV 1 10 7283 (later: 7284) ...   (TTL 4 s: dnsmasq's local-ttl)
    _sips._tcp.secure.test SRV 1 10 7291 edge.secure.test    (a TLS vendor)

The trunk group `vendor-dns` has one trunk, `{host: vendor.test}`, OPTIONS every 1 s. sbc
resolves NAPTR -> SRV -> A, tries priority 1 first, and keeps health per address:

    sipp uac :7270        sbc :7260                dnsmasq :7253    sipp :7281    sipp :7282
      |                     |--NAPTR vendor.test------>|               |             |
      |                     |--SRV _sip._udp...------->|  7281 p1, 7282 p2           |
      |                     |--A one/two.vendor.test-->|               |             |
      |--INVITE------------>|--INVITE sip:...@vendor.test ------------>|             |
      |<------180/200-------|<---------------------------------180/200-|             |
      |       ...                      7281 killed:  X               |
      |--INVITE------------>|--INVITE (no answer, b_timer 1 s) ----X               |
      |                     |--INVITE--------------------------------------------->|
      |<------180/200-------|<---------------------------------------------180/200-|
      |                     |   OPTIONS to 7281 unanswered twice: trunk.down for
      |                     |   udp:127.0.0.1:7281 only; calls go straight to 7282
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import harness
import pytest

from tests.e2e import tlspeers

pytestmark = pytest.mark.e2e

PORT = 7260
DNS_PORT = 7253
TTL = 4

CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 7260, transport: udp}]
  flood: {exempt: [127.0.0.1]}
  admin: {listen: "127.0.0.1:7259"}
  dns: {servers: ["127.0.0.1:7253"], retry: 1, timeout: 0.5}
  workers: WORKERS
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor-dns, relationship: vendor-x, direction: termination, limits: {b_timer: 1},
     monitoring: {enabled: true, interval: 1, down_after: 2, up_after: 1},
     trunks: [{host: vendor.test}]}
  - {name: vendor-ttl, relationship: vendor-x, direction: termination, limits: {b_timer: 1},
     trunks: [{host: ttl.test}]}
routeplans:
  - name: r
    routes:
      - {prefix: "1", trunk_groups: [vendor-dns]}
      - {prefix: "2", trunk_groups: [vendor-ttl]}
"""


def zone(ttl_port: int) -> str:
    return f"""
local=/test/
local-ttl={TTL}
naptr-record=vendor.test,10,10,S,SIP+D2U,,_sip._udp.vendor.test
srv-host=_sip._udp.vendor.test,one.vendor.test,7281,1,10
srv-host=_sip._udp.vendor.test,two.vendor.test,7282,2,10
host-record=one.vendor.test,127.0.0.1
host-record=two.vendor.test,127.0.0.1
srv-host=_sip._udp.ttl.test,host.ttl.test,{ttl_port},1,10
host-record=host.ttl.test,127.0.0.1
srv-host=_sips._tcp.secure.test,edge.secure.test,7291,1,10
host-record=edge.secure.test,127.0.0.1
"""


@dataclass
class Dnsmasq:
    """Debian's dnsmasq in the foreground on 127.0.0.1:7253, serving only ``conf``; every
    query it answers is logged to ``log`` (``--log-queries``)."""

    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "dnsmasq.log"

    def start(self, conf: str) -> Dnsmasq:
        binary = shutil.which("dnsmasq")
        if binary is None:
            raise RuntimeError("dnsmasq is not installed (dnsmasq-base): run ./lab/install")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "zone.conf").write_text(conf)
        self.proc = subprocess.Popen(
            [binary, "-k", "-p", str(DNS_PORT), "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=",
             "--log-queries", "--log-facility=-", "-C", str(self.workdir / "zone.conf")],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert harness.wait_for(lambda: "started, version" in self.log.read_text()), "no dnsmasq"
        return self

    def queries(self, name: str) -> int:
        return self.log.read_text().count(f"]: query[SRV] {name} from") if self.log.exists() else 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


def uas(port: int) -> list[str]:
    """sipp's media and control ports inside this test's range (7200-7299)."""
    return ["-mp", str(7200 + (port - 7280) * 4), "-cp", str(7230 + port - 7280)]


def calls(dnis: str, n: int, workdir: Path) -> harness.SippResult:
    return harness.run_sipp(
        "uac", calls=n, rate=10, port=7270, workdir=workdir, remote=f"127.0.0.1:{PORT}",
        extra=["-s", dnis, "-mp", "7240", "-cp", "7239"], timeout=30,
    )  # fmt: skip


def trunks_of(sbc: harness.Sbc, since: int, count: int) -> list[list[str]]:
    """Each call's attempted trunks (its call.end line), for the calls after ``since``."""
    harness.wait_for(lambda: len(sbc.events("call.end")) >= since + count)
    return [
        [str(a["trunk"]) for a in e["attempts"]]  # type: ignore[attr-defined]
        for e in sbc.events("call.end")[since:]
    ]


def explain(tmp: Path, *more: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "sbc.cli", "explain", "--config", str(tmp / "config"), *more,
         "--from", "127.0.0.1:5070", "--to", "15551230000"],
        capture_output=True, text=True, cwd=harness.ROOT, timeout=30, check=True,
    ).stdout  # fmt: skip


def health() -> dict[str, tuple[str, str]]:
    """vendor-dns's trunks in the admin endpoint's /status: address -> (host, health)."""
    with urllib.request.urlopen("http://127.0.0.1:7259/status", timeout=5) as resp:
        state = json.loads(resp.read())
    (tg,) = [g for g in state["trunk_groups"] if g["name"] == "vendor-dns"]
    return {t["trunk"]: (t.get("host", ""), t["health"]) for t in tg["trunks"]}


def start(tmp: Path, workers: int) -> harness.Sbc:
    config = tmp / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "sbc.yaml").write_text(CONFIG.replace("WORKERS", str(workers)))
    return harness.start_sbc(tmp / "sbc", config, port=PORT)


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path / "dns").start(zone(7283))
    yield server
    server.stop()


def test_srv_priorities_and_health_per_resolved_address(dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    """Priority 1 takes the calls; its sipp killed, route advance (b_timer) and then
    monitoring move them to priority 2, and only 7281's address goes down. The Request-URI
    keeps the domain (RFC 3263 §4); `sbc explain` shows the resolved order."""
    traced = [*uas(7281), "-trace_msg"]
    with harness.sipp_servers("uas_options.xml", [7281], tmp_path / "a", traced) as one, \
         harness.sipp_servers("uas_options.xml", [7282], tmp_path / "b", uas(7282)):  # fmt: skip
        sbc = start(tmp_path, workers=0)  # one worker per core: the followers resolve too
        try:
            (resolved,) = [
                e for e in sbc.wait_events("dns.resolved", 2) if "vendor.test" in str(e["host"])
            ]
            assert resolved["targets"] == [
                "udp:127.0.0.1:7281 priority=1 weight=10",
                "udp:127.0.0.1:7282 priority=2 weight=10",
            ]
            time.sleep(0.5)  # the other workers' resolutions
            r = calls("15551230000", 10, tmp_path / "uac1")
            assert r.returncode == 0 and r.count("SuccessfulCall") == 10, r.output
            assert trunks_of(sbc, 0, 10) == [["127.0.0.1:7281"]] * 10
            invites = [
                m for d, m in harness.sipp_messages(next((tmp_path / "a").glob("*_messages.log")))
                if d == "received" and m.startswith("INVITE ")
            ]  # fmt: skip
            assert invites and invites[0].startswith("INVITE sip:15551230000@vendor.test SIP/2.0")

            out = explain(tmp_path)
            assert (
                "vendor.test -> udp:127.0.0.1:7281 (priority 1, weight 10), "
                "udp:127.0.0.1:7282 (priority 2, weight 10); TTL 4 s"
            ) in out, out

            one[0].send_signal(signal.SIGKILL)
            one[0].wait()
            killed = time.monotonic()
            r = calls("15551230001", 1, tmp_path / "uac2")  # before monitoring noticed
            assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
            (first,) = trunks_of(sbc, 10, 1)
            if len(first) == 2:  # tried the dead one (b_timer 1 s), then priority 2
                assert first == ["127.0.0.1:7281", "127.0.0.1:7282"], first
            down = sbc.wait_events("trunk.down", 1, timeout=10)
            took = time.monotonic() - killed
            assert [d["trunk"] for d in down] == ["udp:127.0.0.1:7281"], down
            print(f"7281 down {took:.1f} s after its sipp was killed (interval 1 s, down_after 2)")
            # /status (the supervisor's, merged from the workers) says so, per address
            assert health() == {
                "udp:127.0.0.1:7281": ("vendor.test", "down"),
                "udp:127.0.0.1:7282": ("vendor.test", "up"),
            }
            r = calls("15551230002", 10, tmp_path / "uac3")
            assert r.returncode == 0 and r.count("SuccessfulCall") == 10, r.output
            assert trunks_of(sbc, 11, 10) == [["127.0.0.1:7282"]] * 10  # one attempt each
            assert [d["trunk"] for d in sbc.events("trunk.down")] == ["udp:127.0.0.1:7281"]
        finally:
            assert sbc.alive(), sbc.log_path.read_text()[-3000:]
            assert sbc.stop() == 0


def test_a_changed_record_is_used_after_its_ttl_and_a_dead_server_keeps_the_last_answer(
    dnsmasq: Dnsmasq, tmp_path: Path
) -> None:
    """ttl.test's SRV points at 7283 (TTL 4 s). sbc asks again once per TTL, not per call.
    The record changes to 7284 (dnsmasq rewritten and restarted) just after a refresh: calls
    stay on 7283 until the TTL runs out, then go to 7284. With dnsmasq stopped, calls still
    go to 7284 (the last good answer) and the failure is logged once, not once per retry."""
    with harness.sipp_servers("uas", [7283], tmp_path / "c", uas(7283)), \
         harness.sipp_servers("uas", [7284], tmp_path / "d", uas(7284)):  # fmt: skip
        sbc = start(tmp_path, workers=1)  # one resolver: its queries can be counted
        name = "_sip._udp.ttl.test"
        try:
            assert [e for e in sbc.wait_events("dns.resolved", 2) if "ttl.test" in str(e["host"])]
            asked = dnsmasq.queries(name)
            t0 = time.monotonic()
            r = calls("25551230000", 20, tmp_path / "uac1")  # 2 s of calls
            assert r.returncode == 0 and r.count("SuccessfulCall") == 20, r.output
            assert trunks_of(sbc, 0, 20) == [["127.0.0.1:7283"]] * 20
            time.sleep(max(0.0, t0 + 2 * TTL - time.monotonic()))
            again = dnsmasq.queries(name) - asked
            assert 0 < again <= 3, f"{again} SRV queries in {2 * TTL} s with TTL {TTL} s"

            # just after a refresh: wait for the next SRV query dnsmasq logs
            seen = dnsmasq.queries(name)
            assert harness.wait_for(lambda: dnsmasq.queries(name) > seen, TTL + 1)
            refreshed = time.monotonic()
            dnsmasq.stop()
            dnsmasq.start(zone(7284))
            r = calls("25551230001", 1, tmp_path / "uac2")
            assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
            assert trunks_of(sbc, 20, 1) == [["127.0.0.1:7283"]]  # cached: TTL not over
            assert harness.wait_for(
                lambda: any("7284" in str(e["targets"]) for e in sbc.events("dns.resolved")),
                TTL + 2,
            )
            took = time.monotonic() - refreshed
            assert TTL - 1 <= took <= TTL + 1.5, took
            print(f"the new SRV record was used {took:.1f} s after the last refresh (TTL {TTL})")
            r = calls("25551230002", 5, tmp_path / "uac3")
            assert r.returncode == 0 and r.count("SuccessfulCall") == 5, r.output
            assert trunks_of(sbc, 21, 5) == [["127.0.0.1:7284"]] * 5

            dnsmasq.stop()
            assert sbc.wait_events("dns.failed", 2, timeout=TTL + 3)
            time.sleep(3)  # three more tries (node.dns.retry: 1 s), all failing
            failed = [e for e in sbc.events("dns.failed") if "ttl.test" in str(e["host"])]
            assert len(failed) == 1, failed
            assert failed[0]["kept"] == ["udp:127.0.0.1:7284"], failed
            r = calls("25551230003", 5, tmp_path / "uac4")
            assert r.returncode == 0 and r.count("SuccessfulCall") == 5, r.output
            assert trunks_of(sbc, 26, 5) == [["127.0.0.1:7284"]] * 5
            dnsmasq.start(zone(7284))
            assert harness.wait_for(
                lambda: any("ttl.test" in str(e["host"]) for e in sbc.events("dns.recovered")),
                3,
            )
        finally:
            assert sbc.alive(), sbc.log_path.read_text()[-3000:]
            assert sbc.stop() == 0


TLS_CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 7260, transport: udp}]
  flood: {exempt: [127.0.0.1]}
  dns: {servers: ["127.0.0.1:7253"], retry: 1, timeout: 0.5}
  workers: 1
  tls: {ca: tls/ca.pem}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor-tls, relationship: vendor-x, direction: termination,
     trunks: [{host: secure.test, protocol: tls}]}
routeplans: [{name: r, routes: [{prefix: "", trunk_groups: [vendor-tls]}]}]
"""


@pytest.mark.parametrize(("san", "answered"), [("DNS:secure.test", True), ("IP:127.0.0.1", False)])
def test_a_tls_host_trunk_verifies_the_vendors_certificate_against_its_domain(
    dnsmasq: Dnsmasq, tmp_path: Path, san: str, answered: bool
) -> None:
    """sipp --UDP--> sbc --TLS--> edge.secure.test:7291 (_sips._tcp.secure.test SRV).
    RFC 5922 §4.1: the vendor's certificate must name secure.test, the domain of the trunk,
    not the address it resolved to: a certificate for DNS:secure.test alone is accepted, one
    for IP:127.0.0.1 alone fails the handshake (outcome transport, 503 to the caller). A node
    that only calls out over TLS has no certificate of its own (node.tls: {ca: ...})."""
    config = tmp_path / "config"
    certs = config / "tls"
    certs.mkdir(parents=True)
    tlspeers.make_ca(certs, "ca")
    tlspeers.make_cert(certs, "vendor", "ca", san=san)
    (config / "sbc.yaml").write_text(TLS_CONFIG)
    vendor = tlspeers.Uas(7291, certs / "vendor.pem", certs / "vendor.key")
    sbc = harness.start_sbc(tmp_path / "sbc", config, port=PORT)
    try:
        sbc.wait_events("dns.resolved", 1)
        r = calls("15551230000", 1, tmp_path / "uac")
        (end,) = [e for e in sbc.wait_events("call.end", 1)]
        (attempt,) = end["attempts"]  # type: ignore[misc]
        if answered:
            assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
            assert vendor.handshakes == 1 and attempt["trunk"] == "127.0.0.1:7291"
        else:
            assert r.count("SuccessfulCall") == 0 and end["status"] == 503, end
            assert vendor.handshakes == 0 and attempt["outcome"] == "transport"
            errors = [str(e["detail"]) for e in sbc.events("transport.error")]
            assert any("CERTIFICATE_VERIFY_FAILED" in e for e in errors), errors
    finally:
        vendor.close()
        assert sbc.alive(), sbc.log_path.read_text()[-3000:]
        assert sbc.stop() == 0
