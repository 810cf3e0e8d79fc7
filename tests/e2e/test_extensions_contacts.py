"""One PBX account with several registered devices (RFC 3261 §10.3), and calls to its DID
that try them in q order (sbc.call.forking), with the real sbc (its workers share the
bindings) and sipp on loopback. Ports 7300-7349: sbc :7300, sipp SIP :7310-7313, sipp
control :7320-7323, sipp media :7330-7345.

Two devices of account pbx1 register, each from its own socket, with its own Contact and
q (lab/sipp/pbx_register_q.xml); the desk phone is busy (lab/sipp/pbx_busy.xml), the
softphone answers (lab/sipp/pbx_answer.xml). A carrier (sipp's stock uac) calls the DID:

    desk :7310 (q=1)        sbc :7300               soft :7311 (q=0.5)     carrier :7312
     |--REGISTER, 401, REGISTER+auth-->|                 |                      |
     |<--200 Contact: <desk>;expires=300                 |                      |
     |                       |<--REGISTER, 401, REGISTER+auth--|                |
     |                       |--200------------------->|  Contact: <desk>;expires=N,
     |                       |                         |    <soft>;expires=300;q=0.5
     |                       |<---------------------------------------INVITE DID-|
     |<--INVITE (R-URI desk)-|                         |                      |
     |--100, 486------------>|                         |                      |
     |<--ACK-----------------|                         |                      |
     |                       |--INVITE (R-URI soft)--->|                      |
     |                       |<----------100, 180, 200-|                      |
     |                       |-------------------------------------180, 200-->|
     |                       |<----------------------------------------ACK, BYE-|
     |                       |--ACK, BYE-------------->|                      |

The same two devices again, the desk phone now ringing until cancelled
(lab/sipp/uas_ring.xml): after registrar.contact_timeout (2 s here) sbc cancels it and
tries the softphone:

    desk :7310 (q=1)        sbc :7300               soft :7311 (q=0.5)     carrier :7312
     |<--INVITE--------------|<---------------------------------------INVITE DID-|
     |--100, 180------------>|--------------------------------------------180--->|
     |        (2 s)          |                         |                      |
     |<--CANCEL--------------|                         |                      |
     |--200, 487------------>|--INVITE---------------->|                      |
     |<--ACK-----------------|<----------100, 180, 200-|--------------200----->|

Then a third socket of the same PBX (lab/sipp/pbx_unregister.xml) removes every contact
of the account, and the next call to the DID gets 480:

    pbx :7313                sbc :7300                                     carrier :7312
     |--REGISTER Contact: *, Expires: 0 (401, again with digest)-->|             |
     |<--200 (no Contact)-----|  registrar.unregistered: desk, soft            |
     |                        |<--------------------------------------INVITE DID-|
     |                        |--480------------------------------------------->|  not_registered
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.e2e

PORT = 7300
DESK, SOFT, CARRIER, UNREG = 7310, 7311, 7312, 7313
DID = "15557770000"
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 7300, transport: udp}]
  workers: 2
  unknown_source: reject
  # sipp 3.6 answers the first challenge and knows only MD5 (test_registration.py)
  registrar: {algorithms: [MD5, SHA-256], realm: sbc.lab, contact_timeout: 2}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, port: 7312}]}
  - {name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{type: registration, username: pbx1, password: s3cret}]}
  # what the routes need; no call here goes to it (nothing listens on :7349)
  - {name: vendor-pool, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 7349}]}
routeplans:
  - name: default
    numbering: [{number: "15557770000", trunk_group: pbx}]
    routes: [{prefix: "", trunk_groups: [vendor-pool]}]
"""


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    yield from harness.serving(tmp_path_factory.mktemp("contacts"), CONFIG, PORT)


def device(
    port: int, line: str, q: str, answers: str, workdir: Path, stay_ms: int = 8000
) -> subprocess.Popen[bytes]:
    """A device of pbx1 registering from ``port`` and answering calls with ``answers``."""
    workdir.mkdir(parents=True)
    i = port - DESK
    args = [
        *harness.sipp_args("pbx_register_q.xml", port), f"127.0.0.1:{PORT}",
        "-oocsf", str(harness.SCENARIOS / answers),
        "-mp", str(7330 + 4 * i), "-ci", "127.0.0.1", "-cp", str(7320 + i),
        "-m", "1", "-d", str(stay_ms), "-key", "line", line, "-key", "q", q,
        "-s", "pbx1", "-au", "pbx1", "-ap", "s3cret",
        "-trace_msg", "-trace_err", "-timeout", "20s", "-timeout_error",
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> None:
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")


def carrier(scenario: str, workdir: Path) -> harness.SippResult:
    return harness.run_sipp(
        scenario, calls=1, rate=1, port=CARRIER, workdir=workdir,
        remote=f"127.0.0.1:{PORT}", timeout=20,
        extra=["-s", DID, "-mp", str(7338), "-ci", "127.0.0.1", "-cp", "7322"],
    )  # fmt: skip


def cdr(sbc: harness.Sbc, end: dict[str, object]) -> dict[str, Any]:
    path = sbc.log_path.parent / "cdr" / "cdr.jsonl"
    cid = str(end["call_id"])
    assert harness.wait_for(lambda: path.exists() and cid in path.read_text())
    (rec,) = [json.loads(x) for x in path.read_text().splitlines() if cid in x]
    return dict(rec)


def messages(workdir: Path, direction: str) -> list[str]:
    (log,) = workdir.glob("*_messages.log")
    return [m for d, m in harness.sipp_messages(log) if d == direction]


def test_a_did_call_tries_the_busy_desk_phone_then_the_softphone(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    desk_uri = f"sip:trunk-pbx1@127.0.0.1:{DESK};line=desk"
    soft_uri = f"sip:trunk-pbx1@127.0.0.1:{SOFT};line=soft"
    before = len(sbc.events("registrar.registered"))
    desk = device(DESK, "desk", "1.0", "pbx_busy.xml", tmp_path / "desk")
    try:
        sbc.wait_events("registrar.registered", before + 1, timeout=10)
        soft = device(SOFT, "soft", "0.5", "pbx_answer.xml", tmp_path / "soft")
        try:
            found = sbc.wait_events("registrar.registered", before + 2, timeout=10)[before:]
            got = [(e["contact"], e["q"], e["source"]) for e in found]
            assert got == [
                (desk_uri, 1.0, f"udp:127.0.0.1:{DESK}"),
                (soft_uri, 0.5, f"udp:127.0.0.1:{SOFT}"),
            ]
            calls_before = len(sbc.events("call.end"))
            r = carrier("uac", tmp_path / "carrier")
            assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
            (end,) = sbc.wait_events("call.end", calls_before + 1)[calls_before:]
        finally:
            finish(soft)
    finally:
        finish(desk)

    # the softphone's 200 listed both devices' contacts, each with its own expires and q
    (ok,) = [m for m in messages(tmp_path / "soft", "received") if m.startswith("SIP/2.0 200")]
    contacts = [line for line in ok.splitlines() if line.lower().startswith("contact:")]
    joined = ",".join(c.partition(":")[2] for c in contacts)
    assert f"<{desk_uri}>;expires=" in joined and f"<{soft_uri}>;expires=300;q=0.5" in joined
    # q order: the desk phone (q=1) first, its 486 hands the call to the softphone
    rec = cdr(sbc, end)
    assert (rec["dnis"], rec["status"]) == (DID, 200)
    attempts = [(a["trunk"], a["status"], a["outcome"]) for a in rec["attempts"]]
    assert attempts == [(f"127.0.0.1:{DESK}", 486, "code"), (f"127.0.0.1:{SOFT}", 200, "answered")]
    (desk_invite,) = [m for m in messages(tmp_path / "desk", "received") if m.startswith("INVITE")]
    assert desk_invite.splitlines()[0] == f"INVITE {desk_uri} SIP/2.0"
    soft_got = messages(tmp_path / "soft", "received")
    assert [m.split(" ", 1)[0] for m in soft_got if not m.startswith("SIP/2.0")] == [
        "INVITE", "ACK", "BYE"
    ]  # fmt: skip
    (soft_invite,) = [m for m in soft_got if m.startswith("INVITE")]
    assert soft_invite.splitlines()[0] == f"INVITE {soft_uri} SIP/2.0"


def test_a_desk_phone_that_rings_too_long_is_cancelled_for_the_softphone(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    before = len(sbc.events("registrar.registered"))
    desk = device(DESK, "desk", "1.0", "uas_ring.xml", tmp_path / "desk")
    try:
        sbc.wait_events("registrar.registered", before + 1, timeout=10)
        soft = device(SOFT, "soft", "0.5", "pbx_answer.xml", tmp_path / "soft")
        try:
            sbc.wait_events("registrar.registered", before + 2, timeout=10)
            calls_before = len(sbc.events("call.end"))
            r = carrier("uac", tmp_path / "carrier")
            assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
            (end,) = sbc.wait_events("call.end", calls_before + 1)[calls_before:]
        finally:
            finish(soft)
    finally:
        finish(desk)
    rec = cdr(sbc, end)
    attempts = [(a["trunk"], a["status"], a["outcome"]) for a in rec["attempts"]]
    assert attempts == [
        (f"127.0.0.1:{DESK}", 480, "no_answer"),
        (f"127.0.0.1:{SOFT}", 200, "answered"),
    ]
    desk_got = [m.split(" ", 1)[0] for m in messages(tmp_path / "desk", "received")]
    assert [m for m in desk_got if m in ("INVITE", "CANCEL", "ACK")] == ["INVITE", "CANCEL", "ACK"]


def test_contact_star_removes_every_device_then_the_did_gets_480(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    """Runs after the test above: both devices' contacts are still live (300 s)."""
    before = len(sbc.events("registrar.unregistered"))
    workdir = tmp_path / "unreg"
    workdir.mkdir()
    r = harness.run_sipp(
        "pbx_unregister.xml", calls=1, rate=1, port=UNREG, workdir=workdir,
        remote=f"127.0.0.1:{PORT}", timeout=20,
        extra=["-s", "pbx1", "-au", "pbx1", "-ap", "s3cret", "-mp", "7342",
               "-ci", "127.0.0.1", "-cp", "7323", "-trace_msg"],
    )  # fmt: skip
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    gone = sbc.wait_events("registrar.unregistered", before + 2)[before:]
    assert sorted(str(e["contact"]).rsplit("=", 1)[1] for e in gone) == ["desk", "soft"]
    (ok,) = [m for m in messages(workdir, "received") if m.startswith("SIP/2.0 200")]
    assert harness.header(ok, "Contact") == ""

    calls_before = len(sbc.events("call.end"))
    r = carrier("pbx_caller_480.xml", tmp_path / "carrier")
    assert r.returncode == 0 and r.received(480) == 1, r.output
    (end,) = sbc.wait_events("call.end", calls_before + 1)[calls_before:]
    rec = cdr(sbc, end)
    assert (rec["status"], rec["reason"], rec["attempts"]) == (480, "not_registered", [])
