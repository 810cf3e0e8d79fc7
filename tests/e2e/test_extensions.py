"""SIP extensions real trunks use (issue 15), with the real sbc and sipp on loopback.

One sbc on 127.0.0.1:6360; the DNIS picks the route:

A vendor that redirects (lab/sipp/uas_302.xml on :6381) to another UAS (:6382):

    caller :6370          sbc :6360              vendor :6381        vendor' :6382
     |--INVITE----------->|--INVITE-------------->|                    |
     |                    |<-------------------302|  Contact: <sip:15559990000@127.0.0.1:6382>
     |                    |--ACK----------------->|                    |
     |                    |--INVITE (R-URI 15559990000@127.0.0.1:6382)->|  attempt 2
     |<---------------200-|<-----------------------------------------200|
     |--ACK, BYE--------->|--ACK, BYE---------------------------------->|

A caller that tries a blind transfer (lab/sipp/uac_refer.xml), with `refer: reject`:

    caller :6371          sbc :6360              vendor :6382
     |--INVITE, ACK------>|--INVITE, ACK--------->|
     |--REFER------------>|                       |  Refer-To: <sip:2000@192.0.2.9>
     |<---------------403-|                       |  (never crosses)
     |--BYE-------------->|--BYE----------------->|

A caller that asks for a 90 s session timer, refreshed by itself, and then goes quiet
(lab/sipp/uac_timer.xml): sbc hangs up both legs before the interval ends (RFC 4028 §10).

    caller :6372          sbc :6360              vendor :6382
     |--INVITE----------->|--INVITE--------------->|  Session-Expires: 90;refresher=uac
     |<-200 SE: 90;refresher=uac, Require: timer---|
     |--ACK-------------->|--ACK------------------>|
     |      ... 90 - 30 s, no UPDATE or re-INVITE ...
     |<---------------BYE-|--BYE------------------>|  hangup sbc, reason session_timer

Reliable provisionals (RFC 3262), PRACK hop by hop (lab/sipp/uac_100rel.xml, uas_100rel.xml):

    caller :6373          sbc :6360                  vendor :6383
     |--INVITE----------->|--INVITE------------------->|  Supported: 100rel
     |  Require: 100rel   |<--183 RSeq: 1, SDP---------|  Require: 100rel
     |                    |--PRACK RAck: 1 1 INVITE---->|
     |<--183 RSeq: n------|<------------------200 PRACK-|
     |--PRACK RAck: n 1 INVITE->|                       |
     |<--200 PRACK--------|<-----------------200 INVITE-|  (held for the caller's PRACK)
     |<--200 INVITE-------|                            |
     |--ACK, BYE--------->|--ACK, BYE----------------->|

A caller without 100rel (:6374, lab/sipp/uac.xml) to the same vendor: sbc PRACKs the
vendor's 183 itself and relays it as an ordinary 183.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.e2e

PORT = 6360
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 6360, transport: udp}]
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, port: 6370}, {ip: 127.0.0.1, port: 6371},
             {ip: 127.0.0.1, port: 6372}, {ip: 127.0.0.1, port: 6373},
             {ip: 127.0.0.1, port: 6374}]}
  - {name: redirector, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 6381}]}
  - {name: plain, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 6382}]}
  - {name: reliable, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 6383}]}
routeplans:
  - name: default
    routes:
      - {prefix: "1", trunk_groups: [redirector]}
      - {prefix: "2", trunk_groups: [plain]}
      - {prefix: "3", trunk_groups: [reliable]}
"""


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    root = tmp_path_factory.mktemp("ext")
    (root / "config").mkdir()
    (root / "config" / "sbc.yaml").write_text(CONFIG)
    target = ["-key", "target", "15559990000@127.0.0.1:6382"]
    with (
        harness.sipp_servers("uas_302.xml", [6381], root / "redirector", extra=target),
        harness.sipp_servers("uas", [6382], root / "plain"),
        harness.sipp_servers("uas_100rel.xml", [6383], root / "reliable"),
    ):
        proc = harness.start_sbc(root / "sbc", root / "config", port=PORT)
        yield proc
        assert proc.alive(), "sbc died during the tests"
        assert proc.stop() == 0


def caller(scenario: str, dnis: str, port: int, workdir: Path) -> harness.SippResult:
    return harness.run_sipp(
        scenario, calls=1, rate=1, port=port, workdir=workdir,
        remote=f"127.0.0.1:{PORT}", extra=["-s", dnis], timeout=120,
    )  # fmt: skip


def record(sbc: harness.Sbc, call_id: str) -> dict[str, Any]:
    """The call's CDR, once the sbc has written it."""
    path = sbc.log_path.parent / "cdr" / "cdr.jsonl"
    assert harness.wait_for(lambda: path.exists() and call_id in path.read_text())
    (rec,) = [json.loads(x) for x in path.read_text().splitlines() if call_id in x]
    return rec  # type: ignore[no-any-return]


def test_a_302_is_followed_to_the_uas_it_names(sbc: harness.Sbc, tmp_path: Path) -> None:
    r = caller("uac", "15551230000", 6370, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    (end,) = sbc.wait_events("call.end", 1)
    rec = record(sbc, str(end["call_id"]))
    attempts = [
        (a["trunk"], a["status"], a["outcome"], a["redirected_by"]) for a in rec["attempts"]
    ]
    assert attempts == [
        ("127.0.0.1:6381", 302, "redirected", None),
        ("127.0.0.1:6382", 200, "answered", 1),
    ]
    assert rec["dnis_routed"] == "15559990000"  # the Contact's user
    (moved,) = sbc.events("call.redirected")
    assert moved["to"] == ["udp:127.0.0.1:6382"]


def test_refer_is_answered_403_and_never_reaches_the_vendor(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    before = len(sbc.events("call.end"))
    r = caller("uac_refer.xml", "25551230000", 6371, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    assert r.received(403) == 1
    (end,) = sbc.wait_events("call.end", before + 1)[before:]
    assert end["hangup"] == "caller" and end["status"] == 200


def test_a_caller_that_stops_refreshing_its_session_timer_is_hung_up(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    before = len(sbc.events("call.end"))
    started = time.monotonic()
    r = caller("uac_timer.xml", "25551230000", 6372, tmp_path)
    took = time.monotonic() - started
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    assert 55 < took < 90 + 32, took  # BYE at 90 - min(32, 90/3) s after the answer
    (end,) = sbc.wait_events("call.end", before + 1)[before:]
    assert (end["hangup"], end["status"]) == ("sbc", 200)
    rec = record(sbc, str(end["call_id"]))
    assert rec["reason"] == "session_timer" and rec["hangup"] == "sbc"
    # sipp 3.6 logs a failed check_it in its error log (in r.output), but lets the call go on
    assert "regexp match" not in r.output, r.output  # "Failed regexp match: ..."


def test_prack_on_both_legs_for_a_caller_that_requires_100rel(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    before = len(sbc.events("call.end"))
    r = caller("uac_100rel.xml", "35551230000", 6373, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    assert "regexp match" not in r.output, r.output  # the caller's 183 carried an RSeq
    assert (r.received(183), r.received(200)) == (1, 3)  # 183; 200 PRACK, INVITE, BYE
    # the vendor checked our Supported and RAck
    assert harness.failed_checks(sbc.log_path.parent.parent / "reliable") == ""
    # its end is logged once the vendor answers our BYE, maybe after sipp exits: wait, so
    # the next test's count of call.end lines does not take this call's for its own
    assert len(sbc.wait_events("call.end", before + 1)) == before + 1


def test_a_caller_without_100rel_gets_the_vendors_reliable_183_plainly(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    before = len(sbc.events("call.end"))
    r = caller("uac", "35551230001", 6374, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    (end,) = sbc.wait_events("call.end", before + 1)[before:]
    assert [(a["trunk_group"], a["status"]) for a in end["attempts"]] == [("reliable", 200)]  # type: ignore[attr-defined]
