"""A call's hold on its relationship's credit (sbc.balance): what it will cost at least. Pure
plain data, so it crosses from a worker to the supervisor that keeps the node's book."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from routing.rating import Tariff, amount, billed_seconds

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Hold:
    """A call in progress: its first increment's amount, its rate and its deck's terms, and
    when it was answered (the keeper's monotonic clock, as ``now``; None while it rings: it
    holds ``first``). Plain data: it crosses from a worker to the supervisor (sbc.ipc)
    without the deck. With no terms (``first_seconds`` 0) it holds ``first`` for ever."""

    first: Decimal  # its first increment's amount
    rate: Decimal = ZERO
    first_seconds: int = 0
    next_seconds: int = 0
    propagation_delay: bool = False
    quantum: Decimal = Decimal(1)
    answered_at: float | None = None

    def amount(self, now: float) -> Decimal:
        """What it holds at ``now``: ``first`` until answered, then its billed cost so far
        plus the next increment (reserved ahead, so it never lags its real cost)."""
        if not self.first_seconds or self.answered_at is None:
            return self.first
        # Answered this very instant (or by a clock a hair ahead): billed its first
        # increment already, never 0 as an unanswered call would be.
        talked = max(now - self.answered_at, 0.001)
        billed = billed_seconds(
            talked, self.first_seconds, self.next_seconds, self.propagation_delay
        )
        return amount(self.rate, billed + self.next_seconds, self.quantum)

    def cost(self, now: float) -> Decimal:
        """What it has cost so far at ``now`` (its running cost, no increment ahead): 0
        while it rings, then its billed cost, as its CDR would say if it ended now."""
        if self.answered_at is None:
            return ZERO
        if not self.first_seconds:
            return self.first
        talked = max(now - self.answered_at, 0.001)
        billed = billed_seconds(
            talked, self.first_seconds, self.next_seconds, self.propagation_delay
        )
        return amount(self.rate, billed, self.quantum)


def balance_hold(tariff: Tariff | None, number: str, at: float) -> Hold | None:
    """The hold of a new call to ``number`` on a trunk group with this deck; None when
    the call is unrated (it will be charged nothing)."""
    if tariff is None:
        return None
    found = tariff.deck.lookup(number, at)
    if found is None:
        return None
    t = tariff
    first = amount(found.rate, t.first, t.quantum)
    return Hold(first, found.rate, t.first, t.next, t.propagation_delay, t.quantum)
