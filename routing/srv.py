"""Trunks named by host: RFC 3263 resolution, RFC 2782 ordering, and the TTL cache. Pure.

A termination IP trunk may name its vendor by ``host`` instead of ``ip``. Where the call
goes is decided in three steps, each a plain function or small machine here, so the I/O
adapter (sbc.resolver) only sends the queries ``Lookup`` asks for:

1. ``Lookup`` (RFC 3263 §4): with a port on the trunk, the A (and AAAA) records of the host
   at that port (§4.2). Without one: the host's NAPTR records (§4.1) whose service is the
   trunk's transport (SIP+D2U, SIP+D2T, SIPS+D2T; the trunk's ``protocol`` is fixed, so
   NAPTR only says which SRV name to ask), else ``_sip._udp``/``_sip._tcp``/``_sips._tcp``;
   the SRV records of the first of those names that has any (§4.2), then the addresses of
   each SRV target; no SRV record at all: the host's own addresses at 5060 (TLS: 5061).
   The answer may be used for the least TTL of the records it came from.
2. ``ordered`` (RFC 2782, "Usage rules"): lower priority first; within a priority, a
   weighted random order (the random number is injected), weight-0 targets last in chance.
3. ``Resolutions``: the last good answer per trunk, re-resolved when its TTL runs out. A
   failed re-resolution (server down, or an answer with no address) keeps the last good
   answer and is reported once per outage (``failed`` returns True the first time only);
   it is retried every ``retry`` seconds.

Health is per resolved address (routing.health keys): ``Resolutions.watched`` lists each
address with its trunk group's monitoring, so routing.monitor pings each of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from sbc.config.schema import Monitoring, Trunk, TrunkGroup
from sbc.sip.transaction import Target

Key = tuple[str, str, int]  # (protocol, host, port); port 0: SRV decides (RFC 3263 §4.2)
RdType = Literal["NAPTR", "SRV", "A", "AAAA"]
SERVICE = {"udp": "SIP+D2U", "tcp": "SIP+D2T", "tls": "SIPS+D2T"}  # RFC 3263 §4.1
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def key_of(trunk: Trunk) -> Key:
    return (trunk.protocol, trunk.host.rstrip(".").lower(), trunk.port)


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


Record = Naptr | Srv | str  # a str: one A or AAAA address


@dataclass(frozen=True, slots=True)
class Service:
    """One SRV record with the addresses of its target (A before AAAA)."""

    priority: int
    weight: int
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    services: tuple[Service, ...]
    ttl: float  # seconds it may be used: the least TTL of the records it came from

    def addresses(self) -> list[Target]:
        return [t for s in self.services for t in s.targets]


class Lookup:
    """One RFC 3263 resolution as a machine: ``query()`` names the next query (None when
    done), ``answer()`` feeds its records (empty: NXDOMAIN or no data), ``result()`` the
    answer. ``families``: the address records wanted ("A", "AAAA")."""

    def __init__(self, key: Key, families: tuple[RdType, ...] = ("A",)) -> None:
        self.protocol, self.host, self.port = key
        self.families = families
        self.ttl = float("inf")
        self.services: list[Service] = []
        self._srv_names: list[str] = []
        self._srvs: list[Srv] = []  # waiting for their targets' addresses
        self._addrs: list[str] = []  # of the SRV target being resolved
        if self.port:  # §4.2: a port given, no SRV: the host's addresses at that port
            self._srvs = [Srv(0, 1, self.port, self.host)]
            self._queue: list[tuple[str, RdType]] = self._addr_queries(self.host)
        else:
            self._queue = [(self.host, "NAPTR")]

    def _addr_queries(self, name: str) -> list[tuple[str, RdType]]:
        return [(name, family) for family in self.families]

    def query(self) -> tuple[str, RdType] | None:
        return self._queue[0] if self._queue else None

    def answer(self, records: Iterable[Record], ttl: float) -> None:
        _, rdtype = self._queue.pop(0)
        found = list(records)
        if found:
            self.ttl = min(self.ttl, ttl)
        if rdtype == "NAPTR":
            wanted = SERVICE[self.protocol]
            naptrs = [
                r
                for r in found
                if isinstance(r, Naptr) and r.flags.lower() == "s" and r.service.upper() == wanted
            ]
            naptrs.sort(key=lambda r: (r.order, r.preference))
            names = [r.replacement.rstrip(".").lower() for r in naptrs]
            self._srv_names = names or [SRV_PREFIX[self.protocol] + self.host]
            self._queue = [(self._srv_names.pop(0), "SRV")]
        elif rdtype == "SRV":
            srvs = [r for r in found if isinstance(r, Srv) and r.target not in ("", ".")]
            if srvs:
                self._srvs = srvs
                self._queue = self._addr_queries(srvs[0].target.rstrip(".").lower())
            elif self._srv_names:
                self._queue = [(self._srv_names.pop(0), "SRV")]
            elif not found:  # no SRV record: the host itself, default port (§4.2)
                self._srvs = [Srv(0, 1, 5061 if self.protocol == "tls" else 5060, self.host)]
                self._queue = self._addr_queries(self.host)
        else:
            self._addrs += [r for r in found if isinstance(r, str)]
            if not self._queue:  # every family of this target asked
                srv = self._srvs.pop(0)
                targets = tuple(Target(self.protocol, a, srv.port) for a in self._addrs)
                if targets:
                    self.services.append(Service(srv.priority, srv.weight, targets))
                self._addrs = []
                if self._srvs:
                    self._queue = self._addr_queries(self._srvs[0].target.rstrip(".").lower())

    def result(self) -> Answer:
        ttl = 0.0 if self.ttl == float("inf") else self.ttl
        return Answer(tuple(self.services), ttl)


def ordered(answer: Answer, rand: Callable[[], float]) -> list[Target]:
    """The addresses in the order to try them (RFC 2782): priorities ascending; within one,
    repeatedly pick a service with chance weight/sum (zero weights placed first, so they
    win only on a random draw of exactly 0), and take its addresses in turn."""
    out: list[Target] = []
    for priority in sorted({s.priority for s in answer.services}):
        left = [s for s in answer.services if s.priority == priority]
        left.sort(key=lambda s: s.weight != 0)  # stable: zero weights at the beginning
        while left:
            total = sum(s.weight for s in left)
            pick = rand() * total
            running = 0
            chosen = left[-1]
            for s in left:
                running += s.weight
                if running >= pick:
                    chosen = s
                    break
            left.remove(chosen)
            out += chosen.targets
    return out


@dataclass(slots=True)
class Entry:
    answer: Answer | None = None  # the last good one
    due: float = 0.0  # when to (re-)resolve
    failing: bool = False  # the last resolution failed (reported once)
    error: str = ""
    policy: tuple[str, Monitoring] | None = None  # (trunk group, monitoring) when monitored


@dataclass(slots=True)
class Resolutions:
    """The answers of every trunk named by host, and when each must be resolved again."""

    rand: Callable[[], float]
    min_ttl: float = 1.0
    max_ttl: float = 86400.0
    retry: float = 5.0
    entries: dict[Key, Entry] = field(default_factory=dict)

    def want(self, trunk_groups: Iterable[TrunkGroup], now: float) -> None:
        """Resolve exactly the host trunks of these (termination) trunk groups from now on:
        a new one is due now; one still named keeps its answer (a reload re-queries nothing)."""
        wanted: dict[Key, tuple[str, Monitoring] | None] = {}
        for tg in trunk_groups:
            if tg.direction != "termination":
                continue
            for t in tg.trunks:
                if t.type == "ip" and t.host:
                    policy = (tg.name, tg.monitoring) if tg.monitoring.enabled else None
                    if wanted.get(key_of(t)) is None:
                        wanted[key_of(t)] = policy
        for key in set(self.entries) - set(wanted):
            del self.entries[key]
        for key, policy in wanted.items():
            entry = self.entries.get(key)
            if entry is None:
                entry = self.entries[key] = Entry(due=now)
            entry.policy = policy

    def due(self, now: float) -> list[Key]:
        return [k for k, e in self.entries.items() if e.due <= now]

    def next_due(self) -> float | None:
        return min((e.due for e in self.entries.values()), default=None)

    def resolved(
        self, key: Key, answer: Answer, now: float
    ) -> Literal["changed", "same", "failed"]:
        """A resolution's answer: kept for its TTL (within min_ttl and max_ttl). One with
        no address is a failure (the last good answer stays): say "failed"."""
        entry = self.entries.get(key)
        if entry is None:
            return "same"
        if not answer.services:
            return "failed"
        ttl = min(max(answer.ttl, self.min_ttl), self.max_ttl)
        entry.due = now + ttl
        # the same records in another order (DNS rotates them) are the same answer
        changed = entry.answer is None or set(entry.answer.services) != set(answer.services)
        entry.answer, entry.failing, entry.error = answer, False, ""
        return "changed" if changed else "same"

    def failed(self, key: Key, error: str, now: float) -> bool:
        """A resolution failed: keep the last good answer, try again in ``retry`` s. True
        the first time in a row (report it), False while the outage goes on."""
        entry = self.entries.get(key)
        if entry is None:
            return False
        entry.due = now + self.retry
        first = not entry.failing
        entry.failing, entry.error = True, error
        return first

    def ordered(self, trunk: Trunk) -> list[Target]:
        """Where a call to this host trunk may go, in RFC 2782 order; [] before the first
        answer."""
        entry = self.entries.get(key_of(trunk))
        if entry is None or entry.answer is None:
            return []
        return ordered(entry.answer, self.rand)

    def addresses(self, trunk: Trunk) -> list[Target]:
        """This host trunk's addresses, lowest priority first (no draw: for /status)."""
        entry = self.entries.get(key_of(trunk))
        if entry is None or entry.answer is None:
            return []
        services = sorted(entry.answer.services, key=lambda s: s.priority)
        return [t for s in services for t in s.targets]

    def domain_of(self, target: Target) -> str | None:
        """The name a TLS host trunk's resolved address must prove in its certificate: the
        trunk's own domain, not the SRV target's or the IP (RFC 5922 §4.1, RFC 3263 §4).
        None: not an address a TLS host trunk resolved to."""
        for (protocol, host, _), entry in self.entries.items():
            if protocol == "tls" and entry.answer and target in entry.answer.addresses():
                return host
        return None

    def watched(self) -> dict[tuple[str, str, int], tuple[str, Monitoring]]:
        """Each resolved address of a monitored trunk group, with its policy (the first
        trunk group naming it decides)."""
        out: dict[tuple[str, str, int], tuple[str, Monitoring]] = {}
        for entry in self.entries.values():
            if entry.policy is not None and entry.answer is not None:
                for target in entry.answer.addresses():
                    out.setdefault(target.key, entry.policy)
        return out
