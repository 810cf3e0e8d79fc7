"""`sbc ctl`: the control socket's client (sbc.control). A table by default, the JSON-RPC
result with ``--json``. Exit codes: 0 done, 1 the node refused (a JSON-RPC error, e.g. an
unknown trunk group) or bad config, 3 no answer from the socket."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from sbc.config.loader import ConfigError, load_config

TIMEOUT = 10.0


def add_parser(sub: Any) -> None:
    ctl = sub.add_parser("ctl", help="drive a running sbc through its control socket")
    where = ctl.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="DIR", help="read node.control.socket from DIR")
    where.add_argument("--socket", metavar="PATH", help="the control socket itself")
    ctl.add_argument("--json", action="store_true", help="print the JSON-RPC result")
    what = ctl.add_subparsers(dest="ctl_command", required=True)
    what.add_parser("calls", help="calls in progress")  # and `call ID`, below
    one = what.add_parser("call", help="a call's SIP ladder, from the trace ring")
    one.add_argument("id", help="the call's id while it is up, or its SIP Call-ID")
    kill = what.add_parser("kill", help="end a call: BYE (or CANCEL) both legs")
    kill.add_argument("id", help="the call's id (`sbc ctl calls`)")
    trunk = what.add_parser("trunk", help="take a trunk group or one trunk out of hunting")
    trunk.add_argument("action", choices=["disable", "enable"])
    trunk.add_argument("trunk_group")
    trunk.add_argument("trunk", nargs="?", default="", help="host:port (or username)")
    what.add_parser("registrations", help="PBX registrations, and ours at vendors")
    what.add_parser("reload", help="re-read the config directory (as SIGHUP)")
    stats = what.add_parser("stats", help="reset the traffic counters (ASR, ALOC, totals)")
    stats.add_argument("action", choices=["reset"])


def call(path: str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JSON-RPC 2.0 request and its response (OSError when nobody answers)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(path)
        req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("the control socket closed without an answer")
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply


def main(args: argparse.Namespace) -> int:
    path = args.socket
    if path is None:
        try:
            path = load_config(args.config).node.control.socket
        except ConfigError as e:
            print(f"sbc ctl: {e}", file=sys.stderr)
            return 1
        if not path:
            print(f"sbc ctl: node.control.socket is not set in {args.config}", file=sys.stderr)
            return 1
    cmd = args.ctl_command
    params: dict[str, Any] = {}
    if cmd in ("kill", "call"):
        params = {"id": args.id}
    elif cmd == "stats":
        params = {"action": args.action}
    elif cmd == "trunk":
        params = {"action": args.action, "trunk_group": args.trunk_group, "trunk": args.trunk}
    try:
        reply = call(path, cmd, params)
    except (OSError, ValueError) as e:
        hint = (
            ""
            if path.startswith("/")
            else (
                " (node.control.socket is relative to the working directory of `sbc run`, "
                "/var/lib/sbc under systemd: run from there, or give --socket)"
            )
        )
        print(f"sbc ctl: no answer from the control socket {path!r}: {e}{hint}", file=sys.stderr)
        return 3
    if "error" in reply:
        print(f"sbc ctl {cmd}: {reply['error'].get('message')}", file=sys.stderr)
        return 1
    result = reply.get("result")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(render(cmd, result)))
    return 0


def render(cmd: str, result: Any) -> list[str]:
    """The human form of a result."""
    if cmd == "calls":
        cols: tuple[str, ...] = ("id", "ingress", "egress", "ani", "dnis", "state", "age")
        lines = table(cols, [[c.get(k) for k in cols] for c in result])
        return [*lines, f"{len(result)} calls"]
    if cmd == "registrations":
        cols = ("direction", "trunk_group", "username", "contact", "q", "source", "expires_in")
        return table(cols, [[r.get(k) for k in cols] for r in result])
    if cmd == "call":
        return [ladder_line(m) for m in result]
    if cmd == "kill":
        return [
            f"call {result['id']}: "
            + ("ended (BYE/CANCEL sent)" if result["killed"] else "no such call")
        ]
    if cmd == "trunk":
        oos = result["out_of_service"]
        shown = [f"{tg} {t or '(all trunks)'}" for tg, t in oos]
        return ["out of service: " + (", ".join(shown) if shown else "none")]
    if cmd == "stats":
        return [f"counters reset on {result['workers']} worker(s)"]
    if cmd == "reload":
        if result.get("event") == "config.reload_refused":
            e = result.get("error", {})
            return [
                f"refused: {e.get('file')}:{e.get('line')}: {e.get('field')}: {e.get('message')}"
            ]
        return [f"reloaded: {result.get('summary', 'no change')}"]
    return [json.dumps(result)]


def ladder_line(m: dict[str, Any]) -> str:
    """``12:00:01.250  a  from udp:10.0.0.1:5060  INVITE sip:...``, as sbc saw it."""
    import time

    t = time.strftime("%H:%M:%S", time.gmtime(m["time"])) + f".{int(m['time'] % 1 * 1000):03d}"
    way = "from" if m["direction"] == "in" else "to  "
    return f"{t}  {m['leg']}  {way} {m['peer']:<24} {m['message']}"


def table(cols: tuple[str, ...], rows: list[list[Any]]) -> list[str]:
    cells = [[str(c) for c in cols], *[["" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
