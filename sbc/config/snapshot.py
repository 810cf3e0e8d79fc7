"""A validated Config compiled into the lookup structures the call path uses.

Immutable once built. A reload builds a new snapshot and swaps it in; calls in progress keep
the one they started with.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from routing.rating import Tariff
from routing.select import CompiledPlan
from sbc.config import families
from sbc.config.decks import load_deck
from sbc.config.schema import Balance, CapacityGroup, Config, MediaProfile, TrunkGroup
from sbc.manipulate import Rules, compile_rules
from sbc.state import Scope


@dataclass(frozen=True, slots=True)
class IngressClaim:
    port: int  # 0 = any
    tech_prefix: str
    trunk_group: TrunkGroup


@dataclass(frozen=True)
class Snapshot:
    config: Config
    loaded_at: float = field(default_factory=time.time)
    trunk_groups: dict[str, TrunkGroup] = field(default_factory=dict)
    # (protocol, ip) -> claims, most specific first (exact port, then longest tech prefix)
    ingress: dict[tuple[str, str], list[IngressClaim]] = field(default_factory=dict)
    # (protocol, ip) -> every trunk group with a trunk there, any direction
    peers: dict[tuple[str, str], list[IngressClaim]] = field(default_factory=dict)
    # every host a trunk (or a vendor registrar) of any trunk group is at: the edge answers them
    peer_hosts: frozenset[str] = frozenset()
    # trunk group -> the hosts of its IP trunks: who may speak in its calls' dialogs
    hosts: dict[str, frozenset[str]] = field(default_factory=dict)
    plans: dict[str, CompiledPlan] = field(default_factory=dict)
    advance: dict[str, re.Pattern[str]] = field(default_factory=dict)
    relationship_status: dict[str, str] = field(default_factory=dict)
    listen_ports: dict[str, int] = field(default_factory=dict)
    # dual stack (sbc.config.families): family (4, 6) -> the address its peers are told, and
    # (transport, family) -> the port of our first listener there
    addresses: dict[int, str] = field(default_factory=dict)
    family_ports: dict[tuple[str, int], int] = field(default_factory=dict)
    capacity_groups: dict[str, CapacityGroup] = field(default_factory=dict)
    # origination registration trunks: digest username -> (trunk group, password)
    accounts: dict[str, tuple[TrunkGroup, str]] = field(default_factory=dict)
    # trunk group -> the limits a call on it counts against (its own, then its capacity
    # group's); every trunk group is listed, one with no limit at all has ()
    limits: dict[str, tuple[Scope, ...]] = field(default_factory=dict)
    # every scope of a trunk group, limited or not: what explain prints
    scopes: dict[str, tuple[Scope, ...]] = field(default_factory=dict)
    rules: dict[str, Rules] = field(default_factory=dict)  # trunk group -> manipulations
    media: dict[str, MediaProfile | None] = field(default_factory=dict)  # trunk group -> profile
    # trunk group -> its rate deck with the deck's terms (only trunk groups that have one)
    tariffs: dict[str, Tariff] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)  # relationship -> its policy
    capacity_of: dict[str, str] = field(default_factory=dict)  # trunk group -> capacity group

    @classmethod
    def build(cls, config: Config) -> Snapshot:
        snap = cls(config=config)
        for tg in config.trunk_groups:
            snap.trunk_groups[tg.name] = tg
            snap.advance[tg.name] = re.compile(tg.route_advance.codes)
            for t in tg.trunks:
                if t.type != "ip":
                    if tg.direction == "origination":
                        snap.accounts[t.username] = (tg, t.password)
                    continue
                key = ("tls" if t.protocol == "tls" else t.protocol, t.ip)
                claim = IngressClaim(t.port, tg.tech_prefix, tg)
                snap.peers.setdefault(key, []).append(claim)
                if tg.direction == "origination":
                    snap.ingress.setdefault(key, []).append(claim)
        for tg in config.trunk_groups:
            snap.hosts[tg.name] = frozenset(t.ip for t in tg.trunks if t.type == "ip")
        registrars = {t.ip for tg in config.trunk_groups for t in tg.trunks if t.ip}
        object.__setattr__(snap, "peer_hosts", frozenset(registrars))
        for claims in (*snap.ingress.values(), *snap.peers.values()):
            claims.sort(key=lambda c: (c.port == 0, -len(c.tech_prefix)))
        for rp in config.routeplans:
            snap.plans[rp.name] = CompiledPlan(rp)
        for cg in config.capacity_groups:
            snap.capacity_groups[cg.name] = cg
        profiles = {mp.name: mp for mp in config.media_profiles}
        for tg in config.trunk_groups:
            own = [Scope("tg:" + tg.name, tg.limits.ports, tg.limits.cps)]
            group = snap.capacity_groups.get(tg.capacity_group)
            if group is not None:
                own.append(Scope("cg:" + group.name, group.ports, group.cps))
            snap.scopes[tg.name] = tuple(own)
            snap.rules[tg.name] = compile_rules(tg.manipulations)
            snap.media[tg.name] = profiles.get(tg.media_profile)
            # Calls on a trunk group with no limit anywhere take no lease: no round trip.
            snap.limits[tg.name] = tuple(own) if any(x.ports or x.cps for x in own) else ()
        decks = {}
        for rd in config.rate_decks:  # parsed by `check` already: the cache hands it over
            decks[rd.name] = Tariff(
                load_deck(rd),
                rd.currency,
                rd.rounding_digits,
                rd.increment.first,
                rd.increment.next,
                rd.propagation_delay,
            )
        for tg in config.trunk_groups:
            snap.capacity_of[tg.name] = tg.capacity_group
            if tg.rate_deck in decks:
                snap.tariffs[tg.name] = decks[tg.rate_deck]
        for rel in config.relationships:
            snap.relationship_status[rel.name] = rel.status
            if rel.balance is not None:
                snap.balances[rel.name] = rel.balance
        for listen in config.node.listen:
            snap.listen_ports.setdefault(listen.transport, listen.port)
            fam = families.family(listen.address)
            snap.family_ports.setdefault((listen.transport, fam), listen.port)
        snap.addresses.update(families.advertised(config))
        return snap
