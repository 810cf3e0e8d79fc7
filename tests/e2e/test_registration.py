"""Registration trunks and digest, with the real sbc and sipp on loopback.

A PBX registers, then calls from its registered address (lab/sipp/reg_call.xml):

    pbx :5077                sbc :5360                  vendor :5081
     |--REGISTER------------->|                           |
     |<--------------401------|  WWW-Authenticate (MD5, SHA-256)
     |--REGISTER+Authorization>|
     |<--------------200------|  binding udp:127.0.0.1:5077 -> trunk group pbx
     |--INVITE--------------->|--INVITE------------------>|
     |<--------------200------|<-----------------------200|   ... ACK, BYE

A vendor that challenges (lab/sipp/uas_auth.xml on :5083):

    caller :5070             sbc                        vendor :5083
     |--INVITE--------------->|--INVITE (CSeq 1)---------->|
     |                        |<----------------------407-|
     |                        |--ACK--------------------->|
     |                        |--INVITE (CSeq 2) + Proxy-Authorization>|
     |<--------------200------|<----------------------200-|   (credentials verified by sipp)

And the sbc keeps a registration at a vendor registrar (lab/sipp/uas_registrar.xml on
:5084), then sends calls to it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.e2e

PORT = 5360
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 5360, transport: udp}]
  unknown_source: reject
  # sipp 3.6 answers the first challenge and knows only MD5 (RFC 8760 wants the first
  # supported one): MD5 first here; the default order is SHA-256, MD5.
  registrar: {algorithms: [MD5, SHA-256], realm: sbc.lab}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, port: 5070}]}
  - {name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{type: registration, username: pbx1, password: s3cret}]}
  - {name: vendor-pool, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}], limits: {b_timer: 2}}
  - {name: vendor-auth, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5083, username: vendor1, password: v3ndor}]}
  - {name: vendor-reg, relationship: vendor-x, direction: termination, relationship_type: vendor,
     trunks: [{type: registration, ip: 127.0.0.1, port: 5084, username: sbc-reg, password: r3g,
               expires: 120}]}
routeplans:
  - name: default
    routes:
      - {prefix: "", trunk_groups: [vendor-pool]}
      - {prefix: "2", trunk_groups: [vendor-auth]}
      - {prefix: "3", trunk_groups: [vendor-reg]}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reg")


@pytest.fixture(scope="module")
def sbc(root: Path) -> Iterator[harness.Sbc]:
    (root / "config").mkdir()
    (root / "config" / "sbc.yaml").write_text(CONFIG)
    with (
        harness.sipp_servers("uas_registrar.xml", [5084], root / "registrar"),
        harness.sipp_servers("uas_auth.xml", [5083], root / "auth", extra=["-trace_msg"]),
        harness.sipp_servers("uas", [5081], root / "uas"),
    ):
        proc = harness.start_sbc(root / "sbc", root / "config", port=PORT)
        yield proc
        assert proc.alive(), "sbc died during the tests"
        assert proc.stop() == 0


def pbx(password: str, port: int, workdir: Path) -> harness.SippResult:
    workdir.mkdir(parents=True, exist_ok=True)
    users = workdir / "users.csv"
    users.write_text("SEQUENTIAL\npbx1;\n")
    account = ["-inf", str(users), "-au", "pbx1", "-ap", password, "-s", "15551230000"]
    return harness.run_sipp(
        "reg_call.xml",
        calls=1,
        rate=1,
        port=port,
        workdir=workdir,
        remote=f"127.0.0.1:{PORT}",
        extra=account,
        timeout=20,
    )


def test_pbx_registers_with_digest_then_calls_from_its_contact(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    ends = len(sbc.events("call.end"))
    r = pbx("s3cret", 5077, tmp_path)
    assert r.returncode == 0, r.output
    assert (r.received(401), r.received(403), r.count("SuccessfulCall")) == (1, 0, 1), r.counts
    (reg,) = sbc.events("registrar.registered")
    assert reg["username"] == "pbx1" and reg["trunk_group"] == "pbx"
    assert reg["source"] == "udp:127.0.0.1:5077" and reg["expires"] == 300
    start = [e for e in sbc.events("call.start") if e["source"] == "udp:127.0.0.1:5077"]
    assert [e["trunk_group"] for e in start] == ["pbx"]
    # sipp is done when our 200 answers its BYE; the end follows the vendor's 200 to ours,
    # and test_invite_to_a_vendor_that_challenges counts call.end lines: wait for it
    assert len(sbc.wait_events("call.end", ends + 1)) == ends + 1


def test_each_new_binding_is_known_to_every_worker_before_its_200(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    """The INVITE right after the 200 is steered by its Call-ID, so about half of these land
    on the worker that did not take the REGISTER: the 200 waits until that one holds the
    binding too (sbc.supervisor, ``_bind``), so no INVITE meets an unknown source."""
    ends = len(sbc.events("call.end"))
    results = [pbx("s3cret", 5090 + i, tmp_path / str(i)) for i in range(6)]
    assert [(r.returncode, r.received(403), r.count("SuccessfulCall")) for r in results] == [
        (0, 0, 1)
    ] * 6, next(r.output for r in results if r.returncode)
    assert len(sbc.wait_events("call.end", ends + 6)) == ends + 6  # as in the test above


def test_wrong_password_is_refused(sbc: harness.Sbc, tmp_path: Path) -> None:
    r = pbx("wrong", 5078, tmp_path)
    assert r.received(401) == 1 and r.received(403) == 1, r.counts
    refused = sbc.events("auth.refused")[-1]
    assert (refused["reason"], refused["username"], refused["level"]) == (
        "bad_response", "pbx1", "warning",
    )  # fmt: skip
    assert not [e for e in sbc.events("call.start") if e["source"] == "udp:127.0.0.1:5078"]


def test_invite_to_a_vendor_that_challenges_with_407_completes(
    sbc: harness.Sbc, root: Path, tmp_path: Path
) -> None:
    """The vendor (sipp) answers any retry with credentials; the test checks them itself,
    from the vendor's message log, with hashlib: RFC 2617 §3.2.2 with qop=auth."""
    before = len(sbc.events("call.end"))
    r = harness.run_sipp(
        "uac", calls=3, rate=3, port=5070, workdir=tmp_path, remote=f"127.0.0.1:{PORT}",
        extra=["-s", "25551230000"], timeout=20,
    )  # fmt: skip
    assert r.returncode == 0 and r.count("SuccessfulCall") == 3, r.output
    assert len(sbc.events("call.attempt_auth")) == 3
    (log,) = root.glob("auth/uas_auth_*_messages.log")
    creds = re.findall(r"^Proxy-Authorization: Digest (.*)$", log.read_text(), re.M)
    assert len(creds) == 3
    for line in creds:
        p = dict(re.findall(r'(\w+)="?([^",]*)"?', line))
        md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
        ha1 = md5("vendor1:vendor.example:v3ndor")
        ha2 = md5(f"INVITE:{p['uri']}")
        expected = md5(f"{ha1}:n0nce:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        assert p["response"] == expected and p["uri"].startswith("sip:25551230000@127.0.0.1:5083")
    ends = sbc.wait_events("call.end", before + 3)[before:]
    assert {(e["status"], e["attempts"][0]["trunk"]) for e in ends} == {(200, "127.0.0.1:5083")}  # type: ignore[index]


def test_outbound_registration_to_a_vendor_then_calls_to_it(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    deadline = time.monotonic() + 10
    while not sbc.events("registration.up") and time.monotonic() < deadline:
        time.sleep(0.1)
    (up,) = sbc.events("registration.up")
    assert up["registrar"] == "udp:127.0.0.1:5084" and up["expires"] == 120
    before = len(sbc.events("call.end"))
    r = harness.run_sipp(
        "uac", calls=2, rate=2, port=5070, workdir=tmp_path, remote=f"127.0.0.1:{PORT}",
        extra=["-s", "35551230000"], timeout=20,
    )  # fmt: skip
    assert r.returncode == 0 and r.count("SuccessfulCall") == 2, r.output
    # sipp is done when our 200 answers its BYE; call.end follows the vendor's 200
    ends = sbc.wait_events("call.end", before + 2)[before:]
    assert {e["attempts"][0]["trunk"] for e in ends} == {"127.0.0.1:5084"}  # type: ignore[index]
