"""Operations with the real sbc and sipp on loopback: CDRs, /metrics, `sbc status`, the
audit log, sd_notify, graceful drain, and the systemd units.

One sbc on 127.0.0.1:5660 (metrics :5760, admin :5860, trigger webhook :5960); routeplan `r`:

    486...  -> busy        5684 answers 486            -> relayed to the caller
    other   -> first, good 5683 answers 503, advanced  -> 5681 answers

    uac (lab/sipp/uac_cdr.xml)   sbc                   5683        5681
     |--INVITE------------------->|--INVITE----------->|           |
     |                            |<--------------503--|           |
     |                            |--INVITE----------------------->|
     |<---------------------180---|<--------------------------180--|
     |<---------------------200---|<--------------------------200--|   sipp: rtd 1 starts
     |--ACK---------------------->|--ACK-------------------------->|
     |    (hold 0.5-2.0 s)        |                                |
     |--BYE---------------------->|--BYE-------------------------->|   sipp: rtd 1 stops
     |<---------------------200---|<--------------------------200--|   CDR: one line
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import harness
import pytest

from tests.helpers import sample

pytestmark = pytest.mark.e2e

PORT = 5660
CONFIG = """
node:
  workers: %(workers)d
  listen: [{address: 127.0.0.1, port: %(port)d, transport: udp}]
  flood: {exempt: [127.0.0.1]}   # sipp's 50-200 cps from one address: no flood
  cdr: {path: cdr/cdr.jsonl}
  audit: {path: audit/audit.jsonl}
  metrics: {listen: "127.0.0.1:%(metrics)d"}
  admin: {listen: "127.0.0.1:%(admin)d"}
  drain_timeout: %(drain)d
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}]}
  - {name: first, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5683}]}
  - {name: good, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5681}],
     triggers: [{name: busy-hour, type: completions, condition: greater_than, value: 5,
                 window: 5, webhook: "http://127.0.0.1:%(hook)d/alarm"}]}
  - {name: busy, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5684}]}
routeplans:
  - name: r
    routes:
      - {prefix: "", trunk_groups: [first, good]}
      - {prefix: "486", trunk_groups: [busy]}
"""


def write_config(directory: Path, port: int, drain: int = 30, workers: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    values = {
        "port": port,
        "metrics": port + 100,
        "admin": port + 200,
        "hook": port + 300,
        "drain": drain,
        "workers": workers,
    }
    (directory / "sbc.yaml").write_text(CONFIG % values)
    return directory


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
        return str(resp.read().decode())


def records(workdir: Path, count: int, timeout: float = 10.0) -> list[dict[str, object]]:
    """The CDR file's records once there are ``count`` of them (or ``timeout`` passed)."""
    path = workdir / "cdr" / "cdr.jsonl"
    deadline = time.monotonic() + timeout
    found: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        if path.exists():
            found = [json.loads(line) for line in path.read_text().splitlines()]
            if len(found) >= count:
                break
        time.sleep(0.05)
    return found


@dataclass
class Ops:
    sbc: harness.Sbc
    workdir: Path
    posts: list[tuple[str, dict[str, object]]]  # what the trigger webhook received
    started: float  # time.time() when the sbc answered


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    workdir = tmp_path_factory.mktemp("ops")
    # One process: metric triggers count each worker's calls on their own (docs/config.md);
    # the drain tests below run the default, a worker per core.
    config = write_config(workdir / "config", PORT, workers=1)
    with (
        harness.sipp_servers("uas_503.xml", [5683], workdir),
        harness.sipp_servers("uas", [5681], workdir),
        harness.sipp_servers("uas_486.xml", [5684], workdir),
        harness.webhook_server(PORT + 300) as posts,
    ):
        sbc = harness.start_sbc(workdir, config, port=PORT)
        try:
            yield Ops(sbc, workdir, posts, time.time())
        finally:
            assert sbc.alive(), "sbc died during the tests"
            assert sbc.stop() == 0


@pytest.fixture(scope="module")
def placed(ops: Ops) -> tuple[harness.SippResult, harness.SippResult]:
    """The module's first calls, whichever test asks first: 12 answered after a 503 from
    `first`, 4 busy. The CDR and metrics tests both check them, so either runs alone."""
    # One after the other: two sipp runs of one scenario in one directory share file names.
    r_ok = harness.run_sipp(
        "uac_cdr.xml", calls=12, rate=10, port=5670, workdir=ops.workdir,
        remote=f"127.0.0.1:{PORT}", extra=["-s", "15551230000"], rtt=True,
    )  # fmt: skip
    r_busy = harness.run_sipp(
        "uac_cdr.xml", calls=4, rate=10, port=5671, workdir=ops.workdir,
        remote=f"127.0.0.1:{PORT}", extra=["-s", "4865550000"],
    )  # fmt: skip
    # sipp is done once our 200 answers its BYE; the call ends (its record, the metrics)
    # when the vendor answers ours: wait, so the metrics test may scrape at once
    records(ops.workdir, 16)
    return r_ok, r_busy


def test_one_cdr_per_call_matches_sipp_and_the_csv_export(
    ops: Ops, placed: tuple[harness.SippResult, harness.SippResult]
) -> None:
    workdir = ops.workdir
    r_ok, r_busy = placed
    assert r_ok.returncode == 0, r_ok.output
    assert r_busy.returncode == 0, r_busy.output
    assert r_ok.count("SuccessfulCall") == 12 and r_busy.received(486) == 4
    recs = records(workdir, 16)
    assert len(recs) == 16
    assert len({r["sip_call_id"] for r in recs}) == 16  # one record per call
    ok = [r for r in recs if r["disposition"] == "answered"]
    busy_recs = [r for r in recs if r["disposition"] == "busy"]
    assert len(ok) == 12 and len(busy_recs) == 4
    for r in ok:  # every hunting attempt is listed
        attempts = r["attempts"]
        assert isinstance(attempts, list)
        assert [(a["trunk_group"], a["status"], a["outcome"]) for a in attempts] == [
            ("first", 503, "code"),
            ("good", 200, "answered"),
        ]
        assert r["egress_trunk"] == "127.0.0.1:5681" and r["hangup"] == "caller"
    for r in busy_recs:
        assert r["status"] == 486 and r["duration"] == 0.0 and r["billable"] == 0
    # Durations against sipp's own call lengths (200 received -> BYE sent, rtd 1): sorted
    # pairing is the tightest matching, so every pair within 0.1 s means each call is.
    ours = sorted(float(r["duration"]) for r in ok)  # type: ignore[arg-type]
    theirs = sorted(ms / 1000 for ms in r_ok.rtt_ms)
    assert len(theirs) == 12
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 0.1, (ours, theirs)
    assert max(theirs) - min(theirs) > 0.2  # the holds really differ: the pairing means something

    export = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "cdr", "export", "--format", "csv",
         "--file", str(workdir / "cdr" / "cdr.jsonl")],
        capture_output=True, text=True, check=True, cwd=harness.ROOT,
    )  # fmt: skip
    rows = export.stdout.splitlines()
    assert rows[0].startswith("call_id,sip_call_id,relationship,trunk_group,")
    by_setup = sorted(recs, key=lambda r: str(r["setup_time"]))
    assert [row.split(",")[0] for row in rows[1:]] == [r["call_id"] for r in by_setup]


def test_metrics_match_the_sipp_run_exactly(
    ops: Ops, placed: tuple[harness.SippResult, harness.SippResult]
) -> None:
    workdir = ops.workdir
    text = get(PORT + 100, "/metrics")
    recs = records(workdir, 16)
    calls = len(recs)
    answered = sum(1 for r in recs if r["disposition"] == "answered")
    busy = sum(1 for r in recs if r["disposition"] == "busy")
    assert (calls, answered, busy) == (16, 12, 4)  # what sipp placed
    ingress = {"trunk_group": "carrier-a", "side": "ingress"}
    assert sample(text, "sbc_attempts_total", **ingress) == calls
    assert sample(text, "sbc_completions_total", **ingress) == answered
    assert sample(text, "sbc_answered_calls_ended_total", **ingress) == answered
    assert sample(text, "sbc_attempts_total", trunk_group="first") == answered
    assert sample(text, "sbc_completions_total", trunk_group="first") == 0
    assert sample(text, "sbc_completions_total", trunk_group="good") == answered
    assert sample(text, "sbc_attempts_total", trunk_group="busy") == busy
    assert sample(text, "sbc_pdd_seconds_count", **ingress) == answered
    seconds = sample(text, "sbc_answered_seconds_total", **ingress)
    assert abs(seconds - sum(float(r["duration"]) for r in recs)) < 0.01  # type: ignore[arg-type]
    assert sample(text, "sbc_sip_messages_total", direction="in", method="INVITE", code="") == calls
    assert sample(text, "sbc_sip_messages_total", direction="in", method="BYE", code="") == answered
    assert sample(text, "sbc_sip_messages_total", direction="in", method="INVITE", code="503") == (
        answered
    )
    assert sample(text, "sbc_sip_messages_total", direction="out", method="INVITE", code="486") == (
        busy
    )
    assert sample(text, "sbc_sip_messages_total", direction="out", method="INVITE", code="200") == (
        answered
    )
    assert sample(text, "sbc_ports_in_use", trunk_group="carrier-a") == 0
    assert sample(text, "sbc_cdr_records_total") == calls
    assert sample(text, "sbc_asr_ratio", trunk_group="carrier-a") == answered / calls


def test_a_metric_trigger_fires_once_and_recovers_once(ops: Ops) -> None:
    """`good` completions > 5 in 5 s: 8 answered calls at 10 cps cross it; 5 s after the
    last answer the window no longer does: one POST each, and the log says the same. (The
    earlier run may have crossed it too if the window was already whole: wait until quiet.)"""
    sbc = ops.sbc

    def quiet() -> bool:  # the window has been watched whole, and nothing is raised
        alarms = json.loads(get(PORT + 200, "/status"))["alarms"]
        return time.time() - ops.started > 6 and alarms == []

    assert harness.wait_for(quiet, timeout=15)
    before = len(ops.posts)
    r = harness.run_sipp(
        "uac_cdr.xml", calls=8, rate=10, port=5676, workdir=ops.workdir,
        remote=f"127.0.0.1:{PORT}", extra=["-s", "15551230000"],
    )  # fmt: skip
    assert r.count("SuccessfulCall") == 8, r.output
    assert harness.wait_for(lambda: len(ops.posts) >= before + 2, timeout=12)
    posts = ops.posts[before:]
    assert [body["event"] for _, body in posts] == ["metric.trigger", "metric.recovered"]
    path, fired = posts[0]
    assert path == "/alarm" and fired["trunk_group"] == "good" and fired["trigger"] == "busy-hour"
    assert isinstance(fired["value"], float) and fired["value"] > 5
    # the log says the same as the webhook, crossing for crossing
    assert (
        len(sbc.events("metric.trigger"))
        == len(sbc.events("metric.recovered"))
        == len([p for p in ops.posts if p[1]["event"] == "metric.trigger"])
    )


def test_status_reads_the_running_node(ops: Ops) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "status", "--admin", f"127.0.0.1:{PORT + 200}"],
        capture_output=True, text=True, check=True, cwd=harness.ROOT,
    ).stdout  # fmt: skip
    assert "calls up: 0" in out and "carrier-a" in out and "udp:127.0.0.1:5683" in out
    state = json.loads(get(PORT + 200, "/status"))
    assert state["node"]["cdr_records"] >= 16
    cdr_file = ops.workdir / "cdr" / "cdr.jsonl"  # where the CDR test read them
    assert state["node"]["cdr_path"] == str(cdr_file) and f"to {cdr_file}" in out
    assert {g["name"] for g in state["trunk_groups"]} == {"carrier-a", "first", "good", "busy"}
    with pytest.raises(urllib.error.HTTPError):  # call state is not on the metrics listener
        get(PORT + 100, "/status")


def test_reloads_are_audited_accepted_or_refused(ops: Ops) -> None:
    sbc, workdir = ops.sbc, ops.workdir
    config = workdir / "config"
    good = (config / "sbc.yaml").read_text()
    try:
        (config / "sbc.yaml").write_text(
            good.replace("port: 5684}]}", "port: 5684}], limits: {ports: 9}}")
        )
        (config / "more.yaml").write_text(
            "trunk_groups:\n  - {name: spare, relationship: vendor-x, direction: termination,"
            " trunks: [{ip: 127.0.0.1, port: 5685}]}\n"
        )
        sbc.proc.send_signal(signal.SIGHUP)
        sbc.wait_events("config.reloaded", 1)
        (config / "more.yaml").write_text("trunk_groups:\n  - {name: spare, direction: sideways}\n")
        sbc.proc.send_signal(signal.SIGHUP)
        sbc.wait_events("config.reload_failed", 1)
    finally:
        (config / "more.yaml").unlink()
        (config / "sbc.yaml").write_text(good)
    audit = [json.loads(x) for x in (workdir / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [a["event"] for a in audit] == [
        "config.loaded",
        "config.reloaded",
        "config.reload_refused",
    ]
    changes = audit[1]["changes"]["trunk_groups"]
    assert changes["added"] == ["spare"]
    assert changes["changed"]["busy"] == {"limits.ports": [0, 9]}
    error = audit[2]["error"]
    assert error["file"].endswith("more.yaml") and error["line"] == 2
    assert "direction" in error["field"]
    text = get(PORT + 100, "/metrics")
    assert sample(text, "sbc_config_reloads_accepted_total") == 1
    assert sample(text, "sbc_config_reloads_refused_total") == 1


# --- drain and systemd ------------------------------------------------------------------------


def invite_once(port: int, local: int, call_id: str) -> tuple[int, str]:
    """Send one INVITE from 127.0.0.1:``local``; return the final status and Retry-After
    (ACKing a failure, RFC 3261 §17.1.1.3)."""
    via = f"SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id};rport"
    head = (
        f"Via: {via}\r\nFrom: <sip:15550001000@127.0.0.1>;tag=t{call_id}\r\n"
        f"To: <sip:15551230000@127.0.0.1>\r\nCall-ID: {call_id}\r\nMax-Forwards: 70\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", local))
        s.settimeout(3)
        s.sendto(
            (f"INVITE sip:15551230000@127.0.0.1:{port} SIP/2.0\r\n{head}CSeq: 1 INVITE\r\n"
             "Content-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", port),
        )  # fmt: skip
        while True:
            data = s.recv(65535).decode()
            status = int(data[8:11])
            if status >= 200:
                break
        to = next(line for line in data.split("\r\n") if line.startswith("To:"))
        retry = next(
            (line.split(":", 1)[1].strip() for line in data.split("\r\n")
             if line.startswith("Retry-After:")), "",
        )  # fmt: skip
        ack_head = head.replace("To: <sip:15551230000@127.0.0.1>", to)
        s.sendto(
            (f"ACK sip:15551230000@127.0.0.1:{port} SIP/2.0\r\n{ack_head}CSeq: 1 ACK\r\n"
             "Content-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", port),
        )  # fmt: skip
    return status, retry


class NotifySocket:
    """A fake $NOTIFY_SOCKET: collects what sbc tells systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()

    def firsts(self) -> list[str]:
        """Each message's first field, consecutive watchdog pings folded into one."""
        out: list[str] = []
        for m in self.messages:
            field = m.split("\n", 1)[0]
            if not (out and out[-1] == field == "WATCHDOG=1"):
                out.append(field)
        return out


def wait_node_draining(sbc: harness.Sbc, timeout: float = 5.0) -> None:
    """The supervisor's ``sbc.draining`` (a worker's line names its worker): it is logged
    once every worker refuses new calls."""
    deadline = time.monotonic() + timeout
    while not any("worker" not in e for e in sbc.events("sbc.draining")):
        assert time.monotonic() < deadline, "no sbc.draining from the supervisor"
        time.sleep(0.05)


def test_sigterm_drains_20_held_calls_and_tells_systemd(tmp_path: Path) -> None:
    """SIGTERM during 20 held calls: a new INVITE gets 503 + Retry-After, the 20 end normally
    (caller BYE), the process exits 0; systemd hears READY, RELOADING, WATCHDOG, STOPPING."""
    port = 5662
    config = write_config(tmp_path / "config", port)
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    with (
        harness.sipp_servers("uas", [5681], tmp_path),
        harness.sipp_servers("uas_503.xml", [5683], tmp_path),
    ):
        sbc = harness.start_sbc(tmp_path, config, port=port, env=env)
        try:
            sbc.proc.send_signal(signal.SIGHUP)
            sbc.wait_events("config.reloaded", 1)
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(
                    harness.run_sipp,
                    "uac",
                    calls=20,
                    rate=50,
                    port=5672,
                    workdir=tmp_path,
                    remote=f"127.0.0.1:{port}",
                    extra=["-s", "15551230000", "-d", "4000"],
                )
                assert len(sbc.wait_events("call.answer", 20, timeout=10)) == 20
                sbc.proc.send_signal(signal.SIGTERM)
                wait_node_draining(sbc)
                status, retry = invite_once(port, 5673, "drain-new-1")
                assert (status, retry) == (503, "60")
                assert harness.options(port) == 503  # peers' monitoring takes us out
                result = held.result()
            assert result.returncode == 0, result.output
            assert result.count("SuccessfulCall") == 20 and result.count("FailedCall") == 0
            assert sbc.proc.wait(timeout=10) == 0
        finally:
            sbc.stop()
            notify.close()
    recs = records(tmp_path, 21)
    outcome = Counter((r["disposition"], r["hangup"], r["reason"]) for r in recs)
    assert outcome == {("answered", "caller", ""): 20, ("refused", "sbc", "draining"): 1}
    firsts = notify.firsts()
    assert firsts[0] == "READY=1"
    assert "RELOADING=1" in firsts and firsts[firsts.index("RELOADING=1") + 1] == "READY=1"
    assert "WATCHDOG=1" in firsts and "STOPPING=1" in firsts
    stopping = next(m for m in notify.messages if m.startswith("STOPPING=1"))
    assert "STATUS=draining: 20 calls left" in stopping


@contextlib.contextmanager
def held_calls(
    workdir: Path, port: int, local: int, calls: int, drain: int
) -> Iterator[harness.Sbc]:
    """An sbc (drain_timeout ``drain``) with ``calls`` answered calls that sipp's stock uac
    would hold for 20 s; everything stopped on exit."""
    config = write_config(workdir / "config", port, drain=drain)
    args = [*harness.sipp_args("uac", local), f"127.0.0.1:{port}", "-m", str(calls), "-r", "50"]
    args += ["-s", "15551230000", "-d", "20000", "-timeout", "30s"]
    with (
        harness.sipp_servers("uas", [5681], workdir),
        harness.sipp_servers("uas_503.xml", [5683], workdir),
    ):
        sbc = harness.start_sbc(workdir, config, port=port)
        held = None
        try:
            held = subprocess.Popen(
                args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            assert len(sbc.wait_events("call.answer", calls, timeout=10)) == calls
            yield sbc
        finally:
            sbc.stop()
            harness._terminate(held)


def test_drain_timeout_byes_both_legs(tmp_path: Path) -> None:
    with held_calls(tmp_path, 5664, 5674, 3, drain=1) as sbc:
        started = time.monotonic()
        sbc.proc.send_signal(signal.SIGTERM)
        assert sbc.proc.wait(timeout=10) == 0
        took = time.monotonic() - started
    assert took >= 1.0 and took < 5.0  # drain_timeout 1 s, then BYEs answered at once
    recs = records(tmp_path, 3)
    assert [(r["hangup"], r["reason"]) for r in recs] == [("sbc", "shutdown")] * 3
    timeouts = sbc.events("sbc.drain_timeout")  # once per worker that held calls
    assert timeouts and len({e.get("worker") for e in timeouts}) == len(timeouts)


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    with held_calls(tmp_path, 5664, 5675, 2, drain=30) as sbc:
        sbc.proc.send_signal(signal.SIGTERM)
        sbc.wait_events("sbc.draining", 1)
        started = time.monotonic()
        sbc.proc.send_signal(signal.SIGTERM)
        assert sbc.proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.0
        assert len(sbc.events("sbc.drain_aborted")) == 1


def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on both units (the template as an instance), no warnings."""
    units = harness.ROOT / "systemd"
    instance = tmp_path / "sbc@edge1.service"
    instance.write_text((units / "sbc@.service").read_text())
    result = subprocess.run(
        ["systemd-analyze", "verify", str(units / "sbc.service"), str(instance)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    text = (units / "sbc.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "User=sbc",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "ProtectSystem=strict"):  # fmt: skip
        assert line in text.splitlines(), line
