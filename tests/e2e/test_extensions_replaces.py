"""An INVITE with Replaces (RFC 3891) from a caller, with the real sbc, a raw SIP caller
(it holds two dialogs at once, which one sipp scenario cannot) and sipp's stock uas as the
vendor. sbc :7302 with two workers, the two calls' Call-IDs chosen to steer to different
ones (the replacing INVITE is handed to the replaced call's worker, and its dialog pinned
there: sbc.sip.steer); caller :7380, vendor :7381 (control :7382, media :7384).

    caller :7380            sbc :7302                       vendor :7381 (sipp uas)
     |--INVITE (a1)--------->|--INVITE (b1)------------------->|   call 1
     |<-------------180, 200-|<--------------------------180, 200|
     |--ACK----------------->|--ACK--------------------------->|
     |--INVITE (a2)--------->|  Replaces: a1;to-tag=<ours on a1>;from-tag=<caller's>
     |                       |--INVITE (b2)------------------->|  Replaces: b1;to-tag=<vendor's
     |                       |                                 |    on b1>;from-tag=<ours on b1>
     |<-------------180, 200-|<--------------------------180, 200|   call 2
     |--ACK----------------->|--ACK--------------------------->|
     |--INVITE (a3)--------->|  Replaces naming no dialog: never sent on
     |<------------------481-|
     |--BYE a1, BYE a2------>|--BYE b1, BYE b2---------------->|
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import harness
import pytest

from sbc.sip.message import Response
from sbc.sip.parser import parse_message

pytestmark = pytest.mark.e2e

PORT, CALLER, VENDOR = 7302, 7380, 7381


A1, A2 = harness.on_worker("a1-replaces", 0), harness.on_worker("a2-replaces", 1)
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 7302, transport: udp}]
  workers: 2
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, port: 7380}]}
  - {name: vendor, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 7381}]}
routeplans:
  - {name: default, routes: [{prefix: "", trunk_groups: [vendor]}]}
"""
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7386 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def message(
    method: str,
    call_id: str,
    tag: str,
    to_tag: str,
    cseq: int,
    extra: str = "",
    body: str = "",
    ruri: str = f"sip:15551230000@127.0.0.1:{PORT}",
) -> bytes:
    branch = "z9hG4bK" + os.urandom(6).hex()
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{CALLER};branch={branch};rport\r\n"
        f"From: <sip:15550001000@127.0.0.1:{CALLER}>;tag={tag}\r\n"
        f"To: <sip:15551230000@127.0.0.1>{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:pbx@127.0.0.1:{CALLER}>\r\nMax-Forwards: 70\r\n{extra}{ctype}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def target(ok: Response) -> str:
    """The remote target of the dialog a 2xx opened: its Contact's URI (RFC 3261 §12.1.2),
    where the caller's ACK and BYE go; ours names the worker holding the dialog."""
    contact = ok.get("Contact") or ""
    assert re.fullmatch(r"<sip:sbc0[01]@127\.0\.0\.1:\d+>", contact), contact
    return contact[1:-1]


def final(peer: harness.Peer, seconds: float = 5.0) -> Response:
    """The first final response to arrive (provisionals skipped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for raw in peer.replies(0.2):
            msg = parse_message(raw)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg
    raise AssertionError("no final response")


def test_a_replaces_crosses_mapped_to_the_vendors_dialog_and_a_stranger_gets_481(
    tmp_path: Path,
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "sbc.yaml").write_text(CONFIG)
    vendor_dir = tmp_path / "vendor"
    vendor_dir.mkdir()
    vendor = subprocess.Popen(
        [*harness.sipp_args("uas", VENDOR), "-m", "2", "-trace_msg", "-mp", "7384",
         "-ci", "127.0.0.1", "-cp", "7382"],
        cwd=vendor_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sbc = harness.start_sbc(tmp_path / "sbc", tmp_path / "config", port=PORT)
    peer = harness.Peer("127.0.0.1", CALLER)
    try:
        peer.send(message("INVITE", A1, "phone1", "", 1, body=SDP), PORT)
        ok1 = final(peer)
        assert ok1.status == 200 and ok1.to.tag
        peer.send(message("ACK", A1, "phone1", ok1.to.tag, 1, ruri=target(ok1)), PORT)

        replaces = f"Replaces: {A1};to-tag={ok1.to.tag};from-tag=phone1\r\n"
        peer.send(message("INVITE", A2, "phone2", "", 1, replaces, SDP), PORT)
        ok2 = final(peer)
        assert ok2.status == 200 and ok2.to.tag
        # its dialog lives with the replaced call (worker 0), not with its Call-ID's (1):
        # the ACK to that worker's Contact must find it, whichever worker reads it
        peer.send(message("ACK", A2, "phone2", ok2.to.tag, 1, ruri=target(ok2)), PORT)

        bogus = "Replaces: nosuch;to-tag=1;from-tag=2\r\n"
        peer.send(message("INVITE", "a3-replaces", "phone3", "", 1, bogus, SDP), PORT)
        refused = final(peer)
        assert refused.status == 481
        peer.send(message("ACK", "a3-replaces", "phone3", refused.to.tag or "", 1), PORT)

        for cid, tag, ok in ((A1, "phone1", ok1), (A2, "phone2", ok2)):
            peer.send(message("BYE", cid, tag, ok.to.tag or "", 2, ruri=target(ok)), PORT)
            assert final(peer).status == 200
        vendor.wait(timeout=15)
    finally:
        peer.close()
        if vendor.poll() is None:
            vendor.kill()
            vendor.wait()
        assert sbc.stop() == 0

    (log,) = vendor_dir.glob("*_messages.log")
    got = harness.sipp_messages(log)
    invites = [m for d, m in got if d == "received" and m.startswith("INVITE ")]
    assert len(invites) == 2, [m.splitlines()[0] for _, m in got]
    first, second = invites
    b1 = harness.header(first, "Call-ID")
    our_tag = harness.tag_of(harness.header(first, "From"))
    answers = [m for d, m in got if d == "sent" and m.startswith("SIP/2.0 200")]
    vendor_tag = harness.tag_of(harness.header(next(a for a in answers if b1 in a), "To"))
    assert harness.header(first, "Replaces") == ""
    assert harness.header(second, "Replaces") == f"{b1};to-tag={vendor_tag};from-tag={our_tag}"
    assert A1 not in second and "phone1" not in second  # topology hiding
    (notice,) = sbc.events("call.replaces")
    refusals = sbc.events("call.replaces_refused")
    assert [e["status"] for e in refusals] == [481] and notice["replaced"]
