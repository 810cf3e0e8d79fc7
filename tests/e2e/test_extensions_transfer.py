"""An attended transfer (REFER with Replaces, RFC 3515 + RFC 3891) through the real sbc with
two workers, a raw SIP PBX (it holds two calls and transfers one to the other) and a raw SIP
vendor (it answers, takes the REFER and sends the transferee's INVITE). The PBX's two calls
are steered to different workers, so the REFER (call 1's worker) names a call that lives in
the other one. sbc :7331, PBX :7332, vendor :7333.

    PBX :7332                 sbc :7331                        vendor :7333
     |--INVITE a1, a2--------->|--INVITE b1, b2-------------------->|  calls 1 and 2
     |<---------------200, 200-|<---------------------------200, 200-|  (then ACKs)
     |--REFER (a1)------------>|--REFER (b1)----------------------->|
     |  Refer-To: <sip:2000@127.0.0.1:7332?Replaces=a2;to-tag=<our a2 tag>;from-tag=phone2>
     |                         |  -> <sip:2000@127.0.0.1:7331?Replaces=<our a2 tag>;
     |                         |       to-tag=<our a2 tag>;from-tag=phone2>   (no a2 Call-ID)
     |<--------------------202-|<--------------------------------202-|
     |                         |<---INVITE x3 (Replaces: that token)-|  the transferee
     |                         |--INVITE b3------------------------->|  to call 2's Contact,
     |                         |  Replaces: b2;to-tag=v2;from-tag=<our b2 tag>
     |                         |<--------------------------------200-|  (b3)
     |                         |--200 (x3)-------------------------->|  ACKs both ways
     |                         |<------------------------BYE (b2)----|  the replaced dialog
     |<--------------BYE (a2)--|                                     |
     |--200------------------->|--200------------------------------->|
     |--BYE (a1)-------------->|--BYE (b1)------------------------->|  the transferor leaves
     |                         |<-----------------BYE (x3)-----------|  the joined call ends
     |                         |--BYE (b3)-------------------------->|

The other way round (the vendor transfers, ``refer: relay`` on its trunk group), its
Replaces names our B-leg and crosses as it is; the PBX's transferee INVITE comes back to
the PBX, naming its own dialog:

    PBX :7332                 sbc :7331                        vendor :7333
     |<--------------REFER a1--|<-------------------------REFER b1-|
     |  Refer-To: <sip:sbc@127.0.0.1:7331?Replaces=b2;to-tag=<our b2 tag>;from-tag=v2>
     |--INVITE a3 (Replaces)-->|  (to call 2's worker: b2 is its Call-ID)
     |<---------------INVITE p3|  Replaces: a2;to-tag=phone2;from-tag=<our a2 tag>
     |--200 (p3)-------------->|
     |<--------------200 (a3)--|
     |--BYE a2---------------->|--BYE b2-------------------------->|
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import harness
import pytest

from sbc.sip.message import Request, Response, make_response
from sbc.sip.parser import parse_message

pytestmark = pytest.mark.e2e

PORT, PBX, VENDOR = 7331, 7332, 7333
A1, A2 = harness.on_worker("a1-transfer", 0), harness.on_worker("a2-transfer", 1)
CONFIG = f"""
node:
  listen: [{{address: 127.0.0.1, port: {PORT}, transport: udp}}]
  workers: 2
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     refer: relay, trunks: [{{ip: 127.0.0.1, port: {PBX}}}]}}
  - {{name: vendor, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: {VENDOR}}}]}}
  # the vendor's own calls to us, the transferee's INVITE among them
  - {{name: vendor-in, relationship: vendor-x, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1, port: {VENDOR}}}]}}
routeplans:
  - {{name: default, routes: [{{prefix: "", trunk_groups: [vendor]}}]}}
"""
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7336 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Ua:
    """A raw SIP user agent on one UDP port: it sends what the test writes and hands back
    the messages it waits for, keeping the others for later waits."""

    def __init__(self, port: int) -> None:
        self.peer = harness.Peer("127.0.0.1", port)
        self.port = port
        self.kept: list[Request | Response] = []

    def request(
        self, method: str, call_id: str, tag: str, to_tag: str, cseq: int,
        extra: str = "", body: str = "", ruri: str = "sip:2000@127.0.0.1",
    ) -> None:  # fmt: skip
        branch = "z9hG4bK" + os.urandom(6).hex()
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        self.peer.send(
            (
                f"{method} {ruri}:{PORT} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
                f"From: <sip:1555000{self.port}@127.0.0.1>;tag={tag}\r\n"
                f"To: <sip:2000@127.0.0.1>{';tag=' + to_tag if to_tag else ''}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:ua@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n{extra}{ctype}"
                f"Content-Length: {len(body)}\r\n\r\n{body}"
            ).encode(),
            PORT,
        )

    def answer(self, req: Request, status: int, tag: str = "", body: str = "") -> None:
        headers = [("Contact", f"<sip:ua{tag}@127.0.0.1:{self.port}>")] if tag else []
        if body:
            headers.append(("Content-Type", "application/sdp"))
        resp = make_response(req, status, to_tag=tag or None, headers=headers, body=body.encode())
        self.peer.send(resp.to_bytes(), PORT)

    def wait(
        self, what: str, call_id: str | None = None, seconds: float = 5.0
    ) -> Request | Response:
        """The next request of method ``what``, or final response with status ``what``
        (provisionals are dropped), of ``call_id`` if given."""

        def fits(m: Request | Response) -> bool:
            if call_id is not None and m.call_id != call_id:
                return False
            if isinstance(m, Request):
                return m.method == what
            return str(m.status) == what

        deadline = time.monotonic() + seconds
        while True:
            for m in self.kept:
                if fits(m):
                    self.kept.remove(m)
                    return m
            left = deadline - time.monotonic()
            assert left > 0, f"{self.port}: no {what} {call_id or ''}; kept {self.kept}"
            for raw in self.peer.replies(min(left, 0.2)):
                msg = parse_message(raw)
                if isinstance(msg, Response) and msg.status < 200:
                    continue
                self.kept.append(msg)

    def ack(self, ok: Response, cseq: int = 1) -> None:
        assert ok.to.tag
        self.request("ACK", ok.call_id, ok.from_.tag or "", ok.to.tag, cseq)


def two_calls(pbx: Ua, vendor: Ua) -> list[tuple[str, Request]]:
    """Calls 1 and 2 from the PBX, answered: our A tag and the B-leg INVITE of each."""
    legs = []
    for n, cid in ((1, A1), (2, A2)):
        pbx.request("INVITE", cid, f"phone{n}", "", 1, body=SDP)
        b = vendor.wait("INVITE")
        assert isinstance(b, Request)
        vendor.answer(b, 200, f"v{n}", SDP)
        ok = pbx.wait("200", cid)
        assert isinstance(ok, Response) and ok.to.tag
        pbx.ack(ok)
        assert isinstance(vendor.wait("ACK", b.call_id), Request)
        legs.append((ok.to.tag, b))
    return legs


@contextlib.contextmanager
def transfer_lab(tmp_path: Path, config: str) -> Iterator[tuple[Ua, Ua, list[tuple[str, Request]]]]:
    """sbc with ``config``, the PBX and the vendor with calls 1 and 2 up; on the way out,
    the replaced call was the one ``call.replaces`` names."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "sbc.yaml").write_text(config)
    sbc = harness.start_sbc(tmp_path / "sbc", tmp_path / "config", port=PORT)
    pbx, vendor = Ua(PBX), Ua(VENDOR)
    try:
        yield pbx, vendor, two_calls(pbx, vendor)
    finally:
        pbx.peer.close()
        vendor.peer.close()
        assert sbc.stop() == 0
    (notice,) = sbc.events("call.replaces")
    starts = {e["sip_call_id"]: e for e in sbc.events("call.start")}
    assert notice["replaced"] == starts[A2]["call_id"]


def test_a_pbxs_attended_transfer_joins_its_two_vendor_parties_across_workers(
    tmp_path: Path,
) -> None:
    with transfer_lab(tmp_path, CONFIG) as (pbx, vendor, legs):
        (a1_tag, b1), (a2_tag, b2) = legs

        named = quote(f"{A2};to-tag={a2_tag};from-tag=phone2", safe="")
        refer_to = f"Refer-To: <sip:2000@127.0.0.1:{PBX}?Replaces={named}>\r\n"
        pbx.request("REFER", A1, "phone1", a1_tag, 2, refer_to)
        b_refer = vendor.wait("REFER", b1.call_id)
        assert isinstance(b_refer, Request)
        token = quote(f"{a2_tag};to-tag={a2_tag};from-tag=phone2", safe="")
        assert b_refer.get("Refer-To") == f"<sip:2000@127.0.0.1:{PORT}?Replaces={token}>"
        assert A2 not in b_refer.to_bytes().decode()  # the PBX's Call-ID stays on its side
        vendor.answer(b_refer, 202)
        assert isinstance(pbx.wait("202", A1), Response)

        replaces = f"Replaces: {a2_tag};to-tag={a2_tag};from-tag=phone2\r\n"
        vendor.request("INVITE", "x3-transfer", "t3", "", 1, replaces, SDP)
        b3 = vendor.wait("INVITE")
        assert isinstance(b3, Request) and b3.call_id not in (b1.call_id, b2.call_id)
        assert b3.uri == f"sip:uav2@127.0.0.1:{VENDOR}"  # call 2's remote target
        assert b3.get("Replaces") == f"{b2.call_id};to-tag=v2;from-tag={b2.from_.tag}"
        vendor.answer(b3, 200, "v3", SDP)
        ok3 = vendor.wait("200", "x3-transfer")
        assert isinstance(ok3, Response)
        vendor.ack(ok3)
        assert isinstance(vendor.wait("ACK", b3.call_id), Request)

        # the target's UA ends its replaced dialog: the PBX's call 2 ends with it
        vendor.request("BYE", b2.call_id, "v2", b2.from_.tag or "", 1)
        a_bye = pbx.wait("BYE", A2)
        assert isinstance(a_bye, Request)
        pbx.answer(a_bye, 200)
        assert isinstance(vendor.wait("200", b2.call_id), Response)
        # the transferor leaves call 1; the joined call goes on until its parties end it
        pbx.request("BYE", A1, "phone1", a1_tag, 3)
        b_bye = vendor.wait("BYE", b1.call_id)
        assert isinstance(b_bye, Request)
        vendor.answer(b_bye, 200)
        assert isinstance(pbx.wait("200", A1), Response)
        vendor.request("BYE", "x3-transfer", "t3", ok3.to.tag or "", 2)
        b3_bye = vendor.wait("BYE", b3.call_id)
        assert isinstance(b3_bye, Request)
        vendor.answer(b3_bye, 200)
        assert isinstance(vendor.wait("200", "x3-transfer"), Response)


def test_a_vendors_attended_transfer_comes_back_to_the_pbx_across_workers(
    tmp_path: Path,
) -> None:
    config = CONFIG.replace("     refer: relay, trunks", "     trunks").replace(
        "direction: termination,\n", "direction: termination, refer: relay,\n"
    )
    assert config.count("refer: relay") == 1
    with transfer_lab(tmp_path, config) as (pbx, vendor, legs):
        (a1_tag, b1), (a2_tag, b2) = legs
        ours = quote(f"{b2.call_id};to-tag={b2.from_.tag};from-tag=v2", safe="")
        refer_to = f"Refer-To: <sip:sbc@127.0.0.1:{PORT}?Replaces={ours}>\r\n"
        vendor.request("REFER", b1.call_id, "v1", b1.from_.tag or "", 1, refer_to)
        a_refer = pbx.wait("REFER", A1)
        assert isinstance(a_refer, Request)
        assert a_refer.get("Refer-To") == f"<sip:sbc@127.0.0.1:{PORT}?Replaces={ours}>"
        pbx.answer(a_refer, 202)
        assert isinstance(vendor.wait("202", b1.call_id), Response)

        replaces = f"Replaces: {b2.call_id};to-tag={b2.from_.tag};from-tag=v2\r\n"
        pbx.request("INVITE", "a3-transfer", "phone3", "", 1, replaces, SDP)
        p3 = pbx.wait("INVITE")
        assert isinstance(p3, Request) and p3.call_id not in (A1, A2, "a3-transfer")
        assert p3.uri == f"sip:ua@127.0.0.1:{PBX}"  # call 2's caller, at its Contact
        assert p3.get("Replaces") == f"{A2};to-tag=phone2;from-tag={a2_tag}"
        pbx.answer(p3, 200, "p3", SDP)
        ok3 = pbx.wait("200", "a3-transfer")
        assert isinstance(ok3, Response)
        pbx.ack(ok3)
        assert isinstance(pbx.wait("ACK", p3.call_id), Request)

        pbx.request("BYE", A2, "phone2", a2_tag, 2)  # the replaced phone leaves call 2
        b_bye = vendor.wait("BYE", b2.call_id)
        assert isinstance(b_bye, Request)
        vendor.answer(b_bye, 200)
        assert isinstance(pbx.wait("200", A2), Response)
        for cid, tag, to_tag in ((A1, "phone1", a1_tag), ("a3-transfer", "phone3", ok3.to.tag)):
            pbx.request("BYE", cid, tag, to_tag or "", 3)
            far = (vendor if cid == A1 else pbx).wait("BYE")
            assert isinstance(far, Request)
            (vendor if cid == A1 else pbx).answer(far, 200)
            assert isinstance(pbx.wait("200", cid), Response)
