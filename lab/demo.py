"""The lab demo: sbc with config/lab, sipp vendors on 5081/5082, sipp calls through the sbc.

Prints each call's story from the sbc's own log, then the totals. Exit 0 when every call
completed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import harness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sbc-demo-"))
    print(f"sbc demo: config {harness.LAB_CONFIG}, work dir {work}")
    sbc = harness.start_sbc(work)
    try:
        print("sbc demo: sbc answers OPTIONS on udp:127.0.0.1:5060; vendors: sipp uas on 5081/5082")
        with harness.sipp_servers("uas.xml", [5081, 5082], work):
            result = harness.run_sipp(
                "uac.xml",
                calls=args.calls,
                rate=args.rate,
                port=5070,
                workdir=work,
                extra=["-d", "1000"],
            )
    finally:
        code = sbc.stop()
    first = next((e for e in sbc.events() if str(e.get("event", "")).startswith("call.")), None)
    if first is not None:
        print("\nthe first call, as the sbc logged it:")
        for e in sbc.events():
            if e.get("call_id") == first.get("call_id"):
                print("  " + json.dumps(e))
    ok = result.count("SuccessfulCall")
    failed = result.count("FailedCall")
    print(f"\nsipp: {ok} calls completed, {failed} failed (of {args.calls}); sbc exit code {code}")
    print(f"sbc log: {sbc.log_path}")
    return 0 if result.returncode == 0 and ok == args.calls and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
