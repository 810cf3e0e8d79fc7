"""The kernel's share of steering (sbc.sip.steer): a classic BPF program on the workers'
SO_REUSEPORT group of each shared UDP address, so the caller's ACK and BYE reach the
worker that owns the call without one worker reading them and handing them on.

The kernel runs the program on each datagram's UDP payload and delivers it to the
group's socket of the index it returns (socket(7), SO_ATTACH_REUSEPORT_CBPF; the index is
the order the sockets were bound in, which is why the supervisor binds them, in worker
order, just before it starts each worker: ``Slots``). An index past the group falls back to
the kernel's 4-tuple hash: what every datagram got before.

    ACK sip:sbc07@...  or  BYE sip:sbc07@...  ->  7   (our Contact user, steer.contact_user)
    anything else (shorter than 13 bytes too) ->  the 4-tuple hash

The same rule as the workers' own (sbc.sip.steer.named_worker), for the two requests that
come on every call. Nothing here decides anything a worker relies on: a request the kernel
sends to the wrong worker is steered as before. Two workers dying at once may leave
``Slots`` in another order than the kernel's (it detaches their sockets in the order their
processes let go): their ACKs and BYEs are then handed over, as before this program, until
one of them restarts.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from sbc.config.node import Listen
from sbc.listeners import udp_socket
from sbc.sip.steer import CONTACT_USER, KERNEL_STEERED
from sbc.transport import grow_receive_buffer

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h; Python's socket module lacks it
FALLBACK = 0xFFFFFFFF  # an index past any group: the kernel's hash decides

# classic BPF opcodes (linux/filter.h)
_LD_W, _LD_H, _LD_B = 0x20, 0x28, 0x30  # BPF_LD | size | BPF_ABS
_LD_LEN = 0x80  # BPF_LD | BPF_W | BPF_LEN: A = the payload's length
_JEQ, _JGT, _JGE = 0x15, 0x25, 0x35  # BPF_JMP | op | BPF_K
_SUB, _MUL, _ADD_X = 0x14, 0x24, 0x0C  # BPF_ALU
_TAX = 0x07  # BPF_MISC | BPF_TAX: X = A
_RET_K = 0x06

_OUT = 0xFF  # a jump's placeholder target: the fall-back, the program's last instruction
_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


def _word(text: bytes) -> int:
    return int.from_bytes(text, "big")  # BPF_ABS loads are in network order


def program(slots: dict[int, int]) -> list[tuple[int, int, int, int]]:
    """The filter, instruction by instruction: the worker the Contact user names, then its
    socket's slot in the group (``slots``: worker -> slot). A jump's targets count the
    instructions it skips; ``_OUT`` (resolved below) is the last one, the fall-back."""
    user = CONTACT_USER.encode()
    assert len(user) == 3  # "sb" at offset 8, "c" at 10, the digits at 11 and 12
    insns = [
        (_LD_LEN, 0, 0, 0),  # a load past the end would return slot 0: none is tried
        (_JGE, 0, _OUT, 13),
        (_LD_W, 0, 0, 0),  # the method and its space
        (_JEQ, 1, 0, _word(b"ACK ")),
        (_JEQ, 0, _OUT, _word(b"BYE ")),
        (_LD_W, 0, 0, 4),
        (_JEQ, 0, _OUT, _word(b"sip:")),
        (_LD_H, 0, 0, 8),
        (_JEQ, 0, _OUT, _word(user[:2])),
        (_LD_B, 0, 0, 10),
        (_JEQ, 0, _OUT, user[2]),
        (_LD_B, 0, 0, 11),  # the tens digit
        (_SUB, 0, 0, ord("0")),
        (_JGT, _OUT, 0, 9),  # not a digit (one below "0" wraps around)
        (_MUL, 0, 0, 10),
        (_TAX, 0, 0, 0),
        (_LD_B, 0, 0, 12),  # the units digit
        (_SUB, 0, 0, ord("0")),
        (_JGT, _OUT, 0, 9),
        (_ADD_X, 0, 0, 0),  # the worker
    ]
    for worker, slot in sorted(slots.items()):
        if worker < KERNEL_STEERED:  # two digits name no more (and a jump spans <= 255)
            insns += [(_JEQ, 0, 1, worker), (_RET_K, 0, 0, slot)]
    insns.append((_RET_K, 0, 0, FALLBACK))
    last = len(insns) - 1
    return [
        (code, last - pc - 1 if jt == _OUT else jt, last - pc - 1 if jf == _OUT else jf, k)
        for pc, (code, jt, jf, k) in enumerate(insns)
    ]


def attach(sock: socket.socket, slots: dict[int, int]) -> None:
    """Give ``sock``'s SO_REUSEPORT group the program (one socket of it is enough)."""
    insns = program(slots)
    code = ctypes.create_string_buffer(b"".join(_INSN.pack(*i) for i in insns))
    fprog = struct.pack("HL", len(insns), ctypes.addressof(code))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def bind(
    listen: list[Listen], slots: dict[int, int]
) -> tuple[list[tuple[Listen, socket.socket]], str]:
    """A worker's socket of every UDP listener, bound (the group's next slot), with its
    listener, and the group's program replaced by one with ``slots``; the reason when the
    kernel took no program (the hash alone then, and every worker steers)."""
    bound: list[tuple[Listen, socket.socket]] = []
    why = ""
    try:
        for x in listen:
            if x.transport != "udp":
                continue
            sock = udp_socket(x.address, x.port, True)
            bound.append((x, sock))
            # The kernel hashes peers to it from now on, before the worker reads (about a
            # second, at a restart): room for what comes meanwhile.
            grow_receive_buffer(sock)
            try:
                attach(sock, slots)
            except OSError as e:
                why = str(e)
    except OSError:
        for _, sock in bound:
            sock.close()
        raise
    return bound, why


class Slots:
    """Which worker's socket holds which slot of every shared group (each worker binds one
    socket per UDP listener at once, so every group has the same order). The supervisor
    binds a worker's sockets just before starting it, hands them over and closes its own
    copies: a dead worker's sockets close with it, and the kernel moves the group's last
    socket into the freed slot (so survivors keep the traffic the hash sent it). The
    program on the group is replaced at each bind; until a dead worker's successor binds,
    the moved worker's ACKs and BYEs go by the hash (and are steered)."""

    def __init__(self) -> None:
        self.order: list[int] = []  # slot -> worker

    def table(self, worker: int) -> dict[int, int]:
        """The program's table once worker ``worker`` binds its sockets (the next slot)."""
        return {w: slot for slot, w in enumerate([*self.order, worker])}

    def bound(self, worker: int) -> None:
        self.order.append(worker)

    def died(self, worker: int) -> None:
        if worker in self.order:
            slot = self.order.index(worker)
            self.order[slot] = self.order[-1]
            self.order.pop()
