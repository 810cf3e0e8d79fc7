"""Balance offsets (``balance.disable_offsets``) and ending calls up at suspend_at
(``balance.on_suspend: hangup``): the pure book, the keeper with fake time, the controller's
stop (sbc.balance, sbc.cutoff, sbc.call.suspend).

A relationship both customer and vendor: its balance = payments - revenue of the calls it
sends us + cost of the calls we send it (unless disable_offsets). With hangup, a call up:

    caller            sbc (controller)              vendor
      |--INVITE-------->|--INVITE--------------------->|
      |<-----------200--|<--------------------------200|
      |--ACK----------->|--ACK------------------------>|
    (the keeper: balance less running cost <= suspend_at: end the relationship's calls)
      |<-----------BYE--|--BYE------------------------>|   CDR hangup sbc, balance_suspended
      |--200----------->|<--------------------------200|
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from sbc import cutoff
from sbc.balance import Book, Hold, Keeper, Ledger, add_payment, balances, charge, payment
from sbc.call.suspend import end_calls
from sbc.config.schema import Balance, TrunkGroup
from sbc.sip.message import Request, Response, make_response
from tests.helpers import CALLER, V1, V2, invite, only
from tests.unit.test_balance import Log
from tests.unit.test_ops import WALL, a_bye
from tests.unit.test_rating import _rated_lab

OFFSET = Balance(suspend_at=0.0)
APART = Balance(suspend_at=0.0, disable_offsets=True)
HANGUP = Balance(suspend_at=0.80, on_suspend="hangup")
TGS = {
    "from-both": TrunkGroup(name="from-both", relationship="both", direction="origination"),
    "to-both": TrunkGroup(
        name="to-both", relationship="both", direction="termination", relationship_type="vendor"
    ),
}


def _per_second(rate: str = "0.6000") -> Hold:
    """1/1 increments at ``rate`` a minute: 0.0100 a second."""
    r = Decimal(rate)
    return Hold(Decimal("0.0100"), r, 1, 1, False, Decimal("0.0001"))


def test_a_hold_costs_nothing_while_ringing_then_its_billed_cost_without_the_next() -> None:
    hold = _per_second()
    assert hold.cost(100.0) == 0 and hold.amount(100.0) == Decimal("0.0100")
    answered = replace(hold, answered_at=10.0)
    assert answered.cost(10.0) == Decimal("0.0100")  # its first increment at once
    assert answered.cost(15.5) == Decimal("0.0600")  # 6 s billed
    assert answered.amount(15.5) == Decimal("0.0700")  # and the next second ahead
    assert Hold(Decimal("0.5"), answered_at=1.0).cost(9.0) == Decimal("0.5")  # no terms


def test_vendor_costs_are_offset_unless_disabled_and_listed_apart() -> None:
    book = Book()
    book.apply(payment("both", Decimal("10.00"), "", 0))
    book.apply(charge("both", "c1", Decimal("1.2000"), 0))
    book.apply(charge("both", "c2", Decimal("0.4500"), 0, "vendor_cost"))
    acc = book.account("both")
    assert (acc.paid, acc.charged, acc.vendor_costs) == (10, Decimal("1.2"), Decimal("0.45"))
    assert acc.balance == Decimal("9.2500")  # 10 - 1.20 + 0.45
    book.configure({"both": APART})
    assert acc.balance == Decimal("8.8000") and acc.vendor_costs == Decimal("0.45")
    book.configure({"both": OFFSET})
    assert acc.balance == Decimal("9.2500")


def test_the_keeper_writes_a_vendor_cost_once_per_call_and_a_restart_keeps_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    add_payment(path, "both", "1.00", "")
    keeper = Keeper(Book(), path, Log(), None, {"both": OFFSET})
    # a call it sent us, answered on a vendor of another relationship; a call we sent it
    theirs = {
        "call_id": "in1",
        "relationship": "both",
        "trunk_group": "from-both",
        "revenue": "0.3000",
        "egress_trunk_group": "elsewhere",
        "cost": "0.1000",
    }
    ours = {"call_id": "out1", "relationship": "pbx", "trunk_group": "from-pbx",
            "revenue": None, "egress_trunk_group": "to-both", "cost": "0.2500"}  # fmt: skip
    keeper.settle([theirs, ours], {"both": OFFSET}, TGS)
    assert keeper.book.account("both").balance == Decimal("0.9500")  # 1 - 0.30 + 0.25
    lines = [e for e in Ledger(path).read_new() if e["type"] != "payment"]
    assert [(e["type"], e["id"], e["amount"]) for e in lines] == [
        ("charge", "in1", "0.3000"),
        ("vendor_cost", "out1", "0.2500"),
    ]
    Ledger(path).append(lines)  # written twice (a retry): each counted once by call id + kind
    assert balances(path, {"both": OFFSET})["both"].balance == Decimal("0.9500")
    restarted = Keeper(Book(), path, Log(), None, {"both": APART})
    acc = restarted.book.account("both")
    assert (acc.balance, acc.vendor_costs) == (Decimal("0.7000"), Decimal("0.2500"))
    # a call both sides of which are the relationship's: a charge and a vendor cost
    both = {**theirs, "call_id": "x", "egress_trunk_group": "to-both", "cost": "0.1000"}
    restarted.settle([both], {"both": OFFSET}, TGS)
    assert restarted.book.account("both").balance == Decimal("0.7500")  # 0.95 - 0.30 + 0.10
    unanswered = {**ours, "call_id": "y", "egress_trunk_group": None}
    restarted.settle([unanswered], {"both": OFFSET}, TGS)  # no answered attempt: no cost
    assert restarted.book.account("both").vendor_costs == Decimal("0.3500")


def test_calls_are_cut_once_their_running_cost_crosses_the_credit() -> None:
    book = Book()
    book.apply(payment("c", Decimal("1.00"), "", 0))  # 0.20 over suspend_at 0.80
    for cid in ("a", "b"):
        book.reserve("c", cid, _per_second())
        book.answered(cid, 100.0)
    policies = {"c": HANGUP, "k": Balance(suspend_at=0.80)}  # k: keep (the default)
    assert list(cutoff.due(book, policies, 108.5, cutoff.nothing)) == []  # 2 x 9 s: 0.82
    (due,) = cutoff.due(book, policies, 109.5, cutoff.nothing)  # 2 x 10 s billed: 0.80
    assert due == ("c", Decimal("0.8000"), True)
    (again,) = cutoff.due(book, policies, 111.0, cutoff.nothing)  # still held: told again
    assert again[2] is False
    book.settle("c", HANGUP, "a", "0.1100")
    book.settle("c", HANGUP, "b", "0.1100")
    assert list(cutoff.due(book, policies, 112.0, cutoff.nothing)) == []  # nothing up now
    book.apply(payment("c", Decimal("1.00"), "", 1))  # a payment lifts it: a new suspension
    assert list(cutoff.due(book, policies, 113.0, cutoff.nothing)) == []
    assert not book.account("c").cut
    # the other nodes' calls count too (a fleet, as last read from Redis)
    book.reserve("c", "z", _per_second())
    book.answered("z", 200.0)
    (fleet,) = cutoff.due(book, policies, 200.0, lambda rel: Decimal("1.0"))
    assert fleet[0] == "c" and fleet[1] == Decimal("0.7700")  # 1.78 - 0.01 - 1.00
    assert list(cutoff.due(book, policies, 200.0, cutoff.nothing)) == []  # alone: 1.77


def test_the_keeper_cuts_at_answer_settle_and_its_period_with_its_clock(tmp_path: Path) -> None:
    from sbc.state import Answered, Credit

    path = tmp_path / "ledger.jsonl"
    add_payment(path, "c", "0.85", "")
    log = Log()
    keeper = Keeper(Book(), path, log, None, {"c": HANGUP})
    keeper.policies = lambda: {"c": HANGUP}
    cut: list[str] = []
    keeper.cut = cut.append
    now = [0.0]
    keeper.clock = lambda: now[0]
    assert keeper.execute(Credit(1, "a", "c", HANGUP, _per_second()), 0.0) is None
    keeper.execute(Answered("a", 0.0), 0.0)
    assert cut == []  # 0.85 - 0.01 (its first second)
    now[0] = 3.5
    keeper.check({"c": HANGUP})  # the period's look: 0.85 - 0.04
    assert cut == []
    now[0] = 4.5  # 5 s billed: 0.80, at suspend_at
    keeper.check({"c": HANGUP})
    assert cut == ["c"]
    (event,) = [f for e, f in log.events if e == "balance.hangup"]
    assert event == {"relationship": "c", "balance": "0.85", "running_balance": "0.8000"}
    keeper.settle([{"call_id": "a", "relationship": "c", "revenue": "0.0500"}], {"c": HANGUP})
    assert cut == ["c"] and keeper.book.account("c").balance == Decimal("0.8000")
    assert [e for e, _ in log.events].count("balance.suspended") == 1
    denied = keeper.execute(Credit(2, "b", "c", HANGUP, _per_second()), 5.0)
    assert denied is not None and denied.label == "balance_suspended"
    keeper.check({"c": HANGUP})
    assert cut == ["c"]  # once: nothing of it is up any more
    keep = Balance(suspend_at=0.80)  # on_suspend: keep (the default): never cut
    keeper.check({"c": keep})
    assert cut == ["c"] and keep.on_suspend == "keep" and not keep.disable_offsets


def test_the_relationships_calls_up_get_bye_on_both_legs(tmp_path: Path) -> None:
    lab = _rated_lab(tmp_path, "1,0.0060,,USA\n")
    lab.ctrl.wall_offset = WALL
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    ok = make_response(b1, 200, to_tag="y", headers=[("Contact", "<sip:v@127.0.0.1:5082>")])
    (a_ok,) = only(lab.feed(ok, t1), CALLER)
    assert isinstance(a_ok, Response)
    ack = a_bye(a_ok.to.tag).replace(b"BYE sip", b"ACK sip").replace(b"2 BYE", b"1 ACK")
    lab.feed(ack.replace(b"z9hG4bKb2", b"z9hG4bKack"), CALLER)
    lab.advance(30.0)
    assert end_calls(lab.ctrl, "other", lab.now) == 0
    assert end_calls(lab.ctrl, "carrier-a", lab.now) == 1
    out = lab.run()
    byes = [(m, t) for m, t in out if isinstance(m, Request) and m.method == "BYE"]
    assert sorted(t == CALLER for _, t in byes) == [False, True]
    assert end_calls(lab.ctrl, "carrier-a", lab.now) == 0  # ending already: once
    for bye, t in byes:
        lab.feed(make_response(bye, 200), t)
    (rec,) = lab.ctrl.pop_cdrs()
    assert (rec["hangup"], rec["reason"], rec["duration"]) == ("sbc", "balance_suspended", 30.0)
    assert t1 in (V1, V2)


def test_the_fleet_counts_a_calls_charge_and_vendor_cost_once_each(tmp_path: Path) -> None:
    """A call both sides of which are one relationship's, settled on this node and read
    back from the fleet's ledger: one charge and one vendor cost, each counted once (they
    share the call id: told apart by kind), and another node's counted as it comes."""
    import asyncio

    from sbc.fleetbook import FleetBook

    policies = {"both": OFFSET}
    keeper = Keeper(Book(), tmp_path / "ledger.jsonl", Log(), None, policies)

    async def run() -> FleetBook:
        fleet = FleetBook(keeper, "redis://127.0.0.1:1/0", Log(), lambda: policies)
        fleet._push = lambda items: asyncio.sleep(0)  # type: ignore[method-assign,assignment,return-value]
        keeper.fleet = fleet
        rec = {"call_id": "x", "relationship": "both", "revenue": "0.3000",
               "egress_trunk_group": "to-both", "cost": "0.1000"}  # fmt: skip
        keeper.settle([rec], policies, TGS)
        await asyncio.sleep(0)
        return fleet

    fleet = asyncio.run(run())
    acc = keeper.book.account("both")
    assert (acc.charged, acc.vendor_costs) == (Decimal("0.3000"), Decimal("0.1000"))
    assert sorted(fleet.local) == ["charge:x", "vendor_cost:x"]
    ours = [dict(e) for e in fleet.local.values()]
    theirs = charge("both", "y", Decimal("0.2000"), 0, "vendor_cost")  # another node's
    fleet._take([*ours, theirs])
    assert fleet.local == {}
    assert (acc.charged, acc.vendor_costs) == (Decimal("0.3000"), Decimal("0.3000"))
    assert acc.balance == 0


def test_a_call_still_ringing_is_cancelled_and_its_caller_gets_503(tmp_path: Path) -> None:
    """caller --INVITE--> sbc --INVITE--> vendor <--180--; the suspension: sbc CANCELs the
    attempt (RFC 3261 §9.1) and answers the caller 503; the CDR says balance_suspended."""
    lab = _rated_lab(tmp_path, "1,0.0060,,USA\n")
    lab.ctrl.wall_offset = WALL
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    lab.feed(make_response(b1, 180, to_tag="y"), t1)
    assert end_calls(lab.ctrl, "carrier-a", lab.now) == 1
    out = lab.run()
    cancels = [m for m in only(out, t1) if isinstance(m, Request) and m.method == "CANCEL"]
    assert len(cancels) == 1
    out += lab.feed(make_response(cancels[0], 200), t1)
    out += lab.feed(make_response(b1, 487, to_tag="y"), t1)
    finals = [m.status for m in only(out, CALLER) if isinstance(m, Response)]
    assert finals == [503], finals
    (rec,) = lab.ctrl.pop_cdrs()
    assert (rec["hangup"], rec["reason"], rec["status"]) == ("sbc", "balance_suspended", 503)


def test_what_we_owe_a_relationship_lets_it_call_unless_offsets_are_disabled() -> None:
    from sbc.state import Credit

    book = Book()
    book.apply(charge("both", "out", Decimal("0.6000"), 0, "vendor_cost"))  # nothing paid
    book.configure({"both": OFFSET})
    assert book.decide(Credit(1, "a", "both", OFFSET, _per_second()), 0.0)
    book.release("a")
    book.configure({"both": APART})
    assert not book.decide(Credit(2, "b", "both", APART, _per_second()), 0.0)
