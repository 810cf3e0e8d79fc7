"""TCP/TLS flows across workers (sbc.worker, sbc.transport.TcpPool): the preamble a message
is handed over with, which worker a message goes to, and where a TCP send goes (our own
connection, the sibling holding the flow, or a new connection)."""

from __future__ import annotations

import asyncio

import pytest

from sbc.sip.steer import call_id
from sbc.sip.transaction import Target
from sbc.state import Binding
from sbc.transport import TcpPool
from sbc.worker import flows_named, preamble, stamped, steering_key, unwrap

PBX = Target("tcp", "10.0.0.5", 40123)
INVITE = b"INVITE sip:x@sbc SIP/2.0\r\nCall-ID: abc@pbx\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    "peer",
    [
        Target("udp", "10.0.0.1", 5060),
        Target("tcp", "10.0.0.5", 40123),
        Target("tls", "2001:db8::7", 5061),
    ],
)
def test_a_message_handed_over_comes_out_with_its_peer_and_the_reading_worker(
    peer: Target,
) -> None:
    def worker(k: int) -> int:
        return -1 if peer.transport == "udp" else k  # a datagram's reader is of no interest

    assert unwrap(preamble(peer, 3) + INVITE) == ("in", peer, worker(3), INVITE)
    assert unwrap(b"out " + preamble(peer, 1) + INVITE) == ("out", peer, worker(1), INVITE)
    assert unwrap(b"fail " + preamble(peer, 0)) == ("fail", peer, worker(0), b"")


def test_the_datagram_preamble_stays_as_short_as_before() -> None:
    assert preamble(Target("udp", "10.0.0.1", 5060), 1) == b"10.0.0.1 5060\n"
    assert preamble(PBX, 1) == b"tcp 10.0.0.5 40123 1\n"
    # read from a connection we opened (a vendor's listener): the owner uses its own
    assert unwrap(preamble(PBX, -1) + INVITE) == ("in", PBX, -1, INVITE)


def test_a_register_over_tcp_stays_with_its_connection_the_rest_goes_by_call_id() -> None:
    register = INVITE.replace(b"INVITE ", b"REGISTER ", 1)
    assert steering_key(register, PBX) is None  # the worker holding the connection
    assert steering_key(register, Target("udp", "10.0.0.5", 5060)) == b"10.0.0.5"
    assert steering_key(INVITE, PBX) == call_id(INVITE) == b"abc@pbx"
    assert steering_key(INVITE, Target("udp", "10.0.0.5", 5060)) == b"abc@pbx"


def binding(transport: str, expires_at: float = 2e9, worker: int = -1) -> Binding:
    return Binding("pbx", "pbx1", transport, "10.0.0.5", 40123, "sip:p@x", expires_at,
                   worker=worker)  # fmt: skip


def test_a_binding_over_tcp_names_the_worker_holding_its_flow_a_udp_one_none() -> None:
    tcp, udp = binding("tcp"), binding("udp")
    assert stamped((tcp, udp), 1) == (binding("tcp", worker=1), udp)
    named = stamped((binding("tls"), udp, binding("tcp", 0.0)), 1)
    # a sibling learns the live flow and forgets the removed one; UDP needs no flow
    assert flows_named(named, 0) == [
        (Target("tls", "10.0.0.5", 40123), 1, True),
        (PBX, 1, False),
    ]
    assert flows_named(named, 1) == []  # our own: we hold the connection
    assert flows_named([tcp], 0) == []  # a lone node's, or Redis's: no worker named


class Sink:
    def __init__(self) -> None:
        self.errors: list[tuple[Target, str]] = []

    def on_message(self, data: bytes, source: Target) -> None:
        pass

    def on_transport_error(self, target: Target, detail: str) -> None:
        self.errors.append((target, detail))


def test_a_tcp_send_takes_our_connection_else_the_siblings_flow_else_connects() -> None:
    """On loopback (ports 7790-7791): our connection to the server is used even when a
    sibling is also said to hold one; a peer only a sibling holds is handed to it; a peer
    nobody holds is connected to (nothing listens on :7791: a transport error)."""

    async def run() -> tuple[bytes, list[tuple[bytes, Target, int]], Sink, bool, bool]:
        got: list[bytes] = []

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(64):
                got.append(data)

        server = await asyncio.start_server(peer, "127.0.0.1", 7790)
        ours, nobody = Target("tcp", "127.0.0.1", 7790), Target("tcp", "127.0.0.1", 7791)
        sink = Sink()
        pool = TcpPool(sink)
        handed: list[tuple[bytes, Target, int]] = []
        pool.hand = lambda data, target, k: handed.append((data, target, k))
        pool.flows[PBX] = 1
        pool.send(b"A", ours)  # no connection, no flow: connect
        for _ in range(100):
            await asyncio.sleep(0.01)
            if got:
                break
        pool.flows[ours] = 1
        pool.send(b"B", ours)  # ours first
        pool.send(b"C", PBX)  # the sibling's
        wrote, unknown = pool.write(b"D", ours), pool.write(b"E", PBX)
        pool.send(b"F", nobody)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if b"".join(got) == b"ABD" and sink.errors:
                break
        pool.close()
        server.close()
        return b"".join(got), handed, sink, wrote, unknown

    got, handed, sink, wrote, unknown = asyncio.run(run())
    assert got == b"ABD" and handed == [(b"C", PBX, 1)]
    assert (wrote, unknown) == (True, False)  # write: our own connections only
    assert [t for t, _ in sink.errors] == [Target("tcp", "127.0.0.1", 7791)]
