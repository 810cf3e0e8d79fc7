"""Several contacts of one PBX account shared by a fleet of two nodes on one Redis: the
devices register at node A, the carrier's call to the DID comes in at node B, which tries
them in q order (sbc.state.redis: one hash field per contact). Ports: Redis :7388, sbc
A :7303, sbc B :7304, devices :7314 (desk, busy), :7315 (soft), carrier :7316, sipp
control :7324-7326, sipp media :7346, :7376, :7387.

    desk :7314 (q=1)    node A :7303      Redis       node B :7304      soft :7315 (q=0.5)
     |--REGISTER-------->|--HSET sbc:reg "pbx pbx1 <desk>"-->|            |
     |                   |<--REGISTER----------------------------------------------|
     |                   |--HSET sbc:reg "pbx pbx1 <soft>"-->|            |
     |                   |             |<--HGETALL (heartbeat)--|          |  carrier :7316
     |                   |             |                |<--INVITE DID-----------------|
     |<--INVITE------------------------------------------|   486: the next contact    |
     |                   |             |                |--INVITE--------->|           |
     |                   |             |                |<-------------200-|--200----->|
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
import redis
import structlog

from sbc.state import Bind, Binding
from sbc.state.memory import MemoryStore
from sbc.state.redis import RedisStore

pytestmark = pytest.mark.e2e

REDIS_PORT, NODE_A, NODE_B = 7388, 7303, 7304
DESK, SOFT, CARRIER = 7314, 7315, 7316
CONFIG = """
node:
  workers: 1
  listen: [{{address: 127.0.0.1, port: {port}, transport: udp}}]
  state: {{backend: redis, url: "redis://127.0.0.1:7388/0", lease_ttl: 3, timeout: 0.3,
          node_id: node-{port}}}
  unknown_source: reject
  registrar: {{algorithms: [MD5, SHA-256], realm: sbc.lab, secret: fleet-secret}}
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1, port: 7316}}]}}
  - {{name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{type: registration, username: pbx1, password: s3cret}}]}}
  - {{name: vendor-pool, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: 7389}}]}}
routeplans:
  - name: default
    numbering: [{{number: "15557770000", trunk_group: pbx}}]
    routes: [{{prefix: "", trunk_groups: [vendor-pool]}}]
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, harness.Sbc]]:
    store = harness.Redis(REDIS_PORT, tmp_path / "redis").start()
    nodes: dict[str, harness.Sbc] = {}
    try:
        for name, port in (("a", NODE_A), ("b", NODE_B)):
            config = tmp_path / f"config-{name}"
            config.mkdir()
            (config / "sbc.yaml").write_text(CONFIG.format(port=port))
            nodes[name] = harness.start_sbc(tmp_path / f"sbc-{name}", config, port=port)
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()
        store.stop()


def device(
    port: int, line: str, q: str, answers: str, media: int, control: int, workdir: Path
) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True)
    args = [
        *harness.sipp_args("pbx_register_q.xml", port), f"127.0.0.1:{NODE_A}",
        "-oocsf", str(harness.SCENARIOS / answers),
        "-mp", str(media), "-ci", "127.0.0.1", "-cp", str(control),
        "-m", "1", "-d", "8000", "-key", "line", line, "-key", "q", q,
        "-s", "pbx1", "-au", "pbx1", "-ap", "s3cret",
        "-trace_err", "-timeout", "20s", "-timeout_error",
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_node_b_tries_the_contacts_registered_at_node_a_in_q_order(
    fleet: dict[str, harness.Sbc], tmp_path: Path
) -> None:
    a, b = fleet["a"], fleet["b"]
    desk = device(DESK, "desk", "1.0", "pbx_busy.xml", 7376, 7324, tmp_path / "desk")
    soft = None
    try:
        assert len(a.wait_events("registrar.registered", 1, timeout=10)) == 1
        soft = device(SOFT, "soft", "0.5", "pbx_answer.xml", 7346, 7325, tmp_path / "soft")
        assert len(a.wait_events("registrar.registered", 2, timeout=10)) == 2
        client = redis.Redis(port=REDIS_PORT)
        fields = {k.decode(): json.loads(v) for k, v in client.hgetall("sbc:reg").items()}
        assert sorted(fields) == [
            f"pbx pbx1 sip:trunk-pbx1@127.0.0.1:{DESK};line=desk",
            f"pbx pbx1 sip:trunk-pbx1@127.0.0.1:{SOFT};line=soft",
        ]
        assert sorted(f["q"] for f in fields.values()) == [0.5, 1.0]
        time.sleep(1.5)  # node B's heartbeat (lease_ttl / 3) reads them back
        r = harness.run_sipp(
            "uac", calls=1, rate=1, port=CARRIER, workdir=tmp_path / "carrier",
            remote=f"127.0.0.1:{NODE_B}", timeout=20,
            extra=["-s", "15557770000", "-mp", "7387", "-ci", "127.0.0.1", "-cp", "7326"],
        )  # fmt: skip
        assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
        (end,) = b.wait_events("call.end", 1)
        attempts = [(x["trunk"], x["status"]) for x in end["attempts"]]  # type: ignore[attr-defined]
        assert attempts == [(f"127.0.0.1:{DESK}", 486), (f"127.0.0.1:{SOFT}", 200)]
    finally:
        for p in (desk, soft):
            if p is not None:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_an_unregister_at_one_node_reaches_the_others_at_their_next_heartbeat(
    tmp_path: Path,
) -> None:
    """Two nodes' stores (sbc.state.redis) on a real Redis. desk and soft register through
    node A; node B's heartbeat mirrors both. desk unregisters at A (Expires: 0, RFC 3261
    §10.2.2): A deletes its field, and B's next heartbeat forgets desk at once, not at its
    expiry an hour later; soft stays."""
    server = harness.Redis(REDIS_PORT, tmp_path / "redis").start()

    def store(name: str) -> RedisStore:
        return RedisStore(
            server.url, memory=MemoryStore(), on_verdict=lambda token, denied: None,
            now=time.monotonic, log=structlog.get_logger(), lease_ttl=3, node_id=name,
        )  # fmt: skip

    def contact(line: str, expires_at: float) -> Binding:
        return Binding(
            "pbx", "pbx1", "udp", "127.0.0.1", DESK,
            f"sip:trunk-pbx1@127.0.0.1:{DESK};line={line}", expires_at,
        )  # fmt: skip

    async def run() -> tuple[list[str], list[str]]:
        a, b = store("node-a"), store("node-b")
        await a.start()
        await b.start()
        try:
            hour = time.time() + 3600
            a.submit(Bind((contact("desk", hour), contact("soft", hour)), 1), time.monotonic())
            await asyncio.gather(*list(a._tasks))  # A's HSETs landed
            await b.beat()
            before = [x.contact for x in b.memory.contacts_of("pbx", "pbx1", time.time())]
            a.submit(Bind((contact("desk", 0),), 2), time.monotonic())
            await asyncio.gather(*list(a._tasks))  # A's HDEL landed
            await b.beat()
            after = [x.contact for x in b.memory.contacts_of("pbx", "pbx1", time.time())]
            return before, after
        finally:
            await a.stop()
            await b.stop()

    try:
        before, after = asyncio.run(run())
    finally:
        server.stop()
    desk, soft = (f"sip:trunk-pbx1@127.0.0.1:{DESK};line={x}" for x in ("desk", "soft"))
    assert sorted(before) == [desk, soft]
    assert after == [soft]
