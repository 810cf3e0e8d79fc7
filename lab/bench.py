"""CPS ramp: sipp uac -> sbc -> two sipp uas, the same ramp sipp -> sipp directly, and with
``--peer kamailio`` through Kamailio from Debian (a stateful proxy with tm, dialog and
dispatcher to the same two uas: lab/kamailio/kamailio.cfg), all in one run.

For each rate, each path runs rate x --seconds calls (bounded in count and time) of
lab/sipp/uac_bench.xml and reports calls, failed, retransmissions, setup time (INVITE ->
200) percentiles and the proxy's CPU% (Kamailio: all its processes). A rate passes with
< 0.1 % failed calls and <= 1 % retransmissions. The machines are shared and noisy, so the
headline is a ratio: the highest passing rate through the sbc (every lower step passing
too) over the same figure for Kamailio and for direct, measured in this run. Each row is
printed as it finishes; the whole run is written to --out as results.json and results.csv,
and drawn as ramp.png (gnuplot) when gnuplot is installed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import harness

from sbc import native
from sbc.config.loader import load_config

TICKS = os.sysconf("SC_CLK_TCK")
KAMAILIO_PORT = 5065
ADMIN = "http://127.0.0.1:9091"  # config/lab's node.admin.listen
METRICS = "http://127.0.0.1:9090/metrics"  # and its node.metrics.listen
SCENARIO = "uac_bench.xml"
PATHS = {
    "direct": "127.0.0.1:5083",
    "sbc": "127.0.0.1:5060",
    "kamailio": f"127.0.0.1:{KAMAILIO_PORT}",
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children still alive (Kamailio's workers)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(
                    Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def steered() -> float | None:
    """The node's sbc_steered_total from config/lab's metrics listener (None: no workers)."""
    try:
        with urllib.request.urlopen(METRICS, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for row in text.splitlines():
        if row.startswith("sbc_steered_total "):
            return float(row.split()[1])
    return None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@contextmanager
def kamailio(work: Path, children_n: int) -> Iterator[subprocess.Popen[bytes]]:
    """Kamailio in the foreground on 127.0.0.1:5065 with lab/kamailio's config."""
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    work.mkdir(parents=True, exist_ok=True)
    cfg = (harness.ROOT / "lab" / "kamailio" / "kamailio.cfg").read_text()
    cfg = cfg.replace("CHILDREN", str(children_n)).replace("LISTEN", str(KAMAILIO_PORT))
    cfg = cfg.replace("DISPATCHER", str(harness.ROOT / "lab" / "kamailio" / "dispatcher.list"))
    (work / "kamailio.cfg").write_text(cfg)
    log = (work / "kamailio.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-DD", "-E", "-f", str(work / "kamailio.cfg"), "-P", str(work / "pid"),
         "-w", str(work), "-m", "2048", "-M", "64"],  # shm: 256 MB ran out at 1250 cps
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while harness.options(KAMAILIO_PORT) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"kamailio did not start: {(work / 'kamailio.log').read_text()}")
        time.sleep(0.1)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def step(
    rate: int, seconds: float, path: str, pid: int | None, work: Path
) -> dict[str, float | str]:
    calls = int(rate * seconds)
    ports = [5083] if path == "direct" else [5081, 5082]
    with harness.sipp_servers("uas_bench.xml", ports, work, extra=["-max_socket", "50000"]):
        cpu0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.monotonic()
        result = harness.run_sipp(
            SCENARIO,
            calls=calls,
            rate=rate,
            port=5070,
            workdir=work,
            remote=PATHS[path],
            rtt=True,
            timeout=seconds * 4 + 30,
            extra=["-l", str(rate * 8), "-max_socket", "50000"],
        )
        elapsed = time.monotonic() - t0
        used = cpu_seconds(pid) - cpu0 if pid else float("nan")
        cpu = used / elapsed * 100
    ok = result.count("SuccessfulCall")
    failed = result.count("FailedCall") + max(0, calls - ok - result.count("FailedCall"))
    return {
        "path": path,
        "rate": rate,
        "offered": calls,
        "calls": ok,
        "failed": failed,
        "retrans": result.count("Retransmissions"),
        "p50": pct(result.rtt_ms, 0.5),
        "p95": pct(result.rtt_ms, 0.95),
        "p99": pct(result.rtt_ms, 0.99),
        "cpu": cpu,
        "cpu_us_per_call": used / max(1, ok) * 1e6,
    }


def settle(path: str, timeout: float = 60.0) -> None:
    """Start each step from an idle proxy: a saturated step leaves calls, transactions and
    retransmissions behind that would count against the next. The sbc says when it holds
    nothing (/memory); Kamailio's tm keeps a finished transaction 5 s (its wait timer)."""
    if path == "kamailio":
        time.sleep(6)
        return
    if path != "sbc":
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(ADMIN + "/memory", timeout=5) as resp:
                m = json.loads(resp.read())
        except OSError:
            m = None
        if m is not None and not m["calls"] and not sum(m["transactions"].values()):
            return
        time.sleep(0.5)


def knee(rows: list[dict[str, float | str]]) -> int:
    """The highest rate at which this path and every lower step passed: a rate that passes
    above one that failed is luck, not capacity."""
    best = 0
    for row in sorted(rows, key=lambda r: int(r["rate"])):
        if not passes(row):
            break
        best = int(row["rate"])
    return best


def passes(row: dict[str, float | str]) -> bool:
    offered = float(row["offered"])
    return (
        bool(offered)
        and float(row["failed"]) / offered < 0.001
        and (float(row["retrans"]) <= 0.01 * offered)
    )


HEADER = (
    f"{'path':8} {'cps':>5} {'calls':>6} {'failed':>6} {'retrans':>7} "
    f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'cpu%':>6} {'us/call':>7}"
)


def line(row: dict[str, float | str]) -> str:
    return (
        f"{row['path']:8} {row['rate']:>5} {row['calls']:>6} {row['failed']:>6} "
        f"{row['retrans']:>7} {float(row['p50']):>7.1f} {float(row['p95']):>7.1f} "
        f"{float(row['p99']):>7.1f} {float(row['cpu']):>6.1f} "
        f"{float(row['cpu_us_per_call']):>7.0f}"
    )


def draw(rows: list[dict[str, float | str]], out: Path) -> Path | None:
    """ramp.png: failed %, retransmissions % and setup p99 against offered CPS, one line
    per path (a rate fails on either percentage: the dashed line is its limit)."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        return None
    paths = sorted({str(r["path"]) for r in rows}, key=list(PATHS).index)
    for p in paths:
        with (out / f"{p}.dat").open("w") as f:
            for r in rows:
                if r["path"] == p:
                    # log scales: 0 % failed sits on the floor (0.01 %), sub-ms p99 at 0.5 ms
                    offered = max(1.0, float(r["offered"]))
                    failed = 100 * float(r["failed"]) / offered
                    retrans = 100 * float(r["retrans"]) / offered
                    p99 = float(r["p99"]) if float(r["p99"]) == float(r["p99"]) else 0.0
                    f.write(
                        f"{r['rate']} {max(failed, 0.01):.3f} {max(p99, 0.5):.1f} "
                        f"{max(retrans, 0.01):.3f}\n"
                    )
    plots = lambda col: ", ".join(  # noqa: E731
        f"'{out / p}.dat' using 1:{col} with linespoints title '{p}'" for p in paths
    )
    script = f"""
set terminal pngcairo size 1000,1000 font ',10'
set output '{out / "ramp.png"}'
set multiplot layout 3,1 title 'sbc lab ramp: offered CPS (same box, same run)'
set grid
set key left top
set logscale y
set ylabel 'failed calls % (0 on the floor)'
set yrange [0.005:100]
plot {plots(2)}, 0.1 with lines dashtype 2 lc 'gray' title 'pass < 0.1 %'
set ylabel 'retransmissions % of calls'
plot {plots(4)}, 1 with lines dashtype 2 lc 'gray' title 'pass <= 1 %'
set ylabel 'setup p99 ms (INVITE to 200)'
set yrange [0.3:100000]
set xlabel 'offered CPS'
plot {plots(3)}
unset multiplot
"""
    subprocess.run([gnuplot], input=script.encode(), check=True, capture_output=True)
    return out / "ramp.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="100,250,500,1000,1500,2000,2500,3000,3500,4000,5000")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each step")
    parser.add_argument("--log-level", default="warning", help="sbc log level during the run")
    parser.add_argument("--peer", choices=["kamailio"], help="also run the ramp through it")
    parser.add_argument(
        "--paths", default="direct,kamailio,sbc", help="which ramps to run (to iterate on one)"
    )
    parser.add_argument("--kamailio-children", type=int, default=4, help="its UDP workers")
    parser.add_argument("--out", type=Path, help="where results go (default lab/out/bench-*)")
    parser.add_argument("--hold", type=int, help="instead of the ramp: N held calls' memory")
    parser.add_argument("--hold-rate", type=int, default=500, help="cps placing held calls")
    args = parser.parse_args()
    if args.hold:
        import bench_hold

        result = bench_hold.run(args.hold, args.hold_rate, args.log_level)
        print(bench_hold.report(result))
        return 0
    rates = [int(r) for r in args.rates.split(",")]
    workers = load_config(harness.LAB_CONFIG).node.workers or os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="sbc-bench-"))
    out = args.out or harness.ROOT / "lab" / "out" / time.strftime("bench-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"# sbc bench: {args.seconds:g} s per step, sbc log level {args.log_level}, "
        f"{os.cpu_count()} cores, sipp on the same box; pass = < 0.1 % failed, <= 1 % retrans; "
        f"sbc: {workers} workers, core {native.mode()}",
        flush=True,
    )
    print(HEADER, flush=True)
    rows: list[dict[str, float | str]] = []

    def ramp(path: str, pid: int | None) -> None:
        # Warm-up, not counted: the first calls through a fresh path (sockets, caches,
        # sipp's own start) once cost a direct step 321 retransmissions.
        step(100, 2, path, pid, work / f"{path}-warmup")
        failing = 0
        for r in rates:
            settle(path)
            row = step(r, args.seconds, path, pid, work / f"{path}-{r}")
            rows.append(row)
            print(line(row), flush=True)
            failing = 0 if passes(row) else failing + 1
            if failing == 2 or float(row["failed"]) > float(row["offered"]) * 0.05:
                break  # past the knee (two steps failing, or 5 % of calls): stop loading the box

    paths = args.paths.split(",")
    if "direct" in paths:
        ramp("direct", None)
    if args.peer == "kamailio" and "kamailio" in paths:
        with kamailio(work / "kamailio", args.kamailio_children) as proc:
            ramp("kamailio", proc.pid)
    handed = None
    if "sbc" in paths:
        sbc = harness.start_sbc(work / "sbc", log_level=args.log_level)
        try:
            ramp("sbc", sbc.proc.pid)
            handed = steered()  # what steering cost: messages one worker handed to another
        finally:
            sbc.stop()
    best = {p: knee([r for r in rows if r["path"] == p])
            for p in dict.fromkeys(str(r["path"]) for r in rows)}  # fmt: skip
    summary = ", ".join(f"{p} {n} cps" for p, n in best.items())
    print(f"\nhighest passing rate (every lower step passing too): {summary}")
    for p, n in best.items():
        if n and n == rates[-1]:
            print(
                f"{p} passes the top step: its knee is higher (raise --rates), "
                "so a ratio to it is an upper bound"
            )
    for peer in ("direct", "kamailio"):
        if best.get(peer) and "sbc" in best:
            print(f"sbc / {peer}: {best['sbc'] / best[peer]:.2f} (same run)")
    for r in (500, *rates):  # CPU per call where every path still keeps up
        us = {str(x["path"]): float(x["cpu_us_per_call"]) for x in rows if x["rate"] == r}
        if us.get("sbc", 0) > 0 and us.get("kamailio", 0) > 0:
            print(
                f"CPU per call at {r} cps: sbc {us['sbc']:.0f} us, kamailio "
                f"{us['kamailio']:.0f} us ({us['sbc'] / us['kamailio']:.2f}x)"
            )
            break
    sbc_calls = sum(float(r["calls"]) for r in rows if r["path"] == "sbc")
    if handed is not None and sbc_calls:
        print(f"hand-overs between workers: {handed / sbc_calls:.2f} per call (sbc_steered_total)")
    medians = [float(r["p50"]) for r in rows if r["path"] == "sbc" and r["calls"]]
    if medians:
        print(f"median setup time through sbc across steps: {statistics.median(medians):.1f} ms")
    (out / "results.json").write_text(json.dumps({"rows": rows, "best": best}, indent=1))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    png = draw(rows, out)
    print(f"results: {out / 'results.json'}, {out / 'results.csv'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
