"""The lab contract end to end: real sipp, real sbc, loopback only.

sipp uac (5070..) --> sbc 127.0.0.1:5060 --> sipp uas 127.0.0.1:5081 / 5082
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.e2e


def test_stock_uac_completes_300_calls_at_50_cps(sbc: harness.Sbc, tmp_path: Path) -> None:
    """sipp's stock uac/uas, unmodified: 300 of 300 calls complete through the B2BUA."""
    before = len(sbc.events("call.end"))
    with harness.sipp_servers("uas", [5081, 5082], tmp_path):
        result = harness.run_sipp("uac", calls=300, rate=50, port=5070, workdir=tmp_path)
    assert result.returncode == 0, result.output
    assert result.count("SuccessfulCall") == 300 and result.count("FailedCall") == 0
    # sipp is done once its BYE is answered; the call ends when the vendor answers ours
    ends = sbc.wait_events("call.end", before + 300)[before:]
    assert len(ends) == 300 and {e["status"] for e in ends} == {200}
    trunks = Counter(e["attempts"][0]["trunk"] for e in ends)  # type: ignore[index]
    # load-balance: each worker rotates over the trunks on its own, so the node's split is
    # even to within one call per worker (the lab node has node.workers 0: one per core)
    assert set(trunks) == {"127.0.0.1:5081", "127.0.0.1:5082"}
    assert abs(trunks["127.0.0.1:5081"] - trunks["127.0.0.1:5082"]) <= 2 * (os.cpu_count() or 1)


def test_callee_hangs_up(sbc: harness.Sbc, tmp_path: Path) -> None:
    """The vendor sends BYE; the caller receives one and the call ends as 'callee'.

    uac            sbc             uas
     |--INVITE----->|--INVITE------>|
     |<-----200-----|<--------200---|
     |--ACK-------->|--ACK--------->|
     |<-----BYE-----|<--------BYE---|
     |--200-------->|--200--------->|
    """
    before = len(sbc.events("call.end"))
    with harness.sipp_servers("uas_bye.xml", [5081, 5082], tmp_path, extra=["-d", "300"]):
        result = harness.run_sipp(
            "uac_callee_bye.xml", calls=10, rate=10, port=5071, workdir=tmp_path
        )
    assert result.returncode == 0, result.output
    assert result.count("SuccessfulCall") == 10
    ends = sbc.wait_events("call.end", before + 10)[before:]
    assert [e["hangup"] for e in ends] == ["callee"] * 10


def test_cancel_before_answer(sbc: harness.Sbc, tmp_path: Path) -> None:
    """The caller cancels while the vendor rings: 487 to the caller, CANCEL to the vendor.

    uac            sbc             uas
     |--INVITE----->|--INVITE------>|
     |<-----180-----|<--------180---|
     |--CANCEL----->|               |
     |<-----200-----|--CANCEL------>|
     |<-----487-----|<--------200---|
     |--ACK-------->|<--------487---|
     |              |--ACK--------->|
    """
    before = len(sbc.events("call.end"))
    with harness.sipp_servers("uas_ring.xml", [5081, 5082], tmp_path, calls=5) as uas:
        result = harness.run_sipp("uac_cancel.xml", calls=10, rate=10, port=5072, workdir=tmp_path)
        codes = [p.wait(timeout=30) for p in uas]
    assert result.returncode == 0, result.output
    assert codes == [0, 0], "each vendor UAS must see CANCEL, send 487 and get its ACK"
    ends = sbc.wait_events("call.end", before + 10)[before:]
    assert [(e["status"], e["hangup"]) for e in ends] == [(487, "caller")] * 10


def test_tcp_caller(sbc: harness.Sbc, tmp_path: Path) -> None:
    """A caller on TCP reaches the UDP vendors; responses return over its connection."""
    with harness.sipp_servers("uas", [5081, 5082], tmp_path):
        result = harness.run_sipp(
            "uac", calls=20, rate=20, port=5073, workdir=tmp_path, extra=["-t", "t1"]
        )
    assert result.returncode == 0, result.output
    assert result.count("SuccessfulCall") == 20
