"""Rating, least-cost routing and balances with the real sbc and sipp on loopback.

Ports 6500-6599: sbc :6500 (LCR and CDRs) and :6501 (balances), callers :6510 (carrier-a)
and :6511 (prepaid), vendors :6581 (cheap, 0.005/min for prefix 1) and :6582 (dear,
0.010/min); sipp media :6540-6557, control :6590-6593. Decks are 60/6 with 4 digits; the
customer deck sells prefix 1 at 0.0100/min, the prepaid one at 0.60/min.

LCR: the route lists dear first, `order: lcr` sends the call to cheap:

    uac :6510            sbc :6500                cheap :6581     dear :6582
     |--INVITE 1555...--->|--INVITE------------------>|               |
     |<-------------200---|<----------------------200-|   (never asked)
     |--ACK-------------->|--ACK--------------------->|               |
     |   (hold 2 s)       |                           |               |
     |--BYE-------------->|--BYE--------------------->|               |
     |<-------------200---|<----------------------200-|  CDR: billed 60 s, revenue
                                                         0.0100, cost 0.0050, margin 0.0050
Balance (relationship prepaid, warn_at 0.60, suspend_at 0, paid 1.20 by the CLI):

    uac :6511            sbc :6501                cheap :6581
     |--INVITE---------->|--INVITE/200/ACK/BYE----->|  call 1: 0.6000 charged, warning
     |<-200 ... BYE/200--|                          |  call 2: 0.6000 charged, suspended
     |--INVITE---------->|                          |  call 3: 403, reason balance_suspended
     |<-------------403--|                          |
     |--ACK------------->|   `sbc balance add prepaid 0.60`: call 4 answered, balance 0 again;
                             after a restart call 5 is refused again (the ledger's balance)
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.e2e
cli = harness.sbc_cli  # `sbc ...` of this tree

PORT, BALANCE_PORT = 6500, 6501
CARRIER, PREPAID = 6510, 6511
CHEAP, DEAR = 6581, 6582
COLUMNS = '{prefix: Code, rate: Rate, effective: "Effective Date", description: Destination}'
CONFIG = f"""
node:
  workers: 1
  listen: [{{address: 127.0.0.1, port: %(port)d, transport: udp}}]
  unknown_source: reject
  cdr: {{path: cdr/cdr.jsonl}}
  balance: {{ledger: ledger/balance.jsonl}}
relationships:
  - {{name: carrier-a}}
  - {{name: vendor-x}}
  - {{name: prepaid, balance: {{warn_at: 0.60, suspend_at: 0.00, currency: USD}}}}
rate_decks:
  - {{name: sell, file: rates/sell.csv, columns: {COLUMNS}, increment: {{first: 60, next: 6}}}}
  - {{name: prepaid, file: rates/prepaid.csv, columns: {COLUMNS},
     increment: {{first: 60, next: 6}}}}
  - {{name: vendor-dear, file: rates/dear.csv, columns: {COLUMNS},
     increment: {{first: 60, next: 6}}}}
  - {{name: vendor-cheap, file: rates/cheap.csv, columns: {COLUMNS},
     increment: {{first: 60, next: 6}}}}
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: lcr,
     rate_deck: sell, trunks: [{{ip: 127.0.0.1, port: {CARRIER}}}]}}
  - {{name: prepaid, relationship: prepaid, direction: origination, routeplan: lcr,
     rate_deck: prepaid, trunks: [{{ip: 127.0.0.1, port: {PREPAID}}}]}}
  - {{name: dear, relationship: vendor-x, direction: termination, rate_deck: vendor-dear,
     trunks: [{{ip: 127.0.0.1, port: {DEAR}}}]}}
  - {{name: cheap, relationship: vendor-x, direction: termination, rate_deck: vendor-cheap,
     trunks: [{{ip: 127.0.0.1, port: {CHEAP}}}]}}
routeplans:
  - {{name: lcr, routes: [{{prefix: "1", trunk_groups: [dear, cheap], order: lcr}}]}}
"""
HEAD = "Code,Rate,Effective Date,Destination\n"
DECKS = {
    "sell": HEAD + "1,0.0100,2026-01-01,USA\n44,0.0300,,UK\n",
    "prepaid": HEAD + "1,0.60,,USA\n",
    "dear": HEAD + "1,0.010,,USA\n",
    "cheap": HEAD + "1,0.005,,USA\n1555,0.004,2099-01-01,USA future\n",
}
CALLER_SIPP = {CARRIER: ["-mp", "6548", "-cp", "6592"], PREPAID: ["-mp", "6552", "-cp", "6593"]}


def config_dir(root: Path, port: int) -> Path:
    d = root / f"config-{port}"
    (d / "rates").mkdir(parents=True)
    (d / "sbc.yaml").write_text(CONFIG % {"port": port})
    for name, text in DECKS.items():
        (d / "rates" / f"{name}.csv").write_text(text)
    return d


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("rating")
    with (
        harness.sipp_servers("uas", [CHEAP], root / "cheap", ["-mp", "6540", "-cp", "6590"]),
        harness.sipp_servers("uas", [DEAR], root / "dear", ["-mp", "6544", "-cp", "6591"]),
    ):
        yield root


def call(root: Path, port: int, sbc_port: int, name: str, hold_ms: int) -> harness.SippResult:
    return harness.run_sipp(
        "uac_balance.xml", calls=1, rate=1, port=port, workdir=root / name,
        remote=f"127.0.0.1:{sbc_port}", timeout=20,
        extra=["-s", "15551230000", "-d", str(hold_ms), "-ci", "127.0.0.1",
               *CALLER_SIPP[port]],
    )  # fmt: skip


def records(workdir: Path, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    path = workdir / "cdr" / "cdr.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            found = [json.loads(x) for x in path.read_text().splitlines()]
            if len(found) >= count:
                return found
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} CDRs in {path}")


def test_lcr_picks_the_cheaper_vendor_and_the_cdr_carries_the_exact_rating(root: Path) -> None:
    config = config_dir(root, PORT)
    explained = cli("explain", "--config", str(config), "--from", f"127.0.0.1:{CARRIER}",
                    "--to", "15551230000", cwd=root)  # fmt: skip
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout
    assert "dear: cost deck vendor-dear: code 1 rate 0.010/min (USA)" in text, text
    assert "cheap: cost deck vendor-cheap: code 1 rate 0.005/min (USA)" in text, text
    assert "rating: revenue deck sell: code 1 rate 0.0100/min (USA)" in text, text
    order = [ln.split()[1] for ln in text.splitlines() if ln.startswith("  1. ")]
    assert order == ["cheap"], text

    sbc = harness.start_sbc(root / "sbc", config, port=PORT)
    try:
        r = call(root, CARRIER, PORT, "carrier", 2000)
        assert r.returncode == 0, r.output
        rec = records(root / "sbc", 1)[0]
    finally:
        assert sbc.stop() == 0
    assert rec["egress_trunk_group"] == "cheap"
    assert [a["trunk_group"] for a in rec["attempts"]] == ["cheap"]  # dear never asked
    assert rec["duration"] > 1.5 and rec["duration"] < 5  # the hold, give or take
    # 60/6: a 2 s call is billed 60 s; 0.0100/min sold, 0.005/min bought, 4 digits
    assert {k: rec[k] for k in ("rate_status", "rate_deck", "rate_prefix", "rate")} == {
        "rate_status": "rated",
        "rate_deck": "sell",
        "rate_prefix": "1",
        "rate": "0.0100",
    }
    assert (rec["billed_seconds"], rec["revenue"], rec["cost"], rec["margin"]) == (
        60,
        "0.0100",
        "0.0050",
        "0.0050",
    )
    assert (rec["cost_deck"], rec["cost_rate"], rec["cost_prefix"]) == (
        "vendor-cheap",
        "0.005",
        "1",
    )
    attempt = rec["attempts"][0]
    assert (attempt["rate"], attempt["billed_seconds"], attempt["cost"]) == ("0.005", 60, "0.0050")
    exported = cli("cdr", "export", "--file", str(root / "sbc" / "cdr" / "cdr.jsonl"), cwd=root)
    row = next(csv.DictReader(io.StringIO(exported.stdout)))
    assert (row["revenue"], row["cost"], row["margin"], row["billed_seconds"]) == (
        "0.0100",
        "0.0050",
        "0.0050",
        "60",
    )


def test_balance_suspends_a_payment_restores_and_a_restart_keeps_it(root: Path) -> None:
    config = config_dir(root, BALANCE_PORT)
    workdir = root / "balance-sbc"
    workdir.mkdir()
    paid = cli("balance", "add", "--config", str(config), "prepaid", "1.20", "opening",
               cwd=workdir)  # fmt: skip
    assert paid.returncode == 0, paid.stderr
    sbc = harness.start_sbc(workdir, config, port=BALANCE_PORT)
    try:
        for n in (1, 2):
            r = call(root, PREPAID, BALANCE_PORT, f"prepaid{n}", 500)
            assert r.returncode == 0 and r.received(403) == 0, r.output
        cdrs = records(workdir, 2)
        assert [c["revenue"] for c in cdrs] == ["0.6000", "0.6000"]
        assert [e["balance"] for e in sbc.wait_events("balance.warning", 1)] == ["0.6000"]
        assert [e["balance"] for e in sbc.wait_events("balance.suspended", 1)] == ["0.0000"]
        r = call(root, PREPAID, BALANCE_PORT, "prepaid3", 500)
        assert r.received(403) == 1, r.output
        third = records(workdir, 3)[2]
        assert (third["status"], third["reason"], third["relationship"]) == (
            403,
            "balance_suspended",
            "prepaid",
        )
        refused = sbc.wait_events("call.refused", 1)
        assert [e["reason"] for e in refused] == ["balance_suspended"]

        paid = cli("balance", "add", "--config", str(config), "prepaid", "0.60", "top-up",
                   cwd=workdir)  # fmt: skip
        assert paid.returncode == 0 and "balance 0.6000" in paid.stdout, paid.stdout
        assert sbc.wait_events("balance.payment", 1, timeout=5)
        r = call(root, PREPAID, BALANCE_PORT, "prepaid4", 500)
        assert r.returncode == 0 and r.received(403) == 0, r.output
        assert records(workdir, 4)[3]["revenue"] == "0.6000"
        assert len(sbc.wait_events("balance.suspended", 2)) == 2
    finally:
        assert sbc.stop() == 0
    shown = cli("balance", "show", "--config", str(config), cwd=workdir)
    assert "prepaid: balance 0.0000 USD (payments 1.80, charges 1.8000;" in shown.stdout
    sbc = harness.start_sbc(workdir, config, port=BALANCE_PORT)  # a restart
    try:
        loaded = sbc.wait_events("balance.loaded", 1)
        assert loaded[-1]["balances"] == {"prepaid": "0.0000"}, loaded
        assert loaded[-1]["entries"] == 5  # two payments, three charges: none twice
        r = call(root, PREPAID, BALANCE_PORT, "prepaid5", 500)
        assert r.received(403) == 1, r.output
    finally:
        assert sbc.stop() == 0
