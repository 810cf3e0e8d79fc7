"""A fleet of two sbc nodes sharing one real redis-server (started here, loopback only).

    sipp uac :5070 --> sbc A 127.0.0.1:5260 --+                +--> sipp uas 5081
                                             +-- redis :6390 --+
    sipp uac :5071 --> sbc B 127.0.0.1:5261 --+                +--> sipp uas 5082

Trunk group `shared` has ports 5 on both nodes together; leases live 3 s past the last
heartbeat. Callers run lab/sipp/uac_limits.xml (503 + Q.850 cause 34 when refused).
The tests run in order and share the fleet: joint limit, Redis stopped and restarted,
then a node killed with SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness
import pytest
import redis

pytestmark = pytest.mark.e2e

REDIS_PORT = 6390
TTL = 3
CONFIG = """
node:
  # A fleet of one-process nodes: with workers each is a fleet node itself (node_id-wN),
  # and these tests count nodes
  workers: 1
  listen: [{{address: 127.0.0.1, port: {port}, transport: udp}}]
  state: {{backend: redis, url: "redis://127.0.0.1:{redis}/0", lease_ttl: {ttl}, timeout: 0.3,
          node_id: node-{port}}}
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: shared, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1}}], limits: {{ports: 5}}}}
  - {{name: vendor-pool, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: 5081}}, {{ip: 127.0.0.1, port: 5082}}]}}
routeplans:
  - name: default
    routes: [{{prefix: "", trunk_groups: [vendor-pool]}}]
"""


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis = harness.Redis(REDIS_PORT, root / "redis").start()
        self.nodes: dict[str, harness.Sbc] = {}
        for name, port in (("a", 5260), ("b", 5261)):
            config = root / f"config-{name}"
            config.mkdir()
            (config / "sbc.yaml").write_text(CONFIG.format(port=port, redis=REDIS_PORT, ttl=TTL))
            self.nodes[name] = harness.start_sbc(root / f"sbc-{name}", config, port=port)

    def call(
        self, node: str, calls: int, hold_ms: int, port: int, workdir: Path
    ) -> harness.SippResult:
        return harness.run_sipp(
            "uac_limits.xml",
            calls=calls,
            rate=40,
            port=port,
            workdir=workdir,
            remote=f"127.0.0.1:{5260 if node == 'a' else 5261}",
            extra=["-s", "15551230000", "-d", str(hold_ms)],
            timeout=60,
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    f = Fleet(root)
    try:
        with harness.sipp_servers("uas_dnis.xml", [5081, 5082], root / "uas"):
            yield f
    finally:
        for node in f.nodes.values():
            node.stop()
        f.redis.stop()


def up(result: harness.SippResult) -> int:
    return result.received(200) // 2  # the INVITE's 200 and the BYE's


def test_two_nodes_enforce_one_trunk_groups_ports_jointly(fleet: Fleet, tmp_path: Path) -> None:
    """6 held calls offered to each node at once: 5 up across the fleet, 7 refused."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(
            lambda n: fleet.call(n, 6, 3000, 5070 if n == "a" else 5071, tmp_path / n), "ab"
        )
    assert a.returncode == 0 and b.returncode == 0, a.output + b.output
    assert up(a) + up(b) == 5, (a.counts, b.counts)
    assert a.received(503) + b.received(503) == 7
    assert up(a) > 0 and up(b) > 0  # both nodes admitted: the limit is shared, not split


def test_redis_stopped_mid_run_calls_still_admitted_on_local_limits(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Redis goes away: node B admits on its share of the limit (ceil(5 / 2 nodes) = 3),
    logs it at error level; Redis comes back: B says so, and the fleet shares again."""
    ups = {n: len(node.events("state.redis_up")) for n, node in fleet.nodes.items()}
    fleet.redis.stop()
    r = fleet.call("b", 6, 2000, 5071, tmp_path / "down")
    assert r.returncode == 0, r.output
    assert (up(r), r.received(503)) == (3, 3), r.counts
    down = fleet.nodes["b"].events("state.redis_down")
    assert down and down[-1]["level"] == "error" and down[-1]["fallback"] == "local limits"

    fleet.redis.start()  # a fresh, empty Redis on the same port
    deadline = time.monotonic() + 3 * TTL
    for name, node in fleet.nodes.items():
        while len(node.events("state.redis_up")) == ups[name] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(node.events("state.redis_up")) > ups[name], f"{name} never saw Redis return"
    r = fleet.call("a", 6, 2000, 5070, tmp_path / "up")
    assert (up(r), r.received(503)) == (5, 1), r.counts  # one shared limit again


def test_kill_9_of_a_node_frees_its_ports_within_the_lease_ttl(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Node A holds 5 calls and dies (SIGKILL): B refuses at first (the ports are still
    leased), then admits once A's leases expire, within lease_ttl of the kill."""
    a = fleet.nodes["a"]
    answered = len(a.events("call.answer"))
    args = [
        *harness.sipp_args("uac_limits.xml", 5072),
        "127.0.0.1:5260", "-s", "15551230000", "-m", "5", "-r", "40", "-d", "60000",
        "-timeout", "70s",
    ]  # fmt: skip
    holder = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while len(a.events("call.answer")) < answered + 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(a.events("call.answer")) == answered + 5
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=5)
        killed = time.monotonic()
        first = fleet.call("b", 1, 0, 5073, tmp_path / "p0")
        assert first.received(503) == 1, "the dead node's leases should still hold the ports"
        # Watch the shared state itself: live leases are those whose expiry (Redis ms) is ahead.
        client = redis.Redis(port=REDIS_PORT)
        freed_after = None
        while time.monotonic() - killed < TTL + 2:
            secs, micros = client.time()
            live = client.zcount("sbc:ports:tg:shared", secs * 1000 + micros // 1000 + 1, "+inf")
            if live == 0:
                freed_after = time.monotonic() - killed
                break
            time.sleep(0.05)
        assert freed_after is not None and freed_after <= TTL + 0.2, freed_after
        print(f"leases of the killed node gone {freed_after:.2f} s after SIGKILL (ttl {TTL})")
        after = fleet.call("b", 1, 0, 5073, tmp_path / "p1")
        assert up(after) == 1, after.counts  # and node B admits again
    finally:
        holder.kill()
        holder.wait()
