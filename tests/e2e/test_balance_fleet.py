"""Balances shared by a fleet of two nodes through a real Redis (sbc.fleetbook), with sipp.

Ports 7400-7420 (after tests/e2e/test_balance_workers.py, which uses some of the same):
node A sbc :7400 (two workers), node B sbc :7404 (one process), Redis :7420; caller A
(sipp uac, lab/sipp/uac_balance.xml) :7401 to A (media :7412-7415, control :7411), caller B
:7402 to B (media :7416-7419, control :7403); the vendor (sipp's stock uas) :7405 (media
:7406-7409, control :7410). The deck: 0.60/min, 60/6, 4 digits; each call here is charged
0.6000 and holds 0.6000 ringing, 0.6600 answered. Relationship `prepaid`: suspend_at 0.

    caller A ──> node A (2 workers) ─┐                 ┌─> uas :7405
    caller B ──> node B ─────────────┼── Redis :7420 ──┘
                                     (holds, the fleet's ledger)

1.98 paid on the fleet's ledger (`sbc balance add`, straight to Redis). Six calls to each
node at once, held 2 s: exactly 3 are answered across the fleet, 9 get 403
(balance_suspended), the 3 charges land once on the fleet's ledger and in both nodes'
journals. A payment is seen by both nodes. Redis stops: node B admits a call alone (its
mirror of the ledger) and keeps its charge; Redis comes back empty: the nodes push their
journals back, and the fleet's ledger is whole again, no entry twice; node B restarted
reads the same balance from it and refuses what no longer fits.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.e2e
cli = harness.sbc_cli  # `sbc ...` of this tree

A, B, REDIS = 7400, 7404, 7420
CALLERS = {7401: (A, ["-mp", "7412", "-cp", "7411"]), 7402: (B, ["-mp", "7416", "-cp", "7403"])}
CONFIG = """
node:
  workers: %(workers)d
  listen: [{address: 127.0.0.1, port: %(port)d, transport: udp}]
  unknown_source: reject
  flood: {exempt: [127.0.0.1]}
  state: {backend: redis, url: "redis://127.0.0.1:7420/0", node_id: %(name)s}
  cdr: {path: cdr/cdr.jsonl}
  balance: {ledger: ledger/balance.jsonl}
relationships:
  - {name: vendor-x}
  - {name: prepaid, balance: {warn_at: 0.60, suspend_at: 0.00, currency: USD}}
rate_decks:
  - {name: prepaid, file: rates/prepaid.csv, increment: {first: 60, next: 6}}
trunk_groups:
  - {name: prepaid, relationship: prepaid, direction: origination, routeplan: default,
     rate_deck: prepaid, trunks: [{ip: 127.0.0.1, port: %(caller)d}]}
  - {name: vendor, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 7405}]}
routeplans:
  - {name: default, routes: [{prefix: "", trunk_groups: [vendor]}]}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("balance-fleet")
    with harness.sipp_servers("uas", [7405], root / "uas", ["-mp", "7406", "-cp", "7410"]):
        yield root


def config_dir(root: Path, name: str, port: int, caller: int, workers: int) -> Path:
    d = root / f"config-{name}"
    (d / "rates").mkdir(parents=True)
    fields = {"workers": workers, "port": port, "caller": caller, "name": name}
    (d / "sbc.yaml").write_text(CONFIG % fields)
    (d / "rates" / "prepaid.csv").write_text("prefix,rate\n1,0.60\n")
    return d


def offer(root: Path, caller: int, calls: int, hold_ms: int, name: str) -> harness.SippResult:
    node, sipp = CALLERS[caller]
    return harness.run_sipp(
        "uac_balance.xml", calls=calls, rate=60, port=caller, workdir=root / name,
        remote=f"127.0.0.1:{node}", timeout=30,
        extra=["-s", "15551230000", "-d", str(hold_ms), "-ci", "127.0.0.1", *sipp],
    )  # fmt: skip


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def redis(root: Path) -> Iterator[list[harness.Redis]]:
    """The fleet's Redis (a list: the test starts it again); stopped whatever happens."""
    servers = [harness.Redis(REDIS, root / "redis").start()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_two_nodes_share_one_balance_through_redis(root: Path, redis: list[harness.Redis]) -> None:
    config_a = config_dir(root, "a", A, 7401, 2)
    config_b = config_dir(root, "b", B, 7402, 1)
    work_a, work_b = root / "node-a", root / "node-b"
    work_a.mkdir()
    work_b.mkdir()
    paid = cli("balance", "add", "--config", str(config_a), "prepaid", "1.98", "opening",
               cwd=root)  # fmt: skip
    assert paid.returncode == 0 and "balance 1.98" in paid.stdout, paid
    node_a = harness.start_sbc(work_a, config_a, port=A)
    node_b = harness.start_sbc(work_b, config_b, port=B)
    try:
        for node in (node_a, node_b):
            synced = node.wait_events("balance.fleet_synced", 1)
            assert synced and synced[-1]["balances"] == {"prepaid": "1.98"}, synced

        # six calls to each node at once: the fleet's credit fits exactly three
        results: dict[int, harness.SippResult] = {}
        threads = [
            threading.Thread(
                target=lambda c=c: results.update({c: offer(root, c, 6, 2000, f"burst-{c}")})
            )
            for c in CALLERS
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered = sum(r.received(200) for r in results.values()) // 2  # INVITE and BYE 200s
        refused = sum(r.received(403) for r in results.values())
        assert (answered, refused) == (3, 9), {c: r.counts for c, r in results.items()}

        cdr_a, cdr_b = work_a / "cdr" / "cdr.jsonl", work_b / "cdr" / "cdr.jsonl"
        assert harness.wait_for(lambda: len(lines(cdr_a)) + len(lines(cdr_b)) == 12, timeout=8)
        cdrs = lines(cdr_a) + lines(cdr_b)
        assert sorted(c["revenue"] or "" for c in cdrs if c["status"] == 200) == ["0.6000"] * 3
        assert {c["reason"] for c in cdrs if c["status"] == 403} == {"balance_suspended"}
        charged = {c["call_id"] for c in cdrs if c["status"] == 200}

        def journaled(work: Path) -> set[str]:
            path = work / "ledger" / "balance.jsonl"
            return {e["id"] for e in lines(path) if e["type"] == "charge"}

        # every charge in both journals: each node's own, and the other's copied from Redis
        assert harness.wait_for(lambda: journaled(work_a) == journaled(work_b) == charged, 5)
        shown = cli("balance", "show", "--config", str(config_b), cwd=root)
        assert "prepaid: balance 0.1800 USD (payments 1.98, charges 1.8000;" in shown.stdout, shown

        paid = cli("balance", "add", "--config", str(config_b), "prepaid", "0.60", "top-up",
                   cwd=root)  # fmt: skip
        assert paid.returncode == 0 and "balance 0.7800" in paid.stdout, paid
        for node in (node_a, node_b):
            assert node.wait_events("balance.payment", 1, timeout=5), "a node missed it"

        # Redis away: node B decides alone (0.78 left: one call fits) and keeps the charge
        redis[0].stop()
        r = offer(root, 7402, 1, 500, "alone")
        assert (r.received(200), r.received(403)) == (2, 0), r.counts
        assert node_b.wait_events("balance.fleet_down", 1)
        # Redis back, empty: the nodes give the fleet its ledger back, each entry once
        redis.append(harness.Redis(REDIS, root / "redis").start())
        for node in (node_a, node_b):
            assert len(node.wait_events("balance.fleet_synced", 2, timeout=10)) >= 2

        def whole() -> bool:
            out = cli("balance", "show", "--config", str(config_a), cwd=root).stdout
            return "prepaid: balance 0.1800 USD (payments 2.58, charges 2.4000;" in out

        assert harness.wait_for(whole, timeout=10)
        client = subprocess.run(
            ["redis-cli", "-p", str(REDIS), "LLEN", "sbc:bal:ledger"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert client.stdout.strip() == "6"  # two payments, four charges: none twice
        redis[-1].stop()  # and once more: an emptied Redis is seen each time
        redis.append(harness.Redis(REDIS, root / "redis").start())
        assert harness.wait_for(whole, timeout=10)
        client = subprocess.run(
            ["redis-cli", "-p", str(REDIS), "LLEN", "sbc:bal:ledger"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert client.stdout.strip() == "6"
    finally:
        assert node_a.stop() == 0
        assert node_b.stop() == 0
    node_b = harness.start_sbc(work_b, config_b, port=B)  # a restart reads the fleet's
    try:
        synced = node_b.wait_events("balance.fleet_synced", 1)
        assert synced and synced[-1]["balances"] == {"prepaid": "0.1800"}, synced
        r = offer(root, 7402, 1, 500, "after-restart")  # 0.18 left: less than a call
        assert (r.received(200), r.received(403)) == (0, 1), r.counts
    finally:
        assert node_b.stop() == 0
