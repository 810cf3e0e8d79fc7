"""Balances through the call controller, with the book's keeper answering later (as the
supervisor of workers does over its link): the call path asks ``Credit`` before the limits,
says ``Answered``, and its CDR settles the hold (sbc.call.intake, sbc.balance).

    caller            sbc (controller)              keeper (the supervisor's book)
      |--INVITE-------->|--Credit(call, 0.0100)-------->|  nothing paid: denied
      |<-----------100--|<---verdict: balance_suspended-|
      |<-----------403--|  CDR: 403, balance_suspended
    (a payment)
      |--INVITE-------->|--Credit---------------------->|  granted, 0.0100 held
      |                 |--INVITE, 200 from the vendor  |
      |<-----------200--|--Answered(call)-------------->|  the hold grows from now
      |--ACK, BYE------>|  CDR: revenue 0.0100 -------->|  settled: charged, hold gone
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec

from sbc.balance import Book, Keeper, add_payment
from sbc.config.schema import Balance
from sbc.sip.message import Response
from sbc.state import Answered, Credit, Denied, StateCommand
from tests.helpers import CALLER, invite, only
from tests.unit.test_balance import Log
from tests.unit.test_rating import _answered_call, _rated_lab

POLICY = Balance(warn_at=0.0, suspend_at=0.0)


def _lab_with_a_keeper(tmp_path: Path):  # type: ignore[no-untyped-def]
    lab = _rated_lab(tmp_path, "1,0.0060,,USA\n")
    config = lab.ctrl.snapshot.config
    rels = [
        msgspec.structs.replace(r, balance=POLICY) if r.name == "carrier-a" else r
        for r in config.relationships
    ]
    from sbc.config.snapshot import Snapshot

    lab.ctrl.snapshot = Snapshot.build(msgspec.structs.replace(config, relationships=rels))
    ledger = tmp_path / "ledger.jsonl"
    keeper = Keeper(Book(), ledger, Log(), None, {"carrier-a": POLICY})
    asked: list[StateCommand] = []
    store = lab.executor.state

    def state(cmd: StateCommand, now: float) -> tuple[bool, Denied | None]:
        if isinstance(cmd, Credit | Answered):
            asked.append(cmd)
            return (True, None) if isinstance(cmd, Answered) else (False, None)
        return store(cmd, now)

    lab.executor.state = state
    return lab, keeper, asked, ledger


def test_credit_is_asked_before_the_limits_and_refused_with_403(tmp_path: Path) -> None:
    lab, keeper, asked, ledger = _lab_with_a_keeper(tmp_path)
    out = lab.feed(invite(), CALLER)
    assert [m.status for m in only(out, CALLER) if isinstance(m, Response)] == [100]
    assert [m for m, t in out if t != CALLER] == []  # no vendor asked before the verdict
    (credit,) = asked
    assert isinstance(credit, Credit) and credit.relationship == "carrier-a"
    assert credit.hold is not None and credit.hold.first == Decimal("0.0100")
    verdict = keeper.execute(credit, lab.now)  # nothing paid
    assert verdict is not None
    lab.ctrl.on_acquired(credit.token, verdict, lab.now)
    out = lab.run()
    assert [m.status for m in only(out, CALLER) if isinstance(m, Response)] == [403]
    (rec,) = lab.ctrl.pop_cdrs()
    assert (rec["status"], rec["reason"], rec["relationship"]) == (
        403,
        "balance_suspended",
        "carrier-a",
    )
    keeper.settle([rec], {"carrier-a": POLICY})
    assert not keeper.book.holding and not ledger.exists()  # nothing held, nothing charged


def test_a_granted_call_says_answered_and_its_cdr_settles_the_hold(tmp_path: Path) -> None:
    lab, keeper, asked, ledger = _lab_with_a_keeper(tmp_path)
    add_payment(ledger, "carrier-a", "1.00", "")
    keeper.poll({"carrier-a": POLICY})

    real = lab.executor.state

    def granting(cmd: StateCommand, now: float) -> tuple[bool, Denied | None]:
        decided, verdict = real(cmd, now)
        if isinstance(cmd, Credit):  # the keeper answers at once (as the lone runtime)
            return True, keeper.execute(cmd, now)
        if isinstance(cmd, Answered):
            keeper.execute(cmd, now)
        return decided, verdict

    lab.executor.state = granting
    _answered_call(lab, hold=61.0)
    credit, answered = asked
    assert isinstance(answered, Answered) and answered.lease == credit.lease
    (rec,) = lab.ctrl.pop_cdrs()
    assert rec["call_id"] == credit.lease and rec["revenue"] == "0.0110"
    assert keeper.book.held("carrier-a", lab.now) == Decimal("0.0120")  # 66 + 6 s, until settled
    keeper.settle([rec], {"carrier-a": POLICY})
    assert not keeper.book.holding
    assert keeper.book.account("carrier-a").balance == Decimal("0.9890")
