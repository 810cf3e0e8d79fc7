"""SDP in reliable provisionals and PRACKs (RFC 3262 §5, RFC 3264), pure: the controller
with a hand-driven rtpengine and fake time. Caller = carrier-a at 127.0.0.1:5070; the first
vendor is 127.0.0.1:5081 (the lab's vendor-pool, failover)."""

from __future__ import annotations

from pathlib import Path

from sbc.sip.message import Request, Response, make_response
from tests.helpers import (
    CALLER,
    SDP,
    V1,
    Lab,
    b_legs,
    invite,
    one_vendor_lab,
    only,
    request,
)  # fmt: skip
from tests.unit.test_media import REWRITTEN, media_lab, reply

CALLER_SDP = SDP.replace(b"4000", b"4100")
VENDOR_SDP = SDP.replace(b"4000", b"4200")
TOWARD_VENDOR = REWRITTEN.replace(b"41000", b"41002")
VENDOR_CONTACT = ("Contact", "<sip:v@127.0.0.1:5081>")
SDP_TYPE = ("Content-Type", "application/sdp")


def late_invite(ext: str) -> bytes:
    """The caller's INVITE without SDP (a late offer), with ``ext`` headers."""
    data = invite(body=b"").replace(b"Content-Type: application/sdp\r\n", b"")
    return data.replace(b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\n{ext}".encode())


def reliable_183(b_inv: Request, body: bytes, rseq: int = 7) -> Response:
    headers = [VENDOR_CONTACT, ("Require", "100rel"), ("RSeq", str(rseq)), SDP_TYPE]
    return make_response(b_inv, 183, to_tag="v1", body=body, headers=headers)


def caller_prack(a183: Response, body: bytes = b"") -> bytes:
    extra = f"RAck: {a183.get('RSeq')} 1 INVITE\r\n"
    return request("PRACK", "a-leg-1@10.1.1.1", "caller1", a183.to.tag, 2, CALLER, body, extra)


def test_late_offer_the_vendors_offer_in_a_reliable_183_the_callers_answer_in_prack(
    tmp_path: Path,
) -> None:
    """Anchored (ng commands in brackets):

    caller            sbc                                  vendor
    |--INVITE, no SDP->|--INVITE, no SDP, Supported: 100rel->|
    |  Supported: 100rel|<--183 Require: 100rel, RSeq 7, offer-|
    |                  |  [offer from-tag v1 to-tag caller1 via-branch <call>.1]
    |<--183 RSeq n, offer'|                                  |  our PRACK waits
    |--PRACK RAck n, answer->|                              |
    |<------200 PRACK--|  [answer from-tag v1 to-tag caller1 via-branch <call>.1]
    |                  |--PRACK RAck: 7 1 INVITE, answer'--->|
    |                  |<------------------------200 PRACK---|
    |<--200 (no SDP)---|<--------200 INVITE (the same SDP)---|  no new offer: not relayed
    |--ACK------------>|--ACK------------------------------->|
    """
    lab = media_lab()
    out = lab.feed(late_invite("Supported: 100rel\r\n"), CALLER)
    ((b_inv, to),) = b_legs(out)
    assert to == V1 and not b_inv.body and lab.ng == []
    assert "100rel" in (b_inv.get("Supported") or "")

    out = lab.feed(reliable_183(b_inv, VENDOR_SDP), V1)
    assert only(out, V1) == [] and only(out, CALLER) == []  # rtpengine first
    offer = reply(lab)
    call_id = offer.call
    assert (offer.cmd["command"], offer.cmd["from-tag"], offer.cmd["to-tag"]) == (
        "offer", "v1", "caller1"
    )  # fmt: skip
    assert offer.cmd["via-branch"] == f"{call_id}.1" and offer.cmd["sdp"] == VENDOR_SDP
    out = lab.run()
    assert only(out, V1) == []  # no PRACK yet: it must carry the answer (RFC 3262 §5)
    (a183,) = only(out, CALLER)
    assert isinstance(a183, Response) and a183.status == 183 and a183.body == REWRITTEN
    assert a183.get("Require") == "100rel" and a183.get("RSeq")
    lab.advance(0.2)
    assert only(lab.advance(0.2), V1) == []  # the vendor waits for the caller's answer

    out = lab.feed(caller_prack(a183, CALLER_SDP), CALLER)
    assert [(m.status, m.cseq_method) for m in only(out, CALLER)] == [(200, "PRACK")]  # type: ignore[union-attr]
    assert only(out, V1) == []
    answer = reply(lab, TOWARD_VENDOR)
    assert (answer.cmd["command"], answer.cmd["from-tag"], answer.cmd["to-tag"]) == (
        "answer", "v1", "caller1"
    )  # fmt: skip
    assert answer.cmd["via-branch"] == f"{call_id}.1" and answer.cmd["sdp"] == CALLER_SDP
    (prack,) = only(lab.run(), V1)
    assert isinstance(prack, Request) and prack.method == "PRACK"
    assert prack.get("RAck") == "7 1 INVITE" and prack.to.tag == "v1"
    assert prack.body == TOWARD_VENDOR and prack.get("Content-Type") == "application/sdp"
    lab.feed(make_response(prack, 200), V1)

    ok = make_response(b_inv, 200, to_tag="v1", headers=[VENDOR_CONTACT, SDP_TYPE], body=VENDOR_SDP)
    out = lab.feed(ok, V1)
    assert lab.ng == []  # the offer and answer are done: the 2xx's SDP is no new offer
    (a200,) = only(out, CALLER)
    assert isinstance(a200, Response) and a200.status == 200 and a200.body == b""
    assert a200.get("Content-Type") is None
    ack = request("ACK", "a-leg-1@10.1.1.1", "caller1", a200.to.tag, 1, CALLER)
    (b_ack,) = only(lab.feed(ack, CALLER), V1)
    assert isinstance(b_ack, Request) and b_ack.method == "ACK" and b_ack.body == b""


def test_early_offer_the_vendors_answer_in_a_reliable_183_through_rtpengine(
    tmp_path: Path,
) -> None:
    """caller            sbc                          vendor
    |--INVITE + offer->|  [offer from-tag caller1]     |
    |  Require: 100rel |--INVITE + offer'------------->|
    |                  |<--183 RSeq 7, answer----------|
    |                  |--PRACK RAck: 7 1 INVITE------>|  at once: no SDP in it
    |                  |  [answer from-tag caller1 to-tag v1]
    |<--183 RSeq n, answer'|                           |
    """
    lab = media_lab()
    data = invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRequire: 100rel\r\n")
    lab.feed(data, CALLER)
    reply(lab)
    ((b_inv, _),) = b_legs(lab.run())
    out = lab.feed(reliable_183(b_inv, VENDOR_SDP), V1)
    (prack,) = only(out, V1)
    assert isinstance(prack, Request) and prack.method == "PRACK" and prack.body == b""
    answer = reply(lab)
    assert (answer.cmd["command"], answer.cmd["from-tag"], answer.cmd["to-tag"]) == (
        "answer", "caller1", "v1"
    )  # fmt: skip
    (a183,) = only(lab.run(), CALLER)
    assert isinstance(a183, Response) and a183.body == REWRITTEN and a183.get("RSeq")
    out = lab.feed(caller_prack(a183), CALLER)
    assert [m.status for m in only(out, CALLER)] == [200]  # type: ignore[union-attr]
    assert only(out, V1) == [] and lab.ng == []


def test_late_offer_unanchored_the_prack_answer_crosses_as_it_is(tmp_path: Path) -> None:
    lab = one_vendor_lab(tmp_path)
    ((b_inv, _),) = b_legs(lab.feed(late_invite("Require: 100rel\r\n"), CALLER))
    out = lab.feed(reliable_183(b_inv, VENDOR_SDP), V1)
    assert only(out, V1) == []
    (a183,) = only(out, CALLER)
    assert isinstance(a183, Response) and a183.body == VENDOR_SDP
    out = lab.feed(caller_prack(a183, CALLER_SDP), CALLER)
    (prack,) = only(out, V1)
    assert isinstance(prack, Request) and prack.method == "PRACK"
    assert prack.body == CALLER_SDP and prack.get("RAck") == "7 1 INVITE"


def test_late_offer_from_a_caller_without_100rel_offers_no_100rel_to_the_vendor(
    tmp_path: Path,
) -> None:
    """Nobody could answer an offer in a reliable 18x: our INVITE says Supported: timer."""
    lab: Lab = media_lab()
    ((b_inv, _),) = b_legs(lab.feed(late_invite(""), CALLER))
    assert "100rel" not in (b_inv.get("Supported") or "")


def test_late_offer_an_unreliable_183_with_sdp_reaches_a_supporting_caller_unreliably(
    tmp_path: Path,
) -> None:
    """Its SDP is no offer (the 2xx brings it): relayed reliably, the caller would answer
    it in a PRACK."""
    lab = media_lab()
    ((b_inv, _),) = b_legs(lab.feed(late_invite("Supported: 100rel\r\n"), CALLER))
    plain = make_response(b_inv, 183, to_tag="v1", body=VENDOR_SDP, headers=[SDP_TYPE])
    lab.feed(plain, V1)
    reply(lab)
    (a183,) = only(lab.run(), CALLER)
    assert isinstance(a183, Response) and a183.status == 183 and a183.body == REWRITTEN
    assert a183.get("RSeq") is None and a183.get("Require") is None


def test_a_new_offer_in_the_callers_prack_crosses_as_an_early_update(tmp_path: Path) -> None:
    """RFC 3262 §5: after a reliable 18x with the answer the caller may offer again in its
    PRACK. Ours went to the vendor already, so the offer crosses as an UPDATE in the early
    dialog (RFC 3311), and its answer comes back in the 200 to the PRACK:

    caller                 sbc                                 vendor
    |<--183 RSeq n, answer'|<--183 RSeq 7, answer (PRACKed at once)-|
    |--PRACK + offer2----->|  [offer from-tag caller1 to-tag v1 via-branch <call>.1]
    |                      |--UPDATE + offer2'---------------------->|
    |                      |<------------------------200 + answer2---|
    |<--200 PRACK + answer2'|  [answer]
    """
    lab = media_lab()
    data = invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRequire: 100rel\r\n")
    lab.feed(data, CALLER)
    reply(lab)
    ((b_inv, _),) = b_legs(lab.run())
    lab.feed(reliable_183(b_inv, VENDOR_SDP), V1)  # our PRACK goes at once
    reply(lab)
    (a183,) = only(lab.run(), CALLER)
    assert isinstance(a183, Response)
    out = lab.feed(caller_prack(a183, CALLER_SDP), CALLER)
    assert only(out, CALLER) == []  # the 200 waits for the answer
    offer = reply(lab, TOWARD_VENDOR)
    assert (offer.cmd["command"], offer.cmd["from-tag"], offer.cmd["to-tag"]) == (
        "offer", "caller1", "v1"
    )  # fmt: skip
    (update,) = only(lab.run(), V1)
    assert isinstance(update, Request) and update.method == "UPDATE"
    assert update.body == TOWARD_VENDOR and update.to.tag == "v1" and update.get("RAck") is None
    ok = make_response(update, 200, headers=[SDP_TYPE], body=VENDOR_SDP)
    assert only(lab.feed(ok, V1), CALLER) == []  # rtpengine first
    answer = reply(lab)
    assert answer.cmd["command"] == "answer" and answer.cmd["from-tag"] == "caller1"
    (a_ok,) = only(lab.run(), CALLER)
    assert isinstance(a_ok, Response) and (a_ok.status, a_ok.cseq_method) == (200, "PRACK")
    assert a_ok.body == REWRITTEN


def test_after_a_late_offer_answered_in_prack_our_refreshes_carry_that_sdp(
    tmp_path: Path,
) -> None:
    """Unanchored, session_timer on the vendor (RFC 4028), the vendor allows no UPDATE:

    caller                 sbc                                   vendor
    |--INVITE, no SDP------>|--INVITE, no SDP, SE: 120----------->|
    |<--183 RSeq, offer-----|<--183 Require: 100rel, RSeq 7, offer-|
    |--PRACK, answer------->|--PRACK, answer--------------------->|
    |<--200 (no SDP)--------|<--200 SE: 120;refresher=uac (no UPDATE in Allow)
    |        60 s           |--re-INVITE SE: 120, the PRACK's answer-->|  (not an empty offer)
    """
    lab = one_vendor_lab(tmp_path, "session_timer: {expires: 120}, ")
    ((b_inv, _),) = b_legs(lab.feed(late_invite("Supported: 100rel\r\n"), CALLER))
    (a183,) = only(lab.feed(reliable_183(b_inv, VENDOR_SDP), V1), CALLER)
    assert isinstance(a183, Response)
    (prack,) = only(lab.feed(caller_prack(a183, CALLER_SDP), CALLER), V1)
    lab.feed(make_response(prack, 200), V1)  # type: ignore[arg-type]
    allow = ("Allow", "INVITE, ACK, BYE, CANCEL")
    ok = make_response(
        b_inv, 200, to_tag="v1",
        headers=[VENDOR_CONTACT, allow, ("Session-Expires", "120;refresher=uac")],
    )  # fmt: skip
    (a200,) = only(lab.feed(ok, V1), CALLER)
    assert isinstance(a200, Response) and a200.status == 200
    lab.feed(request("ACK", "a-leg-1@10.1.1.1", "caller1", a200.to.tag, 1, CALLER), CALLER)
    refreshes = [m for m in only(lab.advance(60.0), V1) if isinstance(m, Request)]
    assert [(m.method, m.body) for m in refreshes] == [("INVITE", CALLER_SDP)]
    assert refreshes[0].get("Session-Expires") == "120;refresher=uac"
