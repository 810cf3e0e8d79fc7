"""The control socket (`sbc ctl`) and HEP capture with the real sbc and sipp on loopback,
in the default mode (a supervisor and two workers) and with ``workers: 1``.

    uac 6720 ──> sbc :6700 (2 workers; control.sock) ──> pool: uas 6721, uas 6722
                   └── HEPv3 copies ──> collector 127.0.0.1:6790 (this test, decoding them)

A basic call's ladder (sipp's stock uac and uas), 7 messages on the A-leg and 6 on the B-leg,
so 13 HEP packets per call, all with the A-leg's Call-ID as correlation id:

    uac                    sbc                      uas
     |--INVITE------------->|--INVITE--------------->|
     |<--------------100----|                        |   (the stock uas sends no 100)
     |<--------------180----|<-------------------180-|
     |<--------------200----|<-------------------200-|
     |--ACK---------------->|--ACK------------------>|
     |--BYE---------------->|--BYE------------------>|
     |<--------------200----|<-------------------200-|

`sbc ctl kill` of a held call (lab/sipp/uac_until_bye.xml waits for sbc's BYE):

     |<--------------BYE----|--BYE------------------>|   Reason: SIP;cause=200;text="killed"
     |--200---------------->|<-------------------200-|   CDR: hangup sbc, reason killed
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import pytest

from sbc import hep
from tests.helpers import sample

pytestmark = pytest.mark.e2e

PORT, UAC, UAS_A, UAS_B, HEP = 6700, 6720, 6721, 6722, 6790
LONE_PORT, LONE_UAC, LONE_UAS = 6710, 6711, 6712
METRICS, LONE_METRICS = 6701, 6713
HELD_LADDER = [  # (leg, direction at sbc, method or status) of a held call, `sbc ctl call`
    ("a", "in", "INVITE"), ("a", "out", "100"), ("b", "out", "INVITE"), ("b", "in", "180"),
    ("a", "out", "180"), ("b", "in", "200"), ("b", "out", "ACK"), ("a", "out", "200"),
    ("a", "in", "ACK"),
]  # fmt: skip
CONFIG = """
node:
  workers: %(workers)d
  name: %(name)s
  listen: [{address: 127.0.0.1, port: %(port)d, transport: udp}]
  cdr: {path: cdr/cdr.jsonl}
  audit: {path: audit/audit.jsonl}
  control: {socket: run/control.sock}
  metrics: {listen: "127.0.0.1:%(metrics)d"}
  hep: {address: "127.0.0.1:%(hep)d", capture_id: 77, password: "h3p"}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}]}
  - {name: pool, relationship: vendor-x, direction: termination, hunting: load-balance,
     trunks: [{ip: 127.0.0.1, port: %(uas_a)d}, {ip: 127.0.0.1, port: %(uas_b)d}]}
routeplans:
  - name: r
    routes: [{prefix: "", trunk_groups: [pool]}]
"""


class Collector:
    """A HEP collector: every datagram on its port, decoded (sbc.hep.decode)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.packets: list[hep.Packet] = []
        self.bad = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            try:
                self.packets.append(hep.decode(data))
            except (ValueError, KeyError, IndexError):
                self.bad += 1

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@dataclass
class Node:
    sbc: harness.Sbc
    workdir: Path
    config: Path
    hep: Collector
    port: int
    sipp_dir: Path
    seen: set[str] = field(default_factory=set)  # CDR call ids checked already

    def ctl(self, *args: str, json_out: bool = True, by_config: bool = True) -> tuple[int, Any]:
        where = ["--config", str(self.config)] if by_config else ["--socket", "run/control.sock"]
        cmd = [sys.executable, "-m", "sbc.cli", "ctl", *where]
        proc = subprocess.run(
            [*cmd, *(["--json"] if json_out else []), *args],
            cwd=self.workdir,
            capture_output=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(harness.ROOT)},
        )
        out = proc.stdout.decode()
        if proc.returncode != 0:
            return proc.returncode, proc.stderr.decode()
        return 0, json.loads(out) if json_out else out

    def records(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """CDR records not seen before, once there are ``count`` of them."""
        path = self.workdir / "cdr" / "cdr.jsonl"
        deadline = time.monotonic() + timeout
        new: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if path.exists():
                rows = [json.loads(x) for x in path.read_text().splitlines()]
                new = [r for r in rows if r["call_id"] not in self.seen]
                if len(new) >= count:
                    break
            time.sleep(0.1)
        self.seen.update(r["call_id"] for r in new)
        return new

    def audit(self) -> list[dict[str, Any]]:
        path = self.workdir / "audit" / "audit.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()]


def write_config(directory: Path, **values: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sbc.yaml").write_text(CONFIG % values)
    return directory


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("ctl")
    config = write_config(
        workdir / "config",
        workers=2,
        name="edge-1",
        port=PORT,
        hep=HEP,
        uas_a=UAS_A,
        uas_b=UAS_B,
        metrics=METRICS,
    )
    sipp_dir = workdir / "sipp"
    collector = Collector(HEP)
    uas_extra = ["-mp", "6740", "-cp", "6730", "-trace_msg"]
    try:
        with (
            harness.sipp_servers("uas", [UAS_A], sipp_dir / "a", extra=uas_extra),
            harness.sipp_servers(
                "uas", [UAS_B], sipp_dir / "b", extra=["-mp", "6744", "-cp", "6731"]
            ),
        ):
            sbc = harness.start_sbc(workdir, config, port=PORT)
            # Workers answer SIP a moment before the supervisor binds the socket (before
            # READY=1 to systemd).
            assert harness.wait_for((workdir / "run" / "control.sock").exists, timeout=10)
            try:
                yield Node(sbc, workdir, config, collector, PORT, sipp_dir)
            finally:
                assert sbc.alive(), "sbc died during the tests"
                assert sbc.stop() == 0
    finally:
        collector.close()


def uac(
    node: Node, scenario: str, calls: int, rate: float = 10, cp: int = 6732
) -> harness.SippResult:
    return harness.run_sipp(
        scenario,
        calls=calls,
        rate=rate,
        port=UAC if node.port == PORT else LONE_UAC,
        workdir=node.sipp_dir / "uac",
        remote=f"127.0.0.1:{node.port}",
        extra=["-mp", "6750", "-cp", str(cp), "-d", "200"],
        timeout=60,
    )


def wait_calls(node: Node, count: int, state: str = "answered") -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        code, calls = node.ctl("calls")
        assert code == 0, calls
        if sum(1 for c in calls if c["state"] == state) >= count:
            break
        time.sleep(0.2)
    return calls


def test_socket_is_owner_only(node: Node) -> None:
    mode = (node.workdir / "run" / "control.sock").stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_calls_lists_held_calls_and_kill_ends_them_with_bye_on_both_legs(node: Node) -> None:
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(uac, node, "uac_until_bye.xml", 10, 20)
        calls = wait_calls(node, 10)
        assert len(calls) == 10, calls
        assert {c["ingress"] for c in calls} == {"carrier-a"}
        assert {c["egress"] for c in calls} == {"pool"}
        assert {c["state"] for c in calls} == {"answered"}
        assert all(c["dnis"] == "service" and c["age"] >= 0 for c in calls)
        code, table = node.ctl("calls", json_out=False)
        assert code == 0
        lines = table.splitlines()
        assert lines[0].split() == ["id", "ingress", "egress", "ani", "dnis", "state", "age"]
        assert lines[-1] == "10 calls"
        assert {c["id"] for c in calls} == {line.split()[0] for line in lines[1:-1]}

        victim = calls[0]
        code, ladder = node.ctl("call", victim["id"])  # from the trace ring, while it is up
        assert code == 0, ladder
        seen = [
            (m["leg"], m["direction"], m["message"].split()[0 if m["message"][0] != "S" else 1])
            for m in ladder
        ]
        assert sorted(seen) == sorted(HELD_LADDER), seen  # each leg in order; legs interleave
        for leg in "ab":
            assert [x for x in seen if x[0] == leg] == [x for x in HELD_LADDER if x[0] == leg]
        assert {m["sip_call_id"] for m in ladder if m["leg"] == "a"} == {victim["sip_call_id"]}
        code, result = node.ctl("kill", victim["id"])
        assert code == 0 and result == {"id": victim["id"], "killed": True}
        (cdr,) = node.records(1)
        assert cdr["call_id"] == victim["id"]
        assert (cdr["hangup"], cdr["reason"], cdr["disposition"]) == ("sbc", "killed", "answered")
        b_call_id = cdr["attempts"][0]["b_sip_call_id"]
        assert b_call_id and b_call_id != cdr["sip_call_id"]
        assert cdr["node"] == "edge-1"
        code, text = node.ctl("call", cdr["sip_call_id"], json_out=False)  # ended: by Call-ID
        assert code == 0, text
        byes = [
            line.split()[1:3]
            for line in text.splitlines()
            if line.endswith("SIP/2.0") and " BYE " in line
        ]
        assert byes == [["a", "to"], ["b", "to"]] or sorted(byes) == [["a", "to"], ["b", "to"]], (
            text
        )
        code, calls = node.ctl("calls")
        assert victim["id"] not in {c["id"] for c in calls} and len(calls) == 9
        code, err = node.ctl("kill", victim["id"])
        assert code == 0 and err["killed"] is False  # gone: nothing to kill
        for c in calls:
            assert node.ctl("kill", c["id"])[1]["killed"] is True
        result = held.result()
    assert result.count("SuccessfulCall") == 10, result.output  # each got its BYE, said 200
    rest = node.records(9)
    assert len(rest) == 9 and {r["reason"] for r in rest} == {"killed"}
    # BYE on both legs, in sbc's own capture: to the caller and to the vendor, each with
    # the killed call's correlation id, each answered 200.
    a_id, b_id = cdr["sip_call_id"], b_call_id
    ladder = {("sent", "BYE", a_id), ("sent", "BYE", b_id)}
    ladder |= {("received", "200", a_id), ("received", "200", b_id)}
    assert harness.wait_for(lambda: _bye_ladder(node, cdr) == ladder, timeout=5), _bye_ladder(
        node, cdr
    )
    audit = [a for a in node.audit() if a["event"] == "call.killed"]
    assert {a["call_id"] for a in audit} == {cdr["call_id"], *(r["call_id"] for r in rest)}
    assert {a["uid"] for a in audit} == {os.getuid()}
    if cdr["egress_trunk"] == f"127.0.0.1:{UAS_A}":  # that vendor's own sipp log says so too
        msgs = [m for d, m in _uas_messages(node) if d == "received" and b_call_id in m]
        assert any(m.startswith("BYE ") and 'text="killed"' in m for m in msgs)


def _bye_ladder(node: Node, cdr: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(sent | received, BYE | 200, Call-ID) of the killed call's hang-up, from HEP."""
    out = set()
    for p in node.hep.packets:
        if p.correlation != cdr["sip_call_id"]:
            continue
        head = p.payload.split(b"\r\n\r\n", 1)[0].decode()
        first = head.split("\r\n", 1)[0]
        cseq = harness.header(head, "CSeq")
        if cseq.endswith("BYE"):
            kind = "BYE" if first.startswith("BYE ") else first.split()[1]
            way = "sent" if p.sport == node.port else "received"
            out.add((way, kind, harness.header(head, "Call-ID")))
    return out


def _uas_messages(node: Node) -> list[tuple[str, str]]:
    found = list((node.sipp_dir / "a").glob("uas_*_messages.log"))
    return harness.sipp_messages(found[0]) if found else []


def test_trunk_disable_takes_a_trunk_out_of_hunting_until_enabled(node: Node) -> None:
    code, result = node.ctl("trunk", "disable", "pool", f"127.0.0.1:{UAS_B}")
    assert code == 0 and result["out_of_service"] == [["pool", f"127.0.0.1:{UAS_B}"]]
    res = uac(node, "uac", 8)
    assert res.count("SuccessfulCall") == 8, res.output
    records = node.records(8)
    assert {r["egress_trunk"] for r in records} == {f"127.0.0.1:{UAS_A}"}
    # A reload keeps it out.
    code, record = node.ctl("reload")
    assert code == 0 and record["event"] == "config.reloaded" and record["uid"] == os.getuid()
    res = uac(node, "uac", 4)
    assert {r["egress_trunk"] for r in node.records(4)} == {f"127.0.0.1:{UAS_A}"}
    code, result = node.ctl("trunk", "enable", "pool", f"127.0.0.1:{UAS_B}")
    assert code == 0 and result["out_of_service"] == []
    res = uac(node, "uac", 8)
    assert res.count("SuccessfulCall") == 8, res.output
    used = {r["egress_trunk"] for r in node.records(8)}
    assert used == {f"127.0.0.1:{UAS_A}", f"127.0.0.1:{UAS_B}"}
    # The whole trunk group: no trunk left, the caller hears the failure.
    assert node.ctl("trunk", "disable", "pool")[0] == 0
    res = uac(node, "uac", 1)
    (refused,) = node.records(1)
    assert refused["egress_trunk"] is None and refused["attempts"] == []
    assert node.ctl("trunk", "enable", "pool")[1]["out_of_service"] == []
    audit = [a for a in node.audit() if a["event"].startswith("trunk.")]
    assert [(a["event"], a["trunk"]) for a in audit] == [
        ("trunk.disabled", f"127.0.0.1:{UAS_B}"),
        ("trunk.enabled", f"127.0.0.1:{UAS_B}"),
        ("trunk.disabled", ""),
        ("trunk.enabled", ""),
    ]
    assert {a["uid"] for a in audit} == {os.getuid()}
    # Bad input: named, refused, exit 1.
    code, err = node.ctl("trunk", "disable", "nope")
    assert code == 1 and "unknown trunk group 'nope'" in err
    code, err = node.ctl("trunk", "disable", "pool", "10.0.0.1:5060")
    assert code == 1 and "has no trunk" in err


def test_hep_copies_every_message_of_both_legs_with_one_correlation_id(node: Node) -> None:
    calls = 10
    start = len(node.hep.packets)
    res = uac(node, "uac", calls)
    assert res.count("SuccessfulCall") == calls, res.output
    records = node.records(calls)
    a_ids = {r["sip_call_id"] for r in records}
    assert len(a_ids) == calls
    legs = {r["sip_call_id"]: r["attempts"][0]["b_sip_call_id"] for r in records}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = [p for p in node.hep.packets[start:] if p.correlation in a_ids]
        if len({p.payload for p in got}) >= 13 * calls:
            break
        time.sleep(0.1)
    unique = {p.payload: p for p in got}  # a retransmission is the same bytes again
    assert len(unique) == 13 * calls, len(unique)
    assert node.hep.bad == 0
    assert len({p.correlation for p in unique.values()}) == calls
    for a_id, b_id in legs.items():
        mine = [p for p in unique.values() if p.correlation == a_id]
        ids = {p.payload.split(b"Call-ID: ", 1)[1].split(b"\r\n")[0].decode() for p in mine}
        assert ids == {a_id, b_id}  # both legs, joined by the A-leg's Call-ID
        a_leg = [p for p in mine if a_id.encode() in p.payload]
        assert len(a_leg) == 7 and len(mine) - len(a_leg) == 6
    p = next(iter(unique.values()))
    assert (p.capture_id, p.password, p.proto_type, p.family, p.protocol) == (77, "h3p", 1, 2, 17)
    assert {p.dport for p in unique.values() if p.payload.startswith(b"INVITE")} <= {
        PORT,
        UAS_A,
        UAS_B,
    }
    assert abs(p.seconds - time.time()) < 60


def test_a_strangers_message_gets_no_hep_copy(node: Node) -> None:
    """The copy is taken after the edge screen: what sbc drops unanswered (a stranger, a
    banned flood) costs no HEP datagram and no trace slot. A known peer's OPTIONS, sent
    after it, is copied: once that copy is in, the stranger's would have been too."""
    start = len(node.hep.packets)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 6795))
        s.sendto(
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:6795;branch=z9hG4bKs1\r\n"
            b"From: <sip:s@127.0.0.2>;tag=s1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: stranger-1\r\n"
            b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ("127.0.0.1", node.port),
        )
    assert harness.options(node.port) == 200
    assert harness.wait_for(
        lambda: any(p.payload.startswith(b"SIP/2.0 200") for p in node.hep.packets[start:]),
        timeout=5,
    )
    assert not [p for p in node.hep.packets[start:] if b"stranger-1" in p.payload]


def test_lone_node_serves_the_same_control_socket(tmp_path: Path) -> None:
    """``workers: 1``: the runtime serves the socket itself."""
    config = write_config(
        tmp_path / "config", workers=1, name="lone", port=LONE_PORT, hep=6791, metrics=LONE_METRICS,
        uas_a=LONE_UAS, uas_b=LONE_UAS,
    )  # fmt: skip
    with harness.sipp_servers(
        "uas", [LONE_UAS], tmp_path / "sipp", extra=["-mp", "6760", "-cp", "6733"]
    ):
        sbc = harness.start_sbc(tmp_path, config, port=LONE_PORT)
        assert harness.wait_for((tmp_path / "run" / "control.sock").exists, timeout=10)
        node = Node(sbc, tmp_path, config, Collector(6791), LONE_PORT, tmp_path / "sipp")
        try:
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(uac, node, "uac_until_bye.xml", 2, 10, 6734)
                calls = wait_calls(node, 2)
                assert len(calls) == 2
                for c in calls:
                    assert node.ctl("kill", c["id"])[1]["killed"] is True
                assert held.result().count("SuccessfulCall") == 2
            records = node.records(2)
            assert {(r["hangup"], r["reason"], r["node"]) for r in records} == {
                ("sbc", "killed", "lone")
            }
            proc = promtool(scrape(LONE_METRICS))
            assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
            assert sample(scrape(LONE_METRICS), "sbc_config_reloads_total", result="accepted") == 0
            code, regs = node.ctl("registrations")
            assert code == 0 and regs == []
            code, record = node.ctl("reload")
            assert code == 0 and record["event"] == "config.reloaded"
            assert record["uid"] == os.getuid() and record["summary"] == "no change"
            (tmp_path / "config" / "sbc.yaml").write_text("node: {workers: x}\n")
            code, out = node.ctl("reload", json_out=False, by_config=False)
            assert code == 0 and out.startswith("refused: ") and "node.workers" in out
            assert node.audit()[-1]["event"] == "config.reload_refused"
        finally:
            node.hep.close()
            assert sbc.alive()
            assert sbc.stop() == 0
            assert not (tmp_path / "run" / "control.sock").exists()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def promtool(text: str) -> subprocess.CompletedProcess[bytes]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed (Debian package prometheus): run ./lab/install")
    return subprocess.run(
        [tool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )


def test_metrics_pass_promtool_and_carry_the_node_conventions(node: Node) -> None:
    """The merged /metrics of a node of workers: promtool's lint passes, and the build,
    process, GC and reload metrics are there once each."""
    before = time.time()
    assert node.ctl("reload")[0] == 0
    text = scrape(METRICS)
    proc = promtool(text)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
    assert sample(text, "sbc_build_info", version="0.1.0") == 1
    assert sample(text, "sbc_config_reloads_total", result="accepted") >= 1
    assert sample(text, "sbc_config_reloads_total", result="refused") == 0
    assert sample(text, "sbc_config_last_reload_success_timestamp_seconds") >= before - 1
    assert sample(text, "process_resident_memory_bytes") > 0
    assert sample(text, "python_gc_collections_total", generation="0") >= 0
    assert sample(text, "sbc_hep_sent_total") > 0 and sample(text, "sbc_hep_dropped_total") == 0
    assert text.count("# TYPE sbc_build_info ") == 1


def test_stats_reset_starts_the_traffic_counters_again_and_is_audited(node: Node) -> None:
    """`sbc ctl stats reset` on a node of workers: every worker's totals go back to 0 (what
    /metrics shows), calls go on being counted from there, and the audit log names who."""
    assert uac(node, "uac", 3).count("SuccessfulCall") == 3

    def attempts() -> float:
        """Calls offered on carrier-a, all workers together (none yet: no sample, 0)."""
        try:
            return sample(scrape(METRICS), "sbc_attempts_total", trunk_group="carrier-a")
        except AssertionError:
            return 0.0

    assert attempts() >= 3
    code, result = node.ctl("stats", "reset")
    assert code == 0 and result == {"reset": True, "workers": 2}, result
    assert attempts() == 0
    assert uac(node, "uac", 2).count("SuccessfulCall") == 2
    assert attempts() == 2
    (rec,) = [r for r in node.audit() if r.get("event") == "stats.reset"]
    assert rec["uid"] == os.getuid() and rec["workers"] == 2


def test_a_disabled_trunk_stays_out_of_hunting_across_a_restart(tmp_path: Path) -> None:
    """`sbc ctl trunk disable` is kept in node.control.state: after SIGTERM and a new start,
    calls still go to the other trunk only, until `enable`; an entry naming a trunk the
    config no longer has is dropped at start with one warning."""
    port, metrics, uas_a, uas_b, hep_port = 6704, 6705, 6706, 6707, 6792
    config = write_config(
        tmp_path / "config", workers=2, name="again", port=port, hep=hep_port, metrics=metrics,
        uas_a=uas_a, uas_b=uas_b,
    )  # fmt: skip
    sipp = tmp_path / "sipp"

    def calls(node: Node, n: int) -> set[str]:
        res = harness.run_sipp(
            "uac", calls=n, rate=10, port=6708, workdir=sipp / "uac",
            remote=f"127.0.0.1:{port}", extra=["-mp", "6770", "-cp", "6735"], timeout=60,
        )  # fmt: skip
        assert res.count("SuccessfulCall") == n, res.output
        return {r["egress_trunk"] for r in node.records(n)}

    def start() -> Node:
        sbc = harness.start_sbc(tmp_path, config, port=port)
        assert harness.wait_for((tmp_path / "run" / "control.sock").exists, timeout=10)
        return Node(sbc, tmp_path, config, Collector(hep_port), port, sipp)

    with (
        harness.sipp_servers("uas", [uas_a], sipp / "a", extra=["-mp", "6774", "-cp", "6736"]),
        harness.sipp_servers("uas", [uas_b], sipp / "b", extra=["-mp", "6778", "-cp", "6737"]),
    ):
        node = start()
        try:
            code, result = node.ctl("trunk", "disable", "pool", f"127.0.0.1:{uas_b}")
            assert code == 0 and result["out_of_service"] == [["pool", f"127.0.0.1:{uas_b}"]]
        finally:
            node.hep.close()
            assert node.sbc.stop() == 0
        state = json.loads((tmp_path / "out-of-service.json").read_text())
        assert state == [["pool", f"127.0.0.1:{uas_b}"]]
        # A stale entry (a trunk group since removed) is dropped, not fatal.
        (tmp_path / "out-of-service.json").write_text(json.dumps([*state, ["gone", ""]]))
        node = start()
        try:
            assert calls(node, 6) == {f"127.0.0.1:{uas_a}"}
            log = node.sbc.log_path.read_text()
            assert log.count('"control.state_dropped"') == 1 and '"gone"' in log
            code, result = node.ctl("trunk", "enable", "pool", f"127.0.0.1:{uas_b}")
            assert code == 0 and result["out_of_service"] == []
            assert calls(node, 6) == {f"127.0.0.1:{uas_a}", f"127.0.0.1:{uas_b}"}
        finally:
            node.hep.close()
            assert node.sbc.stop() == 0
    assert json.loads((tmp_path / "out-of-service.json").read_text()) == []
