"""Memory across bursts: sipp floods the lab sbc with INVITEs from a trusted source, then
waits until every call and transaction has ended, and reads the node's /memory (live
objects of the call path's types, map sizes, RSS) after each burst.

    ./lab/memcheck                          # 3 bursts of 20,000 calls offered at 2,000 cps
    ./lab/memcheck --bursts 3 --calls 5000 --rate 1000

A node that gives its memory back shows the same live objects after every burst as before
the first (the maps empty, no Call alive) and an RSS that stops growing after the first.
Bounded: each burst is -m calls at -r rate, killed after a timeout; loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import harness

ADMIN = "http://127.0.0.1:9091/memory"  # config/lab's node.admin.listen


def memory() -> dict[str, Any]:
    with urllib.request.urlopen(ADMIN, timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def quiet(timeout: float) -> tuple[dict[str, Any], float]:
    """/memory once no call and no transaction is left (or ``timeout`` passed)."""
    t0 = time.monotonic()
    while True:
        m = memory()
        idle = m["calls"] == 0 and m["transactions"] == {"client": 0, "server": 0}
        if idle or time.monotonic() - t0 > timeout:
            return m, time.monotonic() - t0
        time.sleep(1.0)


def line(label: str, m: dict[str, Any], extra: str = "") -> str:
    live = m["live_objects"]
    return (
        f"{label:10} rss {m['rss_kb'] / 1024:7.1f} MB  calls {m['calls']:5}  "
        f"tx {m['transactions']['client']}/{m['transactions']['server']}  "
        f"timers {m['timers']['controller']}/{m['timers']['transactions']}  "
        f"Call {live['Call']:5}  Attempt {live['Attempt']:5}  "
        f"Request {live['Request']:6}  Response {live['Response']:6}  {extra}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000, help="INVITEs per burst")
    parser.add_argument("--rate", type=int, default=2_000, help="offered calls per second")
    parser.add_argument(
        "--max-duration", type=int, default=60, help="carrier-a's max_call_duration (s)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sbc-memcheck-"))
    config = work / "config"
    config.mkdir()
    # The lab config, with a Max Call Duration: under overload the kernel drops some BYEs,
    # and sipp, which takes the INVITE's retransmitted 200 for the BYE's, never resends
    # them; those calls are up by the protocol, and would be until a carrier's own limit.
    lab = (harness.LAB_CONFIG / "sbc.yaml").read_text()
    marker = "    route_advance: {codes: '^(5\\d\\d|408)$', normalize_sip_code: true}\n"
    assert marker in lab
    limit = f"    limits: {{max_call_duration: {args.max_duration}}}\n"
    (config / "sbc.yaml").write_text(lab.replace(marker, marker + limit))
    sbc = harness.start_sbc(work / "sbc", config=config, log_level="warning")
    rows = []
    try:
        with harness.sipp_servers("uas.xml", [5081, 5082], work, extra=["-max_socket", "50000"]):
            harness.run_sipp("uac.xml", calls=50, rate=50, port=5070, workdir=work / "warm")
            base, _ = quiet(60)
            rows.append(line("baseline", base))
            for n in range(1, args.bursts + 1):
                r = harness.run_sipp(
                    "uac.xml",
                    calls=args.calls,
                    rate=args.rate,
                    port=5070,
                    workdir=work / f"burst-{n}",
                    timeout=args.calls / args.rate * 4 + 60,
                    extra=["-l", str(args.calls), "-max_socket", "50000"],
                )
                m, waited = quiet(max(args.max_duration, 180) + 60)  # and Timer C
                time.sleep(11)  # the node trims once quiet (sbc.memory.TrimPolicy)
                m = memory()
                ok, failed = r.count("SuccessfulCall"), r.count("FailedCall")
                rows.append(
                    line(f"burst {n}", m, f"({ok} ok, {failed} failed; quiet {waited:.0f} s)")
                )
    finally:
        sbc.stop()
    print(
        f"# memcheck: {args.bursts} bursts of {args.calls} INVITEs at {args.rate} cps, lab config"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
