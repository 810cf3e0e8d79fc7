"""Start the real sbc and sipp on loopback, bounded in count and time, and read their results.

Used by tests/e2e and lab/bench. Every process started here is stopped by the caller's
``with`` block or ``stop()``; every sipp run has -m (a call count) and a timeout.
"""

from __future__ import annotations

import contextlib
import csv
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "lab" / "sipp"
LAB_CONFIG = ROOT / "config" / "lab"


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester): run ./lab/install")
    return path


def options(port: int = 5060, host: str = "127.0.0.1", timeout: float = 1.0) -> int | None:
    """Send one OPTIONS from an ephemeral port (with rport) and return the status, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        cid = uuid.uuid4().hex
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{cid};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={cid[:8]}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535)
            except TimeoutError:
                return None
            if cid.encode() in data and data.startswith(b"SIP/2.0 "):
                return int(data[8:11])
    return None


@dataclass
class Sbc:
    """A running `sbc run` process with its JSON log."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def events(self, name: str | None = None) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if name is None or rec.get("event") == name:
                out.append(rec)
        return out

    def wait_events(self, name: str, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
        """The log's ``name`` events once there are ``count`` of them (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_sbc(
    workdir: Path,
    config: Path = LAB_CONFIG,
    log_level: str = "info",
    port: int = 5060,
    env: dict[str, str] | None = None,
) -> Sbc:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "sbc.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbc.cli", "run", "--config", str(config), "--log-level", log_level],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    sbc = Sbc(proc, log_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sbc exited with {proc.returncode}: {log_path.read_text()}")
        if options(port) is not None:  # any answer means it is up (403 for strangers)
            return sbc
        time.sleep(0.1)
    sbc.stop()
    raise RuntimeError("sbc did not answer OPTIONS within 15 s")


def serving(root: Path, config: str, port: int) -> Iterator[Sbc]:
    """A test module's node: ``config`` (YAML text) written under ``root``/config, sbc started
    in ``root``/sbc, yielded, and stopped cleanly after (it must still be alive). Use as
    ``yield from harness.serving(tmp_path_factory.mktemp(name), CONFIG, PORT)``."""
    (root / "config").mkdir()
    (root / "config" / "sbc.yaml").write_text(config)
    proc = start_sbc(root / "sbc", root / "config", port=port)
    yield proc
    assert proc.alive(), "sbc died during the tests"
    assert proc.stop() == 0


@dataclass
class SippResult:
    returncode: int
    stats: dict[str, str]
    rtt_ms: list[float] = field(default_factory=list)
    output: str = ""
    counts: dict[str, str] = field(default_factory=dict)  # -trace_counts: per scenario line

    def count(self, name: str) -> int:
        return int(self.stats.get(f"{name}(C)", "0") or 0)

    def received(self, status: int) -> int:
        """How many times the scenario's <recv response=status> line matched."""
        return sum(int(v or 0) for k, v in self.counts.items() if k.endswith(f"_{status}_Recv"))


def _stats(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = list(csv.reader(path.open(), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}


def sipp_args(scenario: str, port: int) -> list[str]:
    sc = ["-sn", scenario] if scenario in ("uac", "uas") else ["-sf", str(SCENARIOS / scenario)]
    return [sipp_binary(), *sc, "-i", "127.0.0.1", "-p", str(port), "-nostdin"]


def run_sipp(
    scenario: str,
    *,
    calls: int,
    rate: float,
    port: int,
    workdir: Path,
    remote: str = "127.0.0.1:5060",
    extra: list[str] | None = None,
    timeout: float = 120.0,
    rtt: bool = False,
) -> SippResult:
    """Run a sipp client to completion: -m calls at -r rate, killed after ``timeout``."""
    workdir.mkdir(parents=True, exist_ok=True)
    stat = workdir / f"{Path(scenario).stem}-{port}-stat.csv"
    args = [
        *sipp_args(scenario, port),
        remote,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-trace_stat",
        "-stf",
        str(stat),
        "-fd",
        "1",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_err",
        "-trace_counts",
        *(extra or []),
    ]
    if rtt:
        args += ["-trace_rtt", "-rtt_freq", "1"]
    proc = subprocess.run(args, cwd=workdir, capture_output=True, timeout=timeout + 30)
    rtts: list[float] = []
    for f in workdir.glob(f"{Path(scenario).stem}_{'*'}_rtt.csv"):
        for row in csv.reader(f.open(), delimiter=";"):
            with contextlib.suppress(ValueError, IndexError):
                rtts.append(float(row[1]))
        f.unlink()
    counts: dict[str, str] = {}
    for f in workdir.glob(f"{Path(scenario).stem}_*_counts.csv"):
        counts = _stats(f)
        f.unlink()
    output = proc.stdout.decode(errors="replace")
    for f in workdir.glob(f"{Path(scenario).stem}_*_errors.log"):
        output += f.read_text(errors="replace")[-2000:]
        f.unlink()
    return SippResult(proc.returncode, _stats(stat), rtts, output, counts)


@contextlib.contextmanager
def sipp_servers(
    scenario: str,
    ports: list[int],
    workdir: Path,
    extra: list[str] | None = None,
    calls: int | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """sipp UAS processes on ``ports``, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for port in ports:
            args = [*sipp_args(scenario, port), "-trace_err", *(extra or [])]
            if calls is not None:
                args += ["-m", str(calls)]
            procs.append(
                subprocess.Popen(
                    args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        time.sleep(0.3)
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Redis:
    """A private redis-server on loopback: no persistence, stopped by the caller."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run ./lab/install")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def ping(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        _terminate(self.proc)


@dataclass
class Rtpengine:
    """A private rtpengine-daemon in userspace only (no kernel table, no config file) with its
    ng socket on loopback, logging to ``workdir/rtpengine.log``; stopped by the caller."""

    ng_port: int
    workdir: Path
    port_min: int = 41000
    port_max: int = 41999
    interfaces: tuple[str, ...] = ("127.0.0.1",)  # dual stack: ("127.0.0.1", "::1")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ng_port}"

    def start(self) -> Rtpengine:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise RuntimeError("rtpengine is not installed (rtpengine-daemon): run ./lab/install")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "rtpengine.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--config-file=none",
                "--table=-1",
                "--foreground",
                "--log-stderr",
                "--log-level=6",
                *(f"--interface={x}" for x in self.interfaces),
                f"--listen-ng=127.0.0.1:{self.ng_port}",
                f"--port-min={self.port_min}",
                f"--port-max={self.port_max}",
                "--delete-delay=0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtpengine exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if self.ng({"command": "ping"}).get(b"result") == b"pong":
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rtpengine did not answer ng on port {self.ng_port}")

    def ng(self, cmd: dict[str, object], timeout: float = 1.0) -> dict[bytes, object]:
        """One ng command, answered or OSError."""
        from media.bencode import decode, encode

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            cookie = uuid.uuid4().hex[:12].encode()
            s.sendto(cookie + b" " + encode(cmd), ("127.0.0.1", self.ng_port))  # type: ignore[arg-type]
            data = s.recv(65535)
        reply = decode(data.partition(b" ")[2])
        assert isinstance(reply, dict)
        return reply

    def calls(self) -> list[bytes]:
        listed = self.ng({"command": "list"}).get(b"calls")
        return list(listed) if isinstance(listed, list) else []  # type: ignore[arg-type]

    def stop(self) -> None:
        _terminate(self.proc)


@contextlib.contextmanager
def webhook_server(port: int) -> Iterator[list[tuple[str, dict[str, object]]]]:
    """An HTTP server on 127.0.0.1:``port`` collecting JSON POSTs as (path, body), answering
    204; stopped on exit."""
    posts: list[tuple[str, dict[str, object]]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.path, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield posts
    finally:
        server.shutdown()
        server.server_close()


def failed_checks(workdir: Path) -> str:
    """What sipp's -trace_err logs in ``workdir`` say of failed ``check_it`` regexps: sipp
    3.6 lets such a call go on (a server answers it), so a test must read this ("" = none)."""
    text = "".join(f.read_text(errors="replace") for f in workdir.glob("*_errors.log"))
    return "\n".join(line for line in text.splitlines() if "regexp match" in line)


def on_worker(prefix: str, worker: int, workers: int = 2) -> str:
    """A Call-ID that sbc.sip.steer gives to ``worker`` of ``workers`` (its CRC-32 modulo
    their number), to put a test's calls where it wants them."""
    return next(
        f"{prefix}-{i}"
        for i in range(1000)
        if zlib.crc32(f"{prefix}-{i}".encode()) % workers == worker
    )


def sbc_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``sbc ARGS`` (this tree's) in ``cwd``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "sbc.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=30,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file's records (CDRs, a ledger)."""
    return [json.loads(x) for x in path.read_text().splitlines()]


def wait_jsonl(path: Path, count: int, timeout: float = 8.0) -> list[dict[str, Any]]:
    """The records of ``path`` once it holds at least ``count``."""

    def enough() -> bool:
        return path.exists() and len(path.read_text().splitlines()) >= count

    assert wait_for(enough, timeout), f"fewer than {count} records in {path}"
    return jsonl(path)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def sipp_messages(path: Path) -> list[tuple[str, str]]:
    """The messages of a sipp ``-trace_msg`` log, as (``"received"`` | ``"sent"``, text)."""
    out: list[tuple[str, str]] = []
    if not path.exists():
        return out
    for block in path.read_text(errors="replace").split("-" * 47 + " ")[1:]:
        lines = block.split("\n")
        kind = lines[1] if len(lines) > 1 else ""
        direction = "received" if " received " in kind else "sent" if " sent " in kind else ""
        if direction:
            out.append((direction, "\n".join(lines[2:]).strip("\n")))
    return out


def header(message: str, name: str) -> str:
    """One header's value in a message's text ("" when absent)."""
    for line in message.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return ""


def tag_of(value: str) -> str:
    """The tag parameter of a From or To value."""
    for part in value.split(";")[1:]:
        key, _, tag = part.partition("=")
        if key.strip().lower() == "tag":
            return tag.strip()
    return ""


class Peer:
    """A raw SIP peer on UDP, bound to ``host`` (any 127.0.0.0/8 address is local on Linux):
    what an attacker, or a client the tests drive by hand, would be."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]

    def send(self, data: bytes, port: int, host: str = "127.0.0.1") -> None:
        self.sock.sendto(data, (host, port))

    def replies(self, seconds: float) -> list[bytes]:
        """Everything that arrives within ``seconds``."""
        out: list[bytes] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recv(65535))
            except TimeoutError:
                break
        return out

    def close(self) -> None:
        self.sock.close()
