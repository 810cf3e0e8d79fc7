"""The call path's data: a call, its attempts, and the context objects transactions carry.

No behaviour lives here beyond derived values (properties, ``ports_in_use``); the controller
and the
machines next to it (hunt, attempt, media) change these objects, sbc.cdr reads them. States
are closed sets (``Literal``), so a misspelt state is a type error, not a silent branch.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from media import ng
from media.ng import MediaStats, Side
from sbc.call.redirect import Redirect
from sbc.config.schema import Forwarding, TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.sip.dialog import Dialog
from sbc.sip.message import Request, Response
from sbc.sip.timers import TimerHandle
from sbc.sip.transaction import ClientTransaction, ServerTransaction, Target
from sbc.state import Denied, Scope

Headers = list[tuple[str, str]] | tuple[tuple[str, str], ...]  # (name, value), in order
Leg = Literal["a", "b"]  # the caller's leg, the vendor's (answered or current attempt's)
CallState = Literal["admitting", "routing", "answered", "ending", "ended"]
Hangup = Literal["", "caller", "callee", "sbc"]
# Why an attempt ended: answered, a final code, B-timer, Max PDD, Timer C, Timer B/F,
# the transport, the call was cancelled, rtpengine failed ("" while it is live).
Outcome = Literal[
    "", "answered", "code", "b_timer", "max_pdd", "timer_c", "timeout", "transport",
    "cancelled", "media", "redirected", "no_answer",
]  # fmt: skip


class Phase(Enum):
    """Where an attempt's INVITE stands (sbc.call.attempt draws the ladder)."""

    CALLING = "calling"  # sent; nothing back yet
    PROCEEDING = "proceeding"  # a provisional, not yet 180/183
    RINGING = "ringing"  # 180/183
    ANSWERED = "answered"
    FAILED = "failed"  # a final failure, or given up


class Cancel(Enum):
    NONE = "none"
    PENDING = "pending"  # wanted; sent at the first provisional (RFC 3261 §9.1)
    SENT = "sent"


# a tuple, not a frozenset: ``in`` compares members by identity in C, where a set would
# hash them with Enum.__hash__, a Python function (four calls per call, in cProfile)
LIVE = (Phase.CALLING, Phase.PROCEEDING, Phase.RINGING)

# What a call's rarely written maps start as (ack_wait, leases, egress, sessions): one shared
# empty dict, never written in place (a writer rebinds a copy, ``{**d, key: value}``; pop and
# clear on it are no-ops). Its queues are tuples for the same reason: a held call's ten fresh
# lists and dicts were about 600 B of it. tests/unit/conftest.py checks it stays empty.
SHARED_EMPTY: dict[Any, Any] = {}


def _shared_empty() -> dict[Any, Any]:
    return SHARED_EMPTY


def other(leg: Leg) -> Leg:
    return "b" if leg == "a" else "a"


@dataclass(slots=True, eq=False)
class Attempt:
    """One B-leg: one INVITE to one trunk."""

    call: Call
    n: int
    trunk_group: TrunkGroup
    trunk: int
    target: Target
    invite: Request  # cut to its identity (sbc.sip.transaction.settled) once it is answered
    started: float
    tx: ClientTransaction | None = None  # its INVITE's; while Accepted, its ``ack`` is ours
    dialog: Dialog | None = None
    phase: Phase = Phase.CALLING
    cancel: Cancel = Cancel.NONE
    status: int | None = None
    outcome: Outcome = ""
    challenged: bool = False  # we answered the trunk's 401/407 once; a second one is final
    b_side: Side = ng.UNMANAGED  # the vendor side's media profile (and NAT source)
    anchored: bool = False  # its media goes through rtpengine
    branch: str = ""  # its ng via-branch: a failed attempt deletes only its own media
    provisional_at: float | None = None  # its first 180/183
    ended_at: float | None = None  # when it failed (an answered attempt ends with the call)
    timer_c: TimerHandle | None = None  # RFC 3261 §16.6 item 11, armed by its first provisional
    timer_c_due: float = 0.0  # each provisional pushes it back
    redirected_by: int | None = None  # the attempt whose 3xx named this target
    stretched: bool = False  # we answered the trunk's 422 once (RFC 4028 §7.4)
    rseq: int | None = None  # the last reliable provisional we PRACKed (RFC 3262 §4)
    early: Dialog | None = None  # the early dialog of that provisional: our PRACKs use it
    # A reliable 18x with an offer (our INVITE had none): its RAck and early dialog, our
    # PRACK held for the caller's, which brings the answer (RFC 3262 §5, sbc.call.reliable)
    prack_held: tuple[str, Dialog] | None = None
    early_answered: bool = False  # that offer was answered: later SDP in it is no new offer
    early_sdp: bytes = b""  # our answer in that PRACK: a re-INVITE refresh sends it (RFC 4028)
    own: bool = False  # its requests leave from the worker's own port (sbc.call.blegs.own)

    @property
    def done(self) -> bool:
        """No longer live: answered, failed or given up."""
        return self.phase not in LIVE


@dataclass(slots=True, eq=False)
class Session:
    """One leg's session timer (RFC 4028; sbc.call.sessiontimer)."""

    leg: Leg
    interval: int  # seconds
    ours: bool  # we refresh it; else its peer must
    peer_supports: bool  # the peer named the extension: our answers Require it
    update: bool = False  # the peer allows UPDATE, the cheaper refresh
    sdp: bytes = b""  # what we last sent on the leg: a re-INVITE refresh sends it again
    handle: TimerHandle | None = None
    call: Call | None = None  # set while the call is up (the timer handlers need it)


@dataclass(slots=True, eq=False)
class ReliableLeg:
    """The caller's leg under RFC 3262 (sbc.call.reliable): what it accepts, our RSeq, and
    the provisional awaiting its PRACK."""

    supports: bool
    requires: bool
    rseq: int = field(default_factory=lambda: 1 + secrets.randbelow(2**31 - 1))  # §3
    pending: Response | None = None  # sent, not yet PRACKed
    interval: float = 0.0
    given_up: float = 0.0  # when retransmitting stops (64*T1 after the first send)
    handle: TimerHandle | None = None
    waiting: list[Callable[[float], None]] = field(default_factory=list)  # what waits for the PRACK
    call: Call | None = None


@dataclass(slots=True, eq=False)
class Relay:
    """An in-dialog request relayed from one leg to the other, awaiting its response."""

    call: Call
    server: ServerTransaction
    to_leg: Leg  # where we sent it
    media: bool = False  # its SDP offer went through rtpengine: the answer must too
    early: Attempt | None = None  # before the answer: the attempt whose early dialog it used


@dataclass(slots=True, eq=False)
class Bye:
    """Our BYE's transaction context: its answer (or timeout) counts down ``call.byes``."""

    call: Call


@dataclass(slots=True, eq=False)
class Call:
    """One call: the caller's leg (its INVITE transaction and UAS dialog) and its attempts.
    Its state moves admitting -> routing -> answered -> ending -> ended; a call refused or
    failed in setup goes from admitting or routing straight to ended."""

    id: str
    snap: Snapshot
    ingress: TrunkGroup
    source: Target
    a_tx: ServerTransaction  # the caller's INVITE; its ``request`` is ``a_invite``
    a_dialog: Dialog
    ani: str
    dnis: str
    started: float
    candidates: list[tuple[TrunkGroup, int, Redirect | None]]  # sbc.call.hunt.Candidates
    attempts: list[Attempt] = field(default_factory=list)
    current: Attempt | None = None
    answered: Attempt | None = None
    state: CallState = "admitting"
    cancelled: bool = False
    answered_at: float | None = None
    first_provisional_at: float | None = None
    ended_at: float | None = None
    final_status: int | None = None
    hangup: Hangup = ""
    byes: int = 0  # our BYEs still outstanding
    keys: list[tuple[str, str]] = field(default_factory=list)  # our entries in dialogs
    hosts: list[str] = field(default_factory=list)  # hosts that speak in its dialogs
    # ACKs we hold until the other side's ACK brings the answer (late offer), by leg
    ack_wait: dict[Leg, tuple[Dialog, int, Target]] = field(default_factory=_shared_empty)
    # port leases held in the state store, and per egress trunk group: granted or refused
    leases: dict[str, tuple[Scope, ...]] = field(default_factory=_shared_empty)
    egress: dict[str, Denied | None] = field(default_factory=_shared_empty)
    forward: Forwarding | None = None  # forwarding on failure, not yet used
    last_failure: tuple[int, Response | None, bool] | None = None  # status, response, advance
    # media: the caller's side, whether rtpengine knows the call (delete it at the end), ng
    # commands in flight (SIP from the legs waits behind them, in order), the final counters
    a_side: Side = ng.UNMANAGED
    a_tag: str = ""  # the caller's From tag: the A monologue's name at rtpengine
    media_used: bool = False
    unanchored: bool = False  # rtpengine failed and node.media.on_failure is unanchored
    media_busy: int = 0
    media_queue: tuple[Callable[[float], None], ...] = ()
    media_deleted: bool = False
    # failed attempts' via-branches, deleted once a later branch exists: rtpengine deletes the
    # whole call with its last branch, and would race a delete against the next offer
    stale_branches: tuple[str, ...] = ()
    media_stats: MediaStats | None = None
    # the leg whose 2xx carried an offer: its ACK's answer goes to rtpengine
    late_offer: Leg | None = None
    diversion: tuple[str, str] | None = (
        None  # our own forwarding: (number dialled, RFC 5806 reason)
    )
    refused: bool = False  # by admission (a limit): the CDR's disposition says so
    held: bool = False  # it holds credit of its relationship's balance (sbc.balance)
    b_dialog_kept: Dialog | None = None  # the answered attempt's dialog, once released
    reason: str = ""  # why sbc failed it: an admission label, no_route, media, shutdown
    received_ani: str = ""  # as the caller sent it: From's user, or its PAI's (ani_from_pai)
    max_duration: TimerHandle | None = None  # cancelled when the call ends
    sessions: dict[Leg, Session] = field(default_factory=_shared_empty)  # timers, by leg
    reliable: ReliableLeg | None = None  # the caller takes 100rel (RFC 3262)
    media_watch: TimerHandle | None = None  # its next rtpengine query (sbc.call.mediawatch)
    redirects: tuple[Redirect, ...] = ()  # 3xx Contacts still to try
    followed: int = 0  # redirected attempts so far (sbc.call.redirect.MAX_FOLLOWED)
    # RFC 3891: the vendor UA of the call this one replaces, and the Replaces it is sent
    replacing: tuple[Redirect, str] | None = None

    @property
    def a_invite(self) -> Request:
        """The caller's INVITE: whole until the caller has its final answer, then only its
        identity (From, To, Request-URI, Call-ID, CSeq), which is all the record needs."""
        return self.a_tx.request

    @property
    def b_dialog(self) -> Dialog | None:
        """The answered vendor's dialog (kept when the call is released: a late answer to a
        relayed re-INVITE still needs it)."""
        return self.answered.dialog if self.answered else self.b_dialog_kept

    @property
    def anchored(self) -> bool:
        """The answered attempt's media runs through rtpengine."""
        return self.answered is not None and self.answered.anchored and not self.unanchored

    def tag(self, leg: Leg) -> str:
        """A leg's monologue name at rtpengine."""
        if leg == "a":
            return self.a_tag
        dialog = self.b_dialog
        return (dialog.remote.tag or "") if dialog is not None else ""

    def side(self, leg: Leg) -> Side:
        if leg == "a":
            return self.a_side
        return self.answered.b_side if self.answered is not None else ng.UNMANAGED


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """An Acquire we sent and whose verdict we await."""

    call: Call
    trunk_group: TrunkGroup
    lease: str
    scopes: tuple[Scope, ...]


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth a log line (and later a metric or a CDR field)."""

    event: str
    call_id: str | None
    fields: dict[str, Any]


def ports_in_use(calls: Iterable[Call]) -> dict[tuple[str, str], int]:
    """Calls up right now by ("tg" | "cg", name): on their ingress trunk group, and on the
    egress trunk group of their answered (or pending) attempt; capacity groups sum them."""
    out: Counter[tuple[str, str]] = Counter()
    for call in calls:
        if call.state == "ended":
            continue
        tgs = [call.ingress]
        attempt = call.answered or call.current
        if attempt is not None and (attempt is call.answered or not attempt.done):
            tgs.append(attempt.trunk_group)
        for tg in tgs:
            out[("tg", tg.name)] += 1
            if tg.capacity_group:
                out[("cg", tg.capacity_group)] += 1
    return dict(out)
