"""Floods, scanners and bad TCP peers against the real sbc on loopback (node.flood, node.tcp,
server_header), with sipp, sipvicious (run as programs) and Python senders.

sbc listens on 127.0.0.1:6600 (UDP and TCP, one worker: its CPU is read from /proc), metrics
on :6601. The legitimate caller is sipp on 127.0.0.1:6610 (carrier-a, 127.0.0.1), vendors
sipp on :6681/:6682. 127.0.0.3 and 127.0.0.4 are trunk IPs of carrier-b (trusted);
127.0.0.2 and 127.0.0.5-6 are strangers.

A flood while calls go on (127.0.0.2 is nobody; the same from 127.0.0.3, a trunk):

    caller 127.0.0.1:6610        sbc :6600                vendor :6681/6682    flooder
      |--INVITE (20 cps)-------->|--INVITE--------------->|                      |
      |<--------------------200--|<--------------------200-|                      |
      |--ACK / BYE ------------->|--ACK / BYE ----------->|                      |
      |                          |<--INVITE x 2000/s for 10 s----------------------|
      |                          |   first 200 in a second: unknown_source drops (or
      |                          |   calls, from a trunk); the 201st: flood.banned, then
      |                          |   every datagram dropped before parsing, unanswered
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

from tests import helpers

pytestmark = pytest.mark.e2e

PORT = 6600
METRICS = 6601
CALLER = 6610
VENDORS = [6681, 6682]
CONFIG = f"""
node:
  listen:
    - {{address: 127.0.0.1, port: {PORT}, transport: udp}}
    - {{address: 127.0.0.1, port: {PORT}, transport: tcp}}
  workers: 1
  drain_timeout: 1             # the trunk flood's unACKed calls must not hold the exit
  unknown_source: drop
  metrics: {{listen: "127.0.0.1:{METRICS}"}}
  cdr: {{path: cdr.jsonl}}
  flood: {{requests: 200, window: 1, block_for: 60}}
  tcp: {{idle_timeout: 30, header_timeout: 2, max_connections: 520}}
  registrar: {{realm: sbc.lab, algorithms: [MD5]}}
relationships: [{{name: carrier-a}}, {{name: carrier-b}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1, port: 0}}]}}
  - {{name: carrier-b, relationship: carrier-b, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.3, port: 0}}, {{ip: 127.0.0.4, port: 0}}]}}
  - {{name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{type: registration, username: "101", password: zebra42}}]}}
  - {{name: vendor-pool, relationship: vendor-x, direction: termination, hunting: load-balance,
     trunks: [{{ip: 127.0.0.1, port: 6681}}, {{ip: 127.0.0.1, port: 6682}}],
     limits: {{b_timer: 2}}}}
  - {{name: vendor-big, relationship: vendor-x, direction: termination, hunting: failover,
     trunks: [{{ip: 127.0.0.1, port: 6683, protocol: udp}}, {{ip: 127.0.0.1, port: 6683,
               protocol: tcp}}]}}
routeplans:
  - {{name: default, routes: [{{prefix: "", trunk_groups: [vendor-pool]}},
                             {{prefix: "9", trunk_groups: [vendor-big]}}]}}
"""


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    workdir = tmp_path_factory.mktemp("sbc")
    config = workdir / "config"
    config.mkdir()
    (config / "sbc.yaml").write_text(CONFIG)
    proc = harness.start_sbc(workdir, config, port=PORT)
    yield proc
    assert proc.alive(), "sbc died during the tests"
    assert proc.stop() == 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=5).read()
    return helpers.sample(text.decode(), name, **labels)


def flood(host: str, count: int = 20_000, seconds: float = 10.0) -> None:
    """``count`` INVITEs from ``host`` (one socket, port in our range), evenly over
    ``seconds``, each a new call."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 6650))
        start = time.monotonic()
        for i in range(count):
            cid = f"flood-{host}-{i}"
            s.sendto(
                (
                    f"INVITE sip:1555{i:07d}@127.0.0.1:{PORT} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {host}:6650;branch=z9hG4bK{cid};rport\r\n"
                    f"From: <sip:15550001000@{host}>;tag=f{i}\r\n"
                    f"To: <sip:1555{i:07d}@127.0.0.1>\r\n"
                    f"Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{host}:6650>\r\n"
                    f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", PORT),
            )
            if i % 100 == 99:  # pace in steps of 100 datagrams
                ahead = start + seconds * (i + 1) / count - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)


def sipp_ports(base: int) -> list[str]:
    """sipp's media (base, base + 2) and control (base + 3) sockets, in our range."""
    return ["-mp", str(base), "-ci", "127.0.0.1", "-cp", str(base + 3)]


def calls_under_flood(sbc: harness.Sbc, tmp_path: Path, source: str, port: int) -> None:
    """200 calls at 20 cps from the caller while ``source`` floods; every call completes,
    the flood is banned once and leaves a bounded number of log lines."""
    lines_before = len(sbc.log_path.read_text().splitlines())
    cpu_before = cpu_seconds(sbc.proc.pid)
    with (
        harness.sipp_servers("uas.xml", VENDORS[:1], tmp_path, extra=sipp_ports(6634)),
        harness.sipp_servers("uas.xml", VENDORS[1:], tmp_path, extra=sipp_ports(6638)),
    ):
        result: list[harness.SippResult] = []
        caller = threading.Thread(
            target=lambda: result.append(
                harness.run_sipp("uac.xml", calls=200, rate=20, port=port, workdir=tmp_path,
                                 remote=f"127.0.0.1:{PORT}", timeout=60,
                                 extra=sipp_ports(6620 + 4 * (port - CALLER)))
            )
        )  # fmt: skip
        caller.start()
        started = time.monotonic()
        flood(source)
        flood_s = time.monotonic() - started
        cpu = cpu_seconds(sbc.proc.pid) - cpu_before
        caller.join(timeout=90)
    (r,) = result
    assert r.count("SuccessfulCall") == 200 and r.count("FailedCall") == 0, r.output
    lines = sbc.log_path.read_text().splitlines()[lines_before:]
    about_flood = [ln for ln in lines if source in ln]
    banned = [ln for ln in about_flood if json.loads(ln).get("event") == "flood.banned"]
    print(
        f"\nflood of 20,000 INVITEs from {source} in {flood_s:.1f} s with 200 calls at 20 cps:"
        f" sbc CPU {cpu:.2f} s ({100 * cpu / flood_s:.0f} % of one core),"
        f" {len(lines)} log lines in all, {len(about_flood)} about {source}"
    )
    assert len(banned) == 1, about_flood
    assert metric("sbc_sip_dropped_total", reason="flood") >= 19_000


def test_a_strangers_flood_costs_counters_not_lines_and_no_call(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    calls_under_flood(sbc, tmp_path, "127.0.0.2", CALLER)
    lines = [ln for ln in sbc.log_path.read_text().splitlines() if "127.0.0.2" in ln]
    # one edge.dropped (the first of the unknown_source drops) and one flood.banned
    assert len(lines) <= 3, lines
    first = json.loads(next(ln for ln in lines if "edge.dropped" in ln))
    assert first["dropped"] == 1


def test_a_trunk_that_floods_is_banned_too(sbc: harness.Sbc, tmp_path: Path) -> None:
    calls_under_flood(sbc, tmp_path, "127.0.0.3", CALLER + 1)
    (ban,) = [e for e in sbc.events("flood.banned") if e["ip"] == "127.0.0.3"]
    assert ban["requests"] == 201 and ban["block_for"] == 60
    # the ban line matches the shipped fail2ban filter
    conf = (harness.ROOT / "contrib/fail2ban/filter.d/sbc.conf").read_text()
    regex = re.search(r"failregex = (.*)", conf)
    assert regex is not None
    rx = re.compile(regex.group(1).strip().replace("<HOST>", r"(?P<host>[\d.]+)"))
    hosts = [
        m.group("host") for ln in sbc.log_path.read_text().splitlines() if (m := rx.search(ln))
    ]
    assert hosts == ["127.0.0.2", "127.0.0.3"]


def svmap(source: str) -> str:
    run = subprocess.run(
        ["svmap", "-b", source, "-P", "6660", "-p", str(PORT), "127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return run.stdout + run.stderr


def test_svmap_finds_nothing_from_a_stranger_and_no_product_from_a_trunk(
    sbc: harness.Sbc,
) -> None:
    stranger = svmap("127.0.0.5")
    assert "127.0.0.1:6600" not in stranger, stranger
    trusted = svmap("127.0.0.4")
    assert "127.0.0.1:6600" in trusted, trusted  # it answers its trunks' OPTIONS ...
    (row,) = [ln for ln in trusted.splitlines() if "127.0.0.1:6600" in ln]
    assert "sbc" not in row.lower() and "python" not in row.lower(), row  # ... anonymously
    print("\nsvmap from a trunk:", row)


def svwar(source: str, extensions: str) -> str:
    run = subprocess.run(
        ["svwar", "-b", source, "-P", "6661", "-p", str(PORT), "-e", extensions, "127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return run.stdout + run.stderr


def test_svwar_cannot_tell_existing_users_from_others(sbc: harness.Sbc) -> None:
    """Extension 101 exists (a registration account); 100 and 102-110 do not."""
    out = svwar("127.0.0.4", "100-110")
    assert "101" not in out.replace("100-110", ""), out
    print("\nsvwar from a trunk:", out.strip().splitlines()[-3:])


def test_idle_and_slowloris_tcp_do_not_slow_options_and_slowloris_is_closed(
    sbc: harness.Sbc,
) -> None:
    """500 idle TCP connections from 127.0.0.5 and one slowloris (a byte every 100 ms)
    from 127.0.0.6: OPTIONS from the trunk are answered within 50 ms; the slowloris
    connection is closed by header_timeout (2 s); past max_connections (520) new ones are
    closed as they come, in one tcp.full line."""
    idle = []
    for _ in range(500):
        c = socket.create_connection(("127.0.0.1", PORT), source_address=("127.0.0.5", 0))
        idle.append(c)
    slow = socket.create_connection(("127.0.0.1", PORT), source_address=("127.0.0.6", 0))
    slow.settimeout(0.05)
    head = b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.6:1;branch=z9hG4bKs\r\n"
    head += b"X-Pad: " + b"a" * 30_000
    closed_after: float | None = None
    latencies: list[float] = []
    start = time.monotonic()
    try:
        for i, byte in enumerate(head):
            try:
                slow.send(bytes([byte]))
                if slow.recv(1) == b"":
                    closed_after = time.monotonic() - start
                    break
            except TimeoutError:
                pass
            except OSError:
                closed_after = time.monotonic() - start
                break
            if i % 2 == 0:
                t = time.monotonic()
                assert harness.options(PORT) == 200
                latencies.append(time.monotonic() - t)
            if time.monotonic() - start > 10:
                break
        assert metric("sbc_tcp_connections") >= 500
        extra = [
            socket.create_connection(("127.0.0.1", PORT), source_address=("127.0.0.5", 0))
            for _ in range(40)
        ]
        time.sleep(0.5)
        full = sbc.events("tcp.full")
        refused = metric("sbc_tcp_refused_total")
        for c in extra:
            c.close()
    finally:
        for c in idle:
            c.close()
        slow.close()
    print(
        f"\n500 idle + slowloris: {len(latencies)} OPTIONS, slowest "
        f"{1000 * max(latencies):.1f} ms; slowloris closed after {closed_after} s;"
        f" {refused:.0f} refused past the cap, {len(full)} tcp.full line(s)"
    )
    assert max(latencies) < 0.05, latencies
    assert closed_after is not None and 2.0 <= closed_after < 3.5, closed_after
    assert metric("sbc_tcp_header_timeouts_total") == 1
    assert refused >= 20 and len(full) == 1, full


def test_with_two_workers_a_ban_holds_on_both_and_is_logged_once(tmp_path: Path) -> None:
    """node.workers: 2. A trunk (127.0.0.3) floods OPTIONS from 8 sockets, which the kernel
    spreads over both workers: the node logs one flood.banned (the supervisor's), and
    afterwards OPTIONS from 8 fresh sockets of that address get no answer from either
    worker, while the other trunk address (127.0.0.4) is still answered."""
    config = tmp_path / "config"
    config.mkdir()
    text = CONFIG.replace("workers: 1", "workers: 2").replace(f"port: {PORT}", "port: 6602")
    text = text.replace(f"127.0.0.1:{METRICS}", "127.0.0.1:6603")
    text = text.replace("requests: 200", "requests: 100")
    (config / "sbc.yaml").write_text(text)
    node = harness.start_sbc(tmp_path, config, port=6602)
    try:
        socks = []
        for i in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.3", 6670 + i))
            socks.append(s)
        for n in range(150):
            for i, s in enumerate(socks):
                s.sendto(probe("127.0.0.3", 6670 + i, f"f{n}-{i}"), ("127.0.0.1", 6602))
        time.sleep(1.0)
        for s in socks:
            s.close()
        answered = 0
        for i in range(8):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.3", 6690 + i))  # fresh sockets
                s.settimeout(0.3)
                s.sendto(probe("127.0.0.3", 6690 + i, f"after-{i}"), ("127.0.0.1", 6602))
                with contextlib.suppress(TimeoutError):
                    answered += s.recv(65535).startswith(b"SIP/2.0 200")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.4", 6699))
            s.settimeout(1.0)
            s.sendto(probe("127.0.0.4", 6699, "other"), ("127.0.0.1", 6602))
            other = s.recv(65535)
        bans = node.events("flood.banned")
    finally:
        assert node.stop() == 0
    assert [b["ip"] for b in bans] == ["127.0.0.3"], bans
    assert answered == 0
    assert other.startswith(b"SIP/2.0 200")


def probe(host: str, port: int, cid: str) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:6602 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{cid};rport\r\n"
        f"From: <sip:p@{host}>;tag=t{cid}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {cid}\r\n"
        f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_large_invite_reaches_the_vendor_over_tcp(sbc: harness.Sbc, tmp_path: Path) -> None:
    """RFC 3261 §18.1.1. The caller sends a 1,900-byte INVITE over UDP; vendor-big has a UDP
    and a TCP trunk at 127.0.0.1:6683, where sipp listens on TCP only:

        caller 127.0.0.1:6612 --INVITE (UDP, 1.9 KB)--> sbc --INVITE (TCP)--> sipp :6683
                              <--------------------200-     <-------------200-
                              --ACK, BYE -------------->    --ACK, BYE ------>
    """
    pad = b"".join(b"a=x-pad:%04d%s\r\n" % (i, b"p" * 40) for i in range(30))
    sdp = helpers.SDP + pad
    me = harness.Peer("127.0.0.1", 6612)
    ruri = f"sip:9555@127.0.0.1:{PORT}"
    with harness.sipp_servers("uas.xml", [6683], tmp_path, extra=["-t", "t1", *sipp_ports(6642)]):
        try:
            me.send(helpers.request("INVITE", "big-1", "c1", "", 1, me, sdp, ruri=ruri), PORT)
            answers = me.replies(3.0)
            ok = [a for a in answers if a.startswith(b"SIP/2.0 200")]
            assert ok, answers
            to_tag = harness.tag_of(harness.header(ok[0].decode(), "To"))
            me.send(helpers.request("ACK", "big-1", "c1", to_tag, 1, me, ruri=ruri), PORT)
            me.send(helpers.request("BYE", "big-1", "c1", to_tag, 2, me, ruri=ruri), PORT)
            assert any(a.startswith(b"SIP/2.0 200") for a in me.replies(2.0))
        finally:
            me.close()
    (attempt,) = [e for e in sbc.events("call.attempt") if e["trunk_group"] == "vendor-big"]
    assert attempt["trunk"] == "tcp:127.0.0.1:6683"
