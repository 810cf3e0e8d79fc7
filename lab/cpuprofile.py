"""Where a running sbc spends its CPU: cProfile in every sbc process (``SBC_PROFILE``, read
by sbc.cli) while sipp places short calls through it, then the top functions.

    .venv/bin/python lab/cpuprofile.py --calls 6000 --rate 300            # compiled, one worker
    .venv/bin/python lab/cpuprofile.py --pure --workers 2                 # plain Python
    .venv/bin/python lab/cpuprofile.py --cpu                              # no profiler
    .venv/bin/python lab/cpuprofile.py --perf                             # Linux perf

The lab config on its own ports (sbc :7610, sipp uas :7611 and :7612, uac :7615), so it
can run next to the e2e suite; the CPU figures are not a benchmark (cProfile slows every
Python call, and mypyc-compiled functions show only where plain Python calls them): read
the shares, not the times. ``--pure`` (SBC_PURE=1) shows everything. ``--cpu`` runs no
profiler and prints the CPU the sbc processes used per call instead (user + system, from
/proc), the whole node's cost to compare with lab/bench_callpath.py's pure call path.
``--perf`` samples the processes with Linux perf instead (no cProfile): compiled functions
by their C names (``CPyDef_<module>___<function>``), the interpreter and the kernel below
them, so the compiled node's own time shows too.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

PORT, UAS, UAC = 7610, (7611, 7612), 7615


def config(workers: int) -> str:
    text = harness.LAB_CONFIG.joinpath("sbc.yaml").read_text()
    out = []
    for line in text.splitlines():
        if "metrics:" in line or "admin:" in line:
            continue  # their ports are the lab's: not needed here
        line = line.replace("port: 5060", f"port: {PORT}")
        line = line.replace("port: 5081", f"port: {UAS[0]}").replace(
            "port: 5082", f"port: {UAS[1]}"
        )
        out.append(line)
        if line.strip() == "node:":
            out.append(f"  workers: {workers}")
    return "\n".join(out) + "\n"


def each_cpu(pid: int) -> dict[int, float]:
    """User + system CPU of ``pid`` and of each of its children now, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[p] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (stat(5))
    return found


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            out += [int(child), *_children(int(child))]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pure", action="store_true", help="plain Python (SBC_PURE=1)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, help="keep the .prof files here")
    parser.add_argument("--cpu", action="store_true", help="no profiler: CPU per call")
    parser.add_argument("--perf", action="store_true", help="Linux perf, not cProfile")
    parser.add_argument(
        "--dwarf",
        action="store_true",
        help="with --perf: unwind with DWARF and rank compiled functions with their callees "
        "(libpython has no frame pointers, so -g alone loses who called it)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sbc-profile-"))
    out = args.out or root / "prof"
    out.mkdir(parents=True, exist_ok=True)
    (root / "config").mkdir()
    (root / "config" / "sbc.yaml").write_text(config(args.workers))
    env = {} if args.cpu or args.perf else {"SBC_PROFILE": str(out.resolve())}
    if args.pure:
        env["SBC_PURE"] = "1"
    sbc = harness.start_sbc(root / "sbc", root / "config", "warning", PORT, env)
    try:
        with harness.sipp_servers("uas", list(UAS), root / "uas"):
            before = each_cpu(sbc.proc.pid)
            perf = None
            if args.perf:
                pids = ",".join(map(str, [sbc.proc.pid, *_children(sbc.proc.pid)]))
                graph = ["--call-graph", "dwarf,16384", "-F", "250"] if args.dwarf else ["-g"]
                record = ["perf", "record", "-F", "999", *graph, "-o", str(out / "perf.data")]
                perf = subprocess.Popen(
                    [*record, "-p", pids],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            result = harness.run_sipp(
                "uac",
                calls=args.calls,
                rate=args.rate,
                port=UAC,
                workdir=root / "uac",
                remote=f"127.0.0.1:{PORT}",
                timeout=args.calls / args.rate + 60,
            )
            after = each_cpu(sbc.proc.pid)
            each = {p: t - before.get(p, 0.0) for p, t in after.items()}
            used = sum(each.values())
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
    finally:
        code = sbc.stop()
    ok = result.stats.get("SuccessfulCall(C)", "?")
    failed = result.stats.get("FailedCall(C)", "?")
    print(f"sipp: {ok} calls succeeded, {failed} failed; sbc exited {code}")
    print(f"sbc CPU: {used:.2f} s, {used / args.calls * 1e6:.0f} us per call")
    for p, t in each.items():  # the supervisor first, then its workers
        role = "supervisor" if p == sbc.proc.pid and len(each) > 1 else f"pid {p}"
        print(f"  {role}: {t / args.calls * 1e6:.0f} us per call")
    if args.cpu:
        return 0 if code == 0 else 1
    if args.perf and args.dwarf:
        report = subprocess.run(
            ["perf", "report", "-i", str(out / "perf.data"), "--stdio", "--children",
             "--sort", "symbol", "--percent-limit", "1", "-g", "none"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        lines = [ln for ln in report.stdout.splitlines() if "CPyDef" in ln or "Py_" in ln]
        print("\n".join(lines[: args.top]))
        return 0 if code == 0 else 1
    if args.perf:
        report = subprocess.run(
            ["perf", "report", "-i", str(out / "perf.data"), "--stdio", "--no-children",
             "--sort", "dso,symbol", "--percent-limit", "0.7", "-g", "none"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        lines = [ln for ln in report.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        print("\n".join(lines[: args.top]))
        return 0 if code == 0 else 1
    files = sorted(out.glob("*.prof"))
    if not files:
        print(f"no profile in {out}", file=sys.stderr)
        return 1
    for f in files:
        print(f"\n=== {f.name} (top {args.top} by own time)")
        stats = pstats.Stats(str(f))
        stats.strip_dirs().sort_stats("tottime").print_stats(args.top)
    print(f"profiles: {out}" if args.out else "")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    os.chdir(harness.ROOT)
    sys.exit(main())
