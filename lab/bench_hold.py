"""Held calls: what N concurrent calls cost the node in memory (``./lab/bench --hold N``).

sipp places N calls at --hold-rate cps and holds each for long enough that all N are up
at once, then hangs them up. The node's /memory (config/lab's admin listener) is read
every half second: RSS and calls up. Reported: RSS at start, at the peak of calls up, and
once every call and transaction has ended (and the node had its chance to trim), and the
KB per held call, (peak RSS - start RSS) / peak calls. Bounded: -m N, a timeout.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import harness

MEMORY = "http://127.0.0.1:9091/memory"


def memory() -> dict[str, Any]:
    with urllib.request.urlopen(MEMORY, timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def run(calls: int, rate: int, log_level: str = "warning") -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sbc-hold-"))
    ramp = calls / rate
    hold_ms = int((ramp + 10) * 1000)  # the first call is still up when the last one starts
    sbc = harness.start_sbc(work / "sbc", log_level=log_level)
    try:
        with harness.sipp_servers(
            "uas_bench.xml", [5081, 5082], work, extra=["-max_socket", "50000"]
        ):
            harness.run_sipp("uac.xml", calls=20, rate=20, port=5070, workdir=work / "warm")
            time.sleep(2)
            start = memory()
            done: list[harness.SippResult] = []
            caller = threading.Thread(
                target=lambda: done.append(
                    harness.run_sipp(
                        "uac.xml", calls=calls, rate=rate, port=5070, workdir=work / "held",
                        timeout=ramp + hold_ms / 1000 + 60,
                        extra=["-d", str(hold_ms), "-l", str(calls + 10), "-max_socket", "50000"],
                    )
                )
            )  # fmt: skip
            caller.start()
            peak = start
            while caller.is_alive():
                m = memory()
                if m["calls"] >= peak["calls"]:
                    peak = m
                time.sleep(0.5)
            caller.join()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # Timers J/K let the BYEs' transactions go
                after = memory()
                if after["calls"] == 0 and after["transactions"] == {"client": 0, "server": 0}:
                    break
                time.sleep(1)
            time.sleep(11)  # one memory-keeper period: the node trims once quiet
            after = memory()
    finally:
        sbc.stop()
    (result,) = done
    held = max(1, int(peak["calls"]))
    return {
        "calls": calls,
        "completed": result.count("SuccessfulCall"),
        "failed": result.count("FailedCall"),
        "peak_calls": held,
        "rss_start_mb": start["rss_kb"] / 1024,
        "rss_peak_mb": peak["rss_kb"] / 1024,
        "rss_after_mb": after["rss_kb"] / 1024,
        "kb_per_held_call": (peak["rss_kb"] - start["rss_kb"]) / held,
        "live_calls_after": after["live_objects"]["Call"],
        "grown_types": _grown(start, after),
        "blocks_grown": after.get("allocated_blocks", 0) - start.get("allocated_blocks", 0),
        "processes": {  # RSS in MB per process: start, peak, after
            name: [m / 1024 for m in marks]
            for name, marks in zip(
                _names(start), zip(_rss(start), _rss(peak), _rss(after), strict=True), strict=True
            )
        },
    }


def _grown(start: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Object counts by type that are higher once the calls ended than at start (the
    workers' /memory census, summed): a leak names itself here."""
    before = start.get("top_types", {})
    grown = {k: n - before.get(k, 0) for k, n in after.get("top_types", {}).items()}
    return {k: n for k, n in sorted(grown.items(), key=lambda kv: -kv[1]) if n > 0}


def _names(m: dict[str, Any]) -> list[str]:
    return ["supervisor", *(f"worker {i}" for i in range(len(m.get("workers", []))))]


def _rss(m: dict[str, Any]) -> list[int]:
    """The supervisor's RSS and each worker's (a lone node: its own)."""
    if "workers" not in m:
        return [m["rss_kb"]]
    return [m["supervisor_rss_kb"], *(w["rss_kb"] for w in m["workers"])]


def report(r: dict[str, Any]) -> str:
    return (
        f"held calls: {r['peak_calls']:.0f} up at the peak of {r['calls']:.0f} "
        f"({r['completed']:.0f} completed, {r['failed']:.0f} failed)\n"
        f"RSS: {r['rss_start_mb']:.1f} MB at start, {r['rss_peak_mb']:.1f} MB at the peak "
        f"({r['kb_per_held_call']:.1f} KB per held call), {r['rss_after_mb']:.1f} MB after "
        f"(live Call objects after: {r['live_calls_after']:.0f})\n"
        + "\n".join(
            f"  {name}: {a:.1f} MB at start, {b:.1f} at the peak, {c:.1f} after"
            for name, (a, b, c) in r["processes"].items()
        )
        + f"\nallocated blocks after - at start: {r['blocks_grown']}; objects grown by type: "
        + (", ".join(f"{k} +{n}" for k, n in r["grown_types"].items()) or "none")
    )
