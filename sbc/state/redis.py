"""The redis backend: ports, CPS and registrations shared by every node on one Redis.

Each scope (trunk group or capacity group) is two sorted sets:

    sbc:ports:<scope>   member = lease, score = expiry (ms, Redis clock)
    sbc:cps:<scope>     member = lease, score = grant time (ms): a sliding one-second window

A grant is one Lua script, so it is atomic across the fleet: drop expired leases and old
starts, check every scope, and only if all pass add the lease to all of them. Time is Redis's
own (``TIME``), so node clocks never disagree about a window. A node renews all its leases
every ``lease_ttl / 3`` seconds (and announces itself in ``sbc:nodes``); a node that dies
stops renewing, and its calls' ports come back within ``lease_ttl``.

Redis unreachable (refused, reset, or slower than ``timeout``): the node logs it at error
level and decides alone with its local mirror (sbc.state.memory), which holds this node's own
leases and starts, against each limit scaled by its share (1 / the number of live nodes it
last saw). The heartbeat keeps trying; when Redis answers again the node logs it, writes all
its live leases back (a restarted Redis starts empty) and decides through Redis again.

Registration bindings live in the hash ``sbc:reg`` (field ``<trunk group> <username>
<contact>``: an account may hold several contacts), are written through on every REGISTER
and read back into each node's mirror on every heartbeat. A field gone from the hash since
the last heartbeat was removed by another node (an unregister, RFC 3261 §10.2.2): the
mirror forgets it then, not when it would have expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from sbc.state import Acquire, Bind, Binding, Denied, Release, Scope, StateCommand
from sbc.state.memory import MemoryStore

ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, ttl = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 2
for i = 1, n do
  local pk, ck = KEYS[2 * i - 1], KEYS[2 * i]
  local ports, cps = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', pk, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', now - 1000)
  if ports > 0 and not redis.call('ZSCORE', pk, lease) and redis.call('ZCARD', pk) >= ports then
    return {i, 'ports'}
  end
  if cps > 0 and redis.call('ZCARD', ck) >= cps then
    return {i, 'cps'}
  end
end
for i = 1, n do
  redis.call('ZADD', KEYS[2 * i - 1], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[2 * i - 1], ttl)
  redis.call('ZADD', KEYS[2 * i], now, lease)
  redis.call('PEXPIRE', KEYS[2 * i], 2000)
end
return {0, ''}
"""

# KEYS[1] = sbc:nodes, KEYS[2..] = ports keys; ARGV = node, ttl, then one lease per ports key.
# Leases are written back unconditionally: after an outage the fleet shares again what its
# nodes admitted alone, even if that is over a limit for a while (new calls wait).
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return redis.call('ZCARD', KEYS[1])
"""

NODES = "sbc:nodes"
REGISTRATIONS = "sbc:reg"


def _ports_key(scope: Scope) -> str:
    return "sbc:ports:" + scope.key


def _cps_key(scope: Scope) -> str:
    return "sbc:cps:" + scope.key


class RedisStore:
    """Decides Acquires through Redis; falls back to ``memory`` while Redis is away."""

    def __init__(
        self,
        url: str,
        *,
        memory: MemoryStore,
        on_verdict: Callable[[int, Denied | None], None],
        now: Callable[[], float],
        log: Any,
        lease_ttl: float = 30.0,
        timeout: float = 0.5,
        node_id: str = "",
        on_rtt: Callable[[str, float], None] | None = None,
    ) -> None:
        self.memory = memory
        self.on_verdict = on_verdict
        self.now = now
        self.log = log
        self.ttl_ms = int(lease_ttl * 1000)
        self.period = lease_ttl / 3
        self.timeout = timeout
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}"
        self.url = url
        self.on_rtt = on_rtt  # (operation, seconds) of each answered round trip: metrics
        # One immediate retry on a dropped connection: after Redis restarts, every pooled
        # connection is dead and the first command on each would otherwise fail.
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._acquire = self.client.register_script(ACQUIRE)
        self._renew = self.client.register_script(RENEW)
        self.up = False
        self.nodes = 1  # live nodes last seen: a node alone takes 1/nodes of each limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._fields: set[str] = set()  # sbc:reg's fields at the last heartbeat

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.beat()
        if not self.up:
            self.log.error(
                "state.redis_down", url=self.url, error="unreachable at start", share=self.share
            )
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat_forever())

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    @property
    def share(self) -> float:
        return 1.0 / max(1, self.nodes)

    def _down(self, error: BaseException) -> None:
        if self.up:
            self.up = False
            self.log.error(
                "state.redis_down",
                url=self.url,
                error=f"{type(error).__name__}: {error}",
                fallback="local limits",
                share=round(self.share, 3),
            )

    # --- commands -----------------------------------------------------------------------------

    def submit(self, cmd: StateCommand, now: float) -> tuple[bool, Denied | None]:
        """Carry out a command. Returns (decided, verdict): decided now (Redis is away, or a
        Release), or later through ``on_verdict``."""
        if isinstance(cmd, Bind):
            if self.up:
                for b in cmd.bindings:
                    self._spawn(self._save(b))
            return True, None
        if isinstance(cmd, Release):
            self.memory.release(cmd.lease)
            if self.up:
                self._spawn(self._release(cmd.lease, cmd.scopes))
            return True, None
        if not isinstance(cmd, Acquire):  # balances: the node's keeper's (sbc.runtime)
            return True, None
        if not self.up:
            return True, self.memory.acquire(cmd.lease, cmd.scopes, now, self.share)
        self._spawn(self._acquire_shared(cmd))
        return False, None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _acquire_shared(self, cmd: Acquire) -> None:
        keys: list[str] = []
        args: list[Any] = [cmd.lease, self.ttl_ms]
        for scope in cmd.scopes:
            keys += [_ports_key(scope), _cps_key(scope)]
            args += [scope.ports, scope.cps]
        started = self.now()
        try:
            index, limit = await asyncio.wait_for(self._acquire(keys=keys, args=args), self.timeout)
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)
            denied = self.memory.acquire(cmd.lease, cmd.scopes, self.now(), self.share)
        else:
            if self.on_rtt is not None:
                self.on_rtt("acquire", self.now() - started)
            index = int(index)
            if index:
                denied = Denied(cmd.scopes[index - 1], limit.decode())
            else:
                denied = None
                self.memory.record(cmd.lease, cmd.scopes, self.now())
        self.on_verdict(cmd.token, denied)

    async def _release(self, lease: str, scopes: tuple[Scope, ...]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.zrem(_ports_key(scope), lease)
                await asyncio.wait_for(pipe.execute(), self.timeout)
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)  # the lease expires by itself: it is no longer renewed

    # --- heartbeat: leases, fleet size, bindings ----------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self.beat()

    async def beat(self) -> None:
        """Renew this node's leases, count the live nodes, pull the fleet's bindings."""
        keys = [NODES]
        args: list[Any] = [self.node_id, self.ttl_ms]
        for lease, scopes in self.memory.held().items():
            for scope in scopes:
                keys.append(_ports_key(scope))
                args.append(lease)
        started = self.now()
        try:
            nodes = await asyncio.wait_for(self._renew(keys=keys, args=args), self.timeout * 4)
            if self.on_rtt is not None:
                self.on_rtt("renew", self.now() - started)
            raw = await asyncio.wait_for(self.client.hgetall(REGISTRATIONS), self.timeout * 4)
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)
            return
        self.nodes = int(nodes)
        if not self.up:
            self.up = True
            self.log.warning(
                "state.redis_up", url=self.url, nodes=self.nodes, leases=len(self.memory.held())
            )
        stale = self._merge_bindings(raw)
        if stale:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.client.hdel(REGISTRATIONS, *stale), self.timeout)

    def _merge_bindings(self, raw: dict[Any, Any]) -> list[Any]:
        """Bring the fleet's live bindings into the mirror, and forget those another node
        removed since the last heartbeat; return the expired fields."""
        wall = time.time()
        stale = []
        fields = {n.decode() if isinstance(n, bytes) else str(n) for n in raw}
        for gone in self._fields - fields:  # unregistered at another node
            tg, username, contact = [*gone.split(" ", 2), "", ""][:3]
            self.memory.unbind(tg, username, contact)
        self._fields = fields
        for name, value in raw.items():
            try:
                b = Binding(**json.loads(value))
            except (ValueError, TypeError):
                stale.append(name)
                continue
            if b.expires_at > wall:
                self.memory.bind(b)
            else:
                stale.append(name)
        self.memory.prune(wall)
        return stale

    async def _save(self, b: Binding) -> None:
        field = f"{b.trunk_group} {b.username} {b.contact}"
        try:
            if b.expires_at <= time.time():
                await asyncio.wait_for(self.client.hdel(REGISTRATIONS, field), self.timeout)
            else:
                fields = dataclasses.asdict(b)
                del fields["worker"]  # this node's own (sbc.worker); older nodes know no such key
                value = json.dumps(fields)
                await asyncio.wait_for(self.client.hset(REGISTRATIONS, field, value), self.timeout)
        except (RedisError, OSError, TimeoutError) as e:
            self._down(e)
