"""The ng client against scripted ng servers on loopback (not rtpengine: these check the
client's own rules; tests/e2e/test_media.py runs the real daemon)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from media.bencode import decode, encode
from media.client import MediaUnavailable, NgClient


class Server(asyncio.DatagramProtocol):
    """Answers ng commands with result ok, after dropping the first ``drop`` datagrams."""

    def __init__(self, drop: int = 0, silent: bool = False) -> None:
        self.drop = drop
        self.silent = silent
        self.seen: list[tuple[bytes, dict[bytes, Any]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        cookie, _, body = data.partition(b" ")
        cmd = decode(body)
        assert isinstance(cmd, dict)
        self.seen.append((cookie, cmd))
        if self.silent or len(self.seen) <= self.drop:
            return
        assert self.transport is not None
        self.transport.sendto(cookie + b" " + encode({"result": "ok"}), addr)


async def serve(server: Server) -> int:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    port: int = transport.get_extra_info("sockname")[1]
    return port


def test_a_retry_resends_the_same_cookie() -> None:
    async def main() -> None:
        server = Server(drop=1)
        port = await serve(server)
        client = NgClient([("127.0.0.1", port, 1)], timeout=0.05, retries=2, ping_interval=0)
        await client.start()
        reply = await client.request("c1", {"command": "offer", "call-id": "c1"})
        assert reply == {b"result": b"ok"}
        (c1, _), (c2, _) = server.seen
        assert c1 == c2  # rtpengine replays its cached reply instead of offering twice
        await client.stop()

    asyncio.run(main())


def test_a_silent_node_is_failed_over_and_the_call_stays_pinned() -> None:
    async def main() -> None:
        dead, live = Server(silent=True), Server()
        p_dead, p_live = await serve(dead), await serve(live)
        client = NgClient(
            [("127.0.0.1", p_dead, 1), ("127.0.0.1", p_live, 1)],
            timeout=0.05,
            retries=1,
            ping_interval=0,
        )
        await client.start()
        for n in range(4):
            await client.request(f"c{n}", {"command": "offer", "call-id": f"c{n}"})
        assert len(dead.seen) == 2  # tried once (two sends), then out of use
        assert [cmd[b"call-id"] for _, cmd in live.seen] == [b"c0", b"c1", b"c2", b"c3"]
        await client.request("c0", {"command": "answer", "call-id": "c0"})
        assert client.pinned["c0"].port == p_live
        await client.request("c0", {"command": "delete", "call-id": "c0"})
        assert "c0" not in client.pinned
        await client.stop()

    asyncio.run(main())


def test_no_node_answering_raises() -> None:
    async def main() -> None:
        dead = Server(silent=True)
        port = await serve(dead)
        client = NgClient([("127.0.0.1", port, 1)], timeout=0.02, retries=0, ping_interval=0)
        await client.start()
        with pytest.raises(MediaUnavailable):
            await client.request("c1", {"command": "offer"})
        with pytest.raises(MediaUnavailable, match="no rtpengine node up"):
            await client.request("c2", {"command": "offer"})  # down_for: not even tried
        assert len(dead.seen) == 1
        await client.stop()

    asyncio.run(main())


def test_weights_spread_new_calls() -> None:
    async def main() -> None:
        a, b = Server(), Server()
        pa, pb = await serve(a), await serve(b)
        client = NgClient([("127.0.0.1", pa, 3), ("127.0.0.1", pb, 1)], ping_interval=0)
        await client.start()
        for n in range(8):
            await client.request(f"c{n}", {"command": "offer"})
        assert (len(a.seen), len(b.seen)) == (6, 2)
        await client.stop()

    asyncio.run(main())


def test_a_down_node_returns_when_it_answers_a_ping() -> None:
    async def main() -> None:
        node = Server(silent=True)
        port = await serve(node)
        client = NgClient(
            [("127.0.0.1", port, 1)], timeout=0.02, retries=0, down_for=60, ping_interval=0.05
        )
        await client.start()
        with pytest.raises(MediaUnavailable):
            await client.request("c1", {"command": "offer"})
        assert client.nodes[0].down_until > 0  # out of use for down_for (60 s)
        node.silent = False
        for _ in range(40):  # bounded: 2 s at most
            await asyncio.sleep(0.05)
            if client.nodes[0].down_until == 0:
                break
        assert client.nodes[0].down_until == 0
        assert any(cmd == {b"command": b"ping"} for _, cmd in node.seen)
        await client.request("c2", {"command": "offer"})
        await client.stop()

    asyncio.run(main())


def test_set_nodes_keeps_a_kept_nodes_state_and_the_pins() -> None:
    async def main() -> None:
        a, b = Server(), Server()
        pa, pb = await serve(a), await serve(b)
        client = NgClient([("127.0.0.1", pa, 1)], ping_interval=0)
        await client.start()
        await client.request("c1", {"command": "offer"})
        kept = client.nodes[0]
        kept.down_until = 1e12  # as if it had stopped answering
        client.set_nodes([("127.0.0.1", pa, 5), ("127.0.0.1", pb, 1)])
        assert client.nodes[0] is kept and kept.weight == 5 and kept.down_until == 1e12
        await client.request("c2", {"command": "offer"})  # a new call: only b is up
        assert len(b.seen) == 1
        await client.request("c1", {"command": "answer"})  # pinned: still a
        assert len(a.seen) == 2
        await client.stop()

    asyncio.run(main())
