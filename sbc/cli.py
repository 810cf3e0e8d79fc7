"""`sbc run | check | explain | schema`: one entry point, exit codes a service manager understands
(0 ok, 1 invalid config for check, 2 usage, 3 startup failure)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from sbc.config.loader import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sbc", description="Session border controller")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve SIP with the configuration in DIR")
    run.add_argument("--config", required=True, metavar="DIR")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate the configuration in DIR and exit")
    check.add_argument("--config", required=True, metavar="DIR")
    sub.add_parser("schema", help="print the configuration's JSON Schema")
    ex = sub.add_parser("explain", help="show what sbc would do with one call, sending nothing")
    ex.add_argument("--config", required=True, metavar="DIR")
    ex.add_argument("--from", dest="source", required=True, metavar="IP[:PORT]")
    ex.add_argument("--to", dest="dnis", required=True, metavar="DNIS")
    ex.add_argument("--ani", default="15550001000")
    ex.add_argument("--at", default=None, metavar="ISO-TIME", help="default: now (UTC)")
    ex.add_argument("--transport", default="udp", choices=["udp", "tcp"])
    ex.add_argument("--media-ip", default="", help="the caller's SDP c= address")
    args = parser.parse_args(argv)

    if args.command == "explain":
        from datetime import datetime

        from sbc.config.snapshot import Snapshot
        from sbc.explain import explain

        try:
            snap = Snapshot.build(load_config(args.config))
            at = datetime.fromisoformat(args.at) if args.at else None
        except ConfigError as e:
            print(f"sbc explain: {e}", file=sys.stderr)
            return 1
        except ValueError as e:
            print(f"sbc explain: --at: {e}", file=sys.stderr)
            return 2
        lines, _ = explain(
            snap, args.source, args.dnis, args.ani, at, args.transport, args.media_ip
        )
        print("\n".join(lines))
        return 0

    if args.command == "schema":
        from sbc.config.schema import json_schema

        print(json.dumps(json_schema(), indent=2, sort_keys=True))
        return 0
    if args.command == "check":
        try:
            config = load_config(args.config)
        except ConfigError as e:
            print(f"sbc check: {e}", file=sys.stderr)
            return 1
        print(
            f"sbc check: {args.config} is valid: {len(config.trunk_groups)} trunk groups, "
            f"{len(config.routeplans)} routeplans"
        )
        return 0

    from sbc import log as logmod
    from sbc.runtime import serve

    log = logmod.setup(args.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        log.warning("uvloop.missing")
    try:
        return asyncio.run(serve(args.config, log))
    except ConfigError as e:
        log.error("config.invalid", file=e.file, line=e.line, field=e.field, error=e.message)
        return 3
    except OSError as e:
        log.error("startup.failed", error=str(e))
        return 3


if __name__ == "__main__":
    sys.exit(main())
