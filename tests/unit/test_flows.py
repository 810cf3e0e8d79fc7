"""sbc.flows: which worker a PBX flow's messages go to, and where bytes for it go, with
fake workers (the wire is tests/e2e/test_keepalive.py's)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sbc.flows import RELAY, Flows
from sbc.sip.transaction import Target

PBX = Target("tcp", "192.0.2.5", 40000)
VENDOR = Target("tcp", "192.0.2.9", 5060)
INVITE = b"INVITE sip:x@y SIP/2.0\r\nCall-ID: abc\r\n\r\n"


class Sock:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def worker(index: int, owner: int, registered: set[Target]) -> Any:
    """Worker ``index`` of three; every Call-ID is ``owner``'s; ``registered``: the flows
    a live binding names."""
    got: list[tuple[bytes, Target]] = []
    written: list[tuple[bytes, Target]] = []
    pool = SimpleNamespace(connections={}, send=lambda d, t: written.append((d, t)))
    runtime = SimpleNamespace(
        now=lambda: 0.0,
        controller=SimpleNamespace(
            wall_offset=0.0,
            registrar=SimpleNamespace(holds=lambda t, wall: t in registered),
        ),
        on_message=lambda d, s: got.append((d, s)),
        tcp=pool,
    )
    steer = SimpleNamespace(handed=0, lost=0, owner_of=lambda cid, data: owner)
    peers = [("127.0.0.1", 9000 + i) for i in range(3)]
    w = SimpleNamespace(index=index, sock=Sock(), peers=peers, runtime=runtime, steer=steer)
    w.got, w.written = got, written
    return w


def test_a_registered_flows_messages_go_to_their_owner_but_registers_stay() -> None:
    w = worker(0, owner=2, registered={PBX})
    flows = Flows(w)
    flows.on_message(INVITE, PBX)
    ((data, addr),) = w.sock.sent
    assert addr == w.peers[2] and data == b"192.0.2.5 40000 tcp 0\n" + INVITE
    flows.on_message(b"REGISTER sip:y SIP/2.0\r\nCall-ID: abc\r\n\r\n", PBX)
    flows.on_message(INVITE, VENDOR)  # not a PBX's flow: not steered, as ever
    assert [s for _, s in w.got] == [PBX, VENDOR] and len(w.sock.sent) == 1


def test_bytes_for_a_flow_go_to_its_holder_once_known_else_to_every_sibling() -> None:
    w = worker(1, owner=1, registered={PBX})
    flows = Flows(w)
    assert not flows.relay(b"x", VENDOR)  # no binding: the pool connects as ever
    assert flows.relay(b"x", PBX)  # a binding, holder unknown: both siblings
    head = RELAY + b"tcp 192.0.2.5 40000\n"
    assert w.sock.sent == [(head + b"x", w.peers[0]), (head + b"x", w.peers[2])]
    flows.learned(PBX, 2)  # worker 2 steered us a message from the flow
    assert flows.relay(b"y", PBX)
    assert w.sock.sent[-1] == (head + b"y", w.peers[2]) and len(w.sock.sent) == 3


def test_a_relay_is_written_only_by_the_worker_holding_the_inbound_connection() -> None:
    w = worker(2, owner=1, registered={PBX})
    flows = Flows(w)
    datagram = RELAY + b"tcp 192.0.2.5 40000\nACK sip:x SIP/2.0\r\n\r\n"
    flows.write(datagram)  # not ours: dropped
    w.runtime.tcp.connections[PBX] = SimpleNamespace(inbound=True)
    flows.write(datagram)
    assert w.written == [(b"ACK sip:x SIP/2.0\r\n\r\n", PBX)]
