"""Trunks named by host: the DNS queries, with dnspython's asyncio resolver. I/O.

Everything decided is decided in routing.srv (what to ask, in which order to try the
answers, when to ask again, what a failure keeps); this adapter sends the queries a
``Lookup`` names, feeds it the records, and sleeps until the next answer expires. The call
path never waits for DNS: it hunts with the answers at hand (``Monitor.dns``), and a trunk
whose host never resolved yet has no address to try.

Logged (by the node, or by a multi-worker node's leader): ``dns.resolved`` when a host's
addresses change, ``dns.failed`` once per outage (the last good answer is kept, and retried
every ``node.dns.retry`` seconds), ``dns.recovered`` when answers come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from routing.monitor import Monitor
from routing.srv import Answer, Key, Lookup, Naptr, RdType, Record, Srv, key_of
from sbc.config.loader import host_port
from sbc.config.snapshot import Snapshot
from sbc.sip.timers import TimerHeap


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def records(answer: dns.resolver.Answer) -> list[Record]:
    """dnspython's rdata as routing.srv's plain records."""
    out: list[Record] = []
    for rd in answer.rrset or ():
        rdtype = rd.rdtype.name
        if rdtype == "NAPTR":
            out.append(
                Naptr(
                    rd.order,
                    rd.preference,
                    _text(rd.flags),
                    _text(rd.service),
                    rd.replacement.to_text(),
                )
            )
        elif rdtype == "SRV":
            out.append(Srv(rd.priority, rd.weight, rd.port, rd.target.to_text()))
        elif rdtype in ("A", "AAAA"):
            out.append(rd.address)
    return out


def make_resolver(servers: list[str], timeout: float) -> dns.asyncresolver.Resolver:
    """node.dns.servers as dnspython name servers; none: /etc/resolv.conf's."""
    if servers:
        r = dns.asyncresolver.Resolver(configure=False)
        found = [host_port(s) for s in servers]
        r.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in filter(None, found)]
    else:
        try:
            r = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = ["127.0.0.1"]
    r.lifetime = r.timeout = timeout
    r.cache = None  # routing.srv keeps the answers, with their TTLs
    return r


class Resolver:
    """Keeps ``monitor.dns`` resolved; ``changed`` is called after addresses changed (the
    runtime pumps: new addresses are pinged at once)."""

    def __init__(
        self, monitor: Monitor, log: Any, now: Callable[[], float], changed: Callable[[], None]
    ) -> None:
        self.monitor = monitor
        self.log = log  # None: resolve quietly (a follower worker: the leader says it)
        self.now = now
        self.changed = changed
        self.families: tuple[RdType, ...] = ("A",)
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._servers: tuple[list[str], float] | None = None
        self._wake = asyncio.Event()

    def apply(self, snapshot: Snapshot) -> None:
        """Resolve the host trunks of ``snapshot`` from now on (at start and on reload)."""
        cfg = snapshot.config.node.dns
        dns_ = self.monitor.dns
        dns_.min_ttl, dns_.max_ttl, dns_.retry = cfg.min_ttl, cfg.max_ttl, cfg.retry
        if self._servers != (cfg.servers, cfg.timeout):
            self._servers = (list(cfg.servers), cfg.timeout)
            self._resolver = None  # made again on first use
        ipv6 = any(":" in x.address for x in snapshot.config.node.listen)
        self.families = ("A", "AAAA") if ipv6 else ("A",)
        dns_.want(snapshot.config.trunk_groups, self.now())
        self._wake.set()

    def targets(self, snapshot: Snapshot) -> dict[str, list[str]]:
        """``sbc explain``'s view: each host trunk's addresses in this call's order."""
        out: dict[str, list[str]] = {}
        for tg in snapshot.config.trunk_groups:
            for t in tg.trunks:
                if t.type == "ip" and t.host:
                    out[t.host] = [str(x) for x in self.monitor.dns.ordered(t)]
        return out

    async def run(self) -> None:
        while True:
            due = self.monitor.dns.due(self.now())
            if due:
                results = await asyncio.gather(*(self._resolve(k) for k in due))
                if any(results):
                    self.monitor.dns_changed(self.now())
                    self.changed()
                continue
            self._wake.clear()
            at = self.monitor.dns.next_due()
            wait = None if at is None else max(0.05, at - self.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def lookup(self, key: Key) -> Lookup:
        """One RFC 3263 resolution; raises on a server failure or timeout (not on NXDOMAIN
        or no data: those are answers)."""
        if self._resolver is None:
            servers, timeout = self._servers or ([], 2.0)
            self._resolver = make_resolver(servers, timeout)
        lookup = Lookup(key, self.families)
        while (q := lookup.query()) is not None:
            name, rdtype = q
            try:
                answer = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                lookup.answer([], 0.0)
                continue
            ttl = float(answer.rrset.ttl) if answer.rrset is not None else 0.0
            lookup.answer(records(answer), ttl)
        return lookup

    async def _resolve(self, key: Key) -> bool:
        """Resolve one host trunk; True when its addresses changed."""
        protocol, host, port = key
        entry = self.monitor.dns.entries.get(key)
        was_failing = entry is not None and entry.failing
        try:
            answer = (await self.lookup(key)).result()
            error = "no address"
        except (dns.exception.DNSException, OSError) as exc:
            answer, error = None, f"{type(exc).__name__}: {exc}"
        now = self.now()
        verdict = "failed" if answer is None else self.monitor.dns.resolved(key, answer, now)
        where = f"{protocol}:{host}" + (f":{port}" if port else "")
        if verdict == "failed":
            if self.monitor.dns.failed(key, error, now) and self.log is not None:
                kept = self.monitor.dns.entries[key].answer
                self.log.warning(
                    "dns.failed",
                    host=where,
                    error=error,
                    kept=[str(t) for t in kept.addresses()] if kept else [],
                )
            return False
        assert answer is not None
        if self.log is not None and verdict == "changed":
            targets = [
                f"{t} priority={s.priority} weight={s.weight}"
                for s in sorted(answer.services, key=lambda s: s.priority)
                for t in s.targets
            ]
            self.log.info("dns.resolved", host=where, targets=targets, ttl=answer.ttl)
        elif self.log is not None and was_failing:
            self.log.info("dns.recovered", host=where)
        return verdict == "changed"


def resolve_now(snapshot: Snapshot) -> dict[Key, Answer | str]:
    """Each host trunk's answer now, or why there is none (for `sbc explain`)."""
    keys = {
        key_of(t)
        for tg in snapshot.config.trunk_groups
        for t in tg.trunks
        if t.type == "ip" and t.host and tg.direction == "termination"
    }
    if not keys:
        return {}

    async def run() -> dict[Key, Answer | str]:
        r = Resolver(Monitor(TimerHeap(None)), None, time.monotonic, lambda: None)
        r.apply(snapshot)
        out: dict[Key, Answer | str] = {}
        for key in sorted(keys):
            try:
                out[key] = (await r.lookup(key)).result()
            except (dns.exception.DNSException, OSError) as exc:
                out[key] = f"{type(exc).__name__}: {exc}"
        return out

    return asyncio.run(run())
