"""The edge under attack, with the real sbc, sipp and sipvicious on loopback.

The attacker is 127.0.0.2 (and 127.0.0.3-4 for the registrar), addresses no trunk group of
this config has. sbc listens on 127.0.0.1:6060 (unknown_source: drop), the caller is sipp
on :6070 (carrier-a, 127.0.0.1 any port), the vendors sipp on :6081/:6082.

Held calls under fire (the attacker sniffed both legs' Call-IDs and tags):

    caller :6070            sbc :6060             vendor :6081/6082      attacker 127.0.0.2
      |--INVITE------------->|--INVITE------------->|                        |
      |<----------------200--|<-----------------200-|                        |
      |--ACK---------------->|--ACK---------------->|                        |
      |                      |<---BYE / re-INVITE (exact B-leg ids, c=127.0.0.2)--|  x100 each
      |                      |<---BYE (exact A-leg ids)--------------------------|  nothing
      |--BYE---------------->|--BYE---------------->|     back, nothing relayed
      |<----------------200--|<-----------------200-|
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import harness
import pytest

from sbc.sip.digest import authorization, pick_challenge
from tests import helpers

pytestmark = pytest.mark.e2e

PORT = 6060
METRICS = 10060
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: SIP_PORT, transport: udp}]
  unknown_source: drop
  metrics: {listen: "127.0.0.1:METRICS_PORT"}
  cdr: {path: cdr.jsonl}
  registrar:
    algorithms: [MD5]           # what sipvicious speaks: the guesser's best case
    realm: sbc.lab
    lockout: {failures: 5, window: 60, block_for: BLOCK_FOR}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, port: 0}]}
  - {name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{type: registration, username: pbx1, password: PASSWORD}]}
  - {name: vendor-pool, relationship: vendor-x, direction: termination, hunting: load-balance,
     trunks: [{ip: 127.0.0.1, port: 6081}, {ip: 127.0.0.1, port: 6082}], limits: {b_timer: 2}}
routeplans:
  - {name: default, routes: [{prefix: "", trunk_groups: [vendor-pool]}]}
"""
PASSWORD = "zebra42"


def start(workdir: Path, block_for: float = 4, failures: int = 5, port: int = PORT) -> harness.Sbc:
    config = workdir / "config"
    config.mkdir(parents=True, exist_ok=True)
    text = CONFIG.replace("BLOCK_FOR", str(block_for)).replace("PASSWORD", PASSWORD)
    text = text.replace("SIP_PORT", str(port)).replace("METRICS_PORT", str(port + 4000))
    off = "" if failures else ", account_failures: 0"  # 0: no lockout of either kind
    (config / "sbc.yaml").write_text(text.replace("failures: 5", f"failures: {failures}{off}"))
    return harness.start_sbc(workdir, config, port=port)


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    proc = start(tmp_path_factory.mktemp("sbc"))
    yield proc
    assert proc.alive(), "sbc died during the tests"
    assert proc.stop() == 0


def dropped(reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith(f'sbc_sip_dropped_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sbc_sip_dropped_total for {reason}")


# A request to this node: tests.helpers.request with our port in the Request-URI.
request = partial(helpers.request, ruri=f"sip:sbc@127.0.0.1:{PORT}")

EVIL_SDP = (
    b"v=0\r\no=- 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
)


def dialogs(log: Path, first_line: str) -> list[tuple[str, str, str]]:
    """(Call-ID, From tag, To tag) of each answered INVITE in a sipp message log, as the
    peer at the other end would write them in its own requests (From/To swapped for the
    callee)."""
    out = []
    for direction, text in harness.sipp_messages(log):
        if text.startswith("SIP/2.0 200") and "INVITE" in harness.header(text, "CSeq"):
            ids = (
                harness.header(text, "Call-ID"),
                harness.tag_of(harness.header(text, "From")),
                harness.tag_of(harness.header(text, "To")),
            )
            if ids not in out and direction == ("sent" if first_line == "uas" else "received"):
                out.append(ids)
    return out


def test_held_calls_survive_a_strangers_byes_and_reinvites(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    """5 calls held 8 s; meanwhile 127.0.0.2 sends 100 BYEs and 100 re-INVITEs with the
    calls' exact B-leg Call-IDs and tags, and 100 BYEs with the A-leg's. Every call ends with
    the caller's own BYE, the vendors saw nothing but INVITE, ACK and BYE, and the attacker
    got no answer at all."""
    uas_logs = [tmp_path / f"uas-{p}.log" for p in (6081, 6082)]
    uac_log = tmp_path / "uac.log"
    result: list[harness.SippResult] = []
    with (
        harness.sipp_servers(
            "uas.xml", [6081], tmp_path, extra=["-trace_msg", "-message_file", str(uas_logs[0])]
        ),
        harness.sipp_servers(
            "uas.xml", [6082], tmp_path, extra=["-trace_msg", "-message_file", str(uas_logs[1])]
        ),
    ):
        before = len(sbc.events("call.answer"))
        ended = len(sbc.events("call.end"))
        caller = threading.Thread(
            target=lambda: result.append(
                harness.run_sipp(
                    "uac.xml", calls=5, rate=20, port=6070, workdir=tmp_path,
                    remote=f"127.0.0.1:{PORT}", timeout=60,
                    extra=["-d", "8000", "-trace_msg", "-message_file", str(uac_log)],
                )
            )
        )  # fmt: skip
        caller.start()
        assert len(sbc.wait_events("call.answer", before + 5, timeout=10)) == before + 5
        time.sleep(0.5)  # sipp writes its message log as it goes; let the ACKs land
        b_legs = [d for log in uas_logs for d in dialogs(log, "uas")]
        a_legs = dialogs(uac_log, "uac")
        assert len(b_legs) == 5 and len(a_legs) == 5, (b_legs, a_legs)
        attacker = harness.Peer("127.0.0.2")
        cseq = 10
        for i in range(100):
            call_id, ours, vendor = b_legs[i % 5]  # the vendor writes its tag in From
            attacker.send(request("BYE", call_id, vendor, ours, cseq, attacker), PORT)
            attacker.send(
                request("INVITE", call_id, vendor, ours, cseq + 1, attacker, EVIL_SDP), PORT
            )
            a_call_id, caller_tag, sbc_tag = a_legs[i % 5]
            attacker.send(request("BYE", a_call_id, caller_tag, sbc_tag, cseq, attacker), PORT)
            cseq += 2
        answers = attacker.replies(3.0)
        attacker.close()
        caller.join(timeout=60)

        def received_by_vendor() -> list[str]:
            return [
                t.split(" ", 1)[0]
                for log in uas_logs
                for d, t in harness.sipp_messages(log)
                if d == "received"
            ]

        # The caller's sipp is done once sbc answered its last BYE; the vendor's BYE from
        # sbc may still be on its way into that sipp's message log: wait for it (bounded).
        harness.wait_for(lambda: received_by_vendor().count("BYE") >= 5, timeout=5.0)
        vendor_saw = received_by_vendor()
    assert answers == []
    (r,) = result
    assert r.returncode == 0 and r.count("SuccessfulCall") == 5 and r.count("FailedCall") == 0
    assert sorted(vendor_saw) == sorted(["INVITE", "ACK", "BYE"] * 5), vendor_saw
    # the last end follows the vendor's 200 to sbc's BYE, maybe after the caller's sipp exits
    ends = [e for e in sbc.wait_events("call.end", ended + 5) if e.get("status") == 200][-5:]
    assert [e["hangup"] for e in ends] == ["caller"] * 5
    # 300 requests in well under a second: past node.flood's 200 the rest are flood drops
    assert dropped("unknown_source") + dropped("flood") >= 300


def test_twenty_b_legs_share_no_id_prefix(sbc: harness.Sbc, tmp_path: Path) -> None:
    """The Call-IDs, From tags and Via branches sbc sent in 20 B-leg INVITEs: 64 random
    bits each, no two alike in their first 8 characters (no node prefix, no counter)."""
    logs = [tmp_path / f"uas-{p}.log" for p in (6081, 6082)]
    with (
        harness.sipp_servers(
            "uas.xml", [6081], tmp_path, extra=["-trace_msg", "-message_file", str(logs[0])]
        ),
        harness.sipp_servers(
            "uas.xml", [6082], tmp_path, extra=["-trace_msg", "-message_file", str(logs[1])]
        ),
    ):
        r = harness.run_sipp("uac.xml", calls=20, rate=50, port=6071, workdir=tmp_path,
                             remote=f"127.0.0.1:{PORT}", timeout=30)  # fmt: skip
        assert r.count("SuccessfulCall") == 20, r.output
    invites = [t for log in logs for _, t in harness.sipp_messages(log) if t.startswith("INVITE ")]
    assert len(invites) == 20
    call_ids = [harness.header(t, "Call-ID") for t in invites]
    tags = [harness.tag_of(harness.header(t, "From")) for t in invites]
    branches = [harness.header(t, "Via").split("branch=z9hG4bK")[1][:16] for t in invites]
    for values in (call_ids, tags, branches):
        assert all(len(v) == 16 and int(v, 16) >= 0 for v in values), values
        assert len({v[:8] for v in values}) == 20, values


def test_strangers_get_no_answer_and_nothing_is_retransmitted(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    """OPTIONS, INVITE with Require: foo, BYE with a random tag, CANCEL and an INVITE with a
    64 KB header from 127.0.0.2: not one byte comes back in 6 s (a 420 would have been
    retransmitted at 0.5, 1.5, 3.5 s), and the node logs the address once."""
    attacker = harness.Peer("127.0.0.2")
    # 127.0.0.2 may still be banned by node.flood from the held-calls test: then these are
    # flood drops, counted before parsing, and answered no more than unknown ones
    before = dropped("unknown_source") + dropped("flood")
    logged = len(sbc.events("edge.dropped"))
    pad = "X-Pad: " + "a" * 65_000 + "\r\n"
    sdp = EVIL_SDP
    for data in (
        request("OPTIONS", "o-1", "t1", "", 1, attacker),
        request("INVITE", "i-1", "t2", "", 1, attacker, sdp, extra="Require: foo\r\n"),
        request("BYE", "b-1", "t3", os.urandom(4).hex(), 2, attacker),
        request("CANCEL", "c-1", "t4", "", 1, attacker),
        request("INVITE", "i-2", "t5", "", 1, attacker, extra=pad),
    ):
        attacker.send(data, PORT)
    assert attacker.replies(6.0) == []
    attacker.close()
    assert dropped("unknown_source") + dropped("flood") == before + 5
    assert len(sbc.events("edge.dropped")) <= logged + 1  # once per address per minute
    assert sbc.alive()


class Registrant:
    """A PBX registering by hand from one address: REGISTER, 401, REGISTER + digest."""

    def __init__(self, host: str) -> None:
        self.peer = harness.Peer(host)
        self.cseq = 0

    def send(self, auth: str = "") -> tuple[int, str] | None:
        self.cseq += 1
        me = self.peer
        extra = f"Authorization: {auth}\r\n" if auth else ""
        self.peer.send(
            (
                f"REGISTER sip:127.0.0.1:{PORT} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {me.host}:{me.port};branch=z9hG4bK{os.urandom(6).hex()}"
                ";rport\r\n"
                f"From: <sip:pbx1@127.0.0.1>;tag=r{me.port}\r\nTo: <sip:pbx1@127.0.0.1>\r\n"
                f"Call-ID: reg-{me.host}-{me.port}\r\nCSeq: {self.cseq} REGISTER\r\n"
                f"Contact: <sip:pbx1@{me.host}:{me.port}>\r\nExpires: 300\r\nMax-Forwards: 70\r\n"
                f"{extra}Content-Length: 0\r\n\r\n"
            ).encode(),
            PORT,
        )
        replies = self.peer.replies(1.0)
        if not replies:
            return None
        text = replies[0].decode()
        return int(text[8:11]), text

    def register(self, password: str) -> int | None:
        """The final status, or None when sbc said nothing (to either REGISTER)."""
        first = self.send()
        if first is None:
            return None
        status, text = first
        assert status == 401, text
        challenges = [v for k, _, v in (ln.partition(": ") for ln in text.split("\r\n"))
                      if k == "WWW-Authenticate"]  # fmt: skip
        params = pick_challenge(challenges)
        assert params is not None
        auth = authorization(params, "REGISTER", f"sip:127.0.0.1:{PORT}", "pbx1", password)
        answer = self.send(auth)
        return answer[0] if answer else None


def test_a_sixth_wrong_password_locks_the_source_out(sbc: harness.Sbc) -> None:
    """Five wrong digests from 127.0.0.3 get 403, the sixth nothing; the right password from
    127.0.0.3 then gets nothing until block_for (4 s) ends, while 127.0.0.4 registers."""
    guesser, other = Registrant("127.0.0.3"), Registrant("127.0.0.4")
    assert [guesser.register(f"guess{i}") for i in range(5)] == [403] * 5
    assert guesser.register("guess5") is None
    (blocked,) = [e for e in sbc.wait_events("auth.blocked", 1) if e["ip"] == "127.0.0.3"]
    assert blocked["scope"] == "source" and blocked["failures"] == 6
    started = time.monotonic()
    assert guesser.register(PASSWORD) is None
    assert other.register(PASSWORD) == 200
    time.sleep(max(0.0, 4.2 - (time.monotonic() - started)))
    assert guesser.register(PASSWORD) == 200
    assert [e["ip"] for e in sbc.events("auth.blocked")] == ["127.0.0.3"]  # logged once


@pytest.mark.parametrize("failures", [0, 5])
def test_svcrack_finds_the_password_only_without_the_lockout(tmp_path: Path, failures: int) -> None:
    """sipvicious' svcrack with a 40-word dictionary, the right password 30th: with the
    lockout off it finds it; with 5 failures allowed it is cut off after the sixth."""
    node = start(tmp_path, block_for=300, failures=failures, port=PORT + 1)
    words = [f"wrong{i:02d}" for i in range(29)] + [PASSWORD] + [f"late{i}" for i in range(10)]
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n")
    carrier = harness.Peer("127.0.0.1")
    try:
        run = subprocess.run(
            ["svcrack", "-u", "pbx1", "-d", str(tmp_path / "words.txt"), "-P", "6099",
             "-p", str(PORT + 1), "--maximumtime", "3", "127.0.0.1"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        # svcrack's address is also carrier-a's: blocked, it loses REGISTERs, not calls
        ruri = f"sip:sbc@127.0.0.1:{PORT + 1}"
        invite = request("INVITE", "after-block", "c1", "", 1, carrier, EVIL_SDP, ruri=ruri)
        carrier.send(invite, PORT + 1)
        answers = carrier.replies(1.0)
    finally:
        carrier.close()
        assert node.stop() == 0
    assert any(a.startswith(b"SIP/2.0 100 ") for a in answers), answers
    found = PASSWORD in run.stdout
    assert found == (failures == 0), run.stdout + run.stderr
    if failures:
        # svcrack sends from 127.0.0.1 whatever its -b says: the lockout is per address
        assert [e["ip"] for e in node.events("auth.blocked")] == ["127.0.0.1"]
        assert len(node.events("auth.refused")) == 6  # then silence: svcrack gave up
