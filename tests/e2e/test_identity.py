"""Asserted identity, privacy and STIR/SHAKEN Identity across the real sbc and sipp (loopback).

sbc on 127.0.0.1:6260. Callers (lab/sipp/uac_identity.xml, headers from -key): the trusted
trunk group `trusted-in` is sipp on :6271 (trusted, ani_from_pai), `open-in` sipp on :6272
(untrusted). Vendors (lab/sipp/uas_identity.xml, whose checks log an error for any INVITE
that names the caller's PAI host 10.1.1.1 or lacks Identity, and which asserts its own
identity in 180/200): `trusted-v` on :6281
(DNIS 1...), `open-v` on :6282 (DNIS 2..., untrusted). Only ports 6260-6299 are used
(sipp media on 6286-6297, control sockets 6263-6265).

    caller :6271 (trusted)     sbc :6260                      vendor :6281 (trusted)
      |--INVITE---------------->|                                |
      |  PAI <sip:+15551234567@10.1.1.1>                         |
      |  Identity: <PASSporT>;info=..;alg=ES256;ppt=shaken       |
      |                         |--INVITE----------------------->|
      |                         |  From <sip:+15551234567@127.0.0.1>   (ani_from_pai)
      |                         |  PAI <sip:+15551234567@127.0.0.1>    (our host)
      |                         |  Identity: (byte for byte)     |
      |                         |<-----------180/200-------------|
      |                         |  PAI <sip:+15559876543@10.2.2.2>
      |<--------------180/200---|  PAI <sip:+15559876543@127.0.0.1>   (connected identity)
      |--ACK, BYE-------------->|--ACK, BYE--------------------->|

    to vendor :6282 (untrusted): no PAI either way; Identity still crosses.
    with Privacy: id, to :6281: PAI and Privacy: id cross, From "Anonymous" <sip:anonymous@
        anonymous.invalid> (the number came from the PAI); to :6282: neither crosses.
    caller :6272 (untrusted) with PAI, to :6281: the PAI never crosses; ANI is From's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.e2e

PORT = 6260
TRUSTED_CALLER, OPEN_CALLER = 6271, 6272
TRUSTED_VENDOR, OPEN_VENDOR = 6281, 6282
CONFIG = f"""
node:
  listen: [{{address: 127.0.0.1, port: {PORT}, transport: udp}}]
  workers: 1
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: trusted-in, relationship: carrier-a, direction: origination, routeplan: r,
     trusted: true, ani_from_pai: true, trunks: [{{ip: 127.0.0.1, port: {TRUSTED_CALLER}}}]}}
  - {{name: open-in, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{{ip: 127.0.0.1, port: {OPEN_CALLER}}}]}}
  - {{name: trusted-v, relationship: vendor-x, direction: termination, trusted: true,
     trunks: [{{ip: 127.0.0.1, port: {TRUSTED_VENDOR}}}]}}
  - {{name: open-v, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: {OPEN_VENDOR}}}]}}
routeplans:
  - name: r
    routes: [{{prefix: "1", trunk_groups: [trusted-v]}}, {{prefix: "2", trunk_groups: [open-v]}}]
"""
PAI = "P-Asserted-Identity: <sip:+15551234567@10.1.1.1>"
# A SHAKEN PASSporT as an authentication service writes it (RFC 8225 / RFC 8588): its
# header, claims and signature, base64url, then the RFC 8224 parameters.
IDENTITY = (
    "Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1Ijoia"
    "HR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0"
    "biI6WyIxNTU1MTIzMDAwMCJdfSwiaWF0IjoxNzAwMDAwMDAwLCJvcmlnIjp7InRuIjoiMTU1NTEyMzQ1Njc"
    "ifSwib3JpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0xMmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0.MEUCIQDkUsYNeW"
    "iOXSf7XqU_1GoWZ6wqBMIJxCX2X1GTqXNl8wIgS0GxPrmF-4aLgT3Z1oP7vWm0tKuD9sQf6RbcYt2XgJk"
    ";info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)
NONE = "X-None: 1"
UAS_LOGS = {TRUSTED_VENDOR: "uas-trusted.log", OPEN_VENDOR: "uas-open.log"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity")


@pytest.fixture(scope="module")
def sbc(root: Path) -> Iterator[harness.Sbc]:
    config = root / "config"
    config.mkdir()
    (config / "sbc.yaml").write_text(CONFIG)
    vendors = []
    for port, media, control in ((TRUSTED_VENDOR, 6290, 6263), (OPEN_VENDOR, 6294, 6264)):
        log = str(root / UAS_LOGS[port])
        extra = ["-mp", str(media), "-cp", str(control), "-trace_msg", "-message_file", log]
        vendors.append(harness.sipp_servers("uas_identity.xml", [port], root, extra=extra))
    with vendors[0], vendors[1]:
        proc = harness.start_sbc(root / "sbc", config, port=PORT)
        yield proc
        assert proc.alive(), "sbc died during the tests"
        assert proc.stop() == 0


def call(
    root: Path, caller: int, dnis: str, pai: str = PAI, privacy: str = NONE
) -> tuple[str, str]:
    """One call from ``caller`` with these header lines and IDENTITY: the INVITE the vendor
    received, and the 200 the caller received."""
    vendor = TRUSTED_VENDOR if dnis.startswith("1") else OPEN_VENDOR
    uas_log = root / UAS_LOGS[vendor]
    before = len(_received(uas_log, "INVITE "))
    uac_log = root / f"uac-{dnis}-{caller}.log"
    keys = ["-key", "pai", pai, "-key", "privacy", privacy, "-key", "identity", IDENTITY]
    r = harness.run_sipp(
        "uac_identity.xml", calls=1, rate=1, port=caller, workdir=root, timeout=20,
        remote=f"127.0.0.1:{PORT}",
        extra=["-s", dnis, "-mp", "6286", "-cp", "6265", "-trace_msg", "-message_file",
               str(uac_log), *keys],
    )  # fmt: skip
    assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
    assert uas_errors(root) == ""  # the vendors' own checks (10.1.1.1 absent, Identity there)
    assert harness.wait_for(lambda: len(_received(uas_log, "INVITE ")) > before)
    (invite,) = _received(uas_log, "INVITE ")[before:]
    (ok,) = [m for m in _received(uac_log, "SIP/2.0 200") if "INVITE" in harness.header(m, "CSeq")]
    return invite, ok


def uas_errors(root: Path) -> str:
    """What the vendors' scenario checks reported (sipp -trace_err); "" when all held."""
    return "".join(p.read_text(errors="replace") for p in root.glob("uas_identity_*_errors.log"))


def _received(log: Path, start: str) -> list[str]:
    return [t for d, t in harness.sipp_messages(log) if d == "received" and t.startswith(start)]


def head(message: str) -> list[str]:
    """A message's start line and header lines (up to the empty line)."""
    lines = message.splitlines()
    return lines[: lines.index("")] if "" in lines else lines


def headers(message: str, name: str) -> list[str]:
    """Every value of header ``name`` in a message's text (long form only, as sbc sends)."""
    out = []
    for line in head(message):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            out.append(value.strip())
    return out


def identity_value(message: str) -> str:
    (value,) = headers(message, "Identity")
    return value


def test_trusted_to_trusted_asserts_on_our_host_both_ways(sbc: harness.Sbc, root: Path) -> None:
    invite, ok = call(root, TRUSTED_CALLER, "15551230000")
    assert headers(invite, "P-Asserted-Identity") == ["<sip:+15551234567@127.0.0.1>"]
    assert harness.header(invite, "From").startswith("<sip:+15551234567@127.0.0.1>")
    assert identity_value(invite) == IDENTITY.partition(": ")[2]  # byte for byte
    assert headers(ok, "P-Asserted-Identity") == ["<sip:+15559876543@127.0.0.1>"]
    assert sbc.wait_events("call.start", 1)[-1]["ani"] == "+15551234567"  # ani_from_pai


def test_an_untrusted_vendor_sees_no_pai_and_sends_none_back(sbc: harness.Sbc, root: Path) -> None:
    invite, ok = call(root, TRUSTED_CALLER, "25551230000")
    assert headers(invite, "P-Asserted-Identity") == []
    assert identity_value(invite) == IDENTITY.partition(": ")[2]
    assert headers(ok, "P-Asserted-Identity") == []  # the untrusted vendor's own PAI


def test_privacy_id_crosses_to_a_trusted_vendor_and_is_applied_for_an_untrusted_one(
    sbc: harness.Sbc, root: Path
) -> None:
    invite, _ = call(root, TRUSTED_CALLER, "15551230001", privacy="Privacy: id")
    assert headers(invite, "P-Asserted-Identity") == ["<sip:+15551234567@127.0.0.1>"]
    assert headers(invite, "Privacy") == ["id"]
    # the ANI came from the PAI the caller asked to keep private: From does not carry it
    assert harness.header(invite, "From").startswith(
        '"Anonymous" <sip:anonymous@anonymous.invalid>'
    )
    invite, _ = call(root, TRUSTED_CALLER, "25551230001", privacy="Privacy: id")
    assert headers(invite, "P-Asserted-Identity") == [] and headers(invite, "Privacy") == []
    assert not any("15551234567" in line for line in head(invite))
    assert identity_value(invite) == IDENTITY.partition(": ")[2]


def test_an_untrusted_callers_pai_never_crosses(sbc: harness.Sbc, root: Path) -> None:
    before = len(sbc.events("call.start"))
    invite, _ = call(root, OPEN_CALLER, "15551230002")
    assert headers(invite, "P-Asserted-Identity") == []
    assert harness.header(invite, "From").startswith("<sip:15550001000@127.0.0.1>")
    (start,) = sbc.wait_events("call.start", before + 1)[before:]
    assert start["ani"] == "15550001000" and start["trunk_group"] == "open-in"
