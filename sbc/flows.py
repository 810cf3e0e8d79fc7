"""A PBX's TCP/TLS flow shared by the workers (``node.workers`` > 1). I/O.

A PBX registered over TCP or TLS is reachable only over the connection it opened (NAT lets
nothing else in; RFC 5626 §3 reasons so), and the kernel gave that connection to one worker
(SO_REUSEPORT), while the calls to and from the PBX are owned by any worker (sbc.sip.steer:
by Call-ID). So, for the connections a live binding names (and only those: other TCP stays
with the worker that has it, as before):

- the holder steers what arrives over such a flow, except REGISTERs, to the Call-ID's owner
  as sbc.worker.Steer does a datagram, naming the transport and itself;
- a worker sending to a flow it does not hold hands the bytes to its holder: the worker
  that steered the flow's messages to it, else (a first INVITE to the PBX) every sibling,
  of which only the holder writes them.

    carrier          worker 1 (owns the call)      worker 0 (holds pbx1's TCP)       pbx1
      |--INVITE (udp)-->|                               |                            |
      |                 |--relay: INVITE for tcp:pbx1-->|--INVITE over the flow----->|
      |                 |<--steer: 486 (tcp, from 0)----|<--486----------------------|
      |<--486-----------|--relay: ACK------------------>|--ACK---------------------->|

The hand-overs are datagrams to the siblings' steering sockets, as Steer's are: a message
above 64 KB cannot be handed (counted lost, like Steer's). A relay to a flow that is gone
is dropped by every sibling, and the transaction's timers end the attempt.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from sbc.sip.steer import call_id
from sbc.sip.transaction import Target

if TYPE_CHECKING:
    from sbc.runtime import Runtime


class Steering(Protocol):
    """What of sbc.worker.Steer the flows use: its owner rule and its counters."""

    handed: int
    lost: int

    def owner_of(self, cid: bytes, data: bytes) -> int: ...


class Worker(Protocol):
    """What of sbc.worker.Worker the flows use (a Protocol: no import circle)."""

    index: int
    sock: socket.socket  # the steering socket
    peers: list[tuple[str, int]]  # every worker's steering address, by index
    runtime: Runtime

    @property
    def steer(self) -> Steering: ...


RELAY = b"!"  # a relay datagram's first byte (a steered one starts with an IP address)
MAX_HOLDERS = 4096  # flows remembered with their holder; the oldest are forgotten first


class Flows:
    """The worker's TcpPool sink, and its relay toward flows its siblings hold."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.holders: dict[Target, int] = {}  # flows siblings steered to us -> the holder

    def _registered(self, target: Target) -> bool:
        rt = self.worker.runtime
        return rt.controller.registrar.holds(target, rt.now() + rt.controller.wall_offset)

    # --- the TcpPool's sink -------------------------------------------------------------------

    def on_message(self, data: bytes, source: Target) -> None:
        w = self.worker
        if data.startswith(b"REGISTER ") or not self._registered(source):
            w.runtime.on_message(data, source)
            return
        cid = call_id(data)
        if cid is None or (k := w.steer.owner_of(cid, data)) == w.index:
            w.runtime.on_message(data, source)
            return
        head = f"{source.host} {source.port} {source.transport} {w.index}\n".encode()
        try:
            w.sock.sendto(head + data, w.peers[k])
            w.steer.handed += 1
        except (OSError, IndexError):
            w.steer.lost += 1

    def on_transport_error(self, target: Target, detail: str) -> None:
        self.worker.runtime.on_transport_error(target, detail)

    # --- toward a sibling's flow --------------------------------------------------------------

    def learned(self, source: Target, holder: int) -> None:
        """A sibling steered us a message that came over ``source``, a flow it holds."""
        self.holders.pop(source, None)
        self.holders[source] = holder
        if len(self.holders) > MAX_HOLDERS:
            del self.holders[next(iter(self.holders))]

    def relay(self, data: bytes, target: Target) -> bool:
        """TcpPool.send found no connection to ``target``: hand ``data`` to the sibling
        holding it and say True, or False (not a PBX's flow: connect as ever)."""
        w = self.worker
        k = self.holders.get(target)
        if k is not None:
            siblings = [k]
        elif self._registered(target):
            siblings = [i for i in range(len(w.peers)) if i != w.index]
        else:
            return False
        head = RELAY + f"{target.transport} {target.host} {target.port}\n".encode()
        for i in siblings:
            try:
                w.sock.sendto(head + data, w.peers[i])
                w.steer.handed += 1
            except (OSError, IndexError):
                w.steer.lost += 1
        return True

    def write(self, datagram: bytes) -> None:
        """A sibling's relay: write it over the flow if this worker holds it."""
        nl = datagram.find(b"\n")
        transport, host, port = datagram[1:nl].decode().split(" ")
        target = Target(transport, host, int(port))
        pool = self.worker.runtime.tcp
        conn = pool.connections.get(target)
        if conn is not None and conn.inbound:
            pool.send(datagram[nl + 1 :], target)
