"""Calls to the DIDs of a registered PBX, with the real sbc and sipp on loopback (ports
6400-6439: sbc :6400, sipp SIP :6410-6411, sipp control :6416-6417, sipp media
:6430-6437).

The routeplan's numbering gives DID 15557770000 to trunk group ``pbx``, whose trunk is a
registration account (pbx1). The PBX (lab/sipp/pbx_register.xml, answering calls with its
out-of-call scenario lab/sipp/pbx_answer.xml on the same socket) registers, then a carrier
calls the DID:

    pbx :6410                    sbc :6400                   carrier :6411
     |--REGISTER----------------->|                            |
     |<-----------------------401-|  WWW-Authenticate (MD5, SHA-256)
     |--REGISTER+Authorization--->|                            |
     |<-----------------------200-|  binding udp:127.0.0.1:6410,
     |                            |  Contact <sip:trunk-pbx1@127.0.0.1:6410;line=7f3a>
     |                            |<-------------------INVITE--|  R-URI 15557770000@sbc
     |<--INVITE-------------------|                            |  R-URI: the Contact,
     |--100, 180, 200------------>|--180, 200----------------->|  To: the DID
     |<--ACK----------------------|<----------------------ACK--|
     |<--BYE----------------------|<----------------------BYE--|
     |--200---------------------->|--200---------------------->|

DID 15557770001 belongs to trunk group ``pbx2``, whose account (pbx2) never registers
(lab/sipp/pbx_caller_480.xml):

    carrier :6411                sbc :6400
     |--INVITE------------------->|  numbering -> pbx2: no binding
     |<-----------------------480-|  CDR reason not_registered, no attempt
     |--ACK---------------------->|
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

PORT = 6400
PBX_PORT, CARRIER_PORT = 6410, 6411
# sipp binds media sockets at -mp and -mp + 2 (audio, video) and a control socket at -cp;
# the defaults (6000, 8888 on 0.0.0.0) are outside this module's ports: each sipp gets its own
PBX_MEDIA, CARRIER_MEDIA = 6430, 6434
PBX_CONTROL, CARRIER_CONTROL = 6416, 6417
CONTACT = "sip:trunk-pbx1@127.0.0.1:6410;line=7f3a"  # what pbx_register.xml registers
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 6400, transport: udp}]
  unknown_source: reject
  # sipp 3.6 answers the first challenge and knows only MD5: MD5 first (test_registration.py)
  registrar: {algorithms: [MD5, SHA-256], realm: sbc.lab}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, port: 6411}]}
  - {name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{type: registration, username: pbx1, password: s3cret}]}
  - {name: pbx2, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{type: registration, username: pbx2, password: s3cret2}]}
  # what the routes need; no call here goes to it (nothing listens on :6420)
  - {name: vendor-pool, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 6420}]}
routeplans:
  - name: default
    numbering:
      - {number: "15557770000", trunk_group: pbx}
      - {number: "15557770001", trunk_group: pbx2}
    routes: [{prefix: "", trunk_groups: [vendor-pool]}]
"""


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    yield from harness.serving(tmp_path_factory.mktemp("pbxdid"), CONFIG, PORT)


@pytest.fixture
def registered_pbx(sbc: harness.Sbc, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The PBX sipp, registered (its 200 seen by the sbc) and waiting for calls: one
    REGISTER dialog (-m 1) that pauses 8 s, with pbx_answer.xml for the calls that come in
    meanwhile. Runs in ``tmp_path / "pbx"``; the caller waits for it to end."""
    workdir = tmp_path / "pbx"
    workdir.mkdir()
    args = [
        *harness.sipp_args("pbx_register.xml", PBX_PORT),
        f"127.0.0.1:{PORT}",
        "-oocsf", str(harness.SCENARIOS / "pbx_answer.xml"),
        "-mp", str(PBX_MEDIA), "-ci", "127.0.0.1", "-cp", str(PBX_CONTROL),
        "-m", "1",
        "-s", "pbx1", "-au", "pbx1", "-ap", "s3cret",
        "-trace_msg", "-trace_err", "-trace_counts",
        "-timeout", "20s", "-timeout_error",
    ]  # fmt: skip
    before = len(sbc.events("registrar.registered"))
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        found = sbc.wait_events("registrar.registered", before + 1, timeout=10)[before:]
        assert [(e["username"], e["trunk_group"]) for e in found] == [("pbx1", "pbx")], found
        yield proc
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def carrier(scenario: str, dnis: str, workdir: Path) -> harness.SippResult:
    return harness.run_sipp(
        scenario, calls=1, rate=1, port=CARRIER_PORT, workdir=workdir,
        remote=f"127.0.0.1:{PORT}", timeout=20,
        extra=["-s", dnis, "-mp", str(CARRIER_MEDIA), "-ci", "127.0.0.1",
               "-cp", str(CARRIER_CONTROL)],
    )  # fmt: skip


def cdr(sbc: harness.Sbc, end: dict[str, object]) -> dict[str, Any]:
    path = sbc.log_path.parent / "cdr" / "cdr.jsonl"
    cid = str(end["call_id"])
    assert harness.wait_for(lambda: path.exists() and cid in path.read_text())
    (rec,) = [json.loads(x) for x in path.read_text().splitlines() if cid in x]
    return dict(rec)


def test_a_did_of_a_registered_pbx_reaches_its_binding_with_its_contact(
    sbc: harness.Sbc, registered_pbx: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    reg = [e for e in sbc.events("registrar.registered") if e["username"] == "pbx1"][-1]
    assert (reg["source"], reg["contact"]) == (f"udp:127.0.0.1:{PBX_PORT}", CONTACT)
    before = len(sbc.events("call.end"))

    r = carrier("uac", "15557770000", tmp_path / "carrier")
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    (end,) = sbc.wait_events("call.end", before + 1)[before:]
    rec = cdr(sbc, end)
    assert (rec["trunk_group"], rec["dnis"], rec["status"]) == ("carrier-a", "15557770000", 200)
    attempts = [(a["trunk_group"], a["trunk"], a["status"], a["outcome"]) for a in rec["attempts"]]
    assert attempts == [("pbx", f"127.0.0.1:{PBX_PORT}", 200, "answered")]

    # the PBX's side, from its own message log once its sipp is done
    _, err = registered_pbx.communicate(timeout=30)
    assert registered_pbx.returncode == 0, err.decode(errors="replace")
    (log,) = (tmp_path / "pbx").glob("pbx_register_*_messages.log")
    got = [m for d, m in harness.sipp_messages(log) if d == "received"]
    invites = [m for m in got if m.startswith("INVITE ")]
    assert len(invites) == 1, got
    (invite,) = invites
    assert invite.splitlines()[0] == f"INVITE {CONTACT} SIP/2.0"
    assert harness.header(invite, "To") == "<sip:15557770000@127.0.0.1>"
    assert harness.header(invite, "Via").startswith(f"SIP/2.0/UDP 127.0.0.1:{PORT};")
    # the dialog went on there too: the PBX answered, and ACK and BYE reached it
    sent = [m.splitlines()[0] for d, m in harness.sipp_messages(log) if d == "sent"]
    assert "SIP/2.0 200 OK" in sent
    methods = [m.split(" ", 1)[0] for m in got if not m.startswith("SIP/2.0")]
    assert methods == ["INVITE", "ACK", "BYE"], got


def test_a_did_of_a_pbx_that_never_registered_gets_480_not_registered(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    assert not [e for e in sbc.events("registrar.registered") if e["username"] == "pbx2"]
    before = len(sbc.events("call.end"))
    r = carrier("pbx_caller_480.xml", "15557770001", tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    assert r.received(480) == 1, r.counts
    (end,) = sbc.wait_events("call.end", before + 1)[before:]
    rec = cdr(sbc, end)
    assert (rec["dnis"], rec["status"], rec["reason"]) == ("15557770001", 480, "not_registered")
    assert rec["attempts"] == []  # nothing was sent anywhere
    (notice,) = [e for e in sbc.events("call.not_registered") if e["call_id"] == end["call_id"]]
    assert notice["dnis"] == "15557770001"
