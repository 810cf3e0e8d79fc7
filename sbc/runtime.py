"""Wiring: sockets in, the two pure layers (transactions, calls), sockets and one timer out.

Everything the SBC decides is decided in sbc.sip.transaction and sbc.call.controller; this
module only moves bytes, reads the clock, arms the earliest deadline either layer asks for
(aioquic-style), logs the controller's notices, and swaps config snapshots on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from media.client import MediaUnavailable, NgClient
from media.ng import MediaCommand
from sbc.call.controller import CallController, Notice
from sbc.config.loader import ConfigError, host_port, load_config
from sbc.config.snapshot import Snapshot
from sbc.sip.timers import TimerConfig
from sbc.sip.transaction import Target, TransactionLayer
from sbc.state import Acquire, Denied, Notify
from sbc.state.memory import MemoryStore
from sbc.state.redis import RedisStore
from sbc.transport import TcpConnection, TcpPool, UdpEndpoint

WARN_EVENTS = frozenset(
    (
        "sip.refused",
        "sip.dropped",
        "call.refused",
        "transport.error",
        "config.reload_failed",
        "call.ack_timeout",
        "auth.refused",
        "registration.failed",
        "trunk.down",
        "routing.trigger",
    )
)


class Runtime:
    def __init__(self, config_dir: str | Path, log: Any) -> None:
        self.config_dir = Path(config_dir)
        self.log = log
        snapshot = Snapshot.build(load_config(self.config_dir))
        t = snapshot.config.node.timers
        self.layer = TransactionLayer(TimerConfig(t.t1, t.t2, t.t4))
        self.memory = MemoryStore()
        self.controller = CallController(self.layer, snapshot, self.memory)
        state = snapshot.config.node.state
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
                node_id=state.node_id,
            )
        self.media = media_client(snapshot, log) if snapshot.config.node.rtpengine else None
        self.udp: dict[tuple[str, int], UdpEndpoint] = {}
        self.udp_out: UdpEndpoint | None = None
        self.tcp = TcpPool(self)
        self._servers: list[asyncio.AbstractServer] = []
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
        if self.media is not None:
            await self.media.start()
        node = self.controller.snapshot.config.node
        for listen in node.listen:
            if listen.transport == "udp":
                _, proto = await loop.create_datagram_endpoint(
                    lambda: UdpEndpoint(self), local_addr=(listen.address, listen.port)
                )
                self.udp[(listen.address, listen.port)] = proto
                sock = proto.transport.get_extra_info("socket") if proto.transport else None
                if sock is not None:
                    _grow_receive_buffer(sock)
                self.udp_out = self.udp_out or proto
            elif listen.transport == "tcp":
                server = await loop.create_server(
                    lambda: TcpConnection(self.tcp), listen.address, listen.port, reuse_address=True
                )
                self._servers.append(server)
        self.log.info(
            "sbc.started", listen=[f"{x.transport}:{x.address}:{x.port}" for x in node.listen]
        )
        now = self.now()
        self.controller.start(now)  # outbound registrations
        self._pump(now)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for ep in self.udp.values():
            if ep.transport is not None:
                ep.transport.close()
        self.tcp.close()
        if self.redis is not None:
            await self.redis.stop()
        if self.media is not None:
            await self.media.stop()
        if self._timer is not None:
            self._timer.cancel()

    # --- the pump -----------------------------------------------------------------------------

    def now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    def on_message(self, data: bytes, source: Target) -> None:
        now = self.now()
        self.layer.receive(data, source, now)
        self._pump(now)

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
        while True:
            events = self.layer.pop_events()
            if events:
                ctrl.process(events)
            if not ctrl.commands:
                break
            for cmd in ctrl.pop_commands():
                if isinstance(cmd, Notify):
                    self._spawn(post_json(cmd.url, cmd.payload, self.log))
                    continue
                if isinstance(cmd, MediaCommand):
                    self._spawn(self._media_command(cmd))
                    continue
                if self.redis is None:
                    decided, denied = True, self.memory.execute(cmd, now)
                else:
                    decided, denied = self.redis.submit(cmd, now)
                if decided and isinstance(cmd, Acquire):
                    ctrl.on_acquired(cmd.token, denied, now)
        if self.controller.notices:
            self._log(self.controller.pop_notices())
        for data, target in self.layer.datagrams_to_send():
            if target.transport == "udp":
                if self.udp_out is not None:
                    self.udp_out.send(data, target)
            else:
                self.tcp.send(data, target)
        self._rearm()

    def _spawn(self, coro: Any) -> None:
        assert self.loop is not None
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    def on_verdict(self, token: int, denied: Denied | None) -> None:
        """A shared state store answered an Acquire."""
        now = self.now()
        self.controller.on_acquired(token, denied, now)
        self._pump(now)

    def _log(self, notices: list[Notice]) -> None:
        for n in notices:
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
        try:
            snapshot = Snapshot.build(load_config(self.config_dir))
        except ConfigError as e:
            self.log.error(
                "config.reload_failed", file=e.file, line=e.line, field=e.field, error=e.message
            )
            return False
        self.controller.snapshot = snapshot
        if snapshot.config.node.rtpengine:
            if self.media is None:  # the first rtpengine: a client of its own
                self.media = media_client(snapshot, self.log)
                self._spawn(self.media.start())
            else:
                m = snapshot.config.node.media
                self.media.set_nodes(rtpengine_nodes(snapshot))
                self.media.timeout, self.media.retries = m.timeout, m.retries
                self.media.down_for = m.down_for
        self.log.info("config.reloaded", trunk_groups=len(snapshot.trunk_groups))
        now = self.now()
        self.controller.start(now)
        self._pump(now)
        return True


def media_client(snapshot: Snapshot, log: Any) -> NgClient:
    m = snapshot.config.node.media
    return NgClient(
        rtpengine_nodes(snapshot),
        timeout=m.timeout,
        retries=m.retries,
        down_for=m.down_for,
        ping_interval=m.ping_interval,
        log=log,
    )


def rtpengine_nodes(snapshot: Snapshot) -> list[tuple[str, int, int]]:
    out = []
    for n in snapshot.config.node.rtpengine:
        hp = host_port(n.address)
        assert hp is not None  # the loader checked it
        out.append((hp[0], hp[1], n.weight))
    return out


async def post_json(url: str, payload: dict[str, object], log: Any, timeout: float = 5.0) -> None:
    """POST a JSON body to an http:// webhook with a bounded wait; failures are logged, never
    raised (a trigger must not disturb calls)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        log.warning("trigger.webhook_failed", url=url, error="only http:// URLs are supported")
        return
    body = json.dumps(payload).encode()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
    except (OSError, TimeoutError, ValueError) as e:
        log.warning("trigger.webhook_failed", url=url, error=f"{type(e).__name__}: {e}")
        return
    if not 200 <= status < 300:
        log.warning("trigger.webhook_failed", url=url, error=f"HTTP {status}")


RECEIVE_BUFFER = 8 * 1024 * 1024


def _grow_receive_buffer(sock: socket.socket) -> None:
    """A burst of datagrams arriving while the loop is busy must wait in the kernel, not be
    dropped: ask for 8 MiB (SO_RCVBUFFORCE passes net.core.rmem_max when we may)."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


async def serve(config_dir: str | Path, log: Any, stop: asyncio.Event | None = None) -> int:
    runtime = Runtime(config_dir, log)
    await runtime.start()
    # Calls are short-lived object graphs freed mostly by reference counting; keep the
    # long-lived startup heap out of the cyclic collector and run it less often, so a full
    # collection does not stall the loop while datagrams queue up.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    await stop.wait()
    log.info("sbc.stopping", calls=len(runtime.controller.calls))
    await runtime.stop()
    return 0
