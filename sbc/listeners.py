"""The SIP sockets a node serves on (node.listen), IPv4 and IPv6, and which one a datagram
leaves from. I/O.

Dual stack is two listeners, one per family: an IPv6 socket is IPV6_V6ONLY, so ``::`` never
takes IPv4 peers as ``::ffff:a.b.c.d`` (an IPv4 trunk would then not be recognised) and can
share its port with an IPv4 socket on ``0.0.0.0``. A UDP datagram leaves from the first UDP
listener of its destination's family, so an IPv6 vendor gets our IPv6 socket and an IPv4
one our IPv4 socket (the address our Via and Contact name, sbc.call.headers.local). With
``node.workers`` > 1 each worker binds every socket with SO_REUSEPORT, both families alike;
the supervisor binds the UDP ones for it, in worker order (sbc.reuseport).

With ``node.worker_port`` set, a worker also binds a UDP socket of its own per family (the
first UDP listener's address, port worker_port + its index). A request whose Via names that
port (sbc.call.outbox: B-legs to IP vendors, OPTIONS pings) leaves from it, so the vendor's
answers come back to this worker (RFC 3261 §18.2.2, RFC 3581 rport) instead of to whichever
worker the kernel's hash picks; everything else leaves from the shared listener.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl

from sbc.config.families import family
from sbc.config.node import Listen
from sbc.sip.transaction import Target
from sbc.transport import Sink, TcpConnection, TcpPool, UdpEndpoint, grow_receive_buffer

# Our Via is the first header after the request line; a Request-URI is rarely longer.
_VIA_WITHIN = 1024


def udp_socket(address: str, port: int, shared: bool) -> socket.socket:
    """A bound, non-blocking UDP socket; IPv6 ones take IPv6 only (RFC 4038 §4.2)."""
    af = socket.AF_INET6 if family(address) == 6 else socket.AF_INET
    sock = socket.socket(af, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _same(ep: UdpEndpoint) -> UdpEndpoint:
    return ep


class Listeners:
    """The node's SIP sockets: UDP endpoints by (address, port), TCP/TLS servers."""

    def __init__(self) -> None:
        self.udp: dict[tuple[str, int], UdpEndpoint] = {}
        self.out: dict[int, UdpEndpoint] = {}  # family -> the UDP endpoint datagrams leave by
        self.servers: list[asyncio.AbstractServer] = []
        self.own: dict[int, UdpEndpoint] = {}  # family -> this worker's own socket
        self.own_ports: dict[int, int] = {}  # family -> its port (what our Via then names)
        self._marks: dict[int, bytes] = {}  # family -> b":PORT;branch=": our Via names it
        # (address, port) -> a shared UDP socket the supervisor bound for this worker, in
        # worker order, under the kernel's steering program (sbc.reuseport)
        self.given: dict[tuple[str, int], socket.socket] = {}

    async def open(
        self,
        listen: list[Listen],
        sink: Sink,
        tcp: TcpPool,
        tls: ssl.SSLContext | None,
        shared: bool,
        handshake_timeout: float = 10.0,
        own_port: int = 0,
    ) -> None:
        """Bind every socket of ``listen``; ``tls``: the server context (None: no TLS
        listener is opened), its handshakes closed after ``handshake_timeout`` seconds;
        ``shared``: workers share each address (SO_REUSEPORT); ``own_port``: this worker's
        own UDP port (0: none)."""
        loop = asyncio.get_running_loop()
        # UDP last: a socket the supervisor bound (sbc.reuseport) may hold requests already,
        # answered the moment it reads, so a peer that hears us up finds the rest open too
        # (a PBX's TCP connection, and the worker's own port).
        for x in listen:
            if x.transport == "udp":
                continue
            context = tls if x.transport == "tls" else None
            if x.transport == "tls" and context is None:
                continue
            transport = x.transport

            def factory(transport: str = transport) -> TcpConnection:
                return TcpConnection(tcp, transport=transport)

            # asyncio's create_server sets IPV6_V6ONLY on IPv6 sockets itself.
            server = await loop.create_server(
                factory,
                x.address,
                x.port,
                ssl=context,  # reloads load new certificates into this one
                ssl_handshake_timeout=handshake_timeout if context else None,
                reuse_address=True,
                reuse_port=shared or None,
            )
            self.servers.append(server)
        if own_port:
            await self._own(listen, sink, own_port)
        for x in listen:
            if x.transport != "udp":
                continue
            sock = self.given.pop((x.address, x.port), None) or udp_socket(
                x.address, x.port, shared
            )
            sock.setblocking(False)
            grow_receive_buffer(sock)
            # Known before it reads: the first datagram is read (and answered) before
            # create_datagram_endpoint returns.
            ep = self.udp[(x.address, x.port)] = UdpEndpoint(sink)
            self.out.setdefault(family(x.address), ep)
            await loop.create_datagram_endpoint(functools.partial(_same, ep), sock=sock)
        for sock in self.given.values():  # none is left unless listen changed meanwhile: a
            sock.close()  # socket of the group no one reads would take its share of peers
        self.given.clear()

    async def _own(self, listen: list[Listen], sink: Sink, port: int) -> None:
        loop = asyncio.get_running_loop()
        for x in listen:
            fam = family(x.address)
            if x.transport != "udp" or fam in self.own:
                continue
            sock = udp_socket(x.address, port, False)
            grow_receive_buffer(sock)
            _, proto = await loop.create_datagram_endpoint(lambda: UdpEndpoint(sink), sock=sock)
            self.own[fam], self.own_ports[fam] = proto, port
            self._marks[fam] = b":%d;branch=" % port

    def send(self, data: bytes, target: Target) -> bool:
        """A datagram to ``target`` from our socket of its family; False when we have none
        (the transaction's timers then fail the attempt). A request whose Via (our only
        one, the first header) names this worker's own port leaves from that socket."""
        fam = 6 if ":" in target.host else 4
        ep = self.out.get(fam)
        if ep is None:
            return False
        if self._marks and not data.startswith(b"SIP/2.0 "):  # a request
            mark = self._marks.get(fam)
            if mark is not None and data.find(mark, 0, _VIA_WITHIN) > 0:
                ep = self.own[fam]
        ep.send(data, target)
        return True

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for ep in (*self.udp.values(), *self.own.values()):
            if ep.transport is not None:
                ep.transport.close()
