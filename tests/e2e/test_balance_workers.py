"""Balances on a node of two workers (and, for comparison, one process) with the real sbc and
sipp on loopback: the supervisor's one book decides every worker's calls' credit.

Ports 7400-7420: sbc :7400 (admin :7416), the caller (sipp uac, lab/sipp/uac_balance.xml)
:7401 with media :7412-7415 and control :7411 (a second one :7402, :7417-7420, :7403), the
vendor (sipp's stock uas) :7405 with media :7406-7409 and control :7410. The prepaid deck
sells prefix 1 at 0.60/min and prefix 2 at 0.18/min, 60/6, 4 digits: every call here lasts
well under its first increment, so a call to 1... holds 0.6000 while it rings, 0.6600 once
answered (60 s billed plus the next 6 s), and is charged 0.6000. Relationship `prepaid`:
warn_at 0.60, suspend_at 0.

Credit across workers: 12 calls within 0.2 s, held 2 s, against 1.98 paid: exactly 3 fit,
whether the others are still ringing (3 x 0.60 held) or answered (2 x 0.66 + 0.60). The
kernel gives sipp's one socket to one worker; each INVITE is steered to its Call-ID's
worker, so both workers admit calls, and both ask the supervisor:

    uac :7401        worker 0 / worker 1          supervisor (book)        uas :7405
     |--INVITE x12--->|--credit(call, 0.6000)------->|  3 granted (3 x 0.6000 held)
     |<-----100 x12---|<---verdict-------------------|  9 refused
     |<-----403 x9----|  CDR + call.refused: balance_suspended
     |--ACK x9------->|
     |                |--INVITE x3----------------------------------------->|
     |<-----200 x3----|<-------------------------------------------------200-|
     |--ACK, BYE----->|--answered / settle(0.6000 each)->|  ledger: 3 charge lines
     |<-----200-------|                                  |  balance 0.18

Then a call to 2... (0.18) reaches suspend_at (balance.suspended at 0.0000), the next call
gets 403 (balance_suspended); `sbc balance add prepaid 1.20` (read from
the ledger within a second) lets two calls through, the second held across a SIGTERM: the
drain lets it end and its charge is written before the node exits; after the restart
`balance.loaded` says 0.0000 from exactly 2 payments and 6 charges (none lost, none twice)
and the next call gets 403 again.

A worker killed (SIGKILL) while its call holds the whole credit: the supervisor drops that
hold with the worker (its call is lost, unbilled, as its ports are), so the next call is
admitted instead of meeting a credit held for ever.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.e2e
cli = harness.sbc_cli  # `sbc ...` of this tree

PORT, CALLER, VENDOR, ADMIN = 7400, 7401, 7405, 7416
SECOND = 7402  # a second caller while the first holds its call
CALLER_SIPP = {CALLER: ["-mp", "7412", "-cp", "7411"], SECOND: ["-mp", "7417", "-cp", "7403"]}
CONFIG = """
node:
  workers: %(workers)d
  listen: [{address: 127.0.0.1, port: 7400, transport: udp}]
  unknown_source: reject
  flood: {exempt: [127.0.0.1]}   # sipp's burst from one address: no flood
  admin: {listen: "127.0.0.1:7416"}
  cdr: {path: cdr/cdr.jsonl}
  balance: {ledger: ledger/balance.jsonl}
relationships:
  - {name: vendor-x}
  - {name: prepaid, balance: {warn_at: 0.60, suspend_at: 0.00, currency: USD}}
rate_decks:
  - {name: prepaid, file: rates/prepaid.csv, increment: {first: 60, next: 6}}
trunk_groups:
  - {name: prepaid, relationship: prepaid, direction: origination, routeplan: default,
     rate_deck: prepaid, trunks: [{ip: 127.0.0.1, port: 7401}, {ip: 127.0.0.1, port: 7402}]}
  - {name: vendor, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 7405}]}
routeplans:
  - {name: default, routes: [{prefix: "", trunk_groups: [vendor]}]}
"""
DECK = "prefix,rate,effective,description\n1,0.60,,USA\n2,0.18,,Cheap\n"


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("balance-workers")
    with harness.sipp_servers("uas", [VENDOR], root / "uas", ["-mp", "7406", "-cp", "7410"]):
        yield root


def config_dir(root: Path, workers: int, name: str = "") -> Path:
    d = root / f"config-{name or workers}"
    (d / "rates").mkdir(parents=True)
    (d / "sbc.yaml").write_text(CONFIG % {"workers": workers})
    (d / "rates" / "prepaid.csv").write_text(DECK)
    return d


def offer(
    workdir: Path, calls: int, hold_ms: int, dnis: str = "15551230000", port: int = CALLER
) -> harness.SippResult:
    return harness.run_sipp(
        "uac_balance.xml", calls=calls, rate=60, port=port, workdir=workdir,
        remote=f"127.0.0.1:{PORT}", timeout=30,
        extra=["-s", dnis, "-d", str(hold_ms), "-ci", "127.0.0.1", *CALLER_SIPP[port]],
    )  # fmt: skip


def cdrs(workdir: Path, count: int, timeout: float = 8.0) -> list[dict[str, Any]]:
    return harness.wait_jsonl(workdir / "cdr" / "cdr.jsonl", count, timeout)


def ledger(workdir: Path) -> list[dict[str, Any]]:
    return harness.jsonl(workdir / "ledger" / "balance.jsonl")


def pay(config: Path, workdir: Path, amount: str, memo: str) -> str:
    done = cli("balance", "add", "--config", str(config), "prepaid", amount, memo, cwd=workdir)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("workers", [2, 1])
def test_one_book_for_the_node_suspend_pay_restart(vendor: Path, workers: int) -> None:
    config = config_dir(vendor, workers)
    workdir = vendor / f"sbc-{workers}"
    workdir.mkdir()
    pay(config, workdir, "1.98", "opening")
    sbc = harness.start_sbc(workdir, config, port=PORT)
    try:
        # 12 concurrent calls against credit for 3: exactly 3 answered, 9 refused 403
        r = offer(vendor / f"burst-{workers}", 12, 2000)
        assert r.returncode == 0, r.output
        assert (r.received(200), r.received(403)) == (3 + 3, 9), r.counts  # INVITE and BYE 200s
        records = cdrs(workdir, 12)
        answered = [c for c in records if c["status"] == 200]
        refused = [c for c in records if c["status"] == 403]
        assert [c["revenue"] for c in answered] == ["0.6000"] * 3
        assert {(c["reason"], c["relationship"]) for c in refused} == {
            ("balance_suspended", "prepaid")
        }
        assert len(refused) == 9
        if workers == 2:  # both workers took calls, and both asked the one book
            started = sbc.wait_events("call.start", 12)
            assert {e.get("worker") for e in started} == {0, 1}, started
        reasons = [e["reason"] for e in sbc.wait_events("call.refused", 9)]
        assert reasons == ["balance_suspended"] * 9
        charges = [e for e in ledger(workdir) if e["type"] == "charge"]
        assert sorted(e["id"] for e in charges) == sorted(c["call_id"] for c in answered)

        # a call at 0.18/min spends the rest: suspend_at is reached
        r = offer(vendor / f"last-{workers}", 1, 500, dnis="25551230000")
        assert (r.received(200), r.received(403)) == (2, 0), r.counts
        assert cdrs(workdir, 13)[-1]["revenue"] == "0.1800"
        assert [e["balance"] for e in sbc.wait_events("balance.suspended", 1)] == ["0.0000"]

        # suspended: the next call gets 403, with balance_suspended in its CDR and the log
        r = offer(vendor / f"suspended-{workers}", 1, 500)
        assert (r.received(200), r.received(403)) == (0, 1), r.counts
        last = cdrs(workdir, 14)[-1]
        assert (last["status"], last["reason"]) == (403, "balance_suspended")
        assert len(sbc.wait_events("call.refused", 10)) == 10

        # a payment lets calls through again: one now, one held across a SIGTERM
        out = pay(config, workdir, "1.20", "top-up")
        assert "balance 1.2000" in out, out
        assert sbc.wait_events("balance.payment", 1, timeout=5), "the node missed the payment"
        r = offer(vendor / f"paid-{workers}", 1, 500)
        assert (r.received(200), r.received(403)) == (2, 0), r.counts
        assert cdrs(workdir, 15)[-1]["revenue"] == "0.6000"
        held: list[harness.SippResult] = []
        thread = threading.Thread(
            target=lambda: held.append(offer(vendor / f"held-{workers}", 1, 3000))
        )
        thread.start()
        assert harness.wait_for(lambda: len(sbc.events("call.answer")) >= 6, timeout=5)
    finally:
        assert sbc.stop() == 0  # drains: the held call ends by itself, then the node exits
    thread.join()
    assert held and (held[0].received(200), held[0].received(403)) == (2, 0), held
    assert cdrs(workdir, 16)[-1]["revenue"] == "0.6000"
    entries = ledger(workdir)
    assert [e["type"] for e in entries].count("payment") == 2
    assert [e["type"] for e in entries].count("charge") == 6  # 3 + 1 + 1 + the drained one
    shown = cli("balance", "show", "--config", str(config), cwd=workdir)
    assert "prepaid: balance 0.0000 USD (payments 3.18, charges 3.1800;" in shown.stdout, shown

    sbc = harness.start_sbc(workdir, config, port=PORT)  # a restart: the ledger's balance
    try:
        loaded = sbc.wait_events("balance.loaded", 1)
        assert loaded[-1]["balances"] == {"prepaid": "0.0000"}, loaded
        assert loaded[-1]["entries"] == 8  # two payments, six charges: none lost, none twice
        r = offer(vendor / f"restarted-{workers}", 1, 500)
        assert (r.received(200), r.received(403)) == (0, 1), r.counts
        last = cdrs(workdir, 17)[-1]
        assert (last["status"], last["reason"]) == (403, "balance_suspended")
        time.sleep(0.2)
    finally:
        assert sbc.stop() == 0
    assert len(ledger(workdir)) == 8  # a refused call charges nothing


def status() -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/status", timeout=5) as resp:
        state: dict[str, Any] = json.loads(resp.read())
    return state


def test_a_dead_workers_calls_give_their_credit_back(vendor: Path) -> None:
    config = config_dir(vendor, 2, "kill")
    workdir = vendor / "sbc-kill"
    workdir.mkdir()
    pay(config, workdir, "0.66", "one call's worth")
    sbc = harness.start_sbc(workdir, config, port=PORT)
    try:
        held: list[harness.SippResult] = []
        thread = threading.Thread(target=lambda: held.append(offer(vendor / "doomed", 1, 6000)))
        thread.start()
        assert harness.wait_for(lambda: len(sbc.events("call.answer")) == 1, timeout=5)
        # 0.66 less the 0.66 its answered call holds: no credit left
        r = offer(vendor / "while-held", 1, 500, port=SECOND)
        assert (r.received(200), r.received(403)) == (0, 1), r.counts
        (busy,) = [w for w in status()["node"]["workers"] if w["calls"] == 1]
        os.kill(busy["pid"], signal.SIGKILL)
        assert harness.wait_for(lambda: status()["node"]["worker_restarts"] == 1, timeout=10)
        died = sbc.wait_events("worker.died", 1)
        assert died[-1]["worker"] == busy["worker"]
        r = offer(vendor / "after-kill", 1, 500, port=SECOND)  # its hold went with it: admitted
        assert (r.received(200), r.received(403)) == (2, 0), r.counts
        thread.join()
    finally:
        assert sbc.stop() == 0
    charges = [e for e in ledger(workdir) if e["type"] == "charge"]
    assert [e["amount"] for e in charges] == ["0.6000"]  # the lost call is not billed
