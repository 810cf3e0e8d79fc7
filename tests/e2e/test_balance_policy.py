"""Balance offsets and ending calls up at suspend_at, on a node of two workers (and for (b)
one process; (c) a fleet of two through Redis), with the real sbc and sipp on loopback
(README, Rating: balance offsets, on_suspend).

Ports 7420-7460: sbc :7420; callers (sipp uac): relationship `both` :7421 (media :7440-7443,
control :7422), `pbx` :7428 (:7444-7447, :7429), `prepaid` :7432 (:7448-7451, :7433);
vendors (sipp's stock uas): `vendor-x` :7425 (:7452-7455, :7426), `both`'s termination
trunk group :7430 (:7456-7459, :7431), `long` (b's vendor, two calls) :7434 (:7436-7439,
:7435); (c) node B :7423, Redis :7424, a second `prepaid` caller :7427 (:7440-7443, :7422:
(a)'s, free by then). Decks, 4 digits: `sell` 60/6 (prefix 1 at 0.60/min,
2 at 0.30/min), `buy` 60/6 (2 at 0.24/min: what we pay `both`), `persec` 1/1 (3 at
0.60/min: 0.01 a second). Every call in (a) lasts under 60 s: a call from `both` is charged
0.6000, one we send it costs 0.2400.

(a) `both` is a customer and a vendor: calls it sends us, calls we send it.

    uac both :7421      sbc :7420 (2 workers)        uas vendor-x :7425
     |--INVITE x2------->|--INVITE x2-------------------->|   revenue 0.6000 each
     |<-------200 x2-----|<--------------------------200--|   (ledger: charge)
     |--ACK, BYE-------->|--ACK, BYE--------------------->|
    uac pbx :7428        |                              uas both :7430
     |--INVITE x3------->|--INVITE x3-------------------->|   cost 0.2400 each
     |<-------200 x3-----|<--------------------------200--|   (ledger: vendor_cost)
     |--ACK, BYE-------->|--ACK, BYE--------------------->|

Its balance is then payments - its calls' revenue + the cost of the calls sent to it, as
the CDRs say (5.00 - 1.20 + 0.72 = 4.52), also after a restart; restarted with
`disable_offsets: true` it is payments - revenue (3.80), the vendor costs (0.72) listed
apart by `sbc balance show`, and one more call each way keeps them apart across a restart.

(b) `prepaid` (on_suspend: hangup, 0.90 paid, suspend_at 0.80): two long calls at 0.01/s
each; once their running cost reaches the 0.10 of credit (5 s each) the supervisor tells
the workers, which end both with BYE on both legs:

    uac prepaid :7432    sbc :7420 (2 workers)        uas long :7434
     |--INVITE x2------->|--INVITE x2-------------------->|
     |<-------200 x2-----|<--------------------------200--|
     |--ACK x2---------->|--ACK x2----------------------->|
     |   (past 4 s: 5 s billed each, 0.90 - 2 x 0.05 = 0.80: balance.hangup)
     |<-------BYE x2-----|--BYE x2----------------------->|   CDRs: hangup sbc,
     |--200 x2---------->|<--------------------------200--|   reason balance_suspended
     |--INVITE---------->|
     |<-------100, 403---|   balance_suspended
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.e2e
cli = harness.sbc_cli  # `sbc ...` of this tree

PORT, BOTH, PBX, PREPAID, VENDOR, TO_BOTH, LONG = 7420, 7421, 7428, 7432, 7425, 7430, 7434
SIPP = {
    BOTH: ["-mp", "7440", "-cp", "7422"],
    PBX: ["-mp", "7444", "-cp", "7429"],
    PREPAID: ["-mp", "7448", "-cp", "7433"],
    7427: ["-mp", "7440", "-cp", "7422"],  # (c)'s second caller: ports (a) no longer uses
}
NODE_B, REDIS, PREPAID_B = 7423, 7424, 7427
# sipp's Call-IDs "cut-1-x...", "cut-2-x..." (-cid_str), steered to worker 0 and worker 1 by
# their CRC-32 (sbc.sip.steer); CRC is affine, so which worker differs with the padding after.
PAD = next(
    k
    for k in range(64)
    if len({zlib.crc32(f"cut-{n}-{'x' * k}".encode()) % 2 for n in (1, 2)}) == 2
)
SPREAD_CID = "cut-%u-" + "x" * PAD
CONFIG = """
node:
  workers: %(workers)d
  listen: [{address: 127.0.0.1, port: 7420, transport: udp}]
  unknown_source: reject
  flood: {exempt: [127.0.0.1]}
  cdr: {path: cdr/cdr.jsonl}
  balance: {ledger: ledger/balance.jsonl}
relationships:
  - {name: vendor-x}
  - {name: pbx}
  - {name: both, balance: {warn_at: -100, suspend_at: -100, disable_offsets: %(disable)s}}
  - {name: prepaid, balance: {warn_at: 0.80, suspend_at: 0.80, on_suspend: hangup}}
rate_decks:
  - {name: sell, file: rates/sell.csv, increment: {first: 60, next: 6}}
  - {name: buy, file: rates/buy.csv, increment: {first: 60, next: 6}}
  - {name: persec, file: rates/persec.csv, increment: {first: 1, next: 1}}
trunk_groups:
  - {name: from-both, relationship: both, direction: origination, routeplan: default,
     rate_deck: sell, trunks: [{ip: 127.0.0.1, port: 7421}]}
  - {name: from-pbx, relationship: pbx, direction: origination, routeplan: default,
     rate_deck: sell, trunks: [{ip: 127.0.0.1, port: 7428}]}
  - {name: from-prepaid, relationship: prepaid, direction: origination, routeplan: default,
     rate_deck: persec, trunks: [{ip: 127.0.0.1, port: 7432}, {ip: 127.0.0.1, port: 7427}]}
  - {name: vendor, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 7425}]}
  - {name: to-both, relationship: both, direction: termination, rate_deck: buy,
     trunks: [{ip: 127.0.0.1, port: 7430}]}
  - {name: long, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 7434}]}
routeplans:
  - name: default
    routes:
      - {prefix: "1", trunk_groups: [vendor]}
      - {prefix: "2", trunk_groups: [to-both]}
      - {prefix: "3", trunk_groups: [long]}
"""
HEAD = "prefix,rate,effective,description\n"
DECKS = {
    "sell": HEAD + "1,0.60,,USA\n2,0.30,,Other\n",
    "buy": HEAD + "2,0.24,,Other\n",
    "persec": HEAD + "3,0.60,,Long\n",
}


@pytest.fixture(scope="module")
def vendors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("balance-policy")
    with (
        harness.sipp_servers("uas", [VENDOR], root / "uas-x", ["-mp", "7452", "-cp", "7426"]),
        harness.sipp_servers("uas", [TO_BOTH], root / "uas-both", ["-mp", "7456", "-cp", "7431"]),
    ):
        yield root


def config_dir(
    root: Path, name: str, disable: bool = False, workers: int = 2, port: int = PORT,
    fleet: bool = False,
) -> Path:  # fmt: skip
    d = root / f"config-{name}"
    (d / "rates").mkdir(parents=True)
    text = CONFIG % {"disable": "true" if disable else "false", "workers": workers}
    text = text.replace("port: 7420, transport", f"port: {port}, transport")
    if fleet:
        url = f"redis://127.0.0.1:{REDIS}/0"
        state = f'  state: {{backend: redis, url: "{url}", node_id: {name}}}\n'
        text = text.replace("  unknown_source: reject\n", "  unknown_source: reject\n" + state)
    (d / "sbc.yaml").write_text(text)
    for deck, text in DECKS.items():
        (d / "rates" / f"{deck}.csv").write_text(text)
    return d


def offer(
    workdir: Path,
    port: int,
    dnis: str,
    calls: int = 1,
    hold_ms: int = 300,
    scenario: str = "uac_balance.xml",
    node: int = PORT,
    more: tuple[str, ...] = (),
) -> harness.SippResult:
    return harness.run_sipp(
        scenario, calls=calls, rate=60, port=port, workdir=workdir,
        remote=f"127.0.0.1:{node}", timeout=30,
        extra=["-s", dnis, "-d", str(hold_ms), "-ci", "127.0.0.1", *SIPP[port], *more],
    )  # fmt: skip


def cdrs(workdir: Path, count: int, timeout: float = 8.0) -> list[dict[str, Any]]:
    return harness.wait_jsonl(workdir / "cdr" / "cdr.jsonl", count, timeout)


def ledger(workdir: Path) -> list[dict[str, Any]]:
    return harness.jsonl(workdir / "ledger" / "balance.jsonl")


def pay(config: Path, workdir: Path, rel: str, amount: str) -> None:
    done = cli("balance", "add", "--config", str(config), rel, amount, "opening", cwd=workdir)
    assert done.returncode == 0, done.stderr


def expected(records: list[dict[str, Any]], paid: str, offsets: bool) -> Decimal:
    """`both`'s balance from the CDRs: payments - revenue (+ cost of the calls sent to it)."""
    revenue = sum(Decimal(c["revenue"]) for c in records if c["relationship"] == "both")
    cost = sum(Decimal(c["cost"]) for c in records if c["egress_trunk_group"] == "to-both")
    return Decimal(paid) - revenue + (cost if offsets else 0)


def both_ways(vendors: Path, workdir: Path, name: str, pbx_calls: int) -> None:
    r = offer(vendors / f"{name}-both", BOTH, "15551230000", calls=1)
    assert (r.returncode, r.received(200), r.received(403)) == (0, 2, 0), r.output
    r = offer(vendors / f"{name}-pbx", PBX, "25551230000", calls=pbx_calls)
    assert (r.returncode, r.received(200)) == (0, 2 * pbx_calls), r.output


def test_a_relationship_both_customer_and_vendor_is_offset_unless_disabled(
    vendors: Path,
) -> None:
    config = config_dir(vendors, "offsets")
    workdir = vendors / "sbc-offsets"
    workdir.mkdir()
    pay(config, workdir, "both", "5.00")
    sbc = harness.start_sbc(workdir, config, port=PORT)
    try:
        both_ways(vendors, workdir, "one", 3)
        r = offer(vendors / "two-both", BOTH, "15551230000", calls=1)
        assert r.received(200) == 2, r.output
        records = cdrs(workdir, 5)
        assert sorted(c["revenue"] for c in records if c["relationship"] == "both") == [
            "0.6000", "0.6000"
        ]  # fmt: skip
        to_both = [c for c in records if c["egress_trunk_group"] == "to-both"]
        assert [c["cost"] for c in to_both] == ["0.2400"] * 3
        assert {c["relationship"] for c in to_both} == {"pbx"}
    finally:
        assert sbc.stop() == 0
    assert expected(records, "5.00", True) == Decimal("4.5200")
    entries = ledger(workdir)
    owed = [e for e in entries if e["type"] == "vendor_cost"]
    assert sorted(e["id"] for e in owed) == sorted(c["call_id"] for c in to_both)
    assert {e["relationship"] for e in owed} == {"both"}
    shown = cli("balance", "show", "--config", str(config), cwd=workdir).stdout
    assert "both: balance 4.5200 USD (payments 5.00, charges 1.2000; vendor costs 0.7200;" in (
        shown
    ), shown

    sbc = harness.start_sbc(workdir, config, port=PORT)  # a restart keeps it exactly
    try:
        loaded = sbc.wait_events("balance.loaded", 1)[-1]
        assert loaded["balances"]["both"] == "4.5200", loaded  # type: ignore[index]
        assert loaded["entries"] == 1 + 2 + 3, loaded
    finally:
        assert sbc.stop() == 0

    apart = config_dir(vendors, "apart", disable=True)  # disable_offsets: payments - revenue
    sbc = harness.start_sbc(workdir, apart, port=PORT)
    try:
        loaded = sbc.wait_events("balance.loaded", 1)[-1]
        assert loaded["balances"]["both"] == "3.8000", loaded  # type: ignore[index]
        both_ways(vendors, workdir, "apart", 1)
        records = cdrs(workdir, 7)
    finally:
        assert sbc.stop() == 0
    assert expected(records, "5.00", False) == Decimal("3.2000")
    shown = cli("balance", "show", "--config", str(apart), cwd=workdir).stdout
    assert (
        "both: balance 3.2000 USD (payments 5.00, charges 1.8000; vendor costs 0.9600 (not offset);"
    ) in shown, shown
    sbc = harness.start_sbc(workdir, apart, port=PORT)
    try:
        loaded = sbc.wait_events("balance.loaded", 1)[-1]
        assert loaded["balances"]["both"] == "3.2000", loaded  # type: ignore[index]
    finally:
        assert sbc.stop() == 0
    assert len(ledger(workdir)) == 1 + 3 + 4  # one payment, 3 charges, 4 vendor costs


@pytest.mark.parametrize("workers", [2, 1])
def test_on_suspend_hangup_ends_long_calls_when_their_cost_crosses_the_credit(
    vendors: Path, workers: int
) -> None:
    config = config_dir(vendors, f"hangup-{workers}", workers=workers)
    workdir = vendors / f"sbc-hangup-{workers}"
    workdir.mkdir()
    pay(config, workdir, "prepaid", "0.90")
    sbc = harness.start_sbc(workdir, config, port=PORT)
    media = ["-mp", "7436", "-cp", "7435"]
    uas = harness.sipp_servers("uas", [LONG], vendors / f"uas-long-{workers}", media, calls=2)
    try:
        with uas as (callee,):
            # two calls that would hold for ever: the caller's scenario waits for sbc's BYE
            r = offer(vendors / f"long-{workers}", PREPAID, "35551230000", calls=2,
                      scenario="uac_until_bye.xml", more=("-cid_str", SPREAD_CID))  # fmt: skip
            assert r.returncode == 0, r.output  # both calls got a BYE and answered it
            # the callee's two calls got a BYE each too (the stock uas ends a call at BYE)
            assert callee.wait(timeout=10) == 0
        records = cdrs(workdir, 2)
        assert [(c["hangup"], c["reason"], c["status"]) for c in records] == [
            ("sbc", "balance_suspended", 200)
        ] * 2, records
        durations = sorted(c["duration"] for c in records)
        assert durations[0] >= 4.0 and durations[-1] <= 7.5, durations  # 5 s billed each
        hangups = sbc.wait_events("balance.hangup", 1)
        assert hangups[0]["relationship"] == "prepaid", hangups
        if workers == 2:  # one call on each worker: both were told
            started = sbc.wait_events("call.start", 2)
            assert {e.get("worker") for e in started} == {0, 1}, started
        ends = sbc.wait_events("call.end", 2)
        assert [e["hangup"] for e in ends] == ["sbc", "sbc"], ends
        revenue = sum(Decimal(c["revenue"]) for c in records)
        assert Decimal("0.10") <= revenue <= Decimal("0.12"), records  # at most 1 s late each
        assert sbc.wait_events("balance.suspended", 1)

        r = offer(vendors / f"after-{workers}", PREPAID, "35551230000")  # suspended: 403
        assert (r.received(200), r.received(403)) == (0, 1), r.counts
        last = cdrs(workdir, 3)[-1]
        assert (last["status"], last["reason"]) == (403, "balance_suspended")
    finally:
        assert sbc.stop() == 0
    charges = [e for e in ledger(workdir) if e["type"] == "charge"]
    assert sorted(e["id"] for e in charges) == sorted(c["call_id"] for c in records)


def test_a_fleet_offsets_once_and_each_node_ends_its_own_calls(vendors: Path) -> None:
    """(c) Two nodes sharing one book through Redis :7424: node A :7420 (two workers), node
    B :7423 (one process). A call from `pbx` through B to `both`'s termination trunk group:
    its vendor cost lands once on the fleet's ledger and in both journals. Then `prepaid`
    (0.90 paid, suspend_at 0.80, hangup) calls through each node at once, 0.01/s each:

        uac :7432 --INVITE--> node A --INVITE--> uas long :7434
        uac :7427 --INVITE--> node B --INVITE--> uas long :7434
            (each node: the ledger's 0.90 - its own call's running cost - the other
             node's, read from Redis every second; 0.80 reached past 4 s)
        uac <--BYE-- node A --BYE--> uas;  uac <--BYE-- node B --BYE--> uas

    Alone, each node would see 0.90 - 0.05 at 5 s and cut only past 9 s.
    """
    redis = harness.Redis(REDIS, vendors / "redis").start()
    a_dir = config_dir(vendors, "fleet-a", workers=2, fleet=True)
    b_dir = config_dir(vendors, "fleet-b", workers=1, port=NODE_B, fleet=True)
    a_work, b_work = vendors / "sbc-fleet-a", vendors / "sbc-fleet-b"
    a_work.mkdir()
    b_work.mkdir()
    nodes: list[harness.Sbc] = []
    try:
        pay(a_dir, a_work, "prepaid", "0.90")  # straight onto the fleet's ledger
        nodes.append(harness.start_sbc(a_work, a_dir, port=PORT))
        nodes.append(harness.start_sbc(b_work, b_dir, port=NODE_B))
        r = offer(vendors / "fleet-pbx", PBX, "25551230000", node=NODE_B)
        assert (r.returncode, r.received(200)) == (0, 2), r.output
        (rec,) = cdrs(b_work, 1)
        assert (rec["egress_trunk_group"], rec["cost"]) == ("to-both", "0.2400")

        def owed(workdir: Path) -> list[str]:
            path = workdir / "ledger" / "balance.jsonl"
            if not path.exists():
                return []
            return [e["id"] for e in ledger(workdir) if e["type"] == "vendor_cost"]

        assert harness.wait_for(lambda: owed(a_work) == owed(b_work) == [rec["call_id"]], 5)
        shown = cli("balance", "show", "--config", str(a_dir), cwd=a_work).stdout
        assert "both: balance 0.2400 USD (payments 0, charges 0; vendor costs 0.2400;" in shown

        media = ["-mp", "7436", "-cp", "7435"]
        with harness.sipp_servers("uas", [LONG], vendors / "uas-fleet", media, calls=2) as (
            callee,
        ):
            results: list[harness.SippResult] = []

            def call(port: int, node: int) -> None:
                results.append(offer(vendors / f"fleet-long-{port}", port, "35551230000",
                                     scenario="uac_until_bye.xml", node=node))  # fmt: skip

            threads = [
                threading.Thread(target=call, args=(PREPAID, PORT)),
                threading.Thread(target=call, args=(PREPAID_B, NODE_B)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert [x.returncode for x in results] == [0, 0], [x.output for x in results]
            assert callee.wait(timeout=10) == 0  # both vendor legs got their BYE
        (a_rec,) = cdrs(a_work, 1)
        b_rec = cdrs(b_work, 2)[-1]
        for c in (a_rec, b_rec):
            assert (c["hangup"], c["reason"], c["relationship"]) == (
                "sbc", "balance_suspended", "prepaid"
            ), c  # fmt: skip
            assert 4.0 <= c["duration"] <= 8.0, c  # the fleet's cost, not just its own
        for node in nodes:
            assert node.wait_events("balance.hangup", 1)
        r = offer(vendors / "fleet-after", PREPAID_B, "35551230000", node=NODE_B)
        assert (r.received(200), r.received(403)) == (0, 1), r.counts
    finally:
        for node in nodes:
            assert node.stop() == 0
        redis.stop()
