"""Shared call state: port leases, CPS windows, registration bindings, balances' credit.

One interface, two backends (shared/DESIGN.md, decision 6):

- ``memory`` (sbc.state.memory): one node, pure, decided synchronously with ``now`` passed in;
- ``redis`` (sbc.state.redis): a fleet of nodes sharing counters through Lua scripts, with the
  memory store as each node's local fallback while Redis is unreachable.

The call controller never talks to a backend: it emits the requests below and receives the
verdict later (``CallController.on_acquired``), so it stays pure and a Redis round trip never
blocks the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sbc.config.schema import Balance
    from sbc.hold import Hold


@dataclass(frozen=True, slots=True)
class Scope:
    """One set of limits a call counts against: a trunk group or a capacity group."""

    key: str  # "tg:NAME" or "cg:NAME": also the Redis key suffix
    ports: int  # concurrent calls; 0 = no limit
    cps: int  # new calls per second; 0 = no limit

    @property
    def kind(self) -> str:
        if self.key.startswith("rel:"):
            return "relationship"
        return "trunk_group" if self.key.startswith("tg:") else "capacity_group"

    @property
    def name(self) -> str:
        return self.key[3:]


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a lease was refused: which scope, and which limit (``ports`` or ``cps``)."""

    scope: Scope
    limit: str

    @property
    def label(self) -> str:
        if self.limit == "balance":
            return "balance_suspended"
        return f"{self.scope.kind}_{self.limit}"  # e.g. trunk_group_ports


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take one port in every scope and count one call toward their CPS, all or nothing."""

    token: int  # echoed in the verdict
    lease: str  # unique per call and trunk group
    scopes: tuple[Scope, ...]


@dataclass(frozen=True, slots=True)
class Credit:
    """May ``relationship`` start one more call, whose first increment costs ``hold.first``
    (None: unrated, nothing held)? Decided, and the hold reserved under ``lease`` (the call's
    id), by the one process that keeps the node's book (sbc.balance.Keeper: the lone
    runtime, or the supervisor of workers); the verdict comes as an Acquire's does."""

    token: int  # echoed in the verdict
    lease: str  # the call's id: its CDR's call_id settles the hold
    relationship: str
    policy: Balance
    hold: Hold | None


@dataclass(frozen=True, slots=True)
class Answered:
    """A call holding credit was answered at ``at`` (the sender's monotonic clock; a keeper
    in another process stamps its own): its hold grows from now on (sbc.balance)."""

    lease: str
    at: float


@dataclass(frozen=True, slots=True)
class Release:
    """Give back a lease's ports."""

    lease: str
    scopes: tuple[Scope, ...]


@dataclass(frozen=True, slots=True)
class Binding:
    """A registered contact (RFC 3261 §10): where a registration trunk's PBX is reachable."""

    trunk_group: str
    username: str
    transport: str
    host: str  # the address the REGISTER came from (what NAT leaves us)
    port: int
    contact: str  # the Contact URI the PBX registered; one account may hold several
    expires_at: float  # wall-clock seconds; 0: removed (when shared)
    q: float = 1.0  # the Contact's preference (RFC 3261 §10.2.1.2): calls try higher q first
    call_id: str = ""  # the REGISTER that made it: a reordered older one may not change it
    cseq: int = 0  # (RFC 3261 §10.3 step 7)
    # With node.workers > 1, the worker holding a TCP/TLS flow the PBX registered over (set
    # by sbc.worker as it shares the binding; -1: unknown, or UDP). Not kept in Redis: an
    # index means nothing to another node.
    worker: int = -1


@dataclass(frozen=True, slots=True)
class Bind:
    """A REGISTER changed bindings (registered, refreshed, or removed when expires_at is 0):
    share them. The REGISTER's answer waits for ``token`` to be bound
    (``CallController.on_bound``): a PBX's first INVITE may land on another worker, which
    must know the binding by then."""

    bindings: tuple[Binding, ...]
    token: int = 0


@dataclass(frozen=True, slots=True)
class Notify:
    """POST a trigger's notification to a webhook, in the background (never delays a call)."""

    url: str
    payload: dict[str, object]


StateCommand = Acquire | Release | Bind | Credit | Answered  # the state store (and balances)
Command = StateCommand | Notify
