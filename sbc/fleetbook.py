"""Balances shared by a fleet through the Redis state store (``node.state.backend: redis``).

Each node's keeper (sbc.balance.Keeper: its supervisor, or its lone process) still decides
with exact Decimal arithmetic in Python; Redis holds what the fleet must agree on:

    sbc:bal:epoch         a random id, set when the fleet's ledger is first written: a Redis
                          that comes back empty gets a new one, and each node pushes its
                          journal again, then mirrors the fleet's ledger whole
    sbc:bal:ledger        list: the fleet's ledger, JSON entries as in the journal file
    sbc:bal:ids           set: ``payment:<id>``, ``charge:<call id>``: each appended once
    sbc:bal:holds:<rel>   hash: call id -> its hold (JSON, sbc.hold)
    sbc:bal:exp:<rel>     sorted set: call id -> expiry (ms, Redis's clock); its node renews
                          it every ``lease_ttl / 3``: a dead node's holds go within lease_ttl
    sbc:bal:ans:<rel>     hash: call id -> when it was answered (s, Redis's clock)
    sbc:bal:ver:<rel>     counter: bumped by every change to the relationship's holds or
                          entries

A Credit is two round trips: READ returns the relationship's holds and the ledger's new
entries (the node's mirror takes them) with the version; the node decides; RESERVE writes
the hold only if the version is unchanged, else the node reads again (``TRIES`` times, then
refuses rather than risk an overrun). Charges and payments are appended by APPEND, once per
id, which also releases the call's hold. The node's journal file (``node.balance.ledger``)
stays durable: its own charges are written there first, and every entry it reads from the
fleet is copied there, so any one node can give an emptied Redis the whole ledger back.

Redis away: the node decides alone with its mirror, its own holds and the others' holds as
last read (logged ``balance.fleet_down``); charges wait and are pushed when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sbc.balance import ZERO, Book, Keeper, Ledger, Reply, admits, payment, suspended
from sbc.config.schema import Balance
from sbc.hold import Hold
from sbc.state import Credit

TRIES = 8  # optimistic reads before a contended Credit is refused
PREFIX = "sbc:bal:"
EPOCH, LEDGER, IDS = PREFIX + "epoch", PREFIX + "ledger", PREFIX + "ids"

# KEYS: epoch, ledger, holds, exp, ans, ver; ARGV: offset, a new epoch (used if none yet)
READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'NX')
local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for _, id in ipairs(dead) do
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[5], id)
end
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('INCR', KEYS[6])
end
return {now, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[6]) or '0',
        redis.call('LRANGE', KEYS[2], tonumber(ARGV[1]), -1),
        redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[5])}
"""
# KEYS: holds, exp, ver; ARGV: version read, call id, hold JSON, ttl (ms)
RESERVE = """
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[2])
redis.call('INCR', KEYS[3])
return 1
"""
# KEYS: epoch, ledger, ids, ver, holds, exp, ans; ARGV: a new epoch, the entry's id key
# ('' = none), the entry, the call whose hold goes ('' = none)
APPEND = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
if ARGV[2] ~= '' and redis.call('SADD', KEYS[3], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('HDEL', KEYS[5], ARGV[4])
  redis.call('ZREM', KEYS[6], ARGV[4])
  redis.call('HDEL', KEYS[7], ARGV[4])
end
redis.call('INCR', KEYS[4])
return 1
"""
# KEYS: holds, ans, ver; ARGV: call id
ANSWER = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], ARGV[1], t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
redis.call('INCR', KEYS[3])
return 1
"""
# KEYS: exp; ARGV: ttl (ms), then call ids (only those still held are renewed)
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return 1
"""

Item = tuple[str, str, dict[str, Any] | None]  # (relationship, call id, entry or None)


def rel_keys(rel: str) -> list[str]:
    """holds, exp, ans, ver of a relationship."""
    return [f"{PREFIX}{kind}:{rel}" for kind in ("holds", "exp", "ans", "ver")]


def entry_key(entry: dict[str, Any]) -> str:
    return f"{entry.get('type')}:{entry.get('id')}"


def hold_json(hold: Hold) -> str:
    return json.dumps(
        [str(hold.first), str(hold.rate), hold.first_seconds, hold.next_seconds,
         hold.propagation_delay, str(hold.quantum)]
    )  # fmt: skip


def hold_of(raw: bytes | str, answered: bytes | str | None) -> Hold:
    first, rate, fs, ns, pd, q = json.loads(raw)
    at = float(answered) if answered is not None else None
    return Hold(Decimal(first), Decimal(rate), int(fs), int(ns), bool(pd), Decimal(q), at)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {_s(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FleetBook:
    """The keeper's side of the fleet's book (sbc.balance.Fleet)."""

    def __init__(
        self,
        keeper: Keeper,
        url: str,
        log: Any,
        policies: Callable[[], dict[str, Balance]],
        lease_ttl: float = 30.0,
        timeout: float = 0.5,
    ) -> None:
        self.keeper, self.book, self.log, self.policies = keeper, keeper.book, log, policies
        self.url, self.timeout = url, timeout
        self.ttl_ms = int(lease_ttl * 1000)
        self.renew_every = lease_ttl / 3
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._read = self.client.register_script(READ)
        self._reserve = self.client.register_script(RESERVE)
        self._append = self.client.register_script(APPEND)
        self._answer = self.client.register_script(ANSWER)
        self._renew = self.client.register_script(RENEW)
        self.epoch: str | None = None  # the fleet ledger's we mirror; None: not yet
        self.offset = 0  # entries of it taken
        self.mine: dict[str, str] = {}  # our holds in Redis: call id -> relationship
        self.others: dict[str, Decimal] = {}  # other nodes' holds as last read, by relationship
        self.pending: list[Item] = []  # pushes Redis did not take yet
        # our charges and vendor costs not yet read back: entry key -> the entry
        self.local: dict[str, dict[str, Any]] = {}
        # other nodes' holds as last read, by relationship, and Redis's clock less ours
        self.theirs: dict[str, dict[str, Hold]] = {}
        self.skew = 0.0
        self.up = True
        self._locks: dict[str, asyncio.Lock] = {}  # one Credit at a time per relationship
        self._reading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.sync()
        self._spawn(self._beat_forever())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    @property
    def new_epoch(self) -> str:
        """A fresh id for Redis to keep if it has none (each time: a Redis emptied twice
        must not get back the id we saw before)."""
        return uuid.uuid4().hex

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _down(self, error: BaseException) -> None:
        if self.up:
            self.up = False
            self.log.error("balance.fleet_down", url=self.url, error=f"{type(error).__name__}")

    async def _beat_forever(self, period: float = 1.0) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(period)
            for rel in list(self.policies()) or [""]:  # the other nodes' holds, for a fallback
                read = await self.sync(rel)
                if read is None:
                    break
                if rel:
                    self._note_others(rel, *read)
            if self.up and time.monotonic() - renewed >= self.renew_every:
                renewed = time.monotonic()
                await self._renew_mine()

    async def _renew_mine(self) -> None:
        by_rel: dict[str, list[str]] = {}
        for call_id, rel in self.mine.items():
            by_rel.setdefault(rel, []).append(call_id)
        try:
            for rel, ids in by_rel.items():
                await self._call(self._renew, [rel_keys(rel)[1]], [self.ttl_ms, *ids])
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await asyncio.wait_for(script(keys=keys, args=args), self.timeout * 4)

    # --- the mirror ---------------------------------------------------------------------------

    async def sync(self, rel: str = "") -> tuple[float, str, dict[str, Hold]] | None:
        """Take the fleet ledger's new entries (and push what waits); with ``rel``, also
        return its holds: (Redis's now in s, the version, call id -> hold). None: Redis
        is away. One at a time: two reads from one offset would take its entries twice."""
        async with self._reading:
            return await self._sync(rel)

    async def _sync(self, rel: str) -> tuple[float, str, dict[str, Hold]] | None:
        try:
            if self.pending:
                items, self.pending = self.pending, []
                try:
                    await self._push_now(items)
                except BaseException:
                    self.pending = items + self.pending
                    raise
            reply = await self._read_rel(rel)
            if _s(reply[1]) != self.epoch:  # first look, or Redis came back empty
                await self._resync()
                reply = await self._read_rel(rel)
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)
            return None
        if not self.up:
            self.up = True
            self.log.warning("balance.fleet_up", url=self.url, entries=self.offset)
        now_ms, _, version, entries, holds, answered = reply
        self._take([json.loads(x) for x in entries])
        ans = _pairs(answered)
        found = {cid: hold_of(raw, ans.get(cid)) for cid, raw in _pairs(holds).items()}
        return int(now_ms) / 1000, _s(version), found

    async def _read_rel(self, rel: str) -> Any:
        holds, exp, ans, ver = rel_keys(rel)
        keys = [EPOCH, LEDGER, holds, exp, ans, ver]
        return await self._call(self._read, keys, [self.offset, self.new_epoch])

    async def _resync(self) -> None:
        """Give the fleet our journal (each entry lands once), then mirror its ledger whole."""
        journal = Ledger(self.keeper.ledger.path)
        mine = journal.read_new()
        for i in range(0, len(mine), 500):
            async with self.client.pipeline(transaction=False) as pipe:
                for entry in mine[i : i + 500]:
                    args = [self.new_epoch, entry_key(entry), json.dumps(entry), ""]
                    rel = str(entry.get("relationship", ""))
                    keys = [EPOCH, LEDGER, IDS, rel_keys(rel)[3], *rel_keys(rel)[:3]]
                    await self._append(keys=keys, args=args, client=pipe)
                await asyncio.wait_for(pipe.execute(), self.timeout * 8)
        raw = await asyncio.wait_for(self.client.lrange(LEDGER, 0, -1), self.timeout * 8)
        epoch = await asyncio.wait_for(self.client.get(EPOCH), self.timeout)
        fleet = [json.loads(x) for x in raw]
        known = {entry_key(e) for e in mine}
        self.book.reset_totals()
        for entry in fleet:
            self.book.apply(entry)
            self.local.pop(entry_key(entry), None)
        for entry in self.local.values():  # ours on their way: counted once
            self.book.apply(entry)
        new = [e for e in fleet if entry_key(e) not in known]
        self._journal(new)
        first = self.epoch is None
        self.epoch, self.offset = (_s(epoch) if epoch is not None else None), len(fleet)
        for rel, policy in self.policies().items():  # thresholds the fleet's entries crossed
            events = self.book.events(rel, policy)
            if not first:  # at start: as they stand, said before
                self.keeper.say(events, policy)
        balances = {r: str(a.balance) for r, a in self.book.accounts.items()}
        self.log.info(
            "balance.fleet_synced", entries=len(fleet), pushed=len(mine), balances=balances
        )

    def _take(self, entries: list[dict[str, Any]]) -> None:
        self.offset += len(entries)
        theirs = []
        for entry in entries:
            if self.local.pop(entry_key(entry), None) is not None:
                continue  # ours: counted (and journaled) when the call was settled
            theirs.append(entry)
        if theirs:
            self.keeper.take(theirs, self.policies())
            self._journal(theirs)

    def _journal(self, entries: list[dict[str, Any]]) -> None:
        try:
            self.keeper.ledger.append(entries)
        except OSError as e:
            self.log.error("balance.ledger_failed", path=str(self.keeper.ledger.path), error=str(e))

    # --- what the keeper asks (sbc.balance.Fleet) ---------------------------------------------

    def credit(self, cmd: Credit, reply: Reply) -> None:
        self._spawn(self._credit(cmd, reply))

    async def _credit(self, cmd: Credit, reply: Reply) -> None:
        """One relationship's Credits at a time on this node: only other nodes' can race."""
        lock = self._locks.get(cmd.relationship)
        if lock is None:
            lock = self._locks[cmd.relationship] = asyncio.Lock()
        async with lock:
            await self._decide(cmd, reply)

    async def _decide(self, cmd: Credit, reply: Reply) -> None:
        rel, hold = cmd.relationship, cmd.hold
        first = hold.first if hold is not None else ZERO
        for _ in range(TRIES):
            read = await self.sync(rel)
            if read is None:  # alone: our mirror, our holds, the others' as last read
                others = self.others.get(rel, ZERO)
                ok = self.book.decide(cmd, time.time(), others)
                reply(cmd.token, None if ok else suspended(rel))
                return
            now, version, holds = read
            held = sum((h.amount(now) for h in holds.values()), ZERO)
            self._note_others(rel, now, version, holds)
            if not admits(self.book.account(rel).balance - held, cmd.policy, first):
                reply(cmd.token, suspended(rel))
                return
            if hold is None:  # unrated: nothing to hold
                reply(cmd.token, None)
                return
            try:
                holds_key, exp_key, _, ver_key = rel_keys(rel)
                keys = [holds_key, exp_key, ver_key]
                args = [version, cmd.lease, hold_json(hold), self.ttl_ms]
                reserved = await self._call(self._reserve, keys, args)
            except (RedisError, OSError, TimeoutError) as e:
                self._down(e)
                continue
            if reserved:
                self.mine[cmd.lease] = rel
                self.book.reserve(rel, cmd.lease, replace(hold, answered_at=None))
                reply(cmd.token, None)
                return
        reply(cmd.token, suspended(rel))  # contended past TRIES: refuse, never overrun

    def _note_others(self, rel: str, now: float, version: str, holds: dict[str, Hold]) -> None:
        theirs = {cid: h for cid, h in holds.items() if cid not in self.mine}
        self.others[rel] = sum((h.amount(now) for h in theirs.values()), ZERO)
        self.theirs[rel], self.skew = theirs, now - time.time()

    def running(self, relationship: str) -> Decimal:
        """What the other nodes' calls of the relationship have cost so far (as last read,
        at Redis's clock now: sbc.cutoff)."""
        now = time.time() + self.skew
        return sum((h.cost(now) for h in self.theirs.get(relationship, {}).values()), ZERO)

    def answered(self, call_id: str) -> None:
        self.book.answered(call_id, time.time())  # our mirror's (used while Redis is away)
        rel = self.mine.get(call_id)
        if rel is not None:
            self._spawn(self._answered(rel, call_id))

    async def _answered(self, rel: str, call_id: str) -> None:
        holds, _, ans, ver = rel_keys(rel)
        try:
            await self._call(self._answer, [holds, ans, ver], [call_id])
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)

    def push(self, items: list[Item]) -> None:
        """Charges to append and holds to release (the keeper has counted them)."""
        for _, call_id, entry in items:
            self.mine.pop(call_id, None)
            if entry is not None:
                self.local[entry_key(entry)] = entry
        self._spawn(self._push(items))

    async def _push(self, items: list[Item]) -> None:
        try:
            await self._push_now(items)
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)
            self.pending += items  # the next heartbeat tries again

    async def _push_now(self, items: list[Item]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for rel, call_id, entry in items:
                holds, exp, ans, ver = rel_keys(rel)
                key = entry_key(entry) if entry is not None else ""
                body = json.dumps(entry) if entry is not None else ""
                args = [self.new_epoch, key, body, call_id]
                await self._append(keys=[EPOCH, LEDGER, IDS, ver, holds, exp, ans], args=args,
                                   client=pipe)  # fmt: skip
            await asyncio.wait_for(pipe.execute(), self.timeout * 4)


def attach(
    keeper: Keeper, state: Any, log: Any, policies: Callable[[], dict[str, Balance]]
) -> FleetBook | None:
    """The fleet's book for a keeper, when the state store is Redis (sbc.runtime,
    sbc.supervisor); the caller starts and stops it."""
    if state.backend != "redis":
        return None
    fleet = FleetBook(keeper, state.url, log, policies, state.lease_ttl, state.timeout)
    keeper.fleet = fleet
    keeper.clock = time.time  # the fleet's holds are answered at Redis's (wall) clock
    return fleet


# --- `sbc balance add | show` against the fleet ----------------------------------------------


def add_payment(url: str, relationship: str, amount: str, memo: str) -> dict[str, Any]:
    """`sbc balance add` with the Redis state store: one payment on the fleet's ledger (each
    node copies it into its journal)."""
    entry = payment(relationship, Decimal(amount), memo, time.time())
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    holds, exp, ans, ver = rel_keys(relationship)
    script = client.register_script(APPEND)
    keys = [EPOCH, LEDGER, IDS, ver, holds, exp, ans]
    script(keys=keys, args=[uuid.uuid4().hex, entry_key(entry), json.dumps(entry), ""])
    return entry


def balances(url: str) -> Book:
    """The fleet ledger's balances (`sbc balance show`), and the holds up now."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    book = Book()
    for raw in client.lrange(LEDGER, 0, -1):
        book.apply(json.loads(raw))
    return book
