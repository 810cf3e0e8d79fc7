"""Balances (sbc.balance): admission against credit, reservations, charges, the ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sbc.balance import Book, Hold, Keeper, Ledger, add_payment, balance_hold, balances, payment
from sbc.config.schema import Balance

POLICY = Balance(warn_at=0.05, suspend_at=0.0)
CENT = Decimal("0.0100")


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    warning = error = info


def test_reservations_keep_many_calls_within_the_credit() -> None:
    book = Book()
    book.apply(payment("c", Decimal("0.03"), "", 0))
    admitted = 0
    for i in range(10):  # ten calls at once, each first increment 0.01
        if book.admit("c", POLICY, CENT, 0.0):
            book.reserve("c", f"call{i}", Hold(CENT))
            admitted += 1
    assert admitted == 3
    amount, _ = book.settle("c", POLICY, "call0", "0.0110")  # 66 s at 0.01/min
    assert amount == Decimal("0.0110") and book.account("c").balance == Decimal("0.0190")
    assert not book.admit("c", POLICY, CENT, 0.0)  # 0.019 less two held 0.01: below 0.01


def test_suspended_at_the_floor_and_events_once_each_way() -> None:
    book = Book()
    book.apply(payment("c", Decimal("0.06"), "", 0))
    assert book.events("c", POLICY) == []
    _, events = book.settle("c", POLICY, "x", "0.0200")
    assert [e.name for e in events] == ["balance.warning"]
    _, events = book.settle("c", POLICY, "y", "0.0400")
    assert [e.name for e in events] == ["balance.suspended"]
    assert book.account("c").balance == 0 and not book.admit("c", POLICY, Decimal(0), 0.0)
    book.apply(payment("c", Decimal("1"), "", 0))
    assert [e.name for e in book.events("c", POLICY)] == ["balance.restored"]
    assert book.admit("c", POLICY, CENT, 0.0)


def test_the_ledger_rebuilds_the_balance_exactly_counting_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    entry = add_payment(path, "c", "10.00", "wire 42")
    log = Log()
    book = Book()
    keeper = Keeper(book, path, log, None, {"c": POLICY})
    keeper.settle(
        [{"call_id": "a", "relationship": "c", "revenue": "0.0110"}, {"call_id": "b"}],
        {"c": POLICY},
    )
    Ledger(path).append([entry])  # a payment line written twice counts once
    text = path.read_text()
    path.write_text(text + text.splitlines(keepends=True)[1])  # and a charge line twice
    assert balances(path)["c"].balance == Decimal("9.9890")
    add_payment(path, "c", "0.50", "")
    keeper.poll({"c": POLICY})  # the node picks up the CLI's payment, not its own charge
    assert book.account("c").balance == Decimal("10.4890")
    assert "balance.payment" in [e for e, _ in log.events]


def test_long_calls_hold_their_billed_cost_plus_the_next_increment() -> None:
    from dataclasses import dataclass, replace

    from routing.ratedeck import Columns, parse
    from routing.rating import Tariff

    @dataclass
    class FakeCall:
        answered_at: float | None = None

    deck = parse("d", "d.csv", "prefix,rate\n1,0.60\n", Columns(), 0.0)
    tariff = Tariff(deck, "USD", 4, 60, 6, False)
    hold = balance_hold(tariff, "1555", 0.0)
    assert hold is not None and hold.first == Decimal("0.6000")
    assert balance_hold(tariff, "44", 0.0) is None  # unrated: nothing to hold
    book = Book()
    book.apply(payment("c", Decimal("3.00"), "", 0))
    calls = [FakeCall(), FakeCall()]
    for i, c in enumerate(calls):
        assert book.admit("c", POLICY, hold.first, 0.0)
        book.reserve("c", f"call{i}", replace(hold, call=c))
    assert book.held("c", 0.0) == Decimal("1.2000")  # two first increments while ringing
    for c in calls:
        c.answered_at = 10.0
    # 100 s in: each billed 102 s so far plus the next 6 s = 108 s at 0.60/min = 1.08
    assert book.held("c", 110.0) == Decimal("2.1600")
    assert book.admit("c", POLICY, hold.first, 110.0)  # 3.00 - 2.16 - 0.60 = 0.24 left
    # 150 s in: 150 + 6 s each = 1.56 twice: 3.12 held, more than paid
    assert book.held("c", 160.0) == Decimal("3.1200")
    assert not book.admit("c", POLICY, Decimal(0), 160.0)
