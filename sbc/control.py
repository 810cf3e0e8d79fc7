"""The control socket: JSON-RPC 2.0 over a UNIX stream socket, one request per line, for
`sbc ctl` (sbc.ctl) and a NOC's scripts, in the spirit of Kamailio's jsonrpcs/kamcmd.

    calls                       -> [{id, sip_call_id, ingress, egress, ani, dnis, state, age}]
    call {id}                   -> [{time, direction, peer, leg, sip_call_id, message}]
                                   its SIP ladder (first lines) from the trace ring (sbc.trace)
    kill {id}                   -> {id, killed}      BYE both legs (or CANCEL/503 in setup)
    trunk {action, trunk_group, trunk}  -> {out_of_service: [...]}   out of hunting at once
    registrations               -> [{trunk_group, username, contact, source, expires_in}]
    reload                      -> the audit record of the reload (the SIGHUP path)

The socket is created mode 0600 (umask while binding, so no window where it is wider), so
only its owner, the service user, and root reach it; every write method is written to the
audit log with the peer's uid from SO_PEERCRED. The server lives in the process that owns
the node's endpoints: a lone runtime (``workers: 1``) or the supervisor, which asks every
worker (``Supervisor.ask``) the way /status does. A trunk taken out of service is held in
the controller (workers: in each, and the supervisor keeps the list for a restarted one),
not in the snapshot, so a reload keeps it out until it is enabled again, and in the file
``node.control.state`` (written whole, then renamed), so a restart does too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from sbc.call.hunt import trunk_label
from sbc.config.schema import Config
from sbc.reloads import Reloads
from sbc.stats import Stats

MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 30.0
WRITE_METHODS = frozenset(("kill", "trunk", "reload", "stats"))

# JSON-RPC 2.0 error codes (section 5.1)
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Node(Protocol):
    """What the control socket drives: a lone runtime or a supervisor (adapters below)."""

    reloads: Reloads

    def config(self) -> Config: ...

    async def ask(self, what: tuple[Any, ...]) -> list[Any]: ...  # every worker's answer

    def reload(self) -> None: ...

    def out_of_service(self, oos: set[tuple[str, str]]) -> None: ...

    def bindings(self) -> list[Any]: ...


# --- the workers' side: answers from one runtime (sbc.runtime, sbc.worker) ---------------------


def answer(runtime: Any, what: tuple[Any, ...]) -> Any:
    """One runtime's answer to a control question (the lone node's, or a worker's)."""
    ctrl = runtime.controller
    now = runtime.now()
    if what[0] == "calls":
        return [_call(c, now) for c in list(ctrl.calls.values())]
    if what[0] == "kill":
        call = ctrl.calls.get(what[1])
        killed = call is not None and ctrl.stop(call, "killed", now)
        runtime.pump_now()
        return killed
    if what[0] == "reset":  # the counters /metrics shows start again from 0 (rate() copes)
        ctrl.stats = Stats()
        ctrl.refusals.clear()
        return True
    if what[0] == "oos":
        ctrl.out_of_service = set(map(tuple, what[1]))
        return True
    if what[0] == "trace":
        call = ctrl.calls.get(what[1])
        sip_call_id = call.a_invite.call_id if call is not None else what[1]
        ring = runtime.hep.trace
        return ring.ladder(sip_call_id) if ring is not None else None
    if what[0] == "outbound":
        return [
            {"trunk_group": tg, "trunk": i, "up": reg.up}
            for (tg, i), reg in ctrl.registrations.by_key.items()
        ]
    raise RpcError(METHOD_NOT_FOUND, f"unknown question {what[0]!r}")


def _call(call: Any, now: float) -> dict[str, Any]:
    attempt = call.answered or call.current
    return {
        "id": call.id,
        "sip_call_id": call.a_invite.call_id,
        "ingress": call.ingress.name,
        "egress": attempt.trunk_group.name if attempt is not None else None,
        "ani": call.ani,
        "dnis": call.dnis,
        "state": call.state,
        "age": round(now - call.started, 1),
    }


# --- the server --------------------------------------------------------------------------------


def load_out_of_service(path: Path, config: Config) -> tuple[set[tuple[str, str]], list[Any]]:
    """The trunks a previous run took out of service, and the entries the config no longer
    names (left out, so enabling them again is not needed). A missing file is none."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return set(), []
    except (OSError, ValueError) as e:
        return set(), [f"{path}: {e}"]
    tgs = {t.name: t for t in config.trunk_groups}
    kept: set[tuple[str, str]] = set()
    dropped: list[Any] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        ok = isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)
        tg = tgs.get(entry[0]) if ok else None
        if tg is None or (
            entry[1] and entry[1] not in [trunk_label(tg, i) for i in range(len(tg.trunks))]
        ):
            dropped.append(entry)
        else:
            kept.add((entry[0], entry[1]))
    return kept, dropped


def save_out_of_service(path: Path, oos: set[tuple[str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sorted(oos)) + "\n")
    os.replace(tmp, path)


class Control:
    def __init__(self, node: Node, path: str, log: Any, state: str = "") -> None:
        self.node = node
        self.path = Path(path)
        self.state = Path(state) if state else None
        self.log = log
        self.server: asyncio.AbstractServer | None = None
        self.out_of_service: set[tuple[str, str]] = set()
        self.methods: dict[str, Callable[[dict[str, Any], int], Awaitable[Any]]] = {
            "calls": self._calls,
            "kill": self._kill,
            "call": self._trace,
            "trunk": self._trunk,
            "registrations": self._registrations,
            "reload": self._reload,
            "stats": self._stats,
        }

    async def start(self) -> None:
        """Serve; a socket that cannot be had (another live node's, a read-only directory)
        is logged at error level and the node serves SIP without it. First the trunks a
        previous run left out of service go out again."""
        if self.state is not None:
            oos, dropped = load_out_of_service(self.state, self.node.config())
            if dropped:
                self.log.warning("control.state_dropped", path=str(self.state), entries=dropped)
            if oos:
                self.out_of_service = oos
                self.node.out_of_service(oos)
                await self.node.ask(("oos", sorted(oos)))
                self.log.info("trunk.still_disabled", trunks=[list(k) for k in sorted(oos)])
        try:
            await self._bind()
        except OSError as e:
            self.log.error("control.failed", path=str(self.path), error=str(e))

    async def _bind(self) -> None:
        if self.path.is_socket():  # a stale one from a node that died; a live one answers
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(self.path))
                except OSError:
                    live = False
                else:
                    live = True
            if live:
                raise OSError(f"control socket {self.path} is in use by another node")
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(
                self._serve, str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = _peer_uid(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(READ_TIMEOUT):
                        line = await reader.readline()
                except (TimeoutError, ValueError, OSError):
                    break
                if not line:
                    break
                reply = await self.handle(line, uid)
                writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes, uid: int) -> dict[str, Any]:
        """One JSON-RPC 2.0 request in, its response out (errors per section 5.1)."""
        rid: Any = None
        try:
            try:
                req = json.loads(line)
            except ValueError as e:
                raise RpcError(PARSE_ERROR, f"parse error: {e}") from e
            if not isinstance(req, dict) or req.get("jsonrpc") != "2.0":
                raise RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request")
            rid = req.get("id")
            method = self.methods.get(req.get("method", ""))
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"no method {req.get('method')!r}")
            params = req.get("params") or {}
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "params must be an object")
            result = await method(params, uid)
        except RpcError as e:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": e.code, "message": e.message}}
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    def _audit(self, event: str, uid: int, **fields: Any) -> dict[str, Any]:
        return self.node.reloads.record(event, uid=uid, via="control", **fields)

    # --- methods ------------------------------------------------------------------------------

    async def _calls(self, params: dict[str, Any], uid: int) -> Any:
        calls = [c for answer in await self.node.ask(("calls",)) for c in answer]
        return sorted(calls, key=lambda c: -c["age"])

    async def _trace(self, params: dict[str, Any], uid: int) -> Any:
        call_id = params.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise RpcError(INVALID_PARAMS, "call needs the call's id or its SIP Call-ID")
        answers = await self.node.ask(("trace", call_id))
        if all(a is None for a in answers):
            raise RpcError(INVALID_PARAMS, "no trace: node.control.trace is 0")
        ladder = max(answers, key=lambda a: len(a or []))
        if not ladder:
            raise RpcError(INVALID_PARAMS, f"no call {call_id!r} in the trace ring")
        return ladder

    async def _kill(self, params: dict[str, Any], uid: int) -> Any:
        call_id = params.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise RpcError(INVALID_PARAMS, "kill needs the call's id")
        killed = any(await self.node.ask(("kill", call_id)))
        self._audit("call.killed" if killed else "call.kill_missed", uid, call_id=call_id)
        return {"id": call_id, "killed": killed}

    async def _trunk(self, params: dict[str, Any], uid: int) -> Any:
        action, name = params.get("action"), params.get("trunk_group")
        trunk = params.get("trunk") or ""
        if action not in ("disable", "enable"):
            raise RpcError(INVALID_PARAMS, "action must be disable or enable")
        if not isinstance(trunk, str):
            raise RpcError(INVALID_PARAMS, "trunk must be a string")
        tg = next((t for t in self.node.config().trunk_groups if t.name == name), None)
        if tg is None:
            raise RpcError(INVALID_PARAMS, f"unknown trunk group {name!r}")
        trunk = trunk.split(":", 1)[1] if trunk.startswith(("udp:", "tcp:", "tls:")) else trunk
        labels = [trunk_label(tg, i) for i in range(len(tg.trunks))]
        if trunk and trunk not in labels:
            raise RpcError(INVALID_PARAMS, f"{name} has no trunk {trunk!r} (it has {labels})")
        key = (tg.name, trunk)
        if action == "disable":
            self.out_of_service.add(key)
        else:
            self.out_of_service.discard(key)
        self.node.out_of_service(self.out_of_service)
        await self.node.ask(("oos", sorted(self.out_of_service)))
        if self.state is not None:
            try:
                save_out_of_service(self.state, self.out_of_service)
            except OSError as e:  # in force now; only a restart forgets it
                self.log.error("control.state_failed", path=str(self.state), error=str(e))
        record = self._audit(f"trunk.{action}d", uid, trunk_group=tg.name, trunk=trunk)
        self.log.info(f"trunk.{action}d", trunk_group=tg.name, trunk=trunk, uid=uid)
        return {"out_of_service": [list(k) for k in sorted(self.out_of_service)], "audit": record}

    async def _stats(self, params: dict[str, Any], uid: int) -> Any:
        """`sbc ctl stats reset`: every trunk group's totals, windows (ASR, ALOC, triggers)
        and refusal counts, on every worker; admission limits and calls are not touched."""
        if params.get("action") != "reset":
            raise RpcError(INVALID_PARAMS, "stats takes the action reset")
        workers = len(await self.node.ask(("reset",)))
        self._audit("stats.reset", uid, workers=workers)
        return {"reset": True, "workers": workers}

    async def _registrations(self, params: dict[str, Any], uid: int) -> Any:
        wall = time.time()
        out: list[dict[str, Any]] = [
            {
                "direction": "inbound",
                "trunk_group": b.trunk_group,
                "username": b.username,
                "contact": b.contact,
                "q": b.q,  # one account may hold several contacts, tried highest q first
                "source": f"{b.transport}:{b.host}:{b.port}",
                "expires_in": round(b.expires_at - wall),
            }
            for b in self.node.bindings()
            if b.expires_at > wall
        ]
        tgs = {t.name: t for t in self.node.config().trunk_groups}
        answers = await self.node.ask(("outbound",))
        for reg in answers[0] if answers else []:  # the leader's (worker 0) registers
            tg = tgs.get(reg["trunk_group"])
            if tg is None or reg["trunk"] >= len(tg.trunks):
                continue
            t = tg.trunks[reg["trunk"]]
            out.append(
                {
                    "direction": "outbound",
                    "trunk_group": tg.name,
                    "username": t.username,
                    "contact": f"{t.protocol}:{t.ip}:{t.port or 5060}",
                    "source": "",
                    "expires_in": None,
                    "up": reg["up"],
                }
            )
        return out

    async def _reload(self, params: dict[str, Any], uid: int) -> Any:
        self.node.reloads.actor = {"uid": uid, "via": "control"}
        try:
            self.node.reload()
        finally:
            self.node.reloads.actor = {}
        return self.node.reloads.last


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    """The connecting process's uid (SO_PEERCRED: pid, uid, gid as three ints); -1 if the
    kernel does not say."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return -1
    return int(struct.unpack("3i", creds)[1])


# --- adapters ----------------------------------------------------------------------------------


class LoneNode:
    """``workers: 1``: the runtime is the whole node."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.reloads: Reloads = runtime.reloads

    def config(self) -> Config:
        config: Config = self.runtime.controller.snapshot.config
        return config

    async def ask(self, what: tuple[Any, ...]) -> list[Any]:
        return [answer(self.runtime, what)]

    def reload(self) -> None:
        self.runtime.reload()

    def out_of_service(self, oos: set[tuple[str, str]]) -> None:
        pass  # ask(("oos", ...)) sets the controller's

    def bindings(self) -> list[Any]:
        return list(self.runtime.memory.bindings.values())


class SupervisedNode:
    """A node of workers: the supervisor asks each (sbc.supervisor)."""

    def __init__(self, sup: Any) -> None:
        self.sup = sup
        self.reloads: Reloads = sup.reloads

    def config(self) -> Config:
        config: Config = self.sup.snapshot.config
        return config

    async def ask(self, what: tuple[Any, ...]) -> list[Any]:
        answers: list[Any] = await self.sup.ask(what)
        return answers

    def reload(self) -> None:
        self.sup.reload()

    def out_of_service(self, oos: set[tuple[str, str]]) -> None:
        self.sup.out_of_service = sorted(oos)  # for a worker started again

    def bindings(self) -> list[Any]:
        return list(self.sup.memory.bindings.values())
