"""Flood protection per source IP (like Kamailio's pike). Pure: hosts and ``now`` in, bans out.

``node.flood`` ({requests: 200, window: 1, block_for: 300, exempt: []}): a source IP that
sends more than ``requests`` requests within one ``window`` (counted from its first request
of the window; responses do not count, so a vendor answering our calls is never a flood) is
banned for ``block_for`` seconds: every datagram or TCP message from it is then dropped
before it is parsed, with no answer (one dict lookup, sbc.call.gate). Trunk IPs count too:
a trusted source that floods is as harmful as a stranger (the issue measured 56 of 200
legitimate calls failing while a trunk's 20,000-INVITE burst was admitted), so the policy is
one limit for all, and the NOC lists in ``exempt`` (IPs or CIDRs) the peers whose honest
rate is above it (a big carrier at 100 cps sends about 300 requests a second).

Memory is bounded: at most ``MAX_HOSTS`` counting windows are kept (expired ones are pruned
when the map is full, at most once a second: a spoofed flood from random addresses must not
make each packet pay for a sweep) and at most ``MAX_HOSTS`` bans (the oldest goes first).
A source the map has no room for is not counted until there is: it still meets every other
rule of the screen.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sbc.config.node import FloodConfig

MAX_HOSTS = 65_536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban that starts now."""

    host: str
    until: float
    requests: int  # requests seen in the window that tripped it


class Flood:
    """Counting windows and bans by source IP."""

    def __init__(self) -> None:
        # host -> [until, datagrams and messages dropped while banned]
        self.bans: dict[str, list[float]] = {}
        # host -> [window start, requests in it, 1.0 when exempt]
        self._counts: dict[str, list[float]] = {}
        self._cfg: FloodConfig | None = None
        self._exempt_hosts: frozenset[str] = frozenset()
        self._exempt_nets: list[Network] = []
        self._pruned_at = float("-inf")

    def banned(self, host: str, now: float) -> bool:
        """Is ``host`` banned at ``now``? Counts the drop against its ban."""
        ban = self.bans.get(host)
        if ban is None or now >= ban[0]:
            return False
        ban[1] += 1
        return True

    def count(self, cfg: FloodConfig, host: str, now: float) -> Ban | None:
        """One request from ``host`` (not banned): the ban it starts, if it is one too many."""
        if cfg is not self._cfg:
            self._configure(cfg)
        c = self._counts.get(host)
        if c is None:
            if len(self._counts) >= MAX_HOSTS and not self._prune(cfg, now):
                return None
            self._counts[host] = [now, 1.0, 1.0 if self.exempt(host) else 0.0]
            return None
        if c[2]:
            return None
        if now - c[0] >= cfg.window:
            c[0], c[1] = now, 1.0
            return None
        c[1] += 1
        if c[1] <= cfg.requests:
            return None
        seen = int(c[1])
        del self._counts[host]  # counted afresh once the ban ends
        until = now + cfg.block_for
        self._ban(host, until)
        return Ban(host, until, seen)

    def share(self, host: str, until: float) -> bool:
        """A ban another worker of the node decided (sbc.worker); False when one that
        lasts as long is already held."""
        ban = self.bans.get(host)
        if ban is not None and ban[0] >= until:
            return False
        self._ban(host, until)
        return True

    def expire(self, host: str, now: float) -> list[float] | None:
        """The ban timer of ``host``: its entry [until, dropped] once it has ended (and is
        forgotten); None while it lasts (a later ban replaced it) or when it is gone."""
        ban = self.bans.get(host)
        if ban is None or now < ban[0]:
            return None
        del self.bans[host]
        return ban

    def exempt(self, host: str) -> bool:
        if host in self._exempt_hosts:
            return True
        if not self._exempt_nets:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._exempt_nets)

    @property
    def size(self) -> int:
        """Windows and bans held: for the memory checks."""
        return len(self._counts) + len(self.bans)

    def _ban(self, host: str, until: float) -> None:
        self.bans.pop(host, None)  # re-inserted: the dict stays oldest-first
        self.bans[host] = [until, 0.0]
        while len(self.bans) > MAX_HOSTS:
            del self.bans[next(iter(self.bans))]

    def _configure(self, cfg: FloodConfig) -> None:
        """A new snapshot: parse the exempt list once; windows start afresh."""
        self._cfg = cfg
        hosts, nets = set(), []
        for entry in cfg.exempt:
            net = ipaddress.ip_network(entry, strict=False)
            if net.num_addresses == 1:
                hosts.add(str(net.network_address))
            else:
                nets.append(net)
        self._exempt_hosts, self._exempt_nets = frozenset(hosts), nets
        self._counts = {}

    def _prune(self, cfg: FloodConfig, now: float) -> bool:
        """Room for one more window: expired ones go, at most once a second."""
        if now - self._pruned_at < 1.0:
            return False
        self._pruned_at = now
        self._counts = {h: c for h, c in self._counts.items() if now - c[0] < cfg.window}
        return len(self._counts) < MAX_HOSTS
