"""Relationships' balances: payments minus rated charges, and the credit check at admission.

The Perimeter guide (Relationship > Balance, Payment): a customer's balance falls as its
calls are charged and rises with payments; at ``warn_at`` the NOC is told once, at
``suspend_at`` new calls are refused. Here:

- the balance is ``payments - charges + vendor costs``; a call's charge is its CDR's
  ``revenue`` (the ingress trunk group's deck), accrued when the call ends
  (``Book.settle``); a call we sent to one of the relationship's termination trunk groups
  credits it its ``cost`` (the guide's balance offsets, ``Book.offset``), unless
  ``disable_offsets`` keeps vendor costs apart (counted, not in the balance);
- admission holds, for every call of the relationship still up, what it will cost at
  least: its first increment until it is answered, then its billed cost so far plus the
  next increment (``Hold``, recomputed at each admission); a call is refused (403,
  ``balance_suspended``) when the balance less those holds is at or below
  ``suspend_at``, or would fall below it with this call's first increment; so many long
  calls cannot overrun the credit by more than one increment each;
- the ledger is a JSON-lines file (``node.balance.ledger``): one line per payment (written
  by `sbc balance add`) and per charge and vendor cost (written by the node). At start the
  book is rebuilt from it, each payment counted once by its id and each charge and vendor
  cost once by its call id; while running, the node reads the lines appended since
  (payments from the CLI) every second;
- with ``on_suspend: hangup`` the keeper ends the relationship's calls once its balance
  less their running cost reaches ``suspend_at`` (sbc.cutoff; ``Keeper.cut``).

One process keeps a node's book and writes its ledger (``Keeper``): the lone runtime, or
with ``node.workers`` > 1 the supervisor (sbc.supervisor). The call path only asks: a new
call's ``sbc.state.Credit`` (decided and its hold reserved at once, in that one process,
so two workers never admit against two copies of the credit), ``sbc.state.Answered`` when
it is answered, and its CDR when it ends (the worker sends the few fields settling needs,
``settlement``). A worker that dies takes its calls' holds with it, as it does their ports;
only the keeper writes charges, so a worker's death or restart doubles none. With the Redis
state store the keepers of a fleet's nodes share one book there (sbc.fleetbook).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from sbc import cutoff
from sbc.account import Account
from sbc.config.schema import Balance, TrunkGroup
from sbc.hold import ZERO, Hold, balance_hold
from sbc.state import Answered, Credit, Denied, Scope

__all__ = ["ZERO", "Account", "Book", "Hold", "Keeper", "Ledger", "balance_hold"]


def admits(free: Decimal, policy: Balance, first: Decimal) -> bool:
    """The credit check: ``free`` (the balance less every hold) stays above ``suspend_at``
    and does not fall below it with this call's first increment."""
    floor = Decimal(str(policy.suspend_at))
    return not (free <= floor or free - first < floor)


@dataclass(frozen=True, slots=True)
class Event:
    """Something to log (and post): balance.warning, balance.suspended, balance.restored."""

    name: str
    relationship: str
    balance: Decimal
    threshold: float


class Book:
    """The balances of this node's relationships. Pure: the ledger's I/O is ``Ledger``."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self._payments: set[str] = set()  # payment ids applied (few: one per payment)
        self._held_by: dict[str, str] = {}  # call id -> the relationship whose credit it holds

    def account(self, relationship: str) -> Account:
        acc = self.accounts.get(relationship)
        if acc is None:
            acc = self.accounts[relationship] = Account()
        return acc

    def apply(self, entry: dict[str, Any]) -> bool:
        """A ledger line (a payment, or a charge at start-up); False when not one or seen."""
        try:
            rel, amount = str(entry["relationship"]), Decimal(str(entry["amount"]))
        except (KeyError, InvalidOperation):
            return False
        if entry.get("type") == "payment":
            pid = str(entry.get("id", ""))
            if pid in self._payments:
                return False
            self._payments.add(pid)
            self.account(rel).paid += amount
            return True
        if entry.get("type") == "charge":
            self.account(rel).charged += amount
            return True
        if entry.get("type") == VENDOR_COST:
            self.account(rel).vendor_costs += amount
            return True
        return False

    def configure(self, policies: dict[str, Balance]) -> None:
        """Each relationship's offsets as its policy says (at start and after a reload)."""
        for rel, policy in policies.items():
            self.account(rel).offsets = not policy.disable_offsets

    def running(self, relationship: str, now: float) -> Decimal:
        """What the relationship's calls in progress have cost so far at ``now``."""
        holds = self.account(relationship).holds
        return sum((h.cost(now) for h in holds.values()), ZERO)

    def held(self, relationship: str, now: float) -> Decimal:
        """What the relationship's calls in progress hold at ``now``."""
        holds = self.account(relationship).holds
        return sum((h.amount(now) for h in holds.values()), ZERO)

    def admit(
        self, relationship: str, policy: Balance, first: Decimal, now: float, others: Decimal = ZERO
    ) -> bool:
        """May a new call from ``relationship`` start, its first increment costing
        ``first``, while ``others`` is held elsewhere (a fleet's other nodes)? (Then
        ``reserve`` holds it under the call's id.) The cost grows with the calls up: one
        hold per call, a few Decimal operations each."""
        acc = self.account(relationship)
        free = acc.balance - self.held(relationship, now) if acc.holds else acc.balance
        return admits(free - others, policy, first)

    def reset_totals(self) -> None:
        """Forget every payment and charge (not the holds): the fleet's ledger is about to
        be applied whole (sbc.fleetbook)."""
        for acc in self.accounts.values():
            acc.paid = acc.charged = acc.vendor_costs = ZERO
        self._payments.clear()

    def reserve(self, relationship: str, call_id: str, hold: Hold) -> None:
        self.account(relationship).holds[call_id] = hold
        self._held_by[call_id] = relationship

    def holder(self, call_id: str) -> str | None:
        """The relationship whose credit the call holds, if any."""
        return self._held_by.get(call_id)

    @property
    def holding(self) -> bool:
        """Some call holds credit."""
        return bool(self._held_by)

    def decide(self, credit: Credit, now: float, others: Decimal = ZERO) -> bool:
        """``admit``, and when admitted ``reserve`` the call's hold (if it is rated): one
        step, so no other admission comes between the check and the hold."""
        hold = credit.hold
        first = hold.first if hold else ZERO
        if not self.admit(credit.relationship, credit.policy, first, now, others):
            return False
        if hold is not None:
            self.reserve(credit.relationship, credit.lease, hold)
        return True

    def answered(self, call_id: str, at: float) -> None:
        """The call was answered at ``at``: from then on it holds its billed cost so far
        plus the next increment."""
        rel = self._held_by.get(call_id)
        if rel is None:
            return
        holds = self.account(rel).holds
        hold = holds.get(call_id)
        if hold is not None:
            holds[call_id] = replace(hold, answered_at=at)

    def release(self, call_id: str) -> None:
        """Drop a call's hold without a charge (its worker died with it: no record)."""
        rel = self._held_by.pop(call_id, None)
        if rel is not None:
            self.account(rel).holds.pop(call_id, None)

    def settle(
        self, relationship: str, policy: Balance | None, call_id: str, revenue: str | None
    ) -> tuple[Decimal, list[Event]]:
        """A call ended: its reservation goes, its revenue is charged. The amount charged
        (the ledger line to write unless 0) and the events it causes."""
        acc = self.accounts.get(relationship)
        if acc is None and policy is None:
            return ZERO, []
        acc = acc or self.account(relationship)
        acc.holds.pop(call_id, None)
        self._held_by.pop(call_id, None)
        amount = Decimal(revenue) if revenue else ZERO
        acc.charged += amount
        return amount, self.events(relationship, policy) if policy is not None else []

    def offset(
        self, relationship: str, policy: Balance, cost: str | None
    ) -> tuple[Decimal, list[Event]]:
        """A call we sent the relationship (as a vendor) ended: its cost is what we owe
        it. The amount (the ledger line to write unless 0) and the events it causes."""
        amount = Decimal(cost) if cost else ZERO
        self.account(relationship).vendor_costs += amount
        return amount, self.events(relationship, policy)

    def events(self, relationship: str, policy: Balance) -> list[Event]:
        """The threshold crossings since last asked, once each way."""
        acc = self.account(relationship)
        out = []
        bal = acc.balance
        warn, suspend = Decimal(str(policy.warn_at)), Decimal(str(policy.suspend_at))
        if bal <= warn and not acc.warned:
            acc.warned = True
            out.append(Event("balance.warning", relationship, bal, policy.warn_at))
        elif bal > warn and acc.warned:
            acc.warned = False
        if bal <= suspend and not acc.suspended:
            acc.suspended = True
            out.append(Event("balance.suspended", relationship, bal, policy.suspend_at))
        elif bal > suspend and acc.suspended:
            acc.suspended = False
            out.append(Event("balance.restored", relationship, bal, policy.suspend_at))
        return out


def payment(relationship: str, amount: Decimal, memo: str, at: float) -> dict[str, Any]:
    return {
        "type": "payment",
        "id": uuid.uuid4().hex,
        "relationship": relationship,
        "amount": str(amount),
        "memo": memo,
        "time": at,
    }


VENDOR_COST = "vendor_cost"  # a ledger line: what a call we sent the relationship cost


def charge(
    relationship: str, call_id: str, amount: Decimal, at: float, kind: str = "charge"
) -> dict[str, Any]:
    """A ledger line for an ended call: its ``charge`` (revenue) to the customer, or its
    ``vendor_cost`` owed to the vendor; each once per call id and kind."""
    return {
        "type": kind,
        "id": call_id,
        "relationship": relationship,
        "amount": str(amount),
        "time": at,
        "pid": os.getpid(),
    }


class Ledger:
    """The ledger file: whole lines appended with one write(2) on O_APPEND (as the CDR
    file), read back from an offset (only whole lines: a line being written waits)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0

    def append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def read_new(self) -> list[dict[str, Any]]:
        """The entries appended since the last read."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def rebuild(self, book: Book) -> int:
        """Apply the whole file to ``book`` (at start): each charge (and vendor cost) once
        per call id."""
        self.offset = 0
        calls: set[tuple[str, str]] = set()
        n = 0
        for entry in self.read_new():
            kind = str(entry.get("type"))
            if kind in ("charge", VENDOR_COST):
                key = (kind, str(entry.get("id", "")))
                if key in calls:
                    continue
                calls.add(key)
            n += book.apply(entry)
        return n


def balances(path: str | Path, policies: dict[str, Balance] | None = None) -> dict[str, Account]:
    """The balances the ledger at ``path`` holds (`sbc balance show`)."""
    book = Book()
    Ledger(path).rebuild(book)
    book.configure(policies or {})
    return book.accounts


def add_payment(path: str | Path, relationship: str, amount: str, memo: str) -> dict[str, Any]:
    """`sbc balance add`: one payment (negative: a debit) appended to the ledger."""
    entry = payment(relationship, Decimal(amount), memo, time.time())
    Ledger(path).append([entry])
    return entry


def suspended(relationship: str) -> Denied:
    """The verdict on a call whose relationship is out of credit (403 balance_suspended)."""
    return Denied(Scope("rel:" + relationship, 0, 0), "balance")


SETTLED = ("call_id", "relationship", "revenue", "cost")


def settlement(
    records: list[dict[str, Any]],
    trunk_groups: Mapping[str, TrunkGroup],
    policies: dict[str, Balance],
) -> list[dict[str, Any]]:
    """What settling needs of ended calls' records (a worker sends them its node's keeper):
    call id, the customer's relationship and revenue, and ``vendor``: the relationship of
    the answered attempt's trunk group when it keeps a balance (its ``cost`` is offset)."""
    out = []
    for r in records:
        egress = trunk_groups.get(r.get("egress_trunk_group") or "")
        vendor = egress.relationship if egress is not None else ""
        if r.get("relationship") or vendor in policies:
            settled = {k: r.get(k) for k in SETTLED}
            settled["vendor"] = vendor if vendor in policies else ""
            out.append(settled)
    return out


Reply = Callable[[int, Denied | None], None]  # a Credit's verdict (token, denied), later


class Fleet(Protocol):
    """A fleet's shared book (sbc.fleetbook, the Redis state store), as the keeper uses it."""

    def credit(self, cmd: Credit, reply: Reply) -> None: ...

    def answered(self, call_id: str) -> None: ...

    def push(self, items: list[tuple[str, str, dict[str, Any] | None]]) -> None: ...

    def running(self, relationship: str) -> Decimal: ...  # the other nodes' calls' cost so far


class Keeper:
    """The node's book and its ledger, in the one process that keeps them (the lone runtime,
    or the supervisor of workers, whom they ask over their links): rebuild at start, decide
    each new call's credit and hold it (``submit``), a charge line per ended call of a
    relationship with a balance, payments picked up as they are appended, and the threshold
    events logged (and posted to the balance's webhook). With a ``fleet`` (Redis), the
    fleet's shared book decides and its ledger feeds this one (sbc.fleetbook)."""

    def __init__(
        self, book: Book, path: str | Path, log: Any, post: Any, policies: dict[str, Balance]
    ) -> None:
        self.book, self.log, self.post = book, log, post
        self.ledger = Ledger(path)
        self.fleet: Fleet | None = None
        self.clock: Callable[[], float] = time.monotonic  # the holds' (a fleet's: time.time)
        self.cut: Callable[[str], None] = _nobody  # ends a relationship's calls (on_suspend)
        self.policies: Callable[[], dict[str, Balance]] = lambda: policies  # the snapshot's
        applied = self.ledger.rebuild(book)
        book.configure(policies)
        for rel, policy in policies.items():
            book.events(rel, policy)  # the thresholds as they stand: said before the restart
        log.info(
            "balance.loaded",
            ledger=str(self.ledger.path),
            entries=applied,
            balances={r: str(a.balance) for r, a in book.accounts.items()},
        )

    def submit(
        self, cmd: Credit | Answered, now: float, reply: Reply
    ) -> tuple[bool, Denied | None]:
        """As a state store's ``submit``: (decided now?, the verdict); a fleet's comes later
        through ``reply``."""
        if self.fleet is None:
            return True, self.execute(cmd, now)
        if isinstance(cmd, Credit):
            self.fleet.credit(cmd, reply)
            return False, None
        self.fleet.answered(cmd.lease)
        self.check(self.policies(), self.book.holder(cmd.lease))
        return True, None

    def check(self, policies: dict[str, Balance], only: str | None = "") -> None:
        """on_suspend: hangup: end the calls of each relationship (or ``only`` this one;
        None: none) whose balance less the running cost of its calls in progress (here
        and, in a fleet, on the other nodes) has reached suspend_at (sbc.cutoff)."""
        if only is None:
            return
        if only:
            policy = policies.get(only)
            policies = {only: policy} if policy is not None else {}
        running = self.fleet.running if self.fleet is not None else cutoff.nothing
        for rel, standing, first in cutoff.due(self.book, policies, self.clock(), running):
            if first:
                balance = str(self.book.account(rel).balance)
                self.log.warning("balance.hangup", relationship=rel, balance=balance,
                                 running_balance=str(standing))  # fmt: skip
            self.cut(rel)

    def execute(self, cmd: Credit | Answered, now: float) -> Denied | None:
        """A call path's question (``Credit``: the verdict) or news (``Answered``), at the
        keeper's own ``now``."""
        if isinstance(cmd, Answered):
            self.book.answered(cmd.lease, now)
            self.check(self.policies(), self.book.holder(cmd.lease))
            return None
        if self.book.decide(cmd, now):
            return None
        return suspended(cmd.relationship)

    def forget(self, call_ids: set[str]) -> None:
        """A worker died with these calls: their holds go (as their ports do)."""
        items: list[tuple[str, str, dict[str, Any] | None]] = []
        for call_id in call_ids:
            rel = self.book.holder(call_id)
            self.book.release(call_id)
            if rel is not None:
                items.append((rel, call_id, None))
        if self.fleet is not None and items:
            self.fleet.push(items)

    def settle(
        self,
        records: list[dict[str, Any]],
        policies: dict[str, Balance],
        trunk_groups: Mapping[str, TrunkGroup] | None = None,
    ) -> None:
        """Ended calls' records (whole CDRs with ``trunk_groups``, else ``settlement``'s):
        release their reservations, charge their revenue, offset their vendor's cost."""
        if not policies and not self.book.holding:
            return
        if trunk_groups is not None:
            records = settlement(records, trunk_groups, policies)
        self.book.configure(policies)
        lines = []
        items: list[tuple[str, str, dict[str, Any] | None]] = []  # for the fleet
        now = time.time()
        for rec in records:
            rel, call_id = rec.get("relationship") or "", rec["call_id"]
            vendor = rec.get("vendor") or ""
            vendor_policy = policies.get(vendor)
            if vendor_policy is not None:  # the guide's balance offsets: what we owe it
                amount, events = self.book.offset(vendor, vendor_policy, rec.get("cost"))
                if amount:
                    owed = charge(vendor, call_id, amount, now, VENDOR_COST)
                    lines.append(owed)
                    items.append((vendor, call_id, owed))
                self.say(events, vendor_policy)
            held = self.book.holder(call_id) is not None
            policy = policies.get(rel)
            if policy is None:  # no balance kept (any more): nothing charged
                self.book.release(call_id)
                if held:
                    items.append((rel, call_id, None))
                continue
            amount, events = self.book.settle(rel, policy, call_id, rec.get("revenue"))
            line = charge(rel, call_id, amount, now) if amount else None
            if line is not None:
                lines.append(line)
            if line is not None or held:
                items.append((rel, call_id, line))
            self.say(events, policy)
        try:
            self.ledger.append(lines)
        except OSError as e:
            self.log.error("balance.ledger_failed", path=str(self.ledger.path), error=str(e))
        if self.fleet is not None and items:
            self.fleet.push(items)
        for rel in {str(r.get("relationship") or "") for r in records} & policies.keys():
            self.check(policies, rel)  # its other calls' running cost with this charge

    def poll(self, policies: dict[str, Balance]) -> None:
        """Lines appended by others since the last look: payments (`sbc balance add`)."""
        pid = os.getpid()
        entries = [e for e in self.ledger.read_new() if e.get("pid") != pid]  # ours: counted
        self.take(entries, policies)

    def take(self, entries: list[dict[str, Any]], policies: dict[str, Balance]) -> None:
        """Apply payments and others' charges; log payments and the thresholds crossed."""
        touched = set()
        for entry in entries:
            if self.book.apply(entry):
                touched.add(str(entry.get("relationship")))
                if entry.get("type") == "payment":
                    self.log.info(
                        "balance.payment",
                        relationship=entry.get("relationship"),
                        amount=entry.get("amount"),
                        memo=entry.get("memo", ""),
                        balance=str(self.book.account(str(entry["relationship"])).balance),
                    )
        for rel in touched:
            policy = policies.get(rel)
            if policy is not None:
                self.say(self.book.events(rel, policy), policy)

    def say(self, events: list[Event], policy: Balance | None) -> None:
        for ev in events:
            fields = {
                "relationship": ev.relationship,
                "balance": str(ev.balance),
                "threshold": ev.threshold,
            }
            self.log.warning(ev.name, **fields)
            if policy is not None and policy.webhook:
                self.post(policy.webhook, {"event": ev.name, **fields, "time": time.time()})

    async def run(self, policies: Any, period: float = 1.0) -> None:
        """Poll the ledger every ``period`` s; ``policies()`` gives the snapshot's. (With a
        fleet its heartbeat reads the fleet's ledger instead.)"""
        import asyncio

        self.policies = policies
        while True:
            await asyncio.sleep(period)
            current = policies()
            self.book.configure(current)  # a reload may have changed disable_offsets
            if self.fleet is None:
                try:
                    self.poll(current)
                except OSError as e:
                    path = str(self.ledger.path)
                    self.log.error("balance.ledger_failed", path=path, error=str(e))
            self.check(current)  # long calls' running cost crossing suspend_at


def _nobody(relationship: str) -> None:
    """No call path to end calls in (`sbc balance`, tests)."""
