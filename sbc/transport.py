"""asyncio adapters for SIP over UDP and TCP: bytes in, bytes out, nothing else.

Each received datagram, or each message the stream framer cuts from a TCP connection, goes to
``Sink.on_message``. Outgoing TCP reuses the connection a peer opened to us (so responses
and in-dialog requests flow back over it, RFC 3261 §18.2.2), else hands the bytes to the
sibling worker holding the peer's connection (``flows``, sbc.worker), else opens one.
``node.tcp`` (sbc.tcpguard decides) closes slowloris and idle connections and caps inbound
ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol, cast

from sbc import tcpguard
from sbc.config.node import TcpConfig
from sbc.sip.errors import SipError
from sbc.sip.parser import StreamFramer
from sbc.sip.transaction import Target


class Sink(Protocol):
    def on_message(self, data: bytes, source: Target) -> None: ...

    def on_transport_error(self, target: Target, detail: str) -> None: ...


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.sink.on_message(data, Target("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors on an unconnected socket name no peer; transaction timers cover it

    def send(self, data: bytes, target: Target) -> None:
        if self.transport is not None:
            self.transport.sendto(data, (target.host, target.port))


class TcpConnection(asyncio.Protocol):
    def __init__(self, pool: TcpPool, inbound: bool = True, transport: str = "tcp") -> None:
        self.pool = pool
        self.transport_name = transport  # "tcp", or "tls" on a TLS listener or trunk
        self.inbound = inbound  # a peer connected to us (counted against max_connections)
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Target | None = None
        self.last = 0.0  # the last byte either way (loop time)
        self.pending_since: float | None = None  # first byte of the unfinished message
        self.ping_sent: float | None = None  # our CRLF keep-alive awaiting its pong

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Target(self.transport_name, host, port)
        pool = self.pool
        self.last = now = pool.now()
        if self.inbound:
            keep, n = pool.cap.admit(pool.config(), pool.inbound, now)
            if not keep:
                if n:
                    pool.event("tcp.full", max_connections=pool.inbound, refused=n,
                               source=str(self.peer))  # fmt: skip
                self.transport.abort()
                self.peer = None
                return
            pool.inbound += 1
        pool.connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.peer is None:
            return  # refused at the cap
        self.last = now = self.pool.now()
        if self.ping_sent is not None:  # any byte answers our keep-alive
            self.ping_sent = None
            if data == b"\r\n" and not self.framer.pending:
                return  # the pong (RFC 5626 §4.4.1), no message
        try:
            frames = self.framer.feed(data)
        except SipError as e:
            # A framing error on a stream cannot be recovered from (RFC 3261 §18.3).
            self.pool.sink.on_transport_error(self.peer, f"framing: {e}")
            self.transport.close()
            return
        if not self.framer.pending:
            self.pending_since = None
        elif self.pending_since is None or frames:
            self.pending_since = now  # a new message began in this read
        for frame in frames:
            if frame == b"\r\n\r\n":
                self.transport.write(b"\r\n")  # RFC 5626 §4.4.1 keep-alive pong
            else:
                self.pool.sink.on_message(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.pool.connections.get(self.peer) is self:
            del self.pool.connections[self.peer]
        if self.inbound and self.peer is not None:
            self.pool.inbound -= 1
            self.peer = None


class TcpPool:
    """Open TCP connections by peer address, and connecting on demand."""

    def __init__(
        self,
        sink: Sink,
        now: Callable[[], float] = time.monotonic,
        config: Callable[[], TcpConfig] = TcpConfig,
        busy: Callable[[str], bool] = lambda host: False,
        event: Callable[..., None] = lambda name, **fields: None,
        tls: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.sink = sink
        self.now = now  # the loop's clock
        self.config = config  # the current snapshot's node.tcp
        self.busy = busy  # does this host have live calls (kept however idle)?
        # does this inbound connection carry a live registration binding (sbc.registrar)?
        # Its PBX is reached over it later: kept however idle, and pinged (RFC 5626 §4.4.1)
        self.registered: Callable[[Target], bool] = lambda peer: False
        self.event = event  # a log line: (event, **fields)
        self.tls = tls  # the client context toward TLS trunks (sbc.tlsctx), at each connect
        # the name a TLS peer's certificate must carry, when not its IP: a host trunk's domain
        self.names: Callable[[Target], str | None] = lambda target: None
        self.cap = tcpguard.Cap()
        self.inbound = 0  # inbound connections held
        self.closed: dict[str, int] = {"header_timeout": 0, "idle_timeout": 0, "keepalive": 0}
        self.connections: dict[Target, TcpConnection] = {}
        # With node.workers > 1 (sbc.worker): flows another worker holds, by peer -> its
        # index, and how to hand it bytes to write there. Empty in a lone process.
        self.flows: dict[Target, int] = {}
        self.hand: Callable[[bytes, Target, int], None] | None = None
        self._pending: dict[Target, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, data: bytes, target: Target) -> None:
        conn = self.connections.get(target)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(data)
            conn.last = self.now()
            return
        if self.flows and self.hand is not None:  # a flow a sibling worker holds
            k = self.flows.get(target)
            if k is not None:
                self.hand(data, target, k)
                return
        queue = self._pending.get(target)
        if queue is not None:
            queue.append(data)
            return
        self._pending[target] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def write(self, data: bytes, target: Target) -> bool:
        """Write on our open connection to ``target`` only (a sibling worker's ``out``,
        sbc.worker); False: we hold none."""
        conn = self.connections.get(target)
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        conn.transport.write(data)
        conn.last = self.now()
        return True

    async def _connect(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        tls = target.transport == "tls"
        try:
            # TLS: the name the peer's certificate must carry is a host trunk's domain (RFC
            # 5922 §4.1), else its IP (§7.2: an IP SAN); a failed verification is an OSError
            # like a refused connect.
            ctx = (self.tls() if self.tls else ssl.create_default_context()) if tls else None
            name = (self.names(target) or target.host) if tls else None
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: TcpConnection(self, inbound=False, transport=target.transport),
                    target.host,
                    target.port,
                    ssl=ctx,
                    server_hostname=name,
                ),
                timeout=5.0,
            )
        except (OSError, TimeoutError) as e:
            self._pending.pop(target, None)
            self.sink.on_transport_error(target, f"connect: {e}")
            return
        self.connections[target] = conn
        for data in self._pending.pop(target, []):
            transport.write(data)

    def sweep(self) -> None:
        """Close the connections node.tcp says must go (sbc.tcpguard.verdict), and ping the
        quiet flows we need later (sbc.tcpguard.keepalive): those we opened, and inbound
        ones a PBX registered over. Once per sweep, never per message."""
        cfg, now = self.config(), self.now()
        quiet = tcpguard.quiet_enough(cfg)  # the registrar is asked about quiet flows only
        for peer, conn in list(self.connections.items()):
            if conn.transport is None:
                continue
            asked = conn.ping_sent is not None or now - conn.last >= quiet
            registered = conn.inbound and asked and self.registered(peer)
            if not conn.inbound or registered:
                alive = tcpguard.keepalive(cfg, now, conn.last, conn.ping_sent)
                if alive == "ping":
                    conn.transport.write(b"\r\n\r\n")
                    conn.ping_sent = now
                elif alive == "dead":
                    self.closed["keepalive"] += 1
                    conn.transport.abort()
                    self.sink.on_transport_error(peer, "keep-alive: no pong in 10 s")
                    continue
            busy = registered or self.busy(peer.host)
            why = tcpguard.verdict(cfg, now, conn.last, conn.pending_since, busy)
            if why is not None:
                self.closed[why] += 1
                conn.transport.abort()

    async def keep_sweeping(self) -> None:
        while True:
            await asyncio.sleep(tcpguard.sweep_period(self.config()))
            self.sweep()

    def gauges(self) -> list[tuple[str, str, float]]:
        """For /metrics (sbc.runtime.gauges)."""
        return [
            ("sbc_tcp_connections", "Inbound TCP connections held.", float(self.inbound)),
            (
                "sbc_tcp_refused_total",
                "Inbound TCP connections closed as they came: node.tcp.max_connections.",
                float(self.cap.refused),
            ),
            (
                "sbc_tcp_header_timeouts_total",
                "TCP connections closed: a message unfinished after node.tcp.header_timeout.",
                float(self.closed["header_timeout"]),
            ),
            (
                "sbc_tcp_idle_timeouts_total",
                "TCP connections closed: idle for node.tcp.idle_timeout.",
                float(self.closed["idle_timeout"]),
            ),
            (
                "sbc_tcp_keepalive_failures_total",
                "TCP/TLS connections closed: a CRLF keep-alive ping got no pong in 10 s.",
                float(self.closed["keepalive"]),
            ),
        ]

    def close(self) -> None:
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()


RECEIVE_BUFFER = 8 * 1024 * 1024


def grow_receive_buffer(sock: socket.socket) -> None:
    """A burst of datagrams arriving while the loop is busy must wait in the kernel, not be
    dropped: ask for 8 MiB (SO_RCVBUFFORCE passes net.core.rmem_max when we may)."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
