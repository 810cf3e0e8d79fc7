"""asyncio adapters for SIP over UDP and TCP: bytes in, bytes out, nothing else.

Each received datagram, or each message the stream framer cuts from a TCP connection, goes to
``Sink.on_message``. Outgoing TCP reuses the connection a peer opened to us (so responses
and in-dialog requests flow back over it, RFC 3261 §18.2.2) or opens one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol, cast

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
    def __init__(self, pool: TcpPool) -> None:
        self.pool = pool
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Target | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Target("tcp", host, port)
        self.pool.connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None and self.peer is not None
        try:
            frames = self.framer.feed(data)
        except SipError as e:
            # A framing error on a stream cannot be recovered from (RFC 3261 §18.3).
            self.pool.sink.on_transport_error(self.peer, f"framing: {e}")
            self.transport.close()
            return
        for frame in frames:
            if frame == b"\r\n\r\n":
                self.transport.write(b"\r\n")  # RFC 5626 §4.4.1 keep-alive pong
            else:
                self.pool.sink.on_message(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.pool.connections.get(self.peer) is self:
            del self.pool.connections[self.peer]


class TcpPool:
    """Open TCP connections by peer address, and connecting on demand."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.connections: dict[Target, TcpConnection] = {}
        self._pending: dict[Target, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, data: bytes, target: Target) -> None:
        conn = self.connections.get(target)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(data)
            return
        queue = self._pending.get(target)
        if queue is not None:
            queue.append(data)
            return
        self._pending[target] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(lambda: TcpConnection(self), target.host, target.port),
                timeout=5.0,
            )
        except (OSError, TimeoutError) as e:
            self._pending.pop(target, None)
            self.sink.on_transport_error(target, f"connect: {e}")
            return
        self.connections[target] = conn
        for data in self._pending.pop(target, []):
            transport.write(data)

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
