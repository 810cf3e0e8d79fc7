"""The RFC 3261 §17 transaction layer, with RFC 6026's Accepted state, sans I/O.

Theory of operation. ``TransactionLayer`` is fed bytes with ``receive(data, source, now)``
and requests/responses from the transaction user (the B2BUA) with ``send_request`` and
``respond``. It never touches a socket or a clock: it queues datagrams (``datagrams_to_send``),
events (``events``) and keeps one heap of deadlines (``get_timer`` / ``handle_timer``).

The four state machines, with the RFC's names:

  INVITE client (§17.1.1, RFC 6026 §8.4)       non-INVITE client (§17.1.2)
    Calling    --1xx--> Proceeding                Trying     --1xx--> Proceeding
    Calling/Proceeding --2xx--> Accepted (M)      Trying/Proceeding --final--> Completed (K)
    Calling/Proceeding --300-699--> Completed     Trying/Proceeding --F--> Terminated
               (ACK sent, D)                      Completed --K--> Terminated
    Calling    --B--> Terminated (timeout)
    Accepted   --M--> Terminated ; Completed --D--> Terminated

  INVITE server (§17.2.1, RFC 6026 §8.5-8.7)   non-INVITE server (§17.2.2)
    Proceeding --2xx--> Accepted (L; the 2xx      Trying --1xx--> Proceeding
               is retransmitted until ACK, §13.3.1.4)
    Proceeding --300-699--> Completed (G, H)      Trying/Proceeding --final--> Completed (J)
    Completed  --ACK--> Confirmed (I)             Completed --J--> Terminated
    Completed  --H--> Terminated (no ACK)
    Accepted   --L--> Terminated

Retransmit timers (A, E, G and the 2xx timer) only run on unreliable transports; D, I, J, K
are zero on reliable ones (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).

A transaction drops what it can no longer resend (request bytes out of Calling/Trying, a
2xx once ACKed) and, with a final answer, cuts its request to its identity (``settled``):
a held call, which keeps referring to its transactions, does not keep its INVITE and 200.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sbc.sip.errors import SipError
from sbc.sip.ids import new_id
from sbc.sip.message import Request, Response, make_response
from sbc.sip.parser import KNOWN_METHODS, check_request, parse_message
from sbc.sip.stateless import make_ack, raw_headers, settled, stamped, stateless_error
from sbc.sip.timers import TimerConfig, TimerHeap

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message came from or goes to: transport and address."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)

    @property
    def uri_host(self) -> str:
        """The host as a SIP URI writes it: IPv6 in brackets (RFC 3261 §25.1 IPv6reference)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def uri_params(self) -> str:
        """URI parameters naming a transport other than the UDP default (§19.1.1)."""
        return "" if self.transport == "udp" else f"transport={self.transport}"

    def __str__(self) -> str:
        return f"{self.transport}:{self.uri_host}:{self.port}"  # logs, explain: IPv6 in []


class State(Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class ClientTransaction:
    """One request we sent and the responses to it."""

    __slots__ = (
        "ack", "ctx", "data", "interval", "invite", "key", "quiet", "request", "state", "target",
        "until",
    )  # fmt: skip

    def __init__(self, request: Request, target: Target, data: bytes, ctx: Any) -> None:
        self.request = request
        self.target = target
        self.data = data
        self.ctx = ctx  # owned by the transaction user
        self.invite = request.method == "INVITE"
        self.state = State.CALLING if self.invite else State.TRYING
        self.key = (request.branch, request.method)
        self.interval = 0.0  # current retransmit interval (Timers A and E)
        # The ACK resent to retransmitted finals while the transaction lasts: ours for a
        # non-2xx (§17.1.1.3), the TU's for a 2xx (§13.2.2.4, ``send_ack`` with ``tx``).
        self.ack: bytes | None = None
        self.quiet = False  # set by the TU to stop retransmitting while still matching responses
        self.until = 0.0  # Timer B's deadline, then (INVITE, Accepted) Timer M's


class ServerTransaction:
    """One request we received and the responses we send to it."""

    __slots__ = (
        "acked",
        "ctx",
        "dialog_key",
        "interval",
        "invite",
        "key",
        "last",
        "request",
        "response_target",
        "source",
        "state",
    )

    def __init__(self, request: Request, source: Target, key: tuple[Any, ...]) -> None:
        self.request = request
        self.source = source
        self.key = key
        self.invite = request.method == "INVITE"
        self.state = State.PROCEEDING if self.invite else State.TRYING
        self.last: bytes | None = None  # last response sent, for retransmissions
        self.response_target = response_target(request, source)
        self.interval = 0.0
        self.acked = False
        self.dialog_key: tuple[str, int, str | None] | None = None
        self.ctx: Any = None


# --- events (what the transaction user is told) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request, or an ACK for a 2xx (which has no transaction: ``transaction`` is None)."""

    request: Request
    source: Target
    transaction: ServerTransaction | None
    at: float


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response matched to one of our client transactions (2xx retransmissions included)."""

    response: Response
    transaction: ClientTransaction
    at: float


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B or F fired: no final response (§17.1.1.2, §17.1.2.2); treat as a 408."""

    transaction: ClientTransaction
    at: float


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport could not deliver the request (§8.1.3.1); treat as a 503."""

    transaction: ClientTransaction
    at: float


@dataclass(frozen=True, slots=True)
class AckNotReceived:
    """Timer L or H fired with no ACK for our final response (§13.3.1.4, §17.2.1)."""

    transaction: ServerTransaction
    at: float


@dataclass(frozen=True, slots=True)
class MessageRefused:
    """A message we refused (a request, answered with ``status``) or dropped (a response)."""

    status: int
    detail: str
    source: Target
    call_id: str | None
    is_response: bool
    at: float


Event = (
    RequestReceived
    | ResponseReceived
    | TransactionTimedOut
    | TransportFailed
    | AckNotReceived
    | MessageRefused
)


def response_target(req: Request, source: Target) -> Target:
    """Where responses to ``req`` go (§18.2.2 with RFC 3581): the source address over the
    same transport, to the source port when the top Via asks for rport or the transport is
    reliable, else to its sent-by port."""
    via = req.vias[0]
    if source.reliable or "rport" in via.params:
        return source
    return Target(source.transport, source.host, via.port or 5060)


def server_key(req: Request) -> tuple[Any, ...]:
    """§17.2.3: the branch when it carries the magic cookie, else the RFC 2543 fields."""
    via = req.vias[0]
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    return ("2543", req.call_id, req.from_.tag, req.cseq, method, via.host, via.port)


def _counted(method: str) -> str:
    """A method as the message counters key it: any extension method is "other", so a peer
    inventing methods cannot grow the counters (and the metrics) without bound."""
    return method if method in KNOWN_METHODS else "other"


class TransactionLayer:
    """All client and server transactions of one SBC node."""

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.timers = timers or TimerConfig()
        self.events: list[Event] = []
        self._out: list[tuple[bytes, Target]] = []
        self._timers = TimerHeap(self)
        self._client: dict[tuple[Any, ...], ClientTransaction] = {}
        self._server: dict[tuple[Any, ...], ServerTransaction] = {}
        # 2xx we retransmit until the ACK arrives, by (Call-ID, CSeq, From tag) (§13.3.1.4)
        self._accepted: dict[tuple[str, int, str | None], ServerTransaction] = {}
        # SIP messages by (method, status; 0 for a request), first transmissions only: metrics
        self.received: Counter[tuple[str, int]] = Counter()
        self.sent: Counter[tuple[str, int]] = Counter()
        # The transaction user's screen, asked before a message is parsed (sbc.edge):
        # False drops it without a word. None admits everything.
        self.accept: Callable[[bytes, Target, float], bool] | None = None
        self.strays = 0  # responses from an address other than the one we sent to, dropped
        self.server_header = ""  # node.server_header: User-Agent / Server we send; "" = none
        self._asked: Counter[str] = Counter()  # hosts our live client transactions went to

    # --- I/O-facing API -----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Target]]:
        out, self._out = self._out, []
        return out

    def pop_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    def get_timer(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        self._timers.fire(now)

    @property
    def timers_pending(self) -> int:
        return len(self._timers)

    def states(self) -> dict[str, int]:
        """Live transactions by "client|server method state": what /memory shows."""
        out: Counter[str] = Counter()
        for side, txs in (("client", self._client), ("server", self._server)):
            for tx in txs.values():
                out[f"{side} {tx.request.method} {tx.state.value}"] += 1
        return dict(sorted(out.items()))

    @property
    def counts(self) -> tuple[int, int]:
        """(client, server) transactions alive; for tests and metrics."""
        return len(self._client), len(self._server)

    def receive(self, data: bytes, source: Target, now: float) -> None:
        if self.accept is not None and not self.accept(data, source, now):
            return
        try:
            msg = parse_message(data)
        except SipError as e:
            self._refused(data, source, e, now)
            return
        if isinstance(msg, Response):
            self.received[(_counted(msg.cseq_method), msg.status)] += 1
            self._receive_response(msg, source, now)
        else:
            self.received[(_counted(msg.method), 0)] += 1
            self._receive_request(msg, source, now)

    def awaits(self, host: str) -> bool:
        """Is a request of ours to ``host`` still waiting for its answers?"""
        return host in self._asked

    def transport_failed(self, target: Target, now: float) -> None:
        """The runtime could not reach ``target`` (TCP connect refused, ...)."""
        for tx in list(self._client.values()):
            if tx.target == target and tx.state in (State.CALLING, State.TRYING):
                self._terminate_client(tx)
                self.events.append(TransportFailed(tx, now))

    # --- client side ----------------------------------------------------------------------------

    def send_request(
        self, request: Request, target: Target, now: float, ctx: Any = None
    ) -> ClientTransaction:
        request.add_missing("User-Agent", self.server_header)
        data = request.to_bytes()
        tx = ClientTransaction(request, target, data, ctx)
        self._client[tx.key] = tx
        self._asked[target.host] += 1
        self._out.append((data, target))
        self.sent[(request.method, 0)] += 1
        if not target.reliable:
            tx.interval = self.timers.t1
            self._arm(now + tx.interval, tx, "retransmit_request")
        tx.until = now + self.timers.timeout
        self._arm(tx.until, tx, "request_timeout")  # Timer B or F
        if request.method == "CANCEL":
            invite = self._client.get((request.branch, "INVITE"))
            if invite is not None:
                self._arm(now + self.timers.timeout, invite, "cancel_timeout")
        return tx

    def send_ack(
        self, ack: Request | bytes, target: Target, tx: ClientTransaction | None = None
    ) -> None:
        """An ACK for a 2xx: the TU's job, outside any transaction (§13.2.2.4). With ``tx``,
        the INVITE's transaction keeps its bytes while it is Accepted (``tx.ack``), for the
        TU to answer retransmissions of that 2xx with (it ends with Timer M)."""
        if not isinstance(ack, bytes):
            ack.add_missing("User-Agent", self.server_header)
        data = ack if isinstance(ack, bytes) else ack.to_bytes()
        if tx is not None and tx.state is State.ACCEPTED:
            tx.ack = data
        self._out.append((data, target))
        self.sent[("ACK", 0)] += 1

    def _receive_response(self, resp: Response, source: Target, now: float) -> None:
        tx = self._client.get((resp.vias[0].branch, resp.cseq_method))
        if tx is None:
            return  # stray response: a proxy would forward it, a UA drops it (§17.1.3)
        if source.host != tx.target.host or source.transport != tx.target.transport:
            # Only the host we asked may answer: a branch seen on the wire must not let a
            # third party answer (or fail) our INVITE. The port may differ (§18.2.2).
            self.strays += 1
            return
        status = resp.status
        st = tx.state
        if tx.invite:
            if status < 200:
                if st in (State.CALLING, State.PROCEEDING):
                    tx.state = State.PROCEEDING
                    tx.data = b""  # Timer A retransmits only in Calling
                    self.events.append(ResponseReceived(resp, tx, now))
            elif status < 300:
                if st in (State.CALLING, State.PROCEEDING):
                    tx.state = State.ACCEPTED
                    tx.data, tx.request = b"", settled(tx.request)
                    if now < tx.until:  # Timer B's entry, still armed, arms Timer M
                        tx.until = now + self.timers.timeout  # (one entry per call, not two)
                    else:
                        self._arm(now + self.timers.timeout, tx, "accepted_end")  # Timer M
                    self.events.append(ResponseReceived(resp, tx, now))
                elif st is State.ACCEPTED:  # 2xx retransmission or fork: the TU ACKs again
                    self.events.append(ResponseReceived(resp, tx, now))
            elif st in (State.CALLING, State.PROCEEDING):
                tx.state = State.COMPLETED
                tx.ack = make_ack(tx.request, resp).to_bytes()
                tx.data, tx.request = b"", settled(tx.request)
                self._out.append((tx.ack, tx.target))
                self.sent[("ACK", 0)] += 1
                wait = 0.0 if tx.target.reliable else self.timers.d  # Timer D
                self._arm(now + wait, tx, "completed_end")
                self.events.append(ResponseReceived(resp, tx, now))
            elif st is State.COMPLETED and tx.ack is not None:
                self._out.append((tx.ack, tx.target))
            return
        if st in (State.TRYING, State.PROCEEDING):
            if status < 200:
                tx.state = State.PROCEEDING
            else:
                tx.state = State.COMPLETED
                tx.data, tx.request = b"", settled(tx.request)
                wait = 0.0 if tx.target.reliable else self.timers.t4  # Timer K
                self._arm(now + wait, tx, "completed_end")
            self.events.append(ResponseReceived(resp, tx, now))

    def _timer_retransmit_request(self, tx: ClientTransaction, now: float) -> None:
        # Timer A (INVITE, Calling) doubles without cap; Timer E doubles up to T2, and is T2
        # in Proceeding (§17.1.2.2).
        if tx.quiet:
            return
        if tx.invite:
            if tx.state is not State.CALLING:
                return
            tx.interval *= 2
        else:
            if tx.state not in (State.TRYING, State.PROCEEDING):
                return
            tx.interval = (
                self.timers.t2
                if tx.state is State.PROCEEDING
                else min(tx.interval * 2, self.timers.t2)
            )
        self._out.append((tx.data, tx.target))
        self._arm(now + tx.interval, tx, "retransmit_request")

    def _timer_request_timeout(self, tx: ClientTransaction, now: float) -> None:
        if tx.state is State.ACCEPTED:  # answered before Timer B: now Timer M
            self._arm(tx.until, tx, "accepted_end")
        elif tx.state in (State.CALLING, State.TRYING, State.PROCEEDING) and not (
            tx.invite and tx.state is State.PROCEEDING  # Timer B only runs in Calling
        ):
            self._terminate_client(tx)
            self.events.append(TransactionTimedOut(tx, now))

    def _timer_cancel_timeout(self, tx: ClientTransaction, now: float) -> None:
        """§9.1: no final response 64*T1 after our CANCEL: the INVITE transaction ends as if
        it had timed out (Timer B does not run once a provisional came)."""
        if tx.state in (State.CALLING, State.PROCEEDING):
            self._terminate_client(tx)
            self.events.append(TransactionTimedOut(tx, now))

    def _timer_accepted_end(self, tx: ClientTransaction, now: float) -> None:
        if tx.state is State.ACCEPTED:
            self._terminate_client(tx)

    def _timer_completed_end(self, tx: ClientTransaction, now: float) -> None:
        if tx.state is State.COMPLETED:
            self._terminate_client(tx)

    def _terminate_client(self, tx: ClientTransaction) -> None:
        tx.state = State.TERMINATED
        tx.data, tx.ack = b"", None  # the TU may keep the object (an attempt's ``tx``)
        if self._client.get(tx.key) is tx:
            del self._client[tx.key]
            if not self._client:  # idle: give a peak's table back (dicts never shrink)
                self._client = {}
            host = tx.target.host
            self._asked[host] -= 1
            if not self._asked[host]:
                del self._asked[host]

    # --- server side ----------------------------------------------------------------------------

    def _refused(self, data: bytes, source: Target, e: SipError, now: float) -> None:
        is_response = data.lstrip(b"\r\n").startswith(b"SIP/")
        headers = raw_headers(data)
        call_id = next((v for n, v in headers if n == "Call-ID"), None)
        self.events.append(MessageRefused(e.status, e.detail, source, call_id, is_response, now))
        if is_response or data.lstrip(b"\r\n").startswith(b"ACK "):
            return  # responses and ACKs are never answered (§17.1.3, §17.2.1)
        addr = (source.host, source.port)
        if err := stateless_error(headers, e.status, addr, new_id(), self.server_header):
            self._out.append((err, source))

    def _receive_request(self, req: Request, source: Target, now: float) -> None:
        key = server_key(req)
        if req.method == "ACK":
            tx = self._server.get(key)
            if tx is not None and tx.state in (State.COMPLETED, State.CONFIRMED):
                if tx.state is State.COMPLETED:  # ACK for our non-2xx final: absorb it
                    tx.state = State.CONFIRMED
                    wait = 0.0 if source.reliable else self.timers.t4  # Timer I
                    self._arm(now + wait, tx, "server_end")
                return
            accepted = self._accepted.pop((req.call_id, req.cseq, req.from_.tag), None)
            if accepted is not None:
                # Confirmed: no more 2xx retransmissions; the transaction stays Accepted
                # only to absorb INVITE retransmissions until Timer L (RFC 6026 §8.7).
                accepted.acked, accepted.last = True, None
            self.events.append(RequestReceived(req, source, None, now))
            return
        tx = self._server.get(key)
        if tx is not None:  # a retransmission: resend our last response, if any
            if tx.last is not None and tx.state is not State.ACCEPTED:
                self._out.append((tx.last, tx.response_target))
            return
        if "rport" in (via := req.vias[0]).params or via.host != source.host:  # RFC 3581 §4
            req.vias[0] = stamped(via, source.host, source.port)
        tx = ServerTransaction(req, source, key)
        self._server[key] = tx
        try:
            check_request(req)
        except SipError as e:
            self.events.append(MessageRefused(e.status, e.detail, source, req.call_id, False, now))
            resp = make_response(req, e.status, to_tag=new_id(), headers=e.headers)
            self.respond(tx, resp, now)
            return
        self.events.append(RequestReceived(req, source, tx, now))

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2: same branch)."""
        key = server_key(cancel)
        if key[0] == "2543":
            return self._server.get((*key[:4], "INVITE", *key[5:]))
        return self._server.get((*key[:3], "INVITE"))

    def discard(self, tx: ServerTransaction) -> None:
        """Forget a request we chose not to answer (unknown source with ``drop``)."""
        self._terminate_server(tx)

    def respond(self, tx: ServerTransaction, resp: Response, now: float) -> None:
        status = resp.status
        if tx.state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED, State.ACCEPTED):
            return  # a final response was already sent (a race the TU may lose benignly)
        resp.add_missing("Server", self.server_header)
        data = resp.to_bytes()
        tx.last = data
        target = tx.response_target
        self._out.append((data, target))
        self.sent[(tx.request.method, status)] += 1
        reliable = target.reliable
        if status < 200:
            if not tx.invite:
                tx.state = State.PROCEEDING
            return
        req = tx.request = settled(tx.request)  # the TU has answered: nothing more to read
        if tx.invite:
            if status < 300:
                tx.state = State.ACCEPTED
                tx.dialog_key = (req.call_id, req.cseq, req.from_.tag)
                self._accepted[tx.dialog_key] = tx
                tx.interval = self.timers.t1
                self._arm(now + tx.interval, tx, "retransmit_2xx")
                self._arm(now + self.timers.timeout, tx, "accepted_server_end")  # Timer L
            else:
                tx.state = State.COMPLETED
                if not reliable:
                    tx.interval = self.timers.t1
                    self._arm(now + tx.interval, tx, "retransmit_final")  # Timer G
                self._arm(now + self.timers.timeout, tx, "ack_timeout")  # Timer H
            return
        tx.state = State.COMPLETED
        self._arm(now + (0.0 if reliable else self.timers.timeout), tx, "server_end")  # Timer J

    def _timer_retransmit_2xx(self, tx: ServerTransaction, now: float) -> None:
        if tx.state is State.ACCEPTED and not tx.acked and tx.last is not None:
            self._out.append((tx.last, tx.response_target))
            tx.interval = min(tx.interval * 2, self.timers.t2)
            self._arm(now + tx.interval, tx, "retransmit_2xx")

    def _timer_retransmit_final(self, tx: ServerTransaction, now: float) -> None:
        if tx.state is State.COMPLETED and tx.last is not None:
            self._out.append((tx.last, tx.response_target))
            tx.interval = min(tx.interval * 2, self.timers.t2)
            self._arm(now + tx.interval, tx, "retransmit_final")

    def _timer_accepted_server_end(self, tx: ServerTransaction, now: float) -> None:
        if tx.state is State.ACCEPTED:
            self._terminate_server(tx)
            if not tx.acked:
                self.events.append(AckNotReceived(tx, now))

    def _timer_ack_timeout(self, tx: ServerTransaction, now: float) -> None:
        if tx.state is State.COMPLETED:
            self._terminate_server(tx)
            self.events.append(AckNotReceived(tx, now))

    def _timer_server_end(self, tx: ServerTransaction, now: float) -> None:
        if tx.state in (State.COMPLETED, State.CONFIRMED):
            self._terminate_server(tx)

    def _terminate_server(self, tx: ServerTransaction) -> None:
        tx.state = State.TERMINATED
        tx.last = None  # the TU may keep the object (a call's ``a_tx``)
        if self._server.get(tx.key) is tx:
            del self._server[tx.key]
            if not self._server:  # idle: give a peak's table back (dicts never shrink)
                self._server = {}
        if tx.dialog_key is not None and self._accepted.get(tx.dialog_key) is tx:
            del self._accepted[tx.dialog_key]
        tx.dialog_key = None

    def _arm(self, when: float, obj: Any, kind: str) -> None:
        self._timers.arm(when, obj, kind)
