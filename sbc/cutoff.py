"""Ending a relationship's calls up when its balance reaches ``suspend_at``
(``balance.on_suspend: hangup``; the issue's "calls up may be ended").

Admission (sbc.balance) keeps new calls from overrunning the credit; calls already up keep
costing as they run. With ``hangup``, the keeper of the node's book (the lone runtime, or
the supervisor) compares, at each answer and settlement and once a second, each such
relationship's balance less the running cost of its calls in progress (what their CDRs
would charge if they ended now, ``Hold.cost``; in a fleet also the other nodes' calls,
as last read from Redis) with ``suspend_at``. Once it is at or below, the relationship's
calls (as a customer) are ended on every worker of the node: BYE both legs of an answered
call, CANCEL the attempt of one in setup (``CallController.stop``, as `sbc ctl kill`),
CDR ``hangup: sbc``, ``reason: balance_suspended``. Each node of a fleet ends its own. So
the balance ends at most one increment per call below the floor, and new calls get 403.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Protocol

from sbc.account import Account
from sbc.config.schema import Balance
from sbc.hold import ZERO


class Book(Protocol):
    """sbc.balance.Book, as read here."""

    def account(self, relationship: str) -> Account: ...

    def running(self, relationship: str, now: float) -> Decimal: ...


def nothing(relationship: str) -> Decimal:
    """No other node's calls (a lone node)."""
    return ZERO


def due(
    book: Book, policies: dict[str, Balance], now: float, others: Callable[[str], Decimal]
) -> Iterator[tuple[str, Decimal, bool]]:
    """The relationships whose calls must end at ``now``: (name, its balance less the
    running cost of its calls, the first time at this suspension?). Again while its calls
    still hold credit here (their ends are on their way: ``stop`` is idempotent); a
    payment that lifts it over ``suspend_at`` ends the suspension."""
    for rel, policy in policies.items():
        if policy.on_suspend != "hangup":
            continue
        acc = book.account(rel)
        standing = acc.balance - book.running(rel, now) - others(rel)
        if standing > Decimal(str(policy.suspend_at)):
            acc.cut = False
            continue
        if acc.cut and not acc.holds:
            continue
        first = not acc.cut
        acc.cut = True
        yield rel, standing, first
