"""`sbc run | check | explain | status | ctl | cdr export | schema`: one entry point, exit codes a
service manager understands (0 ok, 1 invalid config for check, 2 usage, 3 startup failure or
no answer from a running node)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from sbc.config.loader import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sbc", description="Session border controller")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve SIP with the configuration in DIR")
    run.add_argument("--config", required=True, metavar="DIR")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format", default="json", choices=["json", "console"], help="console: for a terminal"
    )
    wk = sub.add_parser("worker")  # started by `sbc run` itself (sbc.supervisor), not by hand
    wk.add_argument("--fd", type=int, required=True)
    wk.add_argument("--index", type=int, required=True)
    wk.add_argument("--workers", type=int, required=True)
    wk.add_argument("--udp", default="[]", help="JSON [[address, port, fd], ...]: given sockets")
    wk.add_argument("--node", type=int, required=True)
    wk.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    wk.add_argument("--log-format", default="json", choices=["json", "console"])
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
    ex.add_argument(
        "--live", action="store_true", help="trunk health from the running node (node.admin)"
    )
    st = sub.add_parser("status", help="live state of a running sbc, from its admin endpoint")
    where = st.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="DIR", help="read node.admin.listen from DIR")
    where.add_argument("--admin", metavar="HOST:PORT", help="the admin endpoint itself")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    cdr_p = sub.add_parser("cdr", help="call detail records")
    cdr_sub = cdr_p.add_subparsers(dest="cdr_command", required=True)
    exp = cdr_sub.add_parser("export", help="records whose setup time is in [--from, --to)")
    src = exp.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="DIR", help="read node.cdr.path (and its rotations)")
    src.add_argument("--file", metavar="F", action="append", help="a CDR file (repeatable)")
    src.add_argument("--database", metavar="DSN", help="table cdr of node.cdr.database")
    exp.add_argument("--from", dest="start", metavar="ISO-TIME", help="default: the beginning")
    exp.add_argument("--to", dest="end", metavar="ISO-TIME", help="default: now")
    exp.add_argument("--format", default="csv", choices=["csv", "jsonl"])
    bal = sub.add_parser("balance", help="relationships' balances (node.balance.ledger)")
    bal_sub = bal.add_subparsers(dest="balance_command", required=True)
    add = bal_sub.add_parser("add", help="record a payment or credit (negative: a debit)")
    add.add_argument("--config", required=True, metavar="DIR")
    add.add_argument("relationship")
    add.add_argument("amount", help="a decimal amount in the balance's currency, e.g. 25.00")
    add.add_argument("memo", nargs="?", default="")
    show = bal_sub.add_parser("show", help="the balances the ledger holds")
    show.add_argument("--config", required=True, metavar="DIR")
    from sbc import ctl

    ctl.add_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "ctl":
        return ctl.main(args)

    if args.command == "status":
        return _status(args.config, args.admin, args.json)
    if args.command == "balance":
        return _balance(args)
    if args.command == "cdr":
        return _cdr_export(args.config, args.file, args.start, args.end, args.format, args.database)

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
        live = None
        if args.live:
            live = _fetch_status(snap.config.node.admin.listen)
            if live is None:
                print(
                    "sbc explain: --live: no answer from node.admin.listen "
                    f"{snap.config.node.admin.listen!r}",
                    file=sys.stderr,
                )
                return 3
        from sbc.resolver import resolve_now

        resolved = resolve_now(snap)  # trunks named by host, through node.dns
        lines, _ = explain(
            snap, args.source, args.dnis, args.ani, at, args.transport, args.media_ip, live,
            resolved,
        )  # fmt: skip
        print("\n".join(lines))
        return 0

    if args.command == "schema":
        from sbc.config.schema import json_schema

        print(json.dumps(json_schema(), indent=2, sort_keys=True))
        return 0
    if args.command == "check":
        from sbc.config import crossfamily
        from sbc.config.loader import load_config_with_origins

        try:
            config, located = load_config_with_origins(args.config)
        except ConfigError as e:
            print(f"sbc check: {e}", file=sys.stderr)
            return 1
        warned = crossfamily.warnings(config, located)  # valid, but likely not meant
        for w in warned:
            print(f"sbc check: warning: {w}", file=sys.stderr)
        print(
            f"sbc check: {args.config} is valid: {len(config.trunk_groups)} trunk groups, "
            f"{len(config.routeplans)} routeplans"
            + (f", {len(warned)} warning{'s' if len(warned) > 1 else ''}" if warned else "")
        )
        return 0

    from sbc import log as logmod

    log = logmod.setup(args.log_level, args.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        log.warning("uvloop.missing")
    profile = os.environ.get("SBC_PROFILE")
    if profile:  # lab/cpuprofile.py: cProfile this process, written when it exits
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            return _serve(args, log)
        finally:
            prof.disable()
            prof.dump_stats(str(Path(profile) / f"{args.command}-{os.getpid()}.prof"))
    return _serve(args, log)


def _serve(args: argparse.Namespace, log: Any) -> int:
    if args.command == "worker":
        from sbc import worker

        return asyncio.run(
            worker.serve(args.fd, args.index, args.workers, args.node, log, args.udp)
        )
    try:
        workers = load_config(args.config).node.workers or (os.cpu_count() or 1)
        if workers > 1:
            from sbc import supervisor

            return asyncio.run(
                supervisor.serve(args.config, log, workers, args.log_level, args.log_format)
            )
        from sbc.runtime import serve

        return asyncio.run(serve(args.config, log))
    except ConfigError as e:
        log.error("config.invalid", file=e.file, line=e.line, field=e.field, error=e.message)
        return 3
    except OSError as e:
        log.error("startup.failed", error=str(e))
        return 3


def _fetch_status(admin: str) -> dict[str, Any] | None:
    """A running node's /status from its admin endpoint; None if it does not answer."""
    import urllib.request

    from sbc.config.loader import host_port

    hp = host_port(admin)
    if hp is None:
        return None
    host = f"[{hp[0]}]" if ":" in hp[0] else hp[0]
    try:
        with urllib.request.urlopen(f"http://{host}:{hp[1]}/status", timeout=3) as resp:
            state = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _status(config_dir: str | None, admin: str | None, raw: bool) -> int:
    if config_dir is not None:
        try:
            admin = load_config(config_dir).node.admin.listen
        except ConfigError as e:
            print(f"sbc status: {e}", file=sys.stderr)
            return 1
        if not admin:
            print(f"sbc status: node.admin.listen is not set in {config_dir}", file=sys.stderr)
            return 1
    state = _fetch_status(admin or "")
    if state is None:
        print(f"sbc status: no answer from the admin endpoint {admin!r}", file=sys.stderr)
        return 3
    if raw:
        print(json.dumps(state, indent=2))
        return 0
    from sbc.explain import render_status

    print("\n".join(render_status(state)))
    return 0


def _cdr_export(
    config_dir: str | None,
    files: list[str] | None,
    start: str | None,
    end: str | None,
    fmt: str,
    database: str | None = None,
) -> int:
    from pathlib import Path

    from sbc import cdr

    if config_dir is not None:
        try:
            path = Path(load_config(config_dir).node.cdr.path)
        except ConfigError as e:
            print(f"sbc cdr export: {e}", file=sys.stderr)
            return 1
        paths = cdr.rotated(path) if path.parent.is_dir() else []
        if not paths:  # a relative path is the service's: under systemd, its StateDirectory
            print(
                f"sbc cdr export: no CDR file at {path.resolve()} (node.cdr.path is relative to "
                "the working directory of `sbc run`, which `sbc status` shows; use --file, or run "
                "from there)",
                file=sys.stderr,
            )
            return 1
    else:
        paths = [Path(f) for f in files or []]
    try:
        lo = cdr.parse_time(start) if start else None
        hi = cdr.parse_time(end) if end else None
    except ValueError as e:
        print(f"sbc cdr export: --from/--to: {e}", file=sys.stderr)
        return 2
    try:
        records = _records(database, paths, lo, hi)
    except OSError as e:
        print(f"sbc cdr export: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the database driver's errors are its own classes
        print(f"sbc cdr export: {database}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if fmt == "csv":
        sys.stdout.write(cdr.to_csv(records))
    else:
        for rec in records:
            sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return 0


def _records(
    database: str | None, paths: list[Path], lo: float | None, hi: float | None
) -> list[dict[str, Any]]:
    from sbc import cdr

    if database:
        from sbc.cdrship import fetch

        return asyncio.run(fetch(database, lo, hi))
    return cdr.select_records(cdr.read(paths), lo, hi)


def _balance(args: argparse.Namespace) -> int:
    """`sbc balance add|show`: the ledger is node.balance.ledger, relative to the working
    directory of `sbc run` (as node.cdr.path), or with the Redis state store the fleet's;
    a running node picks a payment up within a second."""
    from decimal import Decimal, InvalidOperation

    from sbc import balance

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"sbc balance: {e}", file=sys.stderr)
        return 1
    path = config.node.balance.ledger
    state = config.node.state
    fleet = state.url if state.backend == "redis" else ""  # the fleet's ledger (sbc.fleetbook)
    policies = {r.name: r.balance for r in config.relationships if r.balance is not None}

    def accounts_now() -> dict[str, balance.Account]:
        if fleet:
            from sbc import fleetbook

            book = fleetbook.balances(fleet)
            book.configure(policies)
            return book.accounts
        return balance.balances(path, policies)

    if args.balance_command == "show":
        try:
            accounts = accounts_now()
        except Exception as e:  # Redis unreachable
            print(f"sbc balance show: {e}", file=sys.stderr)
            return 1
        for name, policy in policies.items():
            acc = accounts.get(name) or balance.Account()
            offset = "" if acc.offsets else " (not offset)"
            print(
                f"{name}: balance {acc.balance} {policy.currency} (payments {acc.paid}, "
                f"charges {acc.charged}; vendor costs {acc.vendor_costs}{offset}; "
                f"warn_at {policy.warn_at}, suspend_at {policy.suspend_at})"
            )
        return 0
    if args.relationship not in policies:
        known = ", ".join(sorted(policies)) or "none"
        print(
            f"sbc balance add: relationship {args.relationship!r} keeps no balance "
            f"(relationships with a balance: {known})",
            file=sys.stderr,
        )
        return 2
    try:
        amount = Decimal(args.amount)
        if not amount.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        print(f"sbc balance add: amount {args.amount!r} is not a decimal number", file=sys.stderr)
        return 2
    try:
        if fleet:  # on the fleet's ledger; every node copies it into its journal
            from sbc import fleetbook

            entry = fleetbook.add_payment(fleet, args.relationship, str(amount), args.memo)
        else:
            entry = balance.add_payment(path, args.relationship, str(amount), args.memo)
    except Exception as e:  # the file, or Redis, refused it: nothing recorded
        print(f"sbc balance add: {e}", file=sys.stderr)
        return 1
    try:
        now = accounts_now()[args.relationship].balance
    except Exception as e:
        print(f"{args.relationship}: payment {entry['amount']} recorded ({entry['id']}); {e}")
        return 0
    print(f"{args.relationship}: payment {entry['amount']} recorded ({entry['id']}); balance {now}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
