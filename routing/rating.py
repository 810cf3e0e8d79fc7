"""Billing arithmetic: increments, propagation delay, rounding, and least-cost order. Pure.

All money is ``decimal.Decimal`` (never a binary float): a rate of 0.0100/min over 66 s is
exactly 0.0110. The Perimeter guide's increments are "first/next": a call is billed at
least ``first`` seconds, then in whole steps of ``next`` (60/6: a 61 s call is 66 s).
Propagation delay adds one second to every answered call before the increments. Amounts
are rounded half up to the deck's ``rounding_digits``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from routing.ratedeck import Rate, RateDeck

SIXTY = Decimal(60)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tariff:
    """A deck with its billing terms (rate_decks[] in the config)."""

    deck: RateDeck
    currency: str
    digits: int
    first: int
    next: int
    propagation_delay: bool

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.digits)


def billed_seconds(duration: float, first: int, nxt: int, propagation_delay: bool) -> int:
    """Seconds billed for an answered call of ``duration`` seconds (0: not answered)."""
    if duration <= 0:
        return 0
    seconds = math.ceil(duration - 1e-9) + (1 if propagation_delay else 0)
    if seconds <= first:
        return first
    step = nxt or 1
    return first + math.ceil((seconds - first) / step) * step


def amount(rate: Decimal, seconds: int, quantum: Decimal) -> Decimal:
    """``rate`` per minute over ``seconds``, rounded half up to ``quantum``."""
    return (rate * seconds / SIXTY).quantize(quantum, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Rated:
    """One side of a call, rated: which code, which rate, how long, how much."""

    deck: str
    prefix: str
    rate: Decimal
    billed_seconds: int
    amount: Decimal
    currency: str


def rate_call(tariff: Tariff, number: str, setup: float, duration: float) -> Rated | None:
    """The rating of a call to ``number`` set up at ``setup`` (Unix seconds) that lasted
    ``duration`` answered seconds; None when no code matches (unrated)."""
    found = tariff.deck.lookup(number, setup)
    if found is None:
        return None
    billed = billed_seconds(duration, tariff.first, tariff.next, tariff.propagation_delay)
    return Rated(
        tariff.deck.name,
        found.prefix,
        found.rate,
        billed,
        amount(found.rate, billed, tariff.quantum),
        tariff.currency,
    )


def lcr_order(names: list[str], rate_of: dict[str, Rate | None]) -> list[str]:
    """Trunk groups by rate, cheapest first; unrated ones last; ties keep route order."""
    inf = Decimal("Infinity")
    ranked = sorted(
        enumerate(names),
        key=lambda x: (rate_of.get(x[1]) is None, _rate(rate_of.get(x[1]), inf), x[0]),
    )
    return [name for _, name in ranked]


def _rate(r: Rate | None, default: Decimal) -> Decimal:
    return r.rate if r is not None else default


def over_ceiling(max_cost: str, cost: Rate | None, revenue: Rate | None) -> bool:
    """The margin guard (``max_cost`` on an egress trunk group): "" = none; "revenue" =
    its rate may not exceed the call's revenue rate (no guard when the caller's side is
    unrated: nothing to compare); a number = a fixed ceiling per minute. Under a guard an
    unrated egress trunk group is skipped: its cost is unknown."""
    if not max_cost:
        return False
    if max_cost == "revenue":
        if revenue is None:
            return False
        ceiling = revenue.rate
    else:
        ceiling = Decimal(max_cost)
    return cost is None or cost.rate > ceiling
