"""The kernel's share of steering (sbc.reuseport), on the real kernel: SO_REUSEPORT groups
on a loopback port the kernel picks, the program attached as the supervisor attaches it.

    caller                       kernel (the group's program)          worker sockets
      | ACK sip:sbc01@127.0.0.1 --> the Contact user names worker 1 --> slot of worker 1
      | BYE sip:sbc02@127.0.0.1 --> worker 2                         --> slot of worker 2
      | INVITE sip:1555@...     --> no worker named: the 4-tuple hash --> any one socket
"""

from __future__ import annotations

import secrets
import select
import socket
from collections.abc import Iterator

import pytest

from sbc import reuseport
from sbc.listeners import udp_socket
from sbc.sip.steer import contact_user


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        yield s


# A loopback address of this run's own: a port the kernel picks for a SO_REUSEPORT socket
# may be one another run's group holds on the same address, and the groups would merge.
HOST = f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def group(slots: reuseport.Slots, workers: list[int], port: int = 0) -> dict[int, socket.socket]:
    """Each worker's socket, bound in this order, the program replaced at each bind (what
    the supervisor does as it starts them)."""
    socks: dict[int, socket.socket] = {}
    for w in workers:
        sock = udp_socket(HOST, port, True)
        port = sock.getsockname()[1]
        reuseport.attach(sock, slots.table(w))
        slots.bound(w)
        socks[w] = sock
    return socks


def reader(socks: dict[int, socket.socket], sender: socket.socket, data: bytes) -> int:
    """Which worker's socket the kernel gave ``data`` to."""
    port = next(iter(socks.values())).getsockname()[1]
    sender.sendto(data, (HOST, port))
    ready, _, _ = select.select(list(socks.values()), [], [], 2)
    assert len(ready) == 1, ready
    ready[0].recv(2048)
    return next(w for w, s in socks.items() if s is ready[0])


def in_dialog(method: str, worker: int, workers: int) -> bytes:
    user = contact_user(worker, workers)
    return f"{method} sip:{user}@127.0.0.1:5060 SIP/2.0\r\nCall-ID: x\r\n\r\n".encode()


def test_the_contact_user_names_the_worker_and_the_kernel_delivers_to_it(
    sender: socket.socket,
) -> None:
    socks = group(reuseport.Slots(), [0, 1, 2])
    try:
        for w in (0, 1, 2, 1, 0, 2):
            assert reader(socks, sender, in_dialog("ACK", w, 3)) == w
            assert reader(socks, sender, in_dialog("BYE", w, 3)) == w
        # anything else goes by the hash: one socket takes it, whichever
        reader(socks, sender, b"INVITE sip:15551230000@127.0.0.1 SIP/2.0\r\n\r\n")
        reader(socks, sender, b"ACK sip:sbc07@127.0.0.1 SIP/2.0\r\n\r\n")  # no such worker
        reader(socks, sender, b"ACK sip:sbcx1@127.0.0.1 SIP/2.0\r\n\r\n")
        reader(socks, sender, b"\r\n\r\n")
        # Cut short, or naming no worker: the hash, not slot 0 (a load past the end would
        # return 0): 16 source sockets spread over the 3 (all on one: p = 3 / 3**16).
        for data in (b"ACK sip:sb", b"ACK sip:sbc07@127.0.0.1 SIP/2.0\r\n\r\n"):
            spread = set()
            for _ in range(16):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one:
                    spread.add(reader(socks, one, data))
            assert len(spread) > 1, (data, spread)
    finally:
        for s in socks.values():
            s.close()


def test_a_restarted_worker_is_found_in_the_slot_the_kernel_gave_it(
    sender: socket.socket,
) -> None:
    """Worker 0 dies: its socket closes, the kernel moves the last one (worker 2's) into
    its slot, and worker 0's successor binds the next; the new program follows both."""
    slots = reuseport.Slots()
    socks = group(slots, [0, 1, 2])
    try:
        socks.pop(0).close()
        slots.died(0)
        port = socks[1].getsockname()[1]
        socks.update(group(slots, [0], port))
        assert slots.order == [2, 1, 0]
        for w in (0, 1, 2, 0):
            assert reader(socks, sender, in_dialog("BYE", w, 3)) == w
    finally:
        for s in socks.values():
            s.close()


def test_one_worker_keeps_the_plain_contact_user() -> None:
    assert contact_user(0, 1) == "sbc"
    assert (contact_user(0, 2), contact_user(7, 8), contact_user(99, 120)) == (
        "sbc00",
        "sbc07",
        "sbc99",
    )
    assert contact_user(100, 120) == "sbc"  # two digits name at most 100: the hash, and steering
