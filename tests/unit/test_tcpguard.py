"""node.tcp decisions (sbc.tcpguard), with fake time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sbc.config.node import TcpConfig
from sbc.registrar import Registrar
from sbc.sip.parser import StreamFramer
from sbc.sip.transaction import Target
from sbc.state import Binding
from sbc.state.memory import MemoryStore
from sbc.tcpguard import Cap, keepalive, quiet_enough, sweep_period, verdict
from sbc.transport import TcpConnection, TcpPool

CFG = TcpConfig(idle_timeout=120, header_timeout=10, max_connections=3)


def test_a_message_unfinished_after_header_timeout_closes_its_connection() -> None:
    # slowloris: bytes keep coming (last is recent) but the message began 10 s ago
    assert verdict(CFG, 9.9, last=9.8, pending_since=0.0, busy=False) is None
    assert verdict(CFG, 10.0, last=9.9, pending_since=0.0, busy=False) == "header_timeout"
    assert verdict(CFG, 10.0, last=9.9, pending_since=0.0, busy=True) == "header_timeout"


def test_an_idle_connection_closes_unless_its_host_has_calls() -> None:
    assert verdict(CFG, 119.0, last=0.0, pending_since=None, busy=False) is None
    assert verdict(CFG, 120.0, last=0.0, pending_since=None, busy=False) == "idle_timeout"
    assert verdict(CFG, 500.0, last=0.0, pending_since=None, busy=True) is None
    off = TcpConfig(idle_timeout=0, header_timeout=0)
    assert verdict(off, 1e9, last=0.0, pending_since=0.0, busy=False) is None


def test_the_cap_refuses_past_max_connections_and_logs_once_per_burst() -> None:
    cap = Cap()
    assert cap.admit(CFG, 2, 0.0) == (True, 0)
    assert cap.admit(CFG, 3, 0.0) == (False, 1)  # the first refusal: a line
    assert [cap.admit(CFG, 3, 0.1 * i) for i in range(1, 100)] == [(False, 0)] * 99
    assert cap.admit(CFG, 3, 61.0) == (False, 100)  # still full a minute on: 99 + this one
    assert cap.admit(CFG, 1, 62.0) == (True, 0)  # room again: the burst is over
    assert cap.admit(CFG, 3, 63.0) == (False, 1)  # a new burst: a new line
    assert cap.refused == 102
    assert cap.admit(TcpConfig(max_connections=0), 10**6, 64.0) == (True, 0)


def test_a_sweep_asks_about_bindings_only_for_connections_quiet_long_enough() -> None:
    assert quiet_enough(TcpConfig(keepalive_interval=30, idle_timeout=120)) == 30
    assert quiet_enough(TcpConfig(idle_timeout=120)) == 120
    assert quiet_enough(TcpConfig(idle_timeout=0)) == float("inf")


def test_sweep_period_follows_the_shorter_timeout() -> None:
    assert sweep_period(CFG) == 1.0
    assert sweep_period(TcpConfig(header_timeout=2)) == 0.2
    assert sweep_period(TcpConfig(header_timeout=0, idle_timeout=0)) == 1.0


def test_the_framer_says_when_part_of_a_message_waits() -> None:
    f = StreamFramer()
    assert f.feed(b"OPTIONS sip:x SIP/2.0\r\n") == [] and f.pending
    assert f.feed(b"Content-Length: 0\r\n\r\n") and not f.pending


def test_keepalive_pings_a_quiet_connection_and_gives_up_after_the_pong_timeout() -> None:
    """RFC 5626 §4.4.1: CRLF ping after keepalive_interval quiet seconds; 10 s for the pong."""
    cfg = TcpConfig(keepalive_interval=30)
    assert keepalive(cfg, now=129.9, last=100, ping_sent=None) is None
    assert keepalive(cfg, now=130, last=100, ping_sent=None) == "ping"
    assert keepalive(cfg, now=139.9, last=100, ping_sent=130) is None  # awaiting the pong
    assert keepalive(cfg, now=140, last=100, ping_sent=130) == "dead"
    assert keepalive(TcpConfig(), now=1e6, last=0, ping_sent=None) is None  # 0: no pings


def test_our_connection_pings_and_a_silent_peer_fails_it_on_loopback() -> None:
    """TcpPool toward a real TCP server on 127.0.0.1, its clock injected: the quiet
    connection gets b"\\r\\n\\r\\n"; the pong b"\\r\\n" answers it (no message reaches the
    sink); the next ping unanswered for 10 s closes it and reports a transport error."""

    class Sink:
        def __init__(self) -> None:
            self.messages: list[bytes] = []
            self.errors: list[str] = []

        def on_message(self, data: bytes, source: Target) -> None:
            self.messages.append(data)

        def on_transport_error(self, target: Target, detail: str) -> None:
            self.errors.append(detail)

    async def run() -> tuple[list[bytes], Sink, int]:
        got: list[bytes] = []
        writers: list[asyncio.StreamWriter] = []

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            while data := await reader.read(64):
                got.append(data)

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clock = [1000.0]
        sink = Sink()
        pool = TcpPool(sink, lambda: clock[0], lambda: TcpConfig(keepalive_interval=30))
        target = Target("tcp", "127.0.0.1", port)
        pool.send(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n", target)
        for _ in range(100):
            await asyncio.sleep(0.01)  # the loop's I/O: connect, write, read
            if got and target in pool.connections:
                break
        clock[0] += 30
        pool.sweep()  # quiet for 30 s: ping
        for _ in range(100):
            await asyncio.sleep(0.01)
            if b"".join(got).endswith(b"\r\n\r\n\r\n"):
                break
        writers[0].write(b"\r\n")  # the pong
        await writers[0].drain()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if pool.connections[target].ping_sent is None:
                break
        answered = pool.connections[target].ping_sent is None
        clock[0] += 30
        pool.sweep()  # ping again; this time the peer stays silent
        clock[0] += 10
        pool.sweep()
        await asyncio.sleep(0.05)
        server.close()
        return got, sink, int(answered)

    got, sink, answered = asyncio.run(run())
    assert b"".join(got).endswith(b"\r\n\r\n\r\n\r\n\r\n")  # the message, then two pings
    assert answered == 1 and sink.messages == []  # the pong is no message
    assert sink.errors == ["keep-alive: no pong in 10 s"]


def test_a_flow_a_pbx_registered_over_is_pinged_and_kept_past_idle_timeout() -> None:
    """Two peers connect to a TcpPool's listener on 127.0.0.1; a live registration binding
    names one (TcpPool.registered). Only that one is pinged, and idle_timeout spares it;
    the other closes idle. Then the registered peer stops answering: 10 s after the ping
    its connection is closed and counted (RFC 5626 §4.4.1)."""

    class Sink:
        def __init__(self) -> None:
            self.errors: list[tuple[Target, str]] = []

        def on_message(self, data: bytes, source: Target) -> None:
            raise AssertionError(data)  # pongs are no messages

        def on_transport_error(self, target: Target, detail: str) -> None:
            self.errors.append((target, detail))

    async def settle(until: Callable[[], bool]) -> None:
        for _ in range(200):
            await asyncio.sleep(0.005)  # the loop's I/O
            if until():
                return

    async def run() -> None:
        clock = [1000.0]
        sink = Sink()
        cfg = TcpConfig(keepalive_interval=30, idle_timeout=120)
        pool = TcpPool(sink, lambda: clock[0], lambda: cfg)
        server = await asyncio.get_running_loop().create_server(
            lambda: TcpConnection(pool), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        (pbx_r, pbx_w), (other_r, _) = [
            await asyncio.open_connection("127.0.0.1", port) for _ in range(2)
        ]
        pbx = Target("tcp", *pbx_w.get_extra_info("sockname")[:2])
        await settle(lambda: len(pool.connections) == 2)
        pool.registered = lambda peer: peer == pbx
        clock[0] += 30
        pool.sweep()  # quiet 30 s: the PBX's flow is pinged, the other is not
        ping = await asyncio.wait_for(pbx_r.readexactly(4), 1)
        pbx_w.write(b"\r\n")  # the pong
        await settle(lambda: pool.connections[pbx].ping_sent is None)
        clock[0] += 100  # 130 s since either peer sent a byte; the pong was 100 s ago
        pool.sweep()  # the other goes (idle), the PBX's is pinged again and kept
        other_gone = await asyncio.wait_for(other_r.read(), 1)
        second = await asyncio.wait_for(pbx_r.readexactly(4), 1)
        kept = pbx in pool.connections
        clock[0] += 10  # no pong this time
        pool.sweep()
        await settle(lambda: pbx not in pool.connections)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(pbx_r.read(), 1)
        server.close()
        assert (ping, second) == (b"\r\n\r\n", b"\r\n\r\n")
        assert other_gone == b"" and kept
        assert pool.closed == {"header_timeout": 0, "idle_timeout": 1, "keepalive": 1}
        assert sink.errors == [(pbx, "keep-alive: no pong in 10 s")]
        assert pool.connections == {}

    asyncio.run(run())


def test_the_registrar_holds_a_flow_while_its_binding_lives() -> None:
    """TcpPool.registered in a node: a live binding from exactly that transport, host and
    port (the connection's peer); an expired or removed one, or another port, is no flow."""
    registrar = Registrar(MemoryStore())
    flow = Target("tls", "192.0.2.7", 40123)
    registrar.store.apply(Binding("pbx", "pbx1", "tls", "192.0.2.7", 40123, "sip:p@x", 300.0))
    assert registrar.holds(flow, 299.0)
    assert not registrar.holds(flow, 300.0)  # expired
    assert not registrar.holds(Target("tls", "192.0.2.7", 40124), 0.0)
    assert not registrar.holds(Target("tcp", "192.0.2.7", 40123), 0.0)
    registrar.store.apply(Binding("pbx", "pbx1", "tls", "192.0.2.7", 40123, "sip:p@x", 0.0))
    assert not registrar.holds(flow, 0.0)  # removed
