"""The lab demo: sbc with config/lab, sipp vendors on 5081/5082, sipp calls through the sbc,
with media: the lab config plus the media profile `anchored` on both trunk groups, rtpengine
on 127.0.0.1:2223 (started here in userspace unless one already answers there), callers that
play RTP (g711a.pcap) and vendors that echo it.

Prints each call's story from the sbc's own log, then the totals. Exit 0 when every call
completed with RTP through rtpengine in both directions. ``--no-media`` runs signaling only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import harness
import yaml

NG_PORT = 2223  # shared/DESIGN.md: the lab's rtpengine


def media_config(work: Path) -> Path:
    """config/lab with media anchored through rtpengine on both sides."""
    config = yaml.safe_load((harness.LAB_CONFIG / "sbc.yaml").read_text())
    config["node"]["rtpengine"] = [{"address": f"127.0.0.1:{NG_PORT}"}]
    config["media_profiles"] = [{"name": "anchored", "codecs": {"allow": ["PCMA", "PCMU"]}}]
    for tg in config["trunk_groups"]:
        tg["media_profile"] = "anchored"
    out = work / "config"
    out.mkdir()
    (out / "sbc.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--no-media", action="store_true", help="signaling only, no rtpengine")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sbc-demo-"))
    media = not args.no_media
    engine: harness.Rtpengine | None = None
    config = harness.LAB_CONFIG
    if media:
        config = media_config(work)
        engine = harness.Rtpengine(NG_PORT, work, port_min=40000, port_max=40999)
        try:
            engine.ng({"command": "ping"})
            print(f"sbc demo: using the rtpengine already answering on 127.0.0.1:{NG_PORT}")
            engine = None
        except OSError:
            engine.start()
            print(f"sbc demo: started rtpengine (userspace) with ng on 127.0.0.1:{NG_PORT}")
    print(f"sbc demo: config {config}, work dir {work}")
    try:
        sbc = harness.start_sbc(work, config)
        try:
            print("sbc demo: sbc answers OPTIONS on udp:127.0.0.1:5060; vendors: sipp on 5081/5082")
            echo = ["-rtp_echo", "-mp", "6581"] if media else []
            with (
                harness.sipp_servers("uas.xml", [5081], work, extra=echo),
                harness.sipp_servers(
                    "uas.xml", [5082], work, extra=["-rtp_echo", "-mp", "6582"] if media else []
                ),
            ):
                result = harness.run_sipp(
                    "uac_media.xml" if media else "uac.xml",
                    calls=args.calls,
                    rate=args.rate,
                    port=5070,
                    workdir=work,
                    extra=["-d", "1000", *(["-mp", "6570"] if media else [])],
                )
        finally:
            code = sbc.stop()
    finally:
        if engine is not None:
            engine.stop()
    first = next((e for e in sbc.events() if str(e.get("event", "")).startswith("call.")), None)
    if first is not None:
        print("\nthe first call, as the sbc logged it:")
        for e in sbc.events():
            if e.get("call_id") == first.get("call_id"):
                print("  " + json.dumps(e))
    ok = result.count("SuccessfulCall")
    failed = result.count("FailedCall")
    print(f"\nsipp: {ok} calls completed, {failed} failed (of {args.calls}); sbc exit code {code}")
    media_ok = True
    if media:
        legs = [
            e["media"]["legs"]  # type: ignore[index]
            for e in sbc.events("call.end")
            if isinstance(e.get("media"), dict)
        ]
        both = sum(
            1 for x in legs if x.get("a", {}).get("packets") and x.get("b", {}).get("packets")
        )
        packets = sum(x.get(leg, {}).get("packets", 0) for x in legs for leg in ("a", "b"))
        print(f"rtpengine: {both} of {ok} calls carried RTP both ways ({packets} packets relayed)")
        media_ok = both == ok
    print(f"sbc log: {sbc.log_path}")
    return 0 if result.returncode == 0 and ok == args.calls and code == 0 and media_ok else 1


if __name__ == "__main__":
    sys.exit(main())
