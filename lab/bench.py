"""CPS ramp: sipp uac -> sbc -> two sipp uas, and the same ramp sipp -> sipp directly.

For each rate, each path runs rate x --seconds calls (bounded in count and time) and reports
calls, failed, retransmissions, setup time (INVITE -> 200) percentiles and, through the sbc,
the sbc's CPU%. The machines are shared and noisy, so the headline is a ratio: the highest
rate with < 0.1 % failed calls through the sbc, over the same figure direct, both measured in
this run. Scenarios lab/sipp/uac.xml and uas.xml tolerate late provisionals and late ACKs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def step(
    rate: int, seconds: float, via_sbc: bool, sbc: harness.Sbc | None, work: Path
) -> dict[str, float]:
    calls = int(rate * seconds)
    ports = [5081, 5082] if via_sbc else [5083]
    remote = "127.0.0.1:5060" if via_sbc else "127.0.0.1:5083"
    with harness.sipp_servers("uas.xml", ports, work, extra=["-max_socket", "50000"]):
        cpu0 = cpu_seconds(sbc.proc.pid) if sbc else 0.0
        t0 = time.monotonic()
        result = harness.run_sipp(
            "uac.xml",
            calls=calls,
            rate=rate,
            port=5070,
            workdir=work,
            remote=remote,
            rtt=True,
            timeout=seconds * 4 + 30,
            extra=["-l", str(rate * 8)],
        )
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(sbc.proc.pid) - cpu0) / elapsed * 100 if sbc else float("nan")
    ok = result.count("SuccessfulCall")
    failed = result.count("FailedCall") + max(0, calls - ok - result.count("FailedCall"))
    return {
        "rate": rate,
        "calls": ok,
        "failed": failed,
        "retrans": result.count("Retransmissions"),
        "p50": pct(result.rtt_ms, 0.5),
        "p95": pct(result.rtt_ms, 0.95),
        "p99": pct(result.rtt_ms, 0.99),
        "cpu": cpu,
        "offered": calls,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="100,250,500,750,1000,1250,1500,2000")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each step")
    parser.add_argument("--log-level", default="warning", help="sbc log level during the run")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sbc-bench-"))
    rows: dict[str, list[dict[str, float]]] = {"direct": [], "sbc": []}
    for r in rates:
        rows["direct"].append(step(r, args.seconds, False, None, work / f"direct-{r}"))
    sbc = harness.start_sbc(work / "sbc", log_level=args.log_level)
    try:
        for r in rates:
            rows["sbc"].append(step(r, args.seconds, True, sbc, work / f"sbc-{r}"))
            if rows["sbc"][-1]["failed"] > rows["sbc"][-1]["offered"] * 0.05:
                break  # well past saturation: stop loading the box
    finally:
        sbc.stop()
    print(
        f"# sbc bench: {args.seconds:g} s per step, sbc log level {args.log_level}, "
        f"{os.cpu_count()} cores, sipp on the same box"
    )
    print(
        f"{'path':6} {'cps':>5} {'calls':>6} {'failed':>6} {'retrans':>7} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'sbc cpu%':>8}"
    )
    best: dict[str, int] = {}
    for path, items in rows.items():
        for row in items:
            print(
                f"{path:6} {row['rate']:>5.0f} {row['calls']:>6.0f} {row['failed']:>6.0f} "
                f"{row['retrans']:>7.0f} {row['p50']:>7.1f} {row['p95']:>7.1f} "
                f"{row['p99']:>7.1f} {row['cpu']:>8.1f}"
            )
            if row["offered"] and row["failed"] / row["offered"] < 0.001:
                best[path] = max(best.get(path, 0), int(row["rate"]))
    direct, through = best.get("direct", 0), best.get("sbc", 0)
    ratio = through / direct if direct else float("nan")
    print(
        f"\nhighest rate with < 0.1 % failed: direct {direct} cps, through sbc {through} cps "
        f"(ratio {ratio:.2f} of direct, same run)"
    )
    medians = [r["p50"] for r in rows["sbc"] if r["calls"]]
    if medians:
        print(f"median setup time through sbc across steps: {statistics.median(medians):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
