"""Balances (sbc.balance): admission against credit, reservations, charges, the ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sbc.balance import (
    Book,
    Hold,
    Keeper,
    Ledger,
    add_payment,
    balance_hold,
    balances,
    payment,
    settlement,
)
from sbc.config.schema import Balance
from sbc.state import Answered, Credit

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
    from routing.ratedeck import Columns, parse
    from routing.rating import Tariff

    deck = parse("d", "d.csv", "prefix,rate\n1,0.60\n", Columns(), 0.0)
    tariff = Tariff(deck, "USD", 4, 60, 6, False)
    hold = balance_hold(tariff, "1555", 0.0)
    assert hold is not None and hold.first == Decimal("0.6000")
    assert balance_hold(tariff, "44", 0.0) is None  # unrated: nothing to hold
    book = Book()
    book.apply(payment("c", Decimal("3.00"), "", 0))
    for i in range(2):
        assert book.decide(Credit(i, f"call{i}", "c", POLICY, hold), 0.0)
    assert book.held("c", 0.0) == Decimal("1.2000")  # two first increments while ringing
    for i in range(2):
        book.answered(f"call{i}", 10.0)
    # 100 s in: each billed 102 s so far plus the next 6 s = 108 s at 0.60/min = 1.08
    assert book.held("c", 110.0) == Decimal("2.1600")
    assert book.admit("c", POLICY, hold.first, 110.0)  # 3.00 - 2.16 - 0.60 = 0.24 left
    # 150 s in: 150 + 6 s each = 1.56 twice: 3.12 held, more than paid
    assert book.held("c", 160.0) == Decimal("3.1200")
    assert not book.decide(Credit(9, "call9", "c", POLICY, hold), 160.0)


def _prepaid_hold() -> Hold:
    """0.60/min, 60/6, 4 digits: the first increment holds 0.6000."""
    return Hold(Decimal("0.6000"), Decimal("0.60"), 60, 6, False, Decimal("0.0001"))


def test_one_book_admits_concurrent_calls_from_any_worker_within_the_credit() -> None:
    """Eight calls at once against credit for three first increments: whichever worker
    asks, the one book (the supervisor's) grants exactly three and holds them; a hold is
    plain data that survives pickling (it crosses the worker's link)."""
    import pickle

    book = Book()
    book.apply(payment("c", Decimal("1.80"), "", 0))
    credits = [Credit(i, f"w{i % 2}-call{i}", "c", POLICY, _prepaid_hold()) for i in range(8)]
    granted = [c.lease for c in credits if book.decide(pickle.loads(pickle.dumps(c)), 0.0)]
    assert granted == ["w0-call0", "w1-call1", "w0-call2"]
    assert book.held("c", 0.0) == Decimal("1.8000")
    for lease in granted:  # each ends within its first increment: charged 0.6000
        amount, _ = book.settle("c", POLICY, lease, "0.6000")
        assert amount == Decimal("0.6000")
    assert book.account("c").balance == 0 and not book.holding


def test_an_answered_call_holds_ahead_and_a_dead_workers_holds_go() -> None:
    """Answered at 0, a call holds its billed cost plus the next 6 s: at 61 s, 66 + 6 s =
    0.7200; the credit left admits no second call. Its worker dies: its hold goes with it
    (no CDR will settle it) and the credit is free again, nothing charged."""
    book = Book()
    book.apply(payment("c", Decimal("1.30"), "", 0))
    keeper_now = 0.0
    assert book.decide(Credit(1, "x", "c", POLICY, _prepaid_hold()), keeper_now)
    book.answered("x", keeper_now)
    assert book.held("c", 61.0) == Decimal("0.7200")
    assert not book.decide(Credit(2, "y", "c", POLICY, _prepaid_hold()), 61.0)  # 0.58 < 0.60
    book.release("x")
    assert book.held("c", 61.0) == 0 and book.account("c").balance == Decimal("1.30")
    assert book.decide(Credit(3, "z", "c", POLICY, _prepaid_hold()), 61.0)
    book.answered("unknown", 61.0)  # not held (unrated, or already settled): nothing
    book.answered("z", 61.0)  # answered this instant, or by a clock a hair ahead of ours
    assert book.held("c", 61.0) == book.held("c", 60.9) == Decimal("0.6600")  # 60 + 6 s


def test_the_keeper_decides_credit_settles_and_refuses_with_balance_suspended(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    add_payment(path, "c", "0.60", "opening")
    keeper = Keeper(Book(), path, Log(), None, {"c": POLICY})
    assert keeper.execute(Credit(1, "a", "c", POLICY, _prepaid_hold()), 0.0) is None
    denied = keeper.execute(Credit(2, "b", "c", POLICY, _prepaid_hold()), 0.0)
    assert denied is not None and denied.label == "balance_suspended"
    assert keeper.execute(Answered("a", 5.0), 5.0) is None
    assert settlement([{"call_id": "a", "relationship": "c", "revenue": "0.6000", "x": 1},
                       {"call_id": "n", "relationship": ""}], {}, {"c": POLICY}) == [
        {"call_id": "a", "relationship": "c", "revenue": "0.6000", "cost": None, "vendor": ""}
    ]  # fmt: skip
    keeper.settle([{"call_id": "a", "relationship": "c", "revenue": "0.6000"}], {"c": POLICY})
    assert not keeper.book.holding
    assert balances(path)["c"].balance == 0  # the charge is in the ledger: a restart keeps it
    # a call whose relationship keeps no balance (any more) only lets its hold go
    assert keeper.execute(Credit(3, "d", "c", POLICY, Hold(Decimal(0))), 0.0) is not None
    keeper.book.reserve("c", "e", Hold(Decimal("0.1")))
    keeper.settle([{"call_id": "e", "relationship": "c", "revenue": "0.6000"}], {})
    assert not keeper.book.holding and balances(path)["c"].balance == 0


def test_a_hold_crosses_redis_as_json_and_keeps_its_terms() -> None:
    from sbc.fleetbook import entry_key, hold_json, hold_of, rel_keys

    hold = _prepaid_hold()
    ringing = hold_of(hold_json(hold), None)
    assert ringing == hold and ringing.amount(100.0) == Decimal("0.6000")
    answered = hold_of(hold_json(hold).encode(), b"1000.250000")
    assert answered.answered_at == 1000.25
    assert answered.amount(1061.25) == Decimal("0.7200")  # 66 s billed + the next 6 s
    assert entry_key(payment("c", Decimal(1), "", 0)).startswith("payment:")
    assert rel_keys("c") == ["sbc:bal:holds:c", "sbc:bal:exp:c", "sbc:bal:ans:c", "sbc:bal:ver:c"]
