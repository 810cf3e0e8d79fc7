"""A node of ``node.workers`` processes: the supervisor starts them, shares what they must
agree on, and is the one process systemd, Prometheus and the NOC talk to.

    supervisor ── link (sbc.ipc) ── worker 0 (leader: pings, registers at vendors)
               ├─ link ────────── worker 1 ...
    each worker: the SIP port (SO_REUSEPORT), its steering socket (sbc.worker), rtpengine

The supervisor holds no call. It keeps:
- **the limits**: one memory store (sbc.state.memory) decides every worker's Acquire, so
  ports, CPS and capacity groups hold exactly across workers; a worker's leases go back the
  moment it dies (the Redis backend needs none of this: each worker is a fleet node);
- **balances** (sbc.balance): its one book decides every worker's new call's credit and
  holds it, grows the holds as calls are answered, settles each ended call from the few
  fields of its CDR the worker sends, and alone writes the ledger; a worker's holds go the
  moment it dies; with ``on_suspend: hangup`` it tells every worker to end the calls of a
  relationship whose balance less their running cost reached suspend_at (sbc.cutoff);
- **registrations**, passed on to every worker (the REGISTER's 200 waits until all hold
  it), and to a restarted one whole;
- **the node's endpoints and audit log**: /metrics, /status and
  /memory merged from the workers' (sbc.aggregate), and systemd's notifications;
- **reload and drain**: SIGHUP validates the directory once and hands every worker the same
  snapshot, or refuses it and changes nothing; SIGTERM drains every worker and waits.

A worker that dies is logged (``worker.died``) and started again; its calls are lost, the
others' are not.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sbc import aggregate, control, ipc, memory, metrics, native, reuseport
from sbc.balance import Book, Keeper
from sbc.cdr import iso
from sbc.cdrship import Shipping
from sbc.config.loader import host_port, load_config
from sbc.config.snapshot import Snapshot
from sbc.fleetbook import attach
from sbc.http import HttpServer
from sbc.notify import Notifier, Signals
from sbc.reloads import Reloads
from sbc.state import Acquire, Answered, Binding, Credit, Denied
from sbc.state.memory import MemoryStore
from sbc.webhook import post_json

ASK_TIMEOUT = 2.0  # seconds a worker has to answer a scrape
RESTART_DELAYS = (0.2, 1.0, 5.0)  # after the 1st, 2nd, 3rd+ death in a minute


OWN_METRICS = (  # the supervisor's own, after the workers' merged (name, help, type)
    ("sbc_workers", "Workers running.", "gauge"),
    ("sbc_worker_restarts", "Workers started again after dying.", "counter"),
    ("sbc_config_reloads_accepted", "Reloads swapped in.", "counter"),
    ("sbc_config_reloads_refused", "Reloads refused (invalid config).", "counter"),
)


class WorkerProcess:
    """The supervisor's side of one worker."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.link: ipc.Link | None = None
        self.leases: set[str] = set()
        self.holds: set[str] = set()  # its calls holding credit (sbc.balance)
        self.hello = asyncio.Event()  # its steering socket is bound
        self.steer_port = 0
        self.ready = asyncio.Event()  # it serves SIP
        self.started = 0.0
        self.restarts = 0
        self.deaths: list[float] = []


class Supervisor:
    def __init__(
        self, config_dir: str | Path, log: Any, workers: int, log_level: str, log_format: str
    ) -> None:
        self.config_dir = Path(config_dir)
        self.log = log
        self.log_level = log_level
        self.log_format = log_format
        self.snapshot = Snapshot.build(load_config(self.config_dir))
        node = self.snapshot.config.node
        self.memory = MemoryStore()
        post = lambda url, payload: self._task(post_json(url, payload, log))  # noqa: E731
        self.balances = Keeper(Book(), node.balance.ledger, log, post, self.snapshot.balances)
        self.fleet = attach(self.balances, node.state, log, lambda: self.snapshot.balances)
        self.balances.cut = self._suspend  # on_suspend: hangup (sbc.cutoff)
        self.bans: dict[str, float] = {}  # flood bans node-wide: host -> until (monotonic)
        self.reloads = Reloads(self.config_dir, log, node.audit.path)
        self.notifier = Notifier()
        self.workers = [WorkerProcess(i) for i in range(workers)]
        self.view: dict[str, Any] | None = None  # the leader's, for a restarted follower
        self.started_at = time.time()
        self.draining_since: float | None = None
        self.http: list[HttpServer] = []
        self.shipping = Shipping(log)  # the node's one CDR file into PostgreSQL
        self.control: control.Control | None = None
        self.out_of_service: list[tuple[str, str]] = []  # `sbc ctl trunk disable`, for all
        self._asks: dict[int, asyncio.Future[Any]] = {}
        self._ask_ids = itertools.count(1)
        # bindings being shared: ack id -> (the worker that took it, its token, who must
        # still say they hold it)
        self._binds: dict[int, tuple[WorkerProcess, int, set[int]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.slots = reuseport.Slots()  # the workers' shared UDP sockets, in kernel order

    # --- workers ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.fleet is not None:  # relationships' balances, shared by the fleet
            await self.fleet.start()
        for w in self.workers:
            await self._spawn(w)
        # No worker serves SIP before every steering socket exists: nothing steered is lost.
        await asyncio.gather(*(w.hello.wait() for w in self.workers))
        for w in self.workers:
            self._send_start(w)
        await asyncio.gather(*(w.ready.wait() for w in self.workers))
        node = self.snapshot.config.node
        for address, routes in (
            (node.metrics.listen, {"/metrics": self._metrics}),
            (node.admin.listen, {"/status": self._status, "/metrics": self._metrics}),
        ):
            hp = host_port(address) if address else None
            if hp is not None:
                http = HttpServer({**routes, "/memory": self._memory})
                await http.start(*hp)
                self.http.append(http)
        self.reloads.loaded(self.snapshot.config)
        self.shipping.apply(node.cdr.path, node.cdr.database)
        if node.control.socket:
            self.control = control.Control(
                control.SupervisedNode(self), node.control.socket, self.log, node.control.state
            )
            await self.control.start()
        self._task(self.balances.run(lambda: self.snapshot.balances))  # `sbc balance add`
        self.log.info("sbc.started", workers=len(self.workers), pid=os.getpid(), core=native.mode())
        self.notifier.ready(await self._summary())
        if self.notifier.watchdog:
            self._task(self._watchdog(self.notifier.watchdog))

    async def _spawn(self, w: WorkerProcess) -> None:
        w.hello.clear()
        w.ready.clear()
        # Its shared UDP sockets, bound here so the kernel's program knows their order
        # (sbc.reuseport); the worker holds them alone, so they close with it.
        listen = self.snapshot.config.node.listen
        udp, unsteered = reuseport.bind(listen, self.slots.table(w.index))
        self.slots.bound(w.index)
        if unsteered:
            self.log.warning("reuseport.unsteered", worker=w.index, detail=unsteered)
        given = [[x.address, x.port, sock.fileno()] for x, sock in udp]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sbc.cli", "worker", "--fd", str(theirs.fileno()),
                "--index", str(w.index), "--workers", str(len(self.workers)),
                "--node", str(os.getpid()), "--log-level", self.log_level,
                "--log-format", self.log_format, "--udp", json.dumps(given),
                pass_fds=(theirs.fileno(), *(sock.fileno() for _, sock in udp)), env=env,
                start_new_session=True,
            )  # fmt: skip
        except OSError:
            self.slots.died(w.index)  # its sockets close below: they leave the group
            ours.close()
            raise
        finally:
            theirs.close()
            for _, sock in udp:
                sock.close()
        w.started = time.monotonic()
        w.link = await ipc.connect(ours, lambda msg: self._on_message(w, msg), lambda: None)
        self._task(self._watch(w, w.proc))

    def _send_start(self, w: WorkerProcess) -> None:
        bindings = list(self.memory.bindings.values())
        if w.link is not None:
            peers = self._peers()
            snap = (self.snapshot.config, self.snapshot.loaded_at)
            w.link.send("start", peers, str(self.config_dir), snap, bindings, self.view)
            if self.out_of_service:
                w.link.send("oos", self.out_of_service)
            self._others(w, "peers", peers)

    def _peers(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", w.steer_port) for w in self.workers]

    async def _watch(self, w: WorkerProcess, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        self.slots.died(w.index)  # its sockets closed with it
        w.ready.clear()  # scrapes skip it until it is back, instead of waiting for it
        if w.link is not None:
            w.link.close()
        for lease in w.leases:  # its calls are gone: so are their ports
            self.memory.release(lease)
        self.balances.forget(w.holds)  # and their credit (no CDR will settle them)
        w.holds = set()
        self._held(w.index, None)  # siblings' REGISTERs no longer wait for it
        released, w.leases = len(w.leases), set()
        if self.draining_since is not None:
            return
        now = time.monotonic()
        w.deaths = [t for t in w.deaths if t > now - 60] + [now]
        delay = RESTART_DELAYS[min(len(w.deaths), len(RESTART_DELAYS)) - 1]
        self.log.error(
            "worker.died", worker=w.index, pid=proc.pid, code=code, ports_released=released,
            restart_in=delay,
        )  # fmt: skip
        await asyncio.sleep(delay)
        while self.draining_since is None:
            try:
                await self._spawn(w)
            except OSError as e:  # no socket, no process: try again, as after a death
                self.log.error("worker.restart_failed", worker=w.index, error=str(e))
                await asyncio.sleep(RESTART_DELAYS[-1])
                continue
            w.restarts += 1
            await w.hello.wait()
            self._send_start(w)
            return

    def _on_message(self, w: WorkerProcess, msg: ipc.Message) -> None:
        kind = msg[0]
        if kind == "acquire":
            cmd: Acquire = msg[1]
            denied = self.memory.acquire(cmd.lease, cmd.scopes, time.monotonic())
            if denied is None:
                w.leases.add(cmd.lease)
            assert w.link is not None
            w.link.send("verdict", cmd.token, denied)
        elif kind == "credit":  # the node's one book decides (sbc.balance)
            credit: Credit = msg[1]

            def reply(token: int, verdict: Denied | None) -> None:
                if verdict is None and credit.hold is not None:
                    w.holds.add(credit.lease)
                if w.link is not None:
                    w.link.send("verdict", token, verdict)

            decided, verdict = self.balances.submit(credit, time.monotonic(), reply)
            if decided:
                reply(credit.token, verdict)
        elif kind == "answered":
            self.balances.submit(Answered(msg[1], 0.0), time.monotonic(), _nothing)
        elif kind == "settle":
            records: list[dict[str, Any]] = msg[1]
            self.balances.settle(records, self.snapshot.balances)
            w.holds.difference_update(r["call_id"] for r in records)
        elif kind == "release":
            self.memory.release(msg[1])
            w.leases.discard(msg[1])
        elif kind == "bind":
            self._bind(w, msg[1], msg[2])
        elif kind == "held":
            self._held(w.index, msg[1])
        elif kind == "view":
            self.view = msg[1]
            self._others(w, "view", self.view)
        elif kind == "answer":
            future = self._asks.pop(msg[1], None)
            if future is not None and not future.done():
                future.set_result(msg[2])
        elif kind == "hello":
            w.steer_port = msg[1]
            w.hello.set()
        elif kind == "block":  # a registrar lockout: every worker drops the guesser
            self._others(w, "block", *msg[1:])
        elif kind == "observed":  # a follower's live-traffic outcome: the leader counts it
            leader = self.workers[0]
            if leader.link is not None and leader is not w:
                leader.link.send(*msg)
        elif kind == "ban":
            self._ban(w, msg[1], msg[2], msg[3])
        elif kind == "ready":
            w.ready.set()
            self.log.info("worker.started", worker=w.index, pid=msg[1])

    def _suspend(self, relationship: str) -> None:
        """The relationship's balance reached suspend_at (on_suspend: hangup): every worker
        ends its calls (sbc.call.suspend)."""
        for w in self.workers:
            if w.link is not None:
                w.link.send("suspend", relationship)

    def _ban(self, w: WorkerProcess, host: str, block_for: float, fields: dict[str, Any]) -> None:
        """A worker banned a flooding source (sbc.flood): the node logs it once, every
        other worker drops it too, and the node logs its end once."""
        now = time.monotonic()
        if self.bans.get(host, 0.0) > now:
            return  # another worker's share of the same flood: already banned node-wide
        self.bans[host] = now + block_for
        self.log.warning("flood.banned", **fields)
        self._others(w, "ban", host, block_for)
        asyncio.get_running_loop().call_later(block_for, self._unban, host)

    def _unban(self, host: str) -> None:
        until = self.bans.get(host)
        if until is not None and until <= time.monotonic() + 0.001:
            del self.bans[host]
            self.log.info("flood.unbanned", ip=host)

    def _bind(self, w: WorkerProcess, bs: tuple[Binding, ...], token: int) -> None:
        """A worker's registrar changed bindings: every sibling must hold them before the
        REGISTER's 200 goes out, or the PBX's first INVITE, steered by its Call-ID to a
        sibling, would meet an unknown source."""
        for b in bs:
            self.memory.apply(b)
        ack = next(self._ask_ids)
        waiting = {o.index for o in self.workers if o is not w and o.link is not None}
        self._binds[ack] = (w, token, waiting)
        self._others(w, "bind", bs, ack)
        # A sibling that hangs must not hold the REGISTER for ever: answer it anyway.
        asyncio.get_running_loop().call_later(ASK_TIMEOUT, self._bound, ack)
        if not waiting:
            self._bound(ack)

    def _held(self, index: int, ack: int | None) -> None:
        """Worker ``index`` holds binding ``ack`` (None: it died, so it holds nothing)."""
        for key in [ack] if ack is not None else list(self._binds):
            entry = self._binds.get(key)
            if entry is not None:
                entry[2].discard(index)
                if not entry[2]:
                    self._bound(key)

    def _bound(self, ack: int) -> None:
        entry = self._binds.pop(ack, None)
        if entry is not None and entry[0].link is not None:
            entry[0].link.send("bound", entry[1])

    def _others(self, w: WorkerProcess, *msg: Any) -> None:
        for other in self.workers:
            if other is not w and other.link is not None:
                other.link.send(*msg)

    async def ask(self, what: str | tuple[Any, ...]) -> list[Any]:
        """Every ready worker's answer (metrics, status, memory, or a control question,
        sbc.control); a silent one is skipped."""
        loop = asyncio.get_running_loop()
        futures = []
        for w in self.workers:
            if w.link is not None and w.ready.is_set():
                request = next(self._ask_ids)
                future: asyncio.Future[Any] = loop.create_future()
                self._asks[request] = future
                w.link.send("ask", request, what)
                futures.append((request, future))
        if futures:  # one deadline for all of them, not one each
            await asyncio.wait([f for _, f in futures], timeout=ASK_TIMEOUT)
        answers = []
        for request, future in futures:
            if future.done():
                answers.append(future.result())
            else:
                self._asks.pop(request, None)
                future.cancel()
        return answers

    # --- reload and drain ---------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: every worker gets the same validated snapshot, or none does."""
        self.notifier.reloading()
        snapshot = self.reloads.load(self.snapshot.config)
        if snapshot is not None:
            self.snapshot = snapshot
            for w in self.workers:
                if w.link is not None:
                    w.link.send("snapshot", (snapshot.config, snapshot.loaded_at))
            self.log.info("config.reloaded", trunk_groups=len(snapshot.trunk_groups))
            self.shipping.apply(snapshot.config.node.cdr.path, snapshot.config.node.cdr.database)
        self.notifier.ready(f"{len(self.workers)} workers")

    async def drain(self) -> None:
        """SIGTERM to every worker (each drains as a lone node does); wait for all."""
        self.draining_since = time.time()
        calls = sum(r["node"]["calls"] for r in await self.ask("status"))
        self.notifier.stopping(f"draining: {calls} calls left")
        # Workers first, and the line once each says it refuses new calls: peers and tests
        # read it as "new INVITEs get 503 from here on".
        self.signal_all(signal.SIGTERM)
        settle = time.monotonic() + 2.0
        while time.monotonic() < settle and not all(
            r["node"]["draining_since"] for r in await self.ask("status")
        ):
            await asyncio.sleep(0.02)
        self.log.info("sbc.draining", workers=len(self.workers), calls=calls)
        # A drained worker keeps reading its socket: the kernel may still hand it a BYE's
        # answer for another worker's call, to be steered there. Once the node holds no
        # call (or past the drain's own bounds), a second SIGTERM ends every worker.
        deadline = time.monotonic() + self.snapshot.config.node.drain_timeout + 10
        while time.monotonic() < deadline and any(
            w.proc is not None and w.proc.returncode is None for w in self.workers
        ):
            if sum(r["node"]["calls"] for r in await self.ask("status")) == 0:
                break
            await asyncio.sleep(0.1)
        self.signal_all(signal.SIGTERM)
        await asyncio.gather(*(w.proc.wait() for w in self.workers if w.proc is not None))
        self.log.info("sbc.drained")

    def signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                os.kill(w.proc.pid, sig)

    async def stop(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()
        self.shipping.stop()
        for http in self.http:
            http.close()
        if self.control is not None:
            self.control.close()
        self.signal_all(signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        self.reloads.close()

    # --- endpoints ----------------------------------------------------------------------------

    async def _summary(self) -> str:
        reports = await self.ask("status")
        calls = sum(r["node"]["calls"] for r in reports)
        return f"{len(reports)} workers, {calls} calls up"

    async def _watchdog(self, period: float) -> None:
        while True:
            self.notifier.ping(await self._summary())
            await asyncio.sleep(period)

    async def _metrics(self) -> tuple[int, str, bytes]:
        values = (
            self._running(),
            self._restarts(),
            self.reloads.counts["accepted"],
            self.reloads.counts["refused"],
        )
        own = [(*meta, value) for meta, value in zip(OWN_METRICS, values, strict=True)]
        text = "".join(aggregate.gauge(name, doc, value, kind) for name, doc, kind, value in own)
        text += metrics.node_metrics(self.reloads).decode()
        body = aggregate.merge_metrics(await self.ask("metrics"), text)
        return 200, "text/plain; version=0.0.4; charset=utf-8", body

    def _restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    def _running(self) -> int:
        return sum(1 for w in self.workers if w.proc and w.proc.returncode is None)

    async def status(self) -> dict[str, Any]:
        reports = await self.ask("status")
        node = {
            "pid": os.getpid(),
            "started": iso(self.started_at),
            "config": str(self.config_dir),
            "config_loaded": iso(self.snapshot.loaded_at),
            "draining_since": iso(self.draining_since),
            "calls": sum(r["node"]["calls"] for r in reports),
            "cdr_records": sum(r["node"]["cdr_records"] for r in reports),
            "cdr_path": str(Path(self.snapshot.config.node.cdr.path).absolute()),
            "cdr_database": self.shipping.status(),
            "workers": [{k: r["node"][k] for k in ("worker", "pid", "calls")} for r in reports],
            "worker_restarts": self._restarts(),
        }
        return aggregate.merge_status(reports, node)

    async def _status(self) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(await self.status(), indent=1).encode()

    async def _memory(self) -> tuple[int, str, bytes]:
        body = aggregate.merge_memory(await self.ask("memory"), memory.rss_kb())
        return 200, "application/json", json.dumps(body, indent=1).encode()

    def _task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _nothing(token: int, verdict: Denied | None) -> None:
    """No verdict is awaited (an Answered)."""


async def serve(
    config_dir: str | Path, log: Any, workers: int, log_level: str, log_format: str = "json"
) -> int:
    sup = Supervisor(config_dir, log, workers, log_level, log_format)
    drain, stop = asyncio.Event(), asyncio.Event()

    def terminate() -> None:
        """The first SIGTERM (or SIGINT) drains every worker; a second one ends them now."""
        if drain.is_set() and not stop.is_set():
            log.warning("sbc.drain_aborted")
            sup.signal_all(signal.SIGTERM)  # a worker's second SIGTERM: exit at once
            stop.set()
        drain.set()

    signals = Signals(terminate, sup.reload)
    await sup.start()
    signals.started()
    await drain.wait()
    await sup.drain()  # a second SIGTERM makes the workers exit at once
    log.info("sbc.stopping")
    await sup.stop()
    return 0
