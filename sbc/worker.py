"""One worker of a node with ``node.workers`` > 1: a whole call path (sbc.runtime) in its own
process, and what it shares with the supervisor (sbc.supervisor) over its link (sbc.ipc).

- **Steering.** Each worker binds the SIP port with SO_REUSEPORT. A message whose Call-ID
  another worker owns (sbc.sip.steer) is handed to that worker whole, over loopback UDP to
  the owner's steering socket (the supervisor tells every worker the others' ports); the
  owner takes it as if it had read it itself. UDP, not a Unix datagram socket: those queue
  only ``net.unix.max_dgram_qlen`` (10) datagrams, and a burst of calls is more. An INVITE
  with Replaces goes to the replaced call's worker, its Call-ID pinned there (``pins``).
- **TCP/TLS flows** stay with the worker that accepted or opened them; what they carry is
  steered like datagrams (a REGISTER stays, so its binding names the worker holding its
  flow). The owner learns that the flow lives on the reading worker (the preamble says so,
  as does a shared Binding's ``worker``) and hands what it sends there back to it
  (``out``), which writes it on its connection, or answers ``fail`` when it has none: the
  owner's transactions toward that peer then fail as on a transport error.
- **Limits.** Ports and CPS (memory backend) are decided by the supervisor's one store, so a
  limit holds across workers exactly; each worker mirrors its own grants. With the Redis
  backend every worker is a node of the fleet (``node_id-wN``).
- **Registrations** a worker's registrar takes are sent to the supervisor, which keeps them
  and passes them to the other workers; the REGISTER's 200 waits until every one of them
  holds the binding, since the PBX's next INVITE may be steered to any of them.
- **Trunk health and our registrations at vendors** are worker 0's (the leader): only it
  sends OPTIONS pings and REGISTERs; it shares its view (sbc.workview) every second and at
  once when a trunk changes state, and the others hunt with it. A follower's live-traffic
  failures (B-timer, Timer B) are sent to the leader, whose one state machine counts them.
- **Balances** (sbc.balance) are the supervisor's: its one book decides each new call's
  credit (``credit``, answered as a ``verdict``), hears when a call is answered
  (``answered``) and settles ended calls (``settle``: call id, relationship, revenue, and
  the vendor relationship and cost to offset), and it alone writes the ledger; with
  ``on_suspend: hangup`` it says ``suspend``: end that relationship's calls.
- **CDRs**: each worker appends its records to the node's one file itself (one write(2)
  per record, O_APPEND: lines never interleave). The supervisor asks each worker for its
  metrics, status and memory report when it serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
from typing import Any

from sbc import control, ipc, memory, workview
from sbc.balance import settlement
from sbc.call import suspend
from sbc.call.model import Notice
from sbc.config.schema import Config
from sbc.config.snapshot import Snapshot
from sbc.notify import Signals
from sbc.runtime import Runtime, _first
from sbc.sip import ids
from sbc.sip.steer import call_id, named_worker, owner, replaced_call_id
from sbc.sip.transaction import Target
from sbc.state import Acquire, Answered, Bind, Binding, Credit, Denied, Release, StateCommand
from sbc.transport import grow_receive_buffer

VIEW_PERIOD = 1.0  # seconds between the leader's views
MAX_PINS = 4096  # Call-IDs of INVITEs with Replaces steered to the replaced call's worker
MAX_FLOWS = 65536  # siblings' TCP/TLS flows this worker has heard of
# A hand-over is one loopback datagram: a bigger message read from TCP (up to 96 KiB,
# sbc.sip.parser) is processed by the worker that read it, as before steering
MAX_HANDED = 65507 - 64


def preamble(peer: Target, worker: int) -> bytes:
    """The line before a message handed to a sibling: ``"{host} {port}\n"`` for a datagram
    (the hot path: as short as it gets), ``"{tcp|tls} {host} {port} {worker}\n"`` for a
    message worker ``worker`` read from the connection ``peer`` opened to it (-1: one it
    opened to the peer, which the owner reaches on its own). Prefixed ``"out "``: write
    it to ``peer`` (``worker`` sent it); ``"fail "``: ``worker`` holds no such connection."""
    if peer.transport == "udp":
        return f"{peer.host} {peer.port}\n".encode()
    return f"{peer.transport} {peer.host} {peer.port} {worker}\n".encode()


def steering_key(data: bytes, source: Target) -> bytes | None:
    """What picks a message's worker (sbc.sip.steer.owner); None: the worker that read it.
    REGISTERs by source address, so one worker counts an address's failed attempts
    (sbc.lockout), or over TCP/TLS with the connection, so the binding names the worker
    holding its flow (RFC 5626 §4.4.1); everything else by Call-ID (None: it names none,
    and the reader answers 400)."""
    if not data.startswith(b"REGISTER "):
        return call_id(data)
    return source.host.encode() if source.transport == "udp" else None


def stamped(bindings: tuple[Binding, ...], worker: int) -> tuple[Binding, ...]:
    """Bindings to share, those over TCP/TLS naming ``worker``: the flow is ours."""
    return tuple(
        b if b.transport == "udp" else dataclasses.replace(b, worker=worker) for b in bindings
    )


def flows_named(
    bindings: tuple[Binding, ...] | list[Binding], me: int
) -> list[tuple[Target, int, bool]]:
    """The siblings' flows shared bindings name: (peer, its worker, live or removed)."""
    return [
        (Target(b.transport, b.host, b.port), b.worker, b.expires_at > 0)
        for b in bindings
        if b.worker >= 0 and b.worker != me and b.transport != "udp"
    ]


def unwrap(data: bytes) -> tuple[str, Target, int, bytes]:
    """A sibling's datagram: (``"in"``, ``"out"`` or ``"fail"``, the peer, the worker named,
    or -1 for a datagram's, the message)."""
    nl = data.find(b"\n")
    words = data[:nl].decode().split(" ")
    kind = "in"
    if words[0] == "out" or words[0] == "fail":
        kind = words.pop(0)
    if len(words) == 2:
        return kind, Target("udp", words[0], int(words[1])), -1, data[nl + 1 :]
    return kind, Target(words[0], words[1], int(words[2])), int(words[3]), data[nl + 1 :]


class Steer(asyncio.DatagramProtocol):
    """The UDP sink in front of the runtime: keep what this worker owns, hand on the rest."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.transport: asyncio.DatagramTransport | None = None  # the Unix datagram socket
        self.handed = 0  # datagrams handed to their owner
        self.lost = 0  # datagrams whose owner could not take them (restarting, or full)
        self.pins: dict[bytes, int] = {}  # replacing dialogs' Call-IDs -> their worker
        # trunk and PBX hosts whose TCP/TLS messages went to a sibling: their calls live
        # there, so our connections from them are kept however idle (node.tcp.idle_timeout)
        self.lent: set[str] = set()

    def on_message(self, data: bytes, source: Target) -> None:
        """A datagram from the network (sbc.transport.UdpEndpoint), or a message one of our
        TCP/TLS connections carried (sbc.transport.TcpConnection)."""
        w = self.worker
        # Flood bans first (sbc.flood), counted here where the kernel delivered it: one
        # socket's flood reaches one worker (SO_REUSEPORT hashes the 4-tuple; only ACKs and
        # BYEs to a worker's Contact go to that worker, sbc.reuseport), so the limit holds
        # per source socket much as in a lone process; the ban then holds on every worker.
        # A banned source costs a lookup, not a hand-over.
        rt = w.runtime
        if rt.controller.gate.flooded(data, source.host, rt.now()):
            if rt.controller.notices:  # a ban began: its notice (and timer) go out now
                rt.flush()
            return
        cid = steering_key(data, source)
        if cid is None or (k := self.owner_of(cid, data)) == w.index or len(data) > MAX_HANDED:
            w.runtime.on_message(data, source)
            return
        holder = w.index
        if source.transport != "udp":
            # A peer that connected to us is reached over that connection only; one we
            # connected to (a vendor's listener) the owner reaches over its own (-1).
            conn = rt.tcp.connections.get(source)
            if conn is None or not conn.inbound:
                holder = -1
            elif source.host not in self.lent and w.trusts(source.host):
                self.lent.add(source.host)
        try:
            w.sock.sendto(preamble(source, holder) + data, w.peers[k])
            self.handed += 1
        except (OSError, IndexError):  # the owner is restarting (its calls went with it)
            self.lost += 1

    def owner_of(self, cid: bytes, data: bytes) -> int:
        """The worker a datagram goes to: its Call-ID's owner, unless that Call-ID is pinned
        to the worker of the call its INVITE replaces, or it is a request to a worker's
        Contact (sbc.sip.steer)."""
        pinned = self.pins.get(cid)
        if pinned is not None:
            return pinned
        workers = self.worker.workers
        replaced = replaced_call_id(data)
        if replaced is None:
            # a request to a worker's Contact: its dialog's (not a REGISTER: by its source,
            # so one worker counts an address's failures, whatever URI it aims at)
            named = None if data.startswith(b"REGISTER ") else named_worker(data)
            return named if named is not None and named < workers else owner(cid, workers)
        k = self.pins[cid] = owner(replaced, workers)
        if len(self.pins) > MAX_PINS:  # the oldest replacing dialogs are long over
            del self.pins[next(iter(self.pins))]
        return k

    def on_transport_error(self, target: Target, detail: str) -> None:
        self.worker.runtime.on_transport_error(target, detail)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """What a sibling hands us (from no one else: a sibling's socket): a message it read
        for us, bytes to write on our connection, or word that it could not."""
        w = self.worker
        if tuple(addr[:2]) not in w.peers:
            return
        kind, peer, k, message = unwrap(data)
        rt = w.runtime
        if kind == "in":
            if k >= 0:  # read from worker k's connection: what we send the peer goes there
                self.learn(peer, k)
            rt.on_message(message, peer)
        elif kind == "out":
            if not rt.tcp.write(message, peer) and 0 <= k < len(w.peers):
                with contextlib.suppress(OSError):
                    w.sock.sendto(b"fail " + preamble(peer, w.index), w.peers[k])
        else:  # "fail": the sibling holds no connection to the peer any more
            if rt.tcp.flows.get(peer) == k:
                del rt.tcp.flows[peer]
            rt.on_transport_error(peer, f"no connection on worker {k}")

    def learn(self, peer: Target, k: int) -> None:
        """Worker ``k`` holds the flow to ``peer`` (sbc.transport.TcpPool.flows)."""
        flows = self.worker.runtime.tcp.flows
        flows[peer] = k
        if len(flows) > MAX_FLOWS:  # the oldest heard of
            del flows[next(iter(flows))]


class Worker:
    def __init__(self, index: int, workers: int, node: int, log: Any) -> None:
        self.index, self.workers, self.node = index, workers, node
        self.log = log
        self.leader = index == 0
        ids.configure(index, workers)
        self.runtime: Runtime  # set by serve, before it starts
        self.serving = False
        self._early: list[ipc.Message] = []  # what came before the runtime was up
        self.link: ipc.Link | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.peers: list[tuple[str, int]] = []  # every worker's steering socket, by index
        grow_receive_buffer(self.sock)
        self.steer = Steer(self)
        self.started = asyncio.Event()
        self.lost = asyncio.Event()  # the supervisor is gone: exit
        self._start: tuple[Any, ...] | None = None
        self._view_sent = 0  # transitions shared so far

    # --- the link -----------------------------------------------------------------------------

    async def connect(self, fd: int) -> tuple[Any, ...]:
        """Join the supervisor; return its start message: (config directory, snapshot,
        registrations, the leader's view or None)."""
        sock = socket.socket(fileno=fd)
        self.link = await ipc.connect(sock, self.on_message, self.lost.set)
        self.link.send("hello", self.sock.getsockname()[1])
        await _first(self.started.wait(), self.lost.wait())
        if self._start is None:
            raise SystemExit(0)  # the supervisor went away before it started us
        return self._start

    def on_message(self, msg: ipc.Message) -> None:
        kind = msg[0]
        if kind == "start":
            self._start = msg[2:]
            self.peers = msg[1]
            self.started.set()
        elif kind == "peers":  # a worker was started again, on a new steering port
            self.peers = msg[1]
        elif not self.serving:
            self._early.append(msg)
        else:
            self._carry_out(msg)

    def serve(self) -> None:
        """The runtime is up: take what the supervisor sent meanwhile."""
        self.serving = True
        for msg in self._early:
            self._carry_out(msg)
        self._early.clear()

    def _carry_out(self, msg: ipc.Message) -> None:
        kind = msg[0]
        if kind == "ask":
            self.answer(msg[1], msg[2])
        elif kind == "verdict":
            self.runtime.on_verdict(msg[1], msg[2])
        elif kind == "bind":  # a sibling's registration: say we hold it (Supervisor._bind)
            self.runtime.apply_bindings(msg[1])
            self.flows_of(msg[1])
            self.send("held", msg[2])
        elif kind == "bound":
            self.runtime.on_bound(msg[1])
        elif kind == "view":
            if not self.leader:
                workview.apply(self.runtime.controller, msg[1])
        elif kind == "block":
            now = self.runtime.now()
            self.runtime.controller.gate.lockout.block(msg[1], msg[2], now + msg[3])
        elif kind == "ban":
            rt = self.runtime
            rt.controller.gate.share_ban(msg[1], msg[2], rt.now())
        elif kind == "snapshot":
            self.runtime.swap(rebuild(msg[1]))
        elif kind == "observed":  # a follower's live failure: one health machine per node
            self.runtime.observed(msg[1], msg[2], msg[3])
        elif kind == "suspend":  # its balance reached suspend_at (on_suspend: hangup)
            suspend.end_calls(self.runtime.controller, msg[1], self.runtime.now())
            self.runtime.pump_now()
        elif kind == "oos":  # `sbc ctl trunk disable`, for a worker started again
            self.runtime.controller.out_of_service = {(tg, t) for tg, t in msg[1]}

    def answer(self, request: int, what: str | tuple[Any, ...]) -> None:
        rt = self.runtime
        reply: Any
        if isinstance(what, tuple):  # the control socket's (sbc.control)
            reply = control.answer(rt, what)
        elif what == "metrics":
            reply = rt.metrics.render()
        elif what == "status":
            reply = rt.status()
        else:
            reply = rt.memory_report()
        assert self.link is not None
        self.link.send("answer", request, reply)

    @property
    def sink(self) -> Steer:
        return self.steer

    @property
    def steered(self) -> tuple[int, int]:
        return self.steer.handed, self.steer.lost

    def send(self, *msg: Any) -> None:
        if self.link is not None:
            self.link.send(*msg)

    def flows_of(self, bindings: tuple[Binding, ...] | list[Binding]) -> None:
        """Bindings a sibling took over a TCP/TLS flow it holds: our sends go through it."""
        flows = self.runtime.tcp.flows
        for peer, k, live in flows_named(bindings, self.index):
            if live:
                self.steer.learn(peer, k)
            elif flows.get(peer) == k:
                del flows[peer]

    def trusts(self, host: str) -> bool:
        """A trunk's host, or a live registration's (sbc.call.gate)."""
        return self.runtime.controller.gate.trusted(host, self.runtime.now())

    def busy(self, host: str) -> bool:
        """Keep our connections from ``host`` however idle (sbc.transport.TcpPool.busy)?"""
        return host in self.runtime.controller.dialog_hosts or host in self.steer.lent

    def hand_out(self, data: bytes, target: Target, k: int) -> None:
        """Bytes for a peer whose connection worker ``k`` holds (sbc.transport.TcpPool.send):
        it writes them, or says ``fail``. A sibling that cannot take them fails our
        transactions toward the peer as a transport error would, once this pump is done."""
        try:
            self.sock.sendto(b"out " + preamble(target, self.index) + data, self.peers[k])
        except (OSError, IndexError) as e:
            self.steer.lost += 1
            detail = f"worker {k}: {e}"
            asyncio.get_running_loop().call_soon(self.runtime.on_transport_error, target, detail)

    # --- what the runtime hands over ----------------------------------------------------------

    def state(self, cmd: StateCommand, now: float) -> tuple[bool, Denied | None]:
        """The memory backend, shared: the supervisor decides; the verdict comes later."""
        if isinstance(cmd, Acquire):
            self.send("acquire", cmd)
            return False, None
        if isinstance(cmd, Credit):  # the node's book is the supervisor's (sbc.balance)
            self.send("credit", cmd)
            return False, None
        if isinstance(cmd, Answered):
            self.send("answered", cmd.lease)
        if isinstance(cmd, Release):  # the supervisor knows the lease's scopes
            self.send("release", cmd.lease)
        elif isinstance(cmd, Bind):  # our registrar already wrote our own store
            # over TCP/TLS: the siblings reach the PBX through us (Steer.datagram_received)
            self.send("bind", stamped(cmd.bindings, self.index), cmd.token)
            return False, None  # the REGISTER is answered once every sibling holds it
        return True, None

    def settle(self, records: list[dict[str, Any]]) -> None:
        """Ended calls, for the node's keeper of balances: their holds go, revenue is charged."""
        snap = self.runtime.controller.snapshot
        settled = settlement(records, snap.trunk_groups, snap.balances)
        if settled:
            self.send("settle", settled)

    def noticed(self, notices: list[Notice]) -> None:
        """A lockout this worker started holds on every worker (REGISTERs from one address
        all come here: sbc.sip.steer; its INVITEs may go anywhere)."""
        for n in notices:
            if n.event == "auth.blocked":
                f = n.fields
                key = str(f["ip"] if f["scope"] == "source" else f["username"])
                self.send("block", f["scope"], key, f["block_for"])
            elif n.event == "flood.banned":  # the supervisor logs it and tells the others
                self.send("ban", n.fields["ip"], n.fields["block_for"], n.fields)
            elif n.event == "trunk.observed":  # live traffic's outcome, for the leader's count
                self.send("observed", n.fields["key"], n.fields["ok"], n.fields["error"])

    def changed(self, now: float) -> None:
        """After each pump: the leader shares its view when a trunk or registration changed."""
        if self.leader and self.runtime.controller.monitor.transitions.total() != self._view_sent:
            self.share_view()

    def share_view(self) -> None:
        ctrl = self.runtime.controller
        self._view_sent = ctrl.monitor.transitions.total()
        self.send("view", workview.take(ctrl))

    async def keep_sharing(self) -> None:
        while self.leader:
            await asyncio.sleep(VIEW_PERIOD)
            self.share_view()


def rebuild(snap: tuple[Config, float]) -> Snapshot:
    """The supervisor's snapshot: its config, indexed here (the index is not sent: compiled
    by mypyc, it does not pickle), with the supervisor's load time."""
    config, loaded_at = snap
    return dataclasses.replace(Snapshot.build(config), loaded_at=loaded_at)


async def serve(fd: int, index: int, workers: int, node: int, log: Any, udp: str = "[]") -> int:
    """A worker's life: join, serve, drain on SIGTERM, exit when the supervisor is gone.
    ``udp``: the shared UDP sockets the supervisor bound for us, JSON [[address, port, fd]]."""
    log = log.bind(worker=index)
    worker = Worker(index, workers, node, log)
    config_dir, snap, bindings, view = await worker.connect(fd)
    runtime = Runtime(config_dir, log, snapshot=rebuild(snap), worker=worker)
    worker.runtime = runtime
    for address, port, sock_fd in json.loads(udp):
        os.set_inheritable(sock_fd, False)  # ours alone: it must close with this process
        runtime.sockets.given[(address, port)] = socket.socket(fileno=sock_fd)
    for b in bindings:
        runtime.memory.bind(b)
    worker.flows_of(bindings)
    runtime.tcp.hand, runtime.tcp.busy = worker.hand_out, worker.busy
    drain = asyncio.Event()

    def terminate() -> None:
        if drain.is_set():
            worker.lost.set()
        drain.set()

    # Reloads come from the supervisor; a stray SIGHUP must not kill a worker.
    signals = Signals(terminate, lambda: None)
    loop = asyncio.get_running_loop()
    await runtime.start()
    await loop.create_datagram_endpoint(lambda: worker.steer, sock=worker.sock)
    if view is not None and not worker.leader:
        workview.apply(runtime.controller, view)
    runtime.controller.gate.flood_checked = True  # Steer checks every message first
    worker.serve()
    task = loop.create_task(worker.keep_sharing())
    worker.send("ready", os.getpid())
    memory.tune_gc()
    signals.started()
    await _first(drain.wait(), worker.lost.wait())
    if not worker.lost.is_set():
        timeout = runtime.controller.snapshot.config.node.drain_timeout
        await _first(runtime.drain(timeout), worker.lost.wait())
        # Drained, but still the node's: serve (and steer) until the supervisor's second
        # SIGTERM says every worker has drained, or the supervisor is gone.
        await worker.lost.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await runtime.stop()
    return 0
