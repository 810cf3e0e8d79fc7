"""SDP in reliable provisionals and PRACKs (RFC 3262 §5, RFC 3264) through a real
rtpengine-daemon (our own: ng 127.0.0.1:7390, media ports 45000-45999), with the real sbc
and sipp on loopback. sbc :7301; vendors :7350 (early), :7351 (late), :7359 (update);
callers :7352, :7353, :7358; sipp control :7354-7357, :7305-7306, sipp media :7360-7379.
Both sides are anchored (media profile `anchored`), so every SDP a peer sees names
rtpengine's ports, not the other peer's.

Early offer: the caller's INVITE has the offer, the vendor's reliable 183 the answer
(lab/sipp/uac_100rel.xml, lab/sipp/uas_100rel.xml):

    caller :7352           sbc :7301          rtpengine            vendor :7350
     |--INVITE + offer------>|--offer------------>|                    |
     |  Require: 100rel      |--INVITE + offer'------------------------>|  Supported: 100rel
     |                       |<------------183 RSeq: 1, answer, Require: 100rel-|
     |                       |--PRACK RAck: 1 1 INVITE------------------>|
     |                       |--answer----------->|                    |
     |<--183 RSeq: n, answer'|                    |                    |
     |--PRACK--------------->|                    |                    |
     |<--200 PRACK, 200 INVITE (answer')----------<---------200 INVITE--|
     |--ACK, BYE------------>|--ACK, BYE---------------------------------->|

Late offer: the caller's INVITE has none; the vendor's reliable 183 brings the offer, the
caller's PRACK the answer, which crosses in our PRACK (lab/sipp/uac_100rel_late.xml,
lab/sipp/uas_100rel_offer.xml):

    caller :7353           sbc :7301          rtpengine            vendor :7351
     |--INVITE, no SDP------>|--INVITE, no SDP, Supported: 100rel------>|
     |  Supported: 100rel    |<--------------183 RSeq: 1, offer, Require: 100rel-|
     |                       |--offer (from the vendor)->|              |
     |<--183 RSeq: n, offer'-|                    |                    |  our PRACK waits
     |--PRACK + answer------>|--answer (from the caller)->|             |
     |<--200 PRACK-----------|--PRACK RAck: 1 1 INVITE + answer'-------->|
     |                       |<---------------------------------200 PRACK|
     |<--200 INVITE----------|<--------------------------200 INVITE, no SDP|
     |--ACK, BYE------------>|--ACK, BYE---------------------------------->|

A new offer in the caller's PRACK (after a reliable 183 with the answer): our PRACK went
already, so it crosses as an UPDATE in the early dialog, whose answer comes back in the 200
to the PRACK (lab/sipp/uac_100rel_prack_offer.xml, lab/sipp/uas_100rel_update.xml):

    caller :7358           sbc :7301          rtpengine            vendor :7359
     |--INVITE + offer------>|--INVITE + offer'------------------------>|
     |<--183 RSeq: n, answer'|<-------------183 RSeq: 1, answer---------|  PRACKed at once
     |--PRACK + offer 2----->|--offer------------>|                    |
     |                       |--UPDATE + offer 2'----------------------->|
     |                       |<----------------------200 + answer 2------|
     |<--200 PRACK + answer 2'|--answer---------->|                    |
     |<--200 INVITE----------|<---------------------------200 INVITE----|
     |--ACK, BYE------------>|--ACK, BYE---------------------------------->|
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.e2e

PORT, NG = 7301, 7390
EARLY, LATE, UPDATE = 7350, 7351, 7359
CALLER_EARLY, CALLER_LATE, CALLER_UPDATE = 7352, 7353, 7358
# per vendor port: sipp media ports (vendor, caller; each binds -mp and -mp + 2), control
SIPP = {
    EARLY: ((7360, 7364), (7354, 7355)),
    LATE: ((7368, 7372), (7356, 7357)),
    UPDATE: ((7376, 7377), (7305, 7306)),
}
RTP_PORTS = range(45000, 46000)
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 7301, transport: udp}]
  rtpengine: [{address: "127.0.0.1:7390"}]
  media: {on_failure: reject}
relationships: [{name: carrier-a}, {name: vendor-x}]
media_profiles:
  - {name: anchored, codecs: {allow: [PCMU, PCMA]}}
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 7352}, {ip: 127.0.0.1, port: 7353},
              {ip: 127.0.0.1, port: 7358}]}
  - {name: early, relationship: vendor-x, direction: termination, media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 7350}]}
  - {name: late, relationship: vendor-x, direction: termination, media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 7351}]}
  - {name: update, relationship: vendor-x, direction: termination, media_profile: anchored,
     trunks: [{ip: 127.0.0.1, port: 7359}]}
routeplans:
  - name: default
    routes:
      - {prefix: "1", trunk_groups: [early]}
      - {prefix: "2", trunk_groups: [late]}
      - {prefix: "3", trunk_groups: [update]}
"""


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    root = tmp_path_factory.mktemp("prack")
    engine = harness.Rtpengine(NG, root / "rtpengine", RTP_PORTS.start, RTP_PORTS.stop - 1)
    engine.start()
    try:
        (root / "config").mkdir()
        (root / "config" / "sbc.yaml").write_text(CONFIG)
        proc = harness.start_sbc(root / "sbc", root / "config", port=PORT)
        yield proc
        assert proc.alive(), "sbc died during the tests"
        assert proc.stop() == 0
    finally:
        engine.stop()


def call(
    sbc: harness.Sbc, tmp_path: Path, uac: str, uas: str, dnis: str, ports: tuple[int, int]
) -> tuple[list[str], list[str]]:
    """One call from a caller sipp (``ports[0]``) to a vendor sipp (``ports[1]``): the SIP
    each one received, once both are done and the sbc has logged the call's end (it waits
    for rtpengine's delete reply, so it can come after sipp exits; a later test counting
    ``call.end`` lines must not see this call's)."""
    ends = len(sbc.events("call.end"))
    caller_port, vendor_port = ports
    (vendor_mp, caller_mp), (vendor_cp, caller_cp) = SIPP[vendor_port]
    vendor_extra = ["-trace_msg", "-mp", str(vendor_mp), "-cp", str(vendor_cp),
                    "-ci", "127.0.0.1"]  # fmt: skip
    with harness.sipp_servers(uas, [vendor_port], tmp_path / "vendor", vendor_extra, calls=1) as (
        vendor,
    ):
        r = harness.run_sipp(
            uac, calls=1, rate=1, port=caller_port, workdir=tmp_path / "caller",
            remote=f"127.0.0.1:{PORT}", timeout=20,
            extra=["-s", dnis, "-trace_msg", "-mp", str(caller_mp), "-ci", "127.0.0.1",
                   "-cp", str(caller_cp)],
        )  # fmt: skip
        assert r.returncode == 0 and r.count("SuccessfulCall") == 1, r.output
        assert "regexp match" not in r.output, r.output  # the caller's checks held
        vendor.wait(timeout=10)
    assert harness.failed_checks(tmp_path / "vendor") == ""  # the vendor's checks held
    assert len(sbc.wait_events("call.end", ends + 1)) == ends + 1
    got = []
    for side in ("caller", "vendor"):
        (log,) = (tmp_path / side).glob("*_messages.log")
        got.append([m for d, m in harness.sipp_messages(log) if d == "received"])
    return got[0], got[1]


def audio_port(message: str) -> int:
    found = re.findall(r"m=audio (\d+) RTP/AVP", message)
    assert len(found) == 1, message
    return int(found[0])


def first(messages: list[str], start: str) -> str:
    return next(m for m in messages if m.startswith(start))


def test_early_offer_the_vendors_answer_in_its_reliable_183_crosses_through_rtpengine(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    at_caller, at_vendor = call(
        sbc, tmp_path, "uac_100rel.xml", "uas_100rel.xml", "15551230000", (CALLER_EARLY, EARLY)
    )
    invite = first(at_vendor, "INVITE ")
    assert audio_port(invite) in RTP_PORTS  # the caller's offer, as rtpengine rewrote it
    prack = first(at_vendor, "PRACK ")
    assert harness.header(prack, "RAck") == "1 1 INVITE"
    a183 = first(at_caller, "SIP/2.0 183")
    assert harness.header(a183, "Require") == "100rel" and harness.header(a183, "RSeq")
    assert audio_port(a183) in RTP_PORTS  # the vendor's answer, rewritten
    assert "c=IN IP4 127.0.0.1" in a183


def test_late_offer_the_vendors_offer_in_a_reliable_183_answered_in_both_pracks(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    before = len(sbc.events("call.end"))
    at_caller, at_vendor = call(
        sbc, tmp_path, "uac_100rel_late.xml", "uas_100rel_offer.xml", "25551230000",
        (CALLER_LATE, LATE),
    )  # fmt: skip
    invite = first(at_vendor, "INVITE ")
    assert "m=audio" not in invite and "100rel" in harness.header(invite, "Supported")
    a183 = first(at_caller, "SIP/2.0 183")
    offer_port = audio_port(a183)
    assert offer_port in RTP_PORTS and harness.header(a183, "RSeq")
    assert "a=rtpmap:0 PCMU/8000" in a183  # the vendor's offer, rtpengine's ports
    prack = first(at_vendor, "PRACK ")
    assert harness.header(prack, "RAck") == "1 1 INVITE"
    assert harness.header(prack, "Content-Type") == "application/sdp"
    answer_port = audio_port(prack)
    assert answer_port in RTP_PORTS and answer_port != offer_port  # the caller's, rewritten
    assert len([m for m in at_caller if m.startswith("SIP/2.0 200")]) == 3  # PRACK, INVITE, BYE
    assert not [m for m in at_caller if m.startswith("SIP/2.0 200") and "m=audio" in m]
    (end,) = sbc.wait_events("call.end", before + 1)[before:]
    assert end["status"] == 200 and end["hangup"] == "caller"


def test_a_new_offer_in_the_callers_prack_crosses_as_an_early_update(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    at_caller, at_vendor = call(
        sbc, tmp_path, "uac_100rel_prack_offer.xml", "uas_100rel_update.xml", "35551230000",
        (CALLER_UPDATE, UPDATE),
    )  # fmt: skip
    update = first(at_vendor, "UPDATE ")
    assert audio_port(update) in RTP_PORTS and "PCMA" in update  # offer 2, rewritten
    prack_ok = next(m for m in at_caller if m.startswith("SIP/2.0 200") and "PRACK" in m)
    assert audio_port(prack_ok) in RTP_PORTS and "PCMA" in prack_ok  # answer 2, rewritten
