"""Wiring: sockets in, the two pure layers (transactions, calls), sockets and one timer out.

Everything the SBC decides is decided in sbc.sip.transaction and sbc.call.controller; this
module only moves bytes, reads the clock, arms the earliest deadline either layer asks for
(aioquic-style), logs the controller's notices, writes its CDRs, serves /metrics and the
admin endpoint, swaps config snapshots on SIGHUP (with an audit record), tells systemd
where it stands, and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from media.client import MediaUnavailable, NgClient
from media.ng import MediaCommand
from routing.health import Key
from sbc import control, gauges, memory, native, status, tlsctx
from sbc.balance import Book, Keeper
from sbc.call import suspend
from sbc.call.controller import CallController
from sbc.call.model import Notice
from sbc.cdr import JsonLines, Spool, iso
from sbc.cdrship import Shipping
from sbc.config.loader import host_port, load_config
from sbc.config.snapshot import Snapshot
from sbc.executor import Executor
from sbc.fleetbook import attach
from sbc.hep import Capture
from sbc.http import HttpServer
from sbc.listeners import Listeners
from sbc.metrics import Metrics, SbcCollector
from sbc.notify import Notifier, Signals
from sbc.reloads import Reloads
from sbc.resolver import Resolver
from sbc.rtpnodes import media_client, rtpengine_nodes
from sbc.sip.timers import TimerConfig
from sbc.sip.transaction import Target, TransactionLayer
from sbc.state import Answered, Bind, Credit, Denied, StateCommand
from sbc.state.memory import MemoryStore
from sbc.state.redis import RedisStore
from sbc.transport import TcpPool
from sbc.webhook import post_json

if TYPE_CHECKING:
    from sbc.state import Binding
    from sbc.transport import Sink


class Worker(Protocol):
    """What a worker of several (sbc.worker) takes over from a lone node's runtime."""

    index: int
    leader: bool

    @property
    def sink(self) -> Sink: ...  # the steering step in front of on_message

    @property
    def steered(self) -> tuple[int, int]: ...  # (handed on, lost)

    def state(self, cmd: StateCommand, now: float) -> tuple[bool, Denied | None]: ...

    def changed(self, now: float) -> None: ...

    def noticed(self, notices: list[Notice]) -> None: ...

    def settle(self, records: list[dict[str, Any]]) -> None: ...  # to the node's keeper


WARN_EVENTS = frozenset(
    (
        "sip.refused",
        "sip.dropped",
        "call.refused",
        "transport.error",
        "config.reload_failed",
        "call.ack_timeout",
        "auth.refused",
        "auth.blocked",
        "edge.dropped",
        "flood.banned",
        "tcp.full",
        "call.timer_c",
        "registration.failed",
        "trunk.down",
        "routing.trigger",
        "metric.trigger",
    )
)

# Logged by a node's supervisor, once, not by each worker that sees them.
NODE_EVENTS = frozenset(("flood.banned", "flood.unbanned"))
QUIET_EVENTS = frozenset(("trunk.observed",))  # for the leader (sbc.worker), not the log


class Runtime:
    """The node's one process, or one worker of several (``worker``, sbc.worker): then the
    supervisor owns the admin endpoints, the CDR and audit files, reloads and systemd."""

    def __init__(
        self,
        config_dir: str | Path,
        log: Any,
        snapshot: Snapshot | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.log = log
        self.worker = worker
        self.notifier = Notifier("" if worker else None)
        snapshot = snapshot or Snapshot.build(load_config(self.config_dir))
        t = snapshot.config.node.timers
        self.layer = TransactionLayer(TimerConfig(t.t1, t.t2, t.t4))
        self.memory = MemoryStore()
        self.controller = CallController(self.layer, snapshot, self.memory)
        self.controller.leader = worker is None or worker.leader
        state = snapshot.config.node.state
        self.metrics = Metrics(
            SbcCollector(lambda: self.controller, self.layer, self.now, self.gauges)
        )
        self.redis: RedisStore | None = None
        if state.backend == "redis":
            self.redis = RedisStore(
                state.url,
                memory=self.memory,
                on_verdict=self.on_verdict,
                now=self.now,
                log=log,
                lease_ttl=state.lease_ttl,
                timeout=state.timeout,
                node_id=state.node_id + (f"-w{worker.index}" if worker else ""),
                on_rtt=self.metrics.observe_redis,
            )
        self.executor = Executor(
            self.layer,
            self.controller,
            self._state,
            lambda cmd: self._spawn(self._media_command(cmd)),
            lambda cmd: self._spawn(post_json(cmd.url, cmd.payload, log)),
        )
        self.media: NgClient | None = None
        if snapshot.config.node.rtpengine:
            self.media = media_client(snapshot, log, self.metrics.observe_rtpengine)
        node = snapshot.config.node
        self.cdrs = JsonLines(node.cdr.path)
        self.spool = Spool(self.cdrs)  # records wait here while the file cannot be written
        self.shipping = Shipping(log)  # the file into PostgreSQL; a supervisor's job if any
        self.balances: Keeper | None = None  # a worker's node keeps them in its supervisor
        if worker is None:  # relationships' balances and their ledger (sbc.balance)
            post = lambda url, payload: self._spawn(post_json(url, payload, log))  # noqa: E731
            self.balances = Keeper(Book(), node.balance.ledger, log, post, snapshot.balances)
            self.balances.clock = self.now  # the clock its holds are answered at
            self.balances.cut = lambda rel: self._spawn(
                suspend.ending(self.controller, rel, self.now, self.pump_now)
            )
        policies = lambda: self.controller.snapshot.balances  # noqa: E731
        self.fleet = attach(self.balances, state, log, policies) if self.balances else None
        self.reloads = Reloads(self.config_dir, log, "" if worker else node.audit.path)
        if worker is None:  # else the supervisor says it once for the node
            self.metrics.node(self.reloads)
        self.http: list[HttpServer] = []
        self.control: control.Control | None = None  # the lone node's; else the supervisor's
        self.hep = Capture(self.controller.blegs.correlation)  # node.hep
        quiet = worker is not None and not worker.leader  # trunks named by host: sbc.resolver
        self.dns = Resolver(
            self.controller.monitor, None if quiet else log, self.now, self.pump_now
        )
        self._screen = self.layer.accept  # the edge screen (sbc.call.gate): copies come after
        self.layer.accept = self._accept  # it, so a banned flood costs no HEP copy or trace
        self.node_name = node.name or socket.gethostname()
        self.started_at = time.time()
        self.draining_since: float | None = None
        self._idle: asyncio.Event | None = None  # set when a draining node holds no call
        self.sockets = Listeners()  # node.listen, both families (sbc.listeners)
        self.tls = tlsctx.Contexts(node.tls)  # node.tls: listeners and TLS trunks
        self.tcp = TcpPool(self, self.now, lambda: self.controller.snapshot.config.node.tcp)
        self.tcp.tls = self.tls.client
        self.tcp.names = self.controller.monitor.dns.domain_of  # TLS host trunks: RFC 5922
        self.tcp.busy = lambda host: host in self.controller.dialog_hosts  # calls: kept
        self.tcp.registered = lambda peer: self.controller.registrar.holds(
            peer, self.now() + self.controller.wall_offset
        )  # a PBX's TCP/TLS flow: kept however idle, and pinged
        self.tcp.event = lambda name, **fields: self.log.warning(name, **fields)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- sockets ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self.controller.wall_offset = time.time() - loop.time()
        if self.redis is not None:
            await self.redis.start()
        if self.fleet is not None:  # relationships' balances, shared by the fleet
            await self.fleet.start()
        if self.media is not None:
            await self.media.start()
        node = self.controller.snapshot.config.node
        # Workers share each listening socket's address; the kernel spreads peers over them.
        shared = self.worker is not None
        sink = self.worker.sink if self.worker is not None else self
        self.tcp.sink = sink  # workers steer what TCP/TLS carries too (sbc.worker)
        timeout = node.tls.handshake_timeout if node.tls else 10.0
        own = node.worker_port + self.worker.index if self.worker and node.worker_port else 0
        await self.sockets.open(node.listen, sink, self.tcp, self.tls.server, shared, timeout, own)
        self.controller.out.own_ports = self.sockets.own_ports  # read at start, as listen is
        self.hep.configure(node)
        self.log.info(
            "sbc.started",
            listen=[f"{x.transport}:{x.address}:{x.port}" for x in node.listen],
            core=native.mode(),
        )
        if self.worker is None:
            await self._serve_admin()
        now = self.now()
        self.dns.apply(self.controller.snapshot)
        self._spawn(self.dns.run())
        self.controller.start(now)  # outbound registrations, trunk monitoring
        self._pump(now)
        self.notifier.ready(self._summary())
        if self.notifier.watchdog:
            self._spawn(self._watchdog(self.notifier.watchdog))
        self._spawn(memory.keep(self.controller, self.layer, self.log, self.hep))
        if self.balances is not None:
            self._spawn(self.balances.run(lambda: self.controller.snapshot.balances))
        self._spawn(self.tcp.keep_sweeping())  # node.tcp: slowloris, idle, the cap

    async def _serve_admin(self) -> None:
        node = self.controller.snapshot.config.node
        # /metrics may face a Prometheus server; /status (call state) only the admin listener.
        endpoints = (
            (node.metrics.listen, {"/metrics": self._metrics}),
            (
                node.admin.listen,
                {"/status": self._status, "/metrics": self._metrics, "/memory": self._memory},
            ),
        )
        for address, routes in endpoints:
            hp = host_port(address) if address else None
            if hp is not None:
                http = HttpServer(routes)
                await http.start(*hp)
                self.http.append(http)
        self.reloads.loaded(self.controller.snapshot.config)
        if self.worker is None:
            self.shipping.apply(node.cdr.path, node.cdr.database)
        if node.control.socket:
            self.control = control.Control(
                control.LoneNode(self), node.control.socket, self.log, node.control.state
            )
            await self.control.start()

    async def _watchdog(self, period: float) -> None:
        while True:
            self.notifier.ping(self._summary())
            await asyncio.sleep(period)

    def _summary(self) -> str:
        calls = len(self.controller.calls)
        if self.draining_since is not None:
            return f"draining: {calls} calls left"
        return f"{calls} calls up"

    async def stop(self) -> None:
        self.shipping.stop()
        for http in self.http:
            http.close()
        if self.control is not None:
            self.control.close()
        self.hep.configure(None)
        for task in list(self._tasks):
            task.cancel()
        self.sockets.close()
        self.tcp.close()
        if self.redis is not None:
            await self.redis.stop()
        if self.fleet is not None:
            await self.fleet.stop()
        if self.media is not None:
            await self.media.stop()
        if self._timer is not None:
            self._timer.cancel()
        self.cdrs.close()
        self.reloads.close()

    # --- drain --------------------------------------------------------------------------------

    async def drain(self, timeout: float, bye_wait: float = 5.0) -> None:
        """SIGTERM: new calls get 503 + Retry-After; calls in progress have ``timeout``
        seconds to end by themselves, then both legs get BYE; return once every call (and
        its CDR) is done, or ``bye_wait`` seconds after the BYEs at most."""
        ctrl = self.controller
        ctrl.draining = True
        self.draining_since = time.time()
        self._idle = asyncio.Event()
        self.notifier.stopping(self._summary())
        self.log.info("sbc.draining", calls=len(ctrl.calls), timeout=timeout)
        self._pump(self.now())  # sets _idle at once when nothing is held
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            self.log.warning("sbc.drain_timeout", calls=len(ctrl.calls))
            now = self.now()
            ctrl.shutdown(now)
            self._pump(now)
            try:
                await asyncio.wait_for(self._idle.wait(), bye_wait)
            except TimeoutError:
                self.log.error("sbc.drain_incomplete", calls=len(ctrl.calls))
        self.log.info("sbc.drained", calls=len(ctrl.calls))

    # --- the pump -----------------------------------------------------------------------------

    def now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    def _accept(self, data: bytes, source: Target, now: float) -> bool:
        if self._screen is not None and not self._screen(data, source, now):
            return False
        if self.hep.active:
            self.hep.take(data, source, True)
        return True

    def on_message(self, data: bytes, source: Target) -> None:
        now = self.now()
        self.layer.receive(data, source, now)
        self._pump(now)

    def flush(self) -> None:
        """Carry out what the controller holds now (a ban decided before any message was
        parsed, sbc.worker)."""
        self._pump(self.now())

    def on_transport_error(self, target: Target, detail: str) -> None:
        self.log.warning(
            "transport.error",
            target=str(target),
            detail=detail,
        )
        now = self.now()
        self.layer.transport_failed(target, now)
        self._pump(now)

    def _pump(self, now: float) -> None:
        ctrl = self.controller
        self.executor.pump(now)
        if self.worker is not None:  # the leader's view goes out before its trunk.down line
            self.worker.changed(now)
        if ctrl.notices:
            notices = ctrl.pop_notices()
            self._log(notices)
            if self.worker is not None:
                self.worker.noticed(notices)
        if ctrl.cdrs:
            self.write_cdrs(ctrl.pop_cdrs())
        if self._idle is not None and not ctrl.busy:
            self._idle.set()
        hep = self.hep if self.hep.active else None
        unsent: list[Target] = []  # no UDP socket of the destination's family
        for data, target in self.layer.datagrams_to_send():
            if hep is not None:
                hep.take(data, target, False)
            if target.transport != "udp":
                self.tcp.send(data, target)
            elif not self.sockets.send(data, target):
                unsent.append(target)
        self._rearm()
        for target in dict.fromkeys(unsent):
            self.on_transport_error(target, "no listener of this address family")

    def pump_now(self) -> None:
        """Carry out what the controller was asked from outside (`sbc ctl kill`)."""
        self._pump(self.now())

    def _state(self, cmd: StateCommand, now: float) -> tuple[bool, Denied | None]:
        """A state-store command: the memory store decides at once, Redis maybe later."""
        if isinstance(cmd, (Credit, Answered)):  # balances: the node's one keeper's
            if self.balances is None:
                return self.worker.state(cmd, now) if self.worker is not None else (True, None)
            return self.balances.submit(cmd, now, self.on_verdict)
        if self.redis is not None:
            if self.worker is not None and isinstance(cmd, Bind):
                self.redis.submit(cmd, now)  # the fleet's copy; our siblings hear it at once
                return self.worker.state(cmd, now)
            return self.redis.submit(cmd, now)
        if self.worker is not None:
            return self.worker.state(cmd, now)
        return True, self.memory.execute(cmd, now)

    def _spawn(self, coro: Any) -> None:
        assert self.loop is not None
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def write_cdrs(self, records: list[dict[str, Any]]) -> None:
        # Workers too: each record is one write(2) to a file opened O_APPEND, so the node's
        # workers share one CDR file whole-line by whole-line (sbc.cdr.JsonLines).
        for record in records:
            record["node"] = self.node_name
        for event, fields in self.spool.write(records):
            self.log.error(event, **fields)
        snap = self.controller.snapshot
        if self.balances is not None:
            self.balances.settle(records, snap.balances, snap.trunk_groups)
        elif self.worker is not None and snap.balances:
            self.worker.settle(records)
        if snap.tariffs:  # revenue, cost, profit, margin and PPM triggers (sbc.stats)
            self.controller.stats.rated(records, snap.capacity_of, self.now())

    async def _media_command(self, cmd: MediaCommand) -> None:
        reply: dict[bytes, Any] | None = None
        if self.media is not None:
            try:
                reply = await self.media.request(cmd.call, cmd.cmd)
            except MediaUnavailable:
                reply = None
        now = self.now()
        self.controller.on_media(cmd.token, reply, now)
        self._pump(now)

    def on_bound(self, token: int) -> None:
        """Every sibling worker holds a binding we took: the REGISTER may be answered."""
        now = self.now()
        self.controller.on_bound(token, now)
        self._pump(now)

    def observed(self, key: Key, ok: bool, error: str) -> None:
        """A follower's live-traffic outcome for a monitored trunk (the leader's, sbc.worker)."""
        self.controller.observe(key, ok, error)
        self._pump(self.now())

    def on_verdict(self, token: int, denied: Denied | None) -> None:
        """A shared state store answered an Acquire."""
        now = self.now()
        self.controller.on_acquired(token, denied, now)
        self._pump(now)

    def _log(self, notices: list[Notice]) -> None:
        worker = self.worker is not None
        for n in notices:
            if (worker and n.event in NODE_EVENTS) or n.event in QUIET_EVENTS:
                continue  # the supervisor logs these once for the node (sbc.worker)
            if n.event in WARN_EVENTS:
                self.log.warning(n.event, call_id=n.call_id, **n.fields)
            else:
                self.log.info(n.event, call_id=n.call_id, **n.fields)

    def _rearm(self) -> None:
        deadlines = [
            t for t in (self.layer.get_timer(), self.controller.get_timer()) if t is not None
        ]
        if not deadlines:
            return
        when = min(deadlines)
        if self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self.loop is not None
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.now()
        self.layer.handle_timer(now)
        self.controller.handle_timer(now)
        self._pump(now)

    # --- reload -------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Validate the whole directory, then swap the snapshot; on any error change nothing."""
        self.notifier.reloading()
        try:
            ok = self._reload()
        finally:
            self.notifier.ready(self._summary())
        return ok

    def _reload(self) -> bool:
        snapshot = self.reloads.load(self.controller.snapshot.config)
        if snapshot is None:
            return False
        self.swap(snapshot)
        return True

    def swap(self, snapshot: Snapshot) -> None:
        """Serve with ``snapshot`` from now on (validated by whoever built it)."""
        self.controller.snapshot = snapshot
        self.hep.configure(snapshot.config.node)
        refused = self.tls.apply(snapshot.config.node.tls)  # SIGHUP re-reads certificates
        if refused:
            self.log.warning("tls.reload_refused", detail=refused)
        if snapshot.config.node.cdr.path != str(self.cdrs.path):
            self.cdrs.reopen(snapshot.config.node.cdr.path)
        if self.worker is None and self.loop is not None:
            self.shipping.apply(snapshot.config.node.cdr.path, snapshot.config.node.cdr.database)
        if snapshot.config.node.rtpengine:
            if self.media is None:  # the first rtpengine: a client of its own
                self.media = media_client(snapshot, self.log, self.metrics.observe_rtpengine)
                self._spawn(self.media.start())
            else:
                m = snapshot.config.node.media
                self.media.set_nodes(rtpengine_nodes(snapshot))
                self.media.timeout, self.media.retries = m.timeout, m.retries
                self.media.down_for = m.down_for
        if self.worker is None:  # a node's supervisor says it once for all its workers
            self.log.info("config.reloaded", trunk_groups=len(snapshot.trunk_groups))
        now = self.now()
        self.dns.apply(snapshot)
        self.controller.start(now)
        self._pump(now)

    def apply_bindings(self, bindings: tuple[Binding, ...]) -> None:
        """Registrations another worker took (or removed: expires_at 0)."""
        for b in bindings:
            self.memory.apply(b)

    # --- audit, metrics, status ---------------------------------------------------------------

    def gauges(self) -> list[tuple[str, str, float]]:
        return gauges.of(self)

    def _metrics(self) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()

    def memory_report(self) -> dict[str, Any]:
        return memory.report(self.controller, self.layer)

    def _memory(self) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(self.memory_report(), indent=1).encode()

    def status(self) -> dict[str, Any]:
        """Live state for `sbc status` (sbc.status)."""
        node = {
            "pid": os.getpid(),
            "started": iso(self.started_at),
            "config": str(self.config_dir),
            "config_loaded": iso(self.controller.snapshot.loaded_at),
            "draining_since": iso(self.draining_since),
            "calls": len(self.controller.calls),
            "cdr_records": self.cdrs.written,
            "cdr_path": str(self.cdrs.path.absolute()),  # relative paths: our cwd's
            "cdr_database": self.shipping.status(),
        }
        if self.worker is not None:
            node["worker"] = self.worker.index
        return status.report(self.controller, self.now(), node)

    def _status(self) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(self.status(), indent=1).encode()


async def serve(config_dir: str | Path, log: Any, stop: asyncio.Event | None = None) -> int:
    runtime = Runtime(config_dir, log)
    stop = stop or asyncio.Event()
    drain = asyncio.Event()

    def terminate() -> None:
        """The first SIGTERM (or SIGINT) drains; a second one exits at once."""
        if drain.is_set():
            stop.set()
        drain.set()

    signals = Signals(terminate, runtime.reload)
    await runtime.start()
    memory.tune_gc()
    signals.started()
    await _first(drain.wait(), stop.wait())
    if not stop.is_set():
        timeout = runtime.controller.snapshot.config.node.drain_timeout
        if not await _first(runtime.drain(timeout), stop.wait()):
            log.warning("sbc.drain_aborted", calls=len(runtime.controller.calls))
    log.info("sbc.stopping", calls=len(runtime.controller.calls))
    await runtime.stop()
    return 0


async def _first(main: Any, interrupt: Any) -> bool:
    """Run ``main`` until done (True) or until ``interrupt`` finishes first (False)."""
    a, b = asyncio.ensure_future(main), asyncio.ensure_future(interrupt)
    done, _ = await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
    for task in (a, b):
        if not task.done():
            task.cancel()
    return a in done
