"""The memory backend: ports and CPS of one node, decided synchronously. Pure: ``now`` is an
argument, so tests time-travel. It is also every Redis node's local fallback and mirror.

Ports are counted by lease (one per call and trunk group), so releasing twice or releasing a
lease that was never granted changes nothing. CPS is a sliding one-second window: at most
``cps`` grants in any second, which over ten seconds of overload admits ``10 * cps`` (plus at
most ``cps`` at the edge), never a burst of ``2 * cps`` across a bucket boundary.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterable
from typing import TypeVar

from sbc.state import Acquire, Binding, Denied, Release, Scope, StateCommand

_K = TypeVar("_K", bound=Hashable)

WINDOW = 1.0  # seconds of the CPS window


class _Counter:
    __slots__ = ("leases", "starts")

    def __init__(self) -> None:
        self.leases: set[str] = set()
        self.starts: deque[float] = deque()


class MemoryStore:
    def __init__(self) -> None:
        self._scopes: dict[str, _Counter] = {}
        self._held: dict[str, tuple[Scope, ...]] = {}
        # (trunk group, username, contact URI) -> its binding, and three indexes of those keys
        self.bindings: dict[tuple[str, str, str], Binding] = {}
        self._by_source: dict[tuple[str, str, int], set[tuple[str, str, str]]] = {}
        self._by_host: dict[str, set[tuple[str, str, str]]] = {}  # bindings made from a host
        self._by_account: dict[tuple[str, str], set[tuple[str, str, str]]] = {}

    # --- ports and CPS ------------------------------------------------------------------------

    def execute(self, cmd: StateCommand, now: float) -> Denied | None:
        """Carry out a controller command; for an Acquire, return its verdict."""
        if isinstance(cmd, Acquire):
            return self.acquire(cmd.lease, cmd.scopes, now)
        if isinstance(cmd, Release):
            self.release(cmd.lease)
        return None  # Bind: the registrar already wrote this store

    def _counter(self, key: str) -> _Counter:
        c = self._scopes.get(key)
        if c is None:
            c = self._scopes[key] = _Counter()
        return c

    def acquire(
        self, lease: str, scopes: Iterable[Scope], now: float, share: float = 1.0
    ) -> Denied | None:
        """Grant ``lease`` in every scope, or in none. ``share`` scales the limits: a fleet
        node deciding alone while Redis is away takes only its share of each limit."""
        scopes = tuple(scopes)
        counters = []
        for scope in scopes:
            c = self._counter(scope.key)
            while c.starts and c.starts[0] <= now - WINDOW:
                c.starts.popleft()
            if scope.ports and len(c.leases) >= _scaled(scope.ports, share):
                return Denied(scope, "ports")
            if scope.cps and len(c.starts) >= _scaled(scope.cps, share):
                return Denied(scope, "cps")
            counters.append(c)
        self.record(lease, scopes, now)
        return None

    def record(self, lease: str, scopes: tuple[Scope, ...], now: float) -> None:
        """Count a lease granted elsewhere (by Redis): the local mirror of this node's calls."""
        if lease in self._held:
            return
        self._held[lease] = scopes
        for scope in scopes:
            c = self._counter(scope.key)
            c.leases.add(lease)
            c.starts.append(now)

    def release(self, lease: str) -> None:
        for scope in self._held.pop(lease, ()):
            self._counter(scope.key).leases.discard(lease)

    def held(self) -> dict[str, tuple[Scope, ...]]:
        """Every lease this store holds: what a Redis node re-shares when Redis returns."""
        return self._held

    def in_use(self, key: str) -> int:
        c = self._scopes.get(key)
        return len(c.leases) if c else 0

    # --- registration bindings ----------------------------------------------------------------
    # One account (trunk group, username) may hold several contacts (RFC 3261 §10.3), each
    # with the source address its REGISTER came from.

    def bind(self, binding: Binding) -> None:
        key = (binding.trunk_group, binding.username, binding.contact)
        self._forget(key)
        self.bindings[key] = binding
        self._by_source.setdefault((binding.transport, binding.host, binding.port), set()).add(key)
        self._by_host.setdefault(binding.host, set()).add(key)
        self._by_account.setdefault(key[:2], set()).add(key)

    def apply(self, binding: Binding) -> None:
        """A shared change: bind it, or remove that contact (expires_at 0)."""
        if binding.expires_at:
            self.bind(binding)
        else:
            self.unbind(binding.trunk_group, binding.username, binding.contact)

    def unbind(self, trunk_group: str, username: str, contact: str | None = None) -> None:
        """Remove one contact of the account, or all of them (``contact`` None)."""
        if contact is not None:
            self._forget((trunk_group, username, contact))
            return
        for key in list(self._by_account.get((trunk_group, username), ())):
            self._forget(key)

    def _forget(self, key: tuple[str, str, str]) -> None:
        old = self.bindings.pop(key, None)
        if old is None:
            return
        _discard(self._by_source, (old.transport, old.host, old.port), key)
        _discard(self._by_host, old.host, key)
        _discard(self._by_account, key[:2], key)

    def prune(self, wall: float) -> None:
        """Forget every expired binding (a Redis mirror: removals elsewhere never reach it)."""
        for key in [k for k, b in self.bindings.items() if b.expires_at <= wall]:
            self._forget(key)

    def host_bound(self, host: str, wall: float) -> bool:
        """Has a live registration been made from ``host`` (any port, any transport)?"""
        return any(self.bindings[k].expires_at > wall for k in self._by_host.get(host, ()))

    def binding_from(self, transport: str, host: str, port: int, wall: float) -> Binding | None:
        """A live binding registered from this source address, if any."""
        for key in self._by_source.get((transport, host, port), ()):
            b = self.bindings[key]
            if b.expires_at > wall:
                return b
        return None

    def contacts_of(self, trunk_group: str, username: str, wall: float) -> list[Binding]:
        """The account's live contacts, highest q first (equal q: the newest first)."""
        keys = self._by_account.get((trunk_group, username), ())
        live = [b for b in map(self.bindings.__getitem__, keys) if b.expires_at > wall]
        return sorted(live, key=lambda b: (-b.q, -b.expires_at, b.contact))

    def binding_of(self, trunk_group: str, username: str, wall: float) -> Binding | None:
        """The account's preferred live contact."""
        live = self.contacts_of(trunk_group, username, wall)
        return live[0] if live else None


def _discard(index: dict[_K, set[tuple[str, str, str]]], at: _K, key: tuple[str, str, str]) -> None:
    keys = index.get(at)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[at]


def _scaled(limit: int, share: float) -> int:
    return max(1, math.ceil(limit * share)) if share < 1.0 else limit
