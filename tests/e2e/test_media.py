"""Media through a real rtpengine-daemon (userspace, ng on 127.0.0.1:22223), sipp callers that
send RTP (sip-tester's g711a.pcap) and sipp callees that echo it (-rtp_echo).

One sbc on 127.0.0.1:5560, media profile `anchored` (allow PCMA, PCMU) on both sides; the
first digit of the DNIS picks the callee:

    1... -> echo    5581  stock lab uas with -rtp_echo
    2... -> hold    5582  uas_hold.xml (answers two re-INVITEs) with -rtp_echo
    3... -> refuse  5583  answers 503, then -> echo (the attempt's media branch is deleted)
    4... -> early   5585  uas_early_update.xml: 183 with SDP, answers an UPDATE before its 200

The early-offer ladder, with rtpengine's commands (ng) beside the SIP:

    uac              sbc                      rtpengine          uas
     |--INVITE(sdp)-->|--offer(A sdp, branch 1)->|                 |
     |                |<-----sdp with rtp ports--|                 |
     |<----100--------|--INVITE(rtpengine sdp)------------------->|
     |                |<-------------------------------200(sdp)---|
     |                |--answer(B sdp)---------->|                 |
     |<--200(sdp)-----|<-----sdp with rtp ports--|                 |
     |--ACK---------->|--ACK--------------------------------------->|
     |==RTP=========================>|===RTP=====================>|  echoed back the same way
     |--BYE---------->|--BYE--------------------------------------->|
     |                |--delete------------------>| counters -> call.end "media"
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.e2e

PORT = 5560
NG_PORT = 22223
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 5560, transport: udp}]
  rtpengine: [{address: "127.0.0.1:22223"}]
  media: {on_failure: ON_FAILURE, timeout: 0.2, retries: 1, ping_interval: 1}
relationships: [{name: carrier-a}, {name: vendor-x}]
media_profiles:
  - {name: anchored, codecs: {allow: [PCMA, PCMU]}}
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     media_profile: anchored, trunks: [{ip: 127.0.0.1}],
     route_advance: {codes: '^5\\d\\d$'}}
  - {name: echo, relationship: vendor-x, direction: termination, media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 5581}]}
  - {name: hold, relationship: vendor-x, direction: termination, media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 5582}]}
  - {name: refuse, relationship: vendor-x, direction: termination, media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 5583}]}
  - {name: early, relationship: vendor-x, direction: termination, media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 5585}]}
routeplans:
  - name: r
    routes:
      - {prefix: "1", trunk_groups: [echo]}
      - {prefix: "2", trunk_groups: [hold]}
      - {prefix: "3", trunk_groups: [refuse, echo]}
      - {prefix: "4", trunk_groups: [early]}
"""
RTP_PORTS = range(41000, 42000)  # harness.Rtpengine's port range


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Rtpengine]:
    engine = harness.Rtpengine(NG_PORT, tmp_path_factory.mktemp("rtpengine")).start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def sbc(
    tmp_path_factory: pytest.TempPathFactory, rtpengine: harness.Rtpengine
) -> Iterator[tuple[harness.Sbc, Path]]:
    work = tmp_path_factory.mktemp("media")
    config = work / "config"
    config.mkdir()
    (config / "sbc.yaml").write_text(CONFIG.replace("ON_FAILURE", "reject"))
    sbc = harness.start_sbc(work / "run", config, port=PORT)
    try:
        yield sbc, config
    finally:
        sbc.stop()


def messages(workdir: Path, scenario: str) -> str:
    """Everything sipp's -trace_msg logged for a scenario in ``workdir``."""
    return "".join(
        p.read_text(errors="replace") for p in workdir.glob(f"{scenario}_*_messages.log")
    )


def wait_received(workdir: Path, scenario: str, start: str, timeout: float = 5.0) -> list[str]:
    """``received`` once at least one such message is in the log, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := received(messages(workdir, scenario), start)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return found


def received(text: str, start: str) -> list[str]:
    """The messages in a -trace_msg log that were received and begin with ``start``."""
    out = []
    for block in text.split("-----------------------------------------------")[1:]:
        head, _, msg = block.partition("\n\n")
        if "received" in head and msg.startswith(start):
            out.append(msg)
    return out


def sdp_ports(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"m=audio (\d+) RTP/", text)]


def caller(
    scenario: str, dnis: str, n: int, port: int, workdir: Path, hold_ms: int = 2000
) -> harness.SippResult:
    """``n`` sipp calls to ``dnis`` through the sbc, media port = signaling port + 1000."""
    return harness.run_sipp(
        scenario, calls=n, rate=n, port=port, workdir=workdir, remote=f"127.0.0.1:{PORT}",
        extra=["-s", dnis, "-d", str(hold_ms), "-mp", str(port + 1000), "-trace_msg"],
        timeout=30,
    )  # fmt: skip


def echoing_callee(
    scenario: str, port: int, workdir: Path
) -> contextlib.AbstractContextManager[list[subprocess.Popen[bytes]]]:
    """A sipp callee on ``port`` that echoes RTP (media port = port + 1000), messages traced."""
    extra = ["-rtp_echo", "-mp", str(port + 1000), "-trace_msg"]
    return harness.sipp_servers(scenario, [port], workdir, extra=extra)


def ended(sbc: harness.Sbc, after: int) -> list[dict[str, object]]:
    return sbc.events("call.end")[after:]


def wait_ended(
    sbc: harness.Sbc, after: int, n: int, timeout: float = 5.0
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(ended(sbc, after)) < n:
        time.sleep(0.05)
    return ended(sbc, after)


def both_ways(end: dict[str, object]) -> bool:
    media = end.get("media")
    assert isinstance(media, dict), end
    legs = media["legs"]
    return legs["a"]["packets"] > 0 and legs["b"]["packets"] > 0


def test_rtp_crosses_rtpengine_both_ways_and_codecs_outside_allow_never_reach_the_callee(
    sbc: tuple[harness.Sbc, Path], rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    proc, _ = sbc
    before = len(proc.events("call.end"))
    uas_dir = tmp_path / "uas"
    with echoing_callee("uas.xml", 5581, uas_dir):
        result = caller("uac_media.xml", "15551230000", 3, 5570, tmp_path / "uac")
        ends = wait_ended(proc, before, 3)  # the callee answers our BYEs: keep it up till then
    assert result.count("SuccessfulCall") == 3, result.output
    assert len(ends) == 3 and all(e["status"] == 200 for e in ends)
    # rtpengine's own counters, from its delete reply: RTP from the caller and from the callee
    assert all(both_ways(e) for e in ends), ends
    invites = received(messages(uas_dir, "uas"), "INVITE ")
    assert len(invites) == 3
    for inv in invites:
        assert "G729" not in inv and "PCMA/8000" in inv and "telephone-event" in inv
        assert sdp_ports(inv) and all(p in RTP_PORTS for p in sdp_ports(inv))
    answers = [
        m for m in received(messages(tmp_path / "uac", "uac_media"), "SIP/2.0 200") if "m=" in m
    ]
    assert len(answers) == 3 and all(sdp_ports(a)[0] in RTP_PORTS for a in answers)
    assert rtpengine.calls() == []  # every call deleted at hangup


def test_late_offer_call_completes_with_media(
    sbc: tuple[harness.Sbc, Path], rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    proc, _ = sbc
    before = len(proc.events("call.end"))
    uas_dir = tmp_path / "uas"
    with echoing_callee("uas.xml", 5581, uas_dir):
        result = caller("uac_late.xml", "15551230000", 2, 5571, tmp_path / "uac")
        ends = wait_ended(proc, before, 2)
    assert result.count("SuccessfulCall") == 2, result.output
    assert len(ends) == 2 and all(both_ways(e) for e in ends), ends
    acks = received(messages(uas_dir, "uas"), "ACK ")
    # the callee's INVITE had no SDP; its ACK brings the caller's answer, rewritten
    assert len(acks) == 2 and all(sdp_ports(a) and sdp_ports(a)[0] in RTP_PORTS for a in acks)
    assert rtpengine.calls() == []


def test_hold_and_resume_reinvites_are_anchored_and_media_flows(
    sbc: tuple[harness.Sbc, Path], rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    proc, _ = sbc
    before = len(proc.events("call.end"))
    uas_dir = tmp_path / "uas"
    with echoing_callee("uas_hold.xml", 5582, uas_dir):
        result = caller("uac_hold.xml", "25551230000", 1, 5572, tmp_path / "uac")
        ends = wait_ended(proc, before, 1)
    assert result.count("SuccessfulCall") == 1, result.output
    (end,) = ends
    assert end["status"] == 200 and both_ways(end), end
    invites = received(messages(uas_dir, "uas_hold"), "INVITE ")
    assert len(invites) == 3
    assert "a=sendonly" in invites[1] and "a=sendonly" not in invites[2]
    assert all(sdp_ports(i)[0] in RTP_PORTS for i in invites)
    assert rtpengine.calls() == []


def test_an_update_before_the_answer_is_anchored_on_both_legs(
    sbc: tuple[harness.Sbc, Path], rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    """RFC 3311 §5 through rtpengine: the offer in the early UPDATE and its answer are
    rewritten on the attempt's branch, so each side only ever sees rtpengine's ports.

    uac :5576           sbc                  rtpengine            uas :5585
     |--INVITE(sdp)------>|--offer-------------->|                    |
     |                    |--INVITE(sdp')---------------------------->|
     |                    |<---------------------------183(sdp)-------|
     |<--183(sdp')--------|--answer------------->|                    |
     |--UPDATE(sendonly)->|--offer (branch 1)--->|                    |
     |                    |--UPDATE(sdp')---------------------------->|
     |                    |<---------------------------200(recvonly)--|
     |<--200(sdp')--------|--answer (branch 1)-->|                    |
     |                    |<---------------------------200 INVITE-----|
     |<--200--------------|                      |                    |
     |--ACK, BYE--------->|--ACK, BYE---------------------------------->|
    """
    proc, _ = sbc
    before = len(proc.events("call.end"))
    uas_dir = tmp_path / "uas"
    with harness.sipp_servers("uas_early_update.xml", [5585], uas_dir, extra=["-trace_msg"]):
        result = caller("uac_early_update.xml", "45551230000", 1, 5576, tmp_path / "uac")
        # the callee's log is written as it goes: read it while its sipp still runs
        updates = wait_received(uas_dir, "uas_early_update", "UPDATE ")
        # and keep it up until it has answered our BYE: the caller's 200 comes first (seen
        # once: the callee stopped with our BYE unread, and the call ended 32 s later)
        ends = wait_ended(proc, before, 1)
    assert result.count("SuccessfulCall") == 1, result.output
    (end,) = ends
    assert end["status"] == 200, end
    # one UPDATE, maybe retransmitted whole by our client transaction on a loaded machine
    assert updates and all(u == updates[0] for u in updates), updates
    update = updates[0]
    assert "a=sendonly" in update and sdp_ports(update)[0] in RTP_PORTS
    oks = [
        m
        for m in received(messages(tmp_path / "uac", "uac_early_update"), "SIP/2.0 200")
        if "CSeq: 2 UPDATE" in m
    ]
    assert len(oks) == 1 and "a=recvonly" in oks[0] and sdp_ports(oks[0])[0] in RTP_PORTS
    assert rtpengine.calls() == []


def test_a_failed_attempt_deletes_only_its_own_media_branch(
    sbc: tuple[harness.Sbc, Path], rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    proc, _ = sbc
    before = len(proc.events("call.end"))
    log = rtpengine.workdir / "rtpengine.log"
    log_offset = len(log.read_text(errors="replace"))
    with (
        harness.sipp_servers("uas_503.xml", [5583], tmp_path / "refuse"),
        echoing_callee("uas.xml", 5581, tmp_path / "uas"),
    ):
        result = caller("uac_media.xml", "35551230000", 2, 5573, tmp_path / "uac")
        ends = wait_ended(proc, before, 2)
    assert result.count("SuccessfulCall") == 2, result.output
    for end in ends:
        assert [a["status"] for a in end["attempts"]] == [503, 200]  # type: ignore[index]
        assert both_ways(end), end  # the caller's media survived the first attempt's delete
    # rtpengine deleted each failed attempt's branch on its own, the call staying alive
    kept = [f"(via-branch '{end['call_id']}.1') deleted\n" for end in ends]
    deadline = time.monotonic() + 5  # rtpengine's log line may trail its reply
    while True:
        text = log.read_text(errors="replace")[log_offset:]
        if all(text.count(k) >= 1 for k in kept) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [text.count(k) for k in kept] == [1, 1], ends
    assert rtpengine.calls() == []


def test_rtpengine_stopped_rejects_with_503_or_goes_unanchored_as_configured(
    sbc: tuple[harness.Sbc, Path], rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    proc, config = sbc
    rtpengine.stop()
    try:
        before = len(proc.events("call.end"))
        with harness.sipp_servers("uas.xml", [5581], tmp_path / "uas1", extra=["-trace_msg"]):
            result = caller("uac_media.xml", "15551230000", 2, 5574, tmp_path / "uac1", hold_ms=500)
        assert result.count("SuccessfulCall") == 0
        ends = wait_ended(proc, before, 2)
        assert [e["status"] for e in ends] == [503, 503]
        assert proc.events("media.failed") and proc.events("media.node_down")
        assert not messages(tmp_path / "uas1", "uas")  # no call reached the callee

        (config / "sbc.yaml").write_text(CONFIG.replace("ON_FAILURE", "unanchored"))
        proc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not proc.events("config.reloaded") and time.monotonic() < deadline:
            time.sleep(0.05)
        before = len(proc.events("call.end"))
        uas_dir = tmp_path / "uas2"
        with harness.sipp_servers("uas.xml", [5581], uas_dir, extra=["-trace_msg"]):
            result = caller("uac_media.xml", "15551230000", 2, 5575, tmp_path / "uac2", hold_ms=500)
            assert len(wait_ended(proc, before, 2)) == 2
        assert result.count("SuccessfulCall") == 2, result.output
        # unanchored: the callee got the caller's own SDP (sipp's media port), G729 and all
        invites = received(messages(uas_dir, "uas"), "INVITE ")
        assert len(invites) == 2 and all(sdp_ports(i) == [6575] for i in invites)
        assert all("G729" in i for i in invites)
    finally:
        (config / "sbc.yaml").write_text(CONFIG.replace("ON_FAILURE", "reject"))
        proc.proc.send_signal(signal.SIGHUP)
        rtpengine.start()


def test_a_call_whose_rtp_stops_is_hung_up_with_media_timeout(
    rtpengine: harness.Rtpengine, tmp_path: Path
) -> None:
    """node.media.rtp_timeout 2 s on a second sbc (:5564), a caller that sends no RTP:

    uac :5574        sbc :5564           rtpengine          uas :5584
     |--INVITE------->|--offer------------>|                  |
     |<--200----------|--answer----------->|<-----------200---|
     |--ACK---------->|   ... 2 s ...      |                  |
     |                |--query------------>|  no RTP since the answer
     |<--BYE----------|--------------------------------BYE--->|  reason media_timeout
    """
    config = tmp_path / "config"
    config.mkdir()
    text = CONFIG.replace("ON_FAILURE", "reject").replace("port: 5560", "port: 5564")
    text = text.replace("ping_interval: 1}", "ping_interval: 1, rtp_timeout: 2}")
    text = text.replace("port: 5581}", "port: 5584}")
    (config / "sbc.yaml").write_text(text)
    with harness.sipp_servers("uas", [5584], tmp_path / "uas"):
        sbc = harness.start_sbc(tmp_path / "run", config, port=5564)
        try:
            started = time.monotonic()
            r = harness.run_sipp(
                "uac_until_bye.xml", calls=1, rate=1, port=5574, workdir=tmp_path,
                remote="127.0.0.1:5564", extra=["-s", "15551230000", "-mp", "6574"], timeout=30,
            )  # fmt: skip
            took = time.monotonic() - started
            assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
            assert took > 1.5 and took < 10, took  # BYE about rtp_timeout after the answer
            (end,) = sbc.wait_events("call.end", 1)
            assert end["hangup"] == "sbc"
            (timeout,) = sbc.events("call.media_timeout")
            assert timeout["call_id"] == end["call_id"]
        finally:
            assert sbc.stop() == 0
