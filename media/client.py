"""The ng client: bencode dictionaries over UDP to one or more rtpengine nodes.

Wire: ``<cookie> <bencoded dict>``; the reply carries the same cookie. rtpengine caches replies
by cookie, so a retry re-sends the *same* cookie and bytes and can never apply an offer twice.
Each call is pinned to the node that took its first command (its media lives there); a new
call goes to a live node by smooth weighted round robin, and fails over to the next live node
if the first does not answer. A node that does not answer is out of use for ``down_for``
seconds or until it answers a ping.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from media.bencode import BencodeError, decode, encode


class MediaUnavailable(Exception):
    """No rtpengine node answered (or none is configured and live)."""


@dataclass(eq=False)
class Node:
    host: str
    port: int
    weight: int
    down_until: float = 0.0  # monotonic; 0 = up
    current: int = 0  # smooth weighted round robin state

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: NgClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client._received(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: a retry follows
        pass


class NgClient:
    def __init__(
        self,
        nodes: list[tuple[str, int, int]],
        *,
        timeout: float = 0.5,
        retries: int = 2,
        down_for: float = 30.0,
        ping_interval: float = 10.0,
        log: Any = None,
        on_rtt: Callable[[str, float], None] | None = None,
    ) -> None:
        self.nodes = [Node(h, p, w) for h, p, w in nodes]
        self.timeout = timeout
        self.retries = retries
        self.down_for = down_for
        self.ping_interval = ping_interval
        self.log = log
        self.on_rtt = on_rtt
        self.pinned: dict[str, Node] = {}
        self._pending: dict[bytes, asyncio.Future[dict[bytes, Any]]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._prefix = os.urandom(3).hex()
        self._seq = 0
        self._pinger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        v6 = any(":" in n.host for n in self.nodes)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), family=socket.AF_INET6 if v6 else socket.AF_INET
        )
        self._transport = transport
        if self.ping_interval > 0:
            self._pinger = loop.create_task(self._ping_loop())

    async def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        if self._transport is not None:
            self._transport.close()

    def set_nodes(self, nodes: list[tuple[str, int, int]]) -> None:
        """A reload: new weights and nodes; a node kept keeps its state, and calls pinned to a
        node that was removed stay on it until they end."""
        old = {(n.host, n.port): n for n in self.nodes}
        fresh: list[Node] = []
        for host, port, weight in nodes:
            node = old.get((host, port)) or Node(host, port, weight)
            node.weight = weight
            fresh.append(node)
        self.nodes = fresh

    def _received(self, data: bytes) -> None:
        cookie, sep, body = data.partition(b" ")
        fut = self._pending.get(cookie)
        if not sep or fut is None or fut.done():
            return
        try:
            reply = decode(body)
        except BencodeError:
            return  # garbage: the retry or the timeout decides
        if isinstance(reply, dict):
            fut.set_result(reply)

    def _pick(self, exclude: set[int]) -> Node | None:
        """Smooth weighted round robin (nginx) over live nodes not yet tried."""
        now = time.monotonic()
        live = [
            n for n in self.nodes if id(n) not in exclude and n.weight > 0 and n.down_until <= now
        ]
        if not live:
            return None
        total = sum(n.weight for n in live)
        for n in live:
            n.current += n.weight
        best = max(live, key=lambda n: n.current)
        best.current -= total
        return best

    async def request(self, key: str, cmd: dict[str, Any]) -> dict[bytes, Any]:
        """Send ``cmd`` for call ``key`` and return rtpengine's reply dictionary (result ok
        or error alike). Raises MediaUnavailable when no node answers."""
        node = self.pinned.get(key)
        if node is not None:
            reply = await self._exchange(node, cmd)
            if reply is None:
                raise MediaUnavailable(f"rtpengine {node.name} did not answer")
            self._unpin_deleted(key, cmd)
            return reply
        tried: set[int] = set()
        while (node := self._pick(tried)) is not None:
            tried.add(id(node))
            reply = await self._exchange(node, cmd)
            if reply is not None:
                self.pinned[key] = node
                self._unpin_deleted(key, cmd)
                return reply
        raise MediaUnavailable("no rtpengine node answered" if tried else "no rtpengine node up")

    def _unpin_deleted(self, key: str, cmd: dict[str, Any]) -> None:
        # The controller deletes every call it sent a command for; that ends the pin.
        if cmd.get("command") == "delete" and "via-branch" not in cmd:
            self.pinned.pop(key, None)

    async def _exchange(self, node: Node, cmd: dict[str, Any]) -> dict[bytes, Any] | None:
        """One command to one node: the same cookie on every retry; None when it never
        answered (the node is then out of use for down_for seconds)."""
        assert self._transport is not None
        self._seq += 1
        cookie = f"{self._prefix}{self._seq:x}".encode()
        data = cookie + b" " + encode(cmd)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[bytes, Any]] = loop.create_future()
        self._pending[cookie] = fut
        started = loop.time()
        try:
            for _ in range(self.retries + 1):
                self._transport.sendto(data, (node.host, node.port))
                try:
                    reply = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                except TimeoutError:
                    continue
                if self.on_rtt is not None:
                    self.on_rtt(str(cmd.get("command", "")), loop.time() - started)
                if node.down_until:
                    node.down_until = 0.0
                    self._log("warning", "media.node_up", node=node.name)
                return reply
        finally:
            self._pending.pop(cookie, None)
        if not node.down_until:
            self._log("error", "media.node_down", node=node.name, command=cmd.get("command"))
        node.down_until = time.monotonic() + self.down_for
        return None

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            for node in self.nodes:  # an answer brings a down node back (_exchange)
                await self._exchange(node, {"command": "ping"})

    def _log(self, level: str, event: str, **fields: Any) -> None:
        if self.log is not None:
            getattr(self.log, level)(event, **fields)
