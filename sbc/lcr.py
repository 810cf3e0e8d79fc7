"""Least-cost routing and the margin guard over a snapshot's rate decks. Pure.

A route with ``order: lcr`` tries its trunk groups by the rate each one's deck has in force
for the routed DNIS at the call's setup time: cheapest first, unrated ones last, ties in the
order written. Independently of the order, a termination trunk group with ``max_cost``
(routing.rating.over_ceiling) is left out of a call whose cost there would exceed the
call's revenue rate or the fixed ceiling. The call path (sbc.call.ingress) and
`sbc explain` both call ``arrange``, so explain prints what the node does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from routing.ratedeck import Rate
from routing.rating import lcr_order, over_ceiling
from sbc.config.snapshot import Snapshot


@dataclass(slots=True)
class Arranged:
    names: list[str]  # the trunk groups to hunt, in order
    guarded: list[str] = field(default_factory=list)  # left out by their max_cost
    rates: dict[str, Rate | None] = field(default_factory=dict)  # egress rate, per name
    revenue: Rate | None = None  # the ingress trunk group's rate for this DNIS


def arrange(
    snap: Snapshot, ingress: str, names: list[str], dnis: str, wall: float, lcr: bool
) -> Arranged:
    """The route's trunk groups for a call from ``ingress`` to ``dnis`` at ``wall``."""
    tariffs = snap.tariffs
    out = Arranged(names)
    if not tariffs:
        return out
    guards = [snap.trunk_groups[n].max_cost for n in names]
    if not lcr and not any(guards):
        return out
    for name in names:
        t = tariffs.get(name)
        out.rates[name] = t.deck.lookup(dnis, wall) if t is not None else None
    t_in = tariffs.get(ingress)
    out.revenue = t_in.deck.lookup(dnis, wall) if t_in is not None else None
    kept = []
    for name, guard in zip(names, guards, strict=True):
        if over_ceiling(guard, out.rates[name], out.revenue):
            out.guarded.append(name)
        else:
            kept.append(name)
    out.names = lcr_order(kept, out.rates) if lcr else kept
    return out
