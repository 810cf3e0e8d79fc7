"""Reliable provisionals (RFC 3262), pure: the controller and fake time.

Caller = carrier-a at 127.0.0.1:5070; vendor-1 at 127.0.0.1:5081.
"""

from __future__ import annotations

from pathlib import Path

from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import BASE_ONE_VENDOR, CALLER, SDP, Lab, b_legs, invite, lab_with, only, request

V1 = Target("udp", "127.0.0.1", 5081)
TGS = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor-1, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}]}
"""


def start(tmp_path: Path, caller_ext: str) -> tuple[Lab, Request]:
    lab = lab_with(tmp_path, TGS, base=BASE_ONE_VENDOR)
    data = invite().replace(b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\n{caller_ext}".encode())
    ((b_inv, _),) = b_legs(lab.feed(data, CALLER))
    assert "100rel" in (b_inv.get("Supported") or "")
    return lab, b_inv


def reliable_183(b_inv: Request, rseq: int = 7) -> Response:
    r = make_response(
        b_inv, 183, to_tag="v1", body=SDP,
        headers=[("Contact", "<sip:v@127.0.0.1:5081>"), ("Require", "100rel"),
                 ("RSeq", str(rseq)), ("Content-Type", "application/sdp")],
    )  # fmt: skip
    return r


def test_prack_on_both_legs_then_the_call_completes(tmp_path: Path) -> None:
    """caller             sbc                      vendor
    |--INVITE---------->|--INVITE--------------->|  Supported: 100rel
    |  Require: 100rel  |<--183 RSeq: 7, SDP-----|
    |                   |--PRACK RAck: 7 1 INVITE>|
    |<--183 RSeq: n-----|                        |  again at T1, 2*T1 ... until PRACKed
    |--PRACK RAck: n 1 INVITE->|                 |
    |<---------200 PRACK|                        |
    |<--------200 INVITE|<------------200 INVITE-|  BYE later uses CSeq 3 on the B-leg
    """
    lab, b_inv = start(tmp_path, "Require: 100rel\r\nSupported: 100rel\r\n")
    out = lab.feed(reliable_183(b_inv), V1)
    (prack,) = only(out, V1)
    assert isinstance(prack, Request) and prack.method == "PRACK"
    assert prack.get("RAck") == "7 1 INVITE" and prack.to.tag == "v1" and prack.cseq == 2
    assert prack.uri == "sip:v@127.0.0.1:5081"
    (a183,) = only(out, CALLER)
    assert isinstance(a183, Response) and a183.status == 183 and a183.get("Require") == "100rel"
    rseq = a183.get("RSeq")
    assert rseq is not None and a183.body
    again = only(lab.advance(0.5), CALLER)  # not PRACKed: retransmitted at T1
    assert [(m.status, m.get("RSeq")) for m in again] == [(183, rseq)]  # type: ignore[union-attr]
    lab.feed(make_response(prack, 200), V1)
    a_prack = request(
        "PRACK", "a-leg-1@10.1.1.1", "caller1", a183.to.tag, 2, CALLER,
        extra=f"RAck: {rseq} 1 INVITE\r\n",
    )  # fmt: skip
    (ok,) = only(lab.feed(a_prack, CALLER), CALLER)
    assert isinstance(ok, Response) and ok.status == 200 and ok.cseq_method == "PRACK"
    assert only(lab.advance(1.0), CALLER) == []  # PRACKed: no more retransmissions
    ok2 = make_response(b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1:5081>")])
    assert [m.status for m in only(lab.feed(ok2, V1), CALLER)] == [200]  # type: ignore[union-attr]
    (call,) = lab.ctrl.calls.values()
    assert call.b_dialog is not None and call.b_dialog.local_cseq == 2  # the PRACK's


def test_a_caller_without_100rel_still_gets_the_vendors_183_and_we_prack_it(
    tmp_path: Path,
) -> None:
    lab, b_inv = start(tmp_path, "")
    out = lab.feed(reliable_183(b_inv), V1)
    assert [m.method for m in only(out, V1)] == ["PRACK"]  # type: ignore[union-attr]
    (a183,) = only(out, CALLER)
    assert isinstance(a183, Response) and a183.get("RSeq") is None and a183.get("Require") is None
    # The vendor retransmits it (our PRACK crossed it): dropped, not PRACKed again
    assert lab.feed(reliable_183(b_inv), V1) == []


def test_a_2xx_waits_for_the_prack_of_a_183_with_sdp(tmp_path: Path) -> None:
    lab, b_inv = start(tmp_path, "Supported: 100rel\r\n")
    out = lab.feed(reliable_183(b_inv), V1)
    (a183,) = only(out, CALLER)
    assert isinstance(a183, Response) and a183.get("RSeq")
    ok = make_response(b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1:5081>")])
    assert only(lab.feed(ok, V1), CALLER) == []  # held (RFC 3262 §3)
    a_prack = request(
        "PRACK", "a-leg-1@10.1.1.1", "caller1", a183.to.tag, 2, CALLER,
        extra=f"RAck: {a183.get('RSeq')} 1 INVITE\r\n",
    )  # fmt: skip
    out = lab.feed(a_prack, CALLER)
    assert sorted(m.status for m in only(out, CALLER)) == [200, 200]  # type: ignore[union-attr]


def test_a_prack_for_nothing_we_sent_gets_481(tmp_path: Path) -> None:
    lab, b_inv = start(tmp_path, "Supported: 100rel\r\n")
    (a183,) = only(lab.feed(reliable_183(b_inv), V1), CALLER)
    assert isinstance(a183, Response)
    wrong = request(
        "PRACK", "a-leg-1@10.1.1.1", "caller1", a183.to.tag, 2, CALLER,
        extra="RAck: 1 1 INVITE\r\n",
    )  # fmt: skip
    assert [m.status for m in only(lab.feed(wrong, CALLER), CALLER)] == [481]  # type: ignore[union-attr]


def test_update_before_the_answer_crosses_both_ways_rfc3311(tmp_path: Path) -> None:
    """caller            sbc                    vendor
    |                  |<--180 (tag v1)---------|
    |<--180------------|                        |
    |--UPDATE (early)->|--UPDATE (To tag v1)--->|   CSeq 2 on the vendor's early dialog
    |<---------200-----|<------------------200--|
    |                  |<--UPDATE (early)-------|
    |<--UPDATE---------|                        |
    """
    lab, b_inv = start(tmp_path, "")
    early_update = request(
        "UPDATE", "a-leg-1@10.1.1.1", "caller1", "x", 2, CALLER
    )  # no provisional yet: nothing to cross to
    assert only(lab.feed(early_update, CALLER), V1) == []
    ringing = make_response(
        b_inv, 180, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1:5081>")]
    )
    (a180,) = only(lab.feed(ringing, V1), CALLER)
    assert isinstance(a180, Response) and a180.to.tag
    update = request("UPDATE", "a-leg-1@10.1.1.1", "caller1", a180.to.tag, 3, CALLER)
    (b_update,) = only(lab.feed(update, CALLER), V1)
    assert isinstance(b_update, Request) and b_update.method == "UPDATE"
    assert b_update.to.tag == "v1" and b_update.cseq == 2 and b_update.uri == "sip:v@127.0.0.1:5081"
    (ok,) = only(lab.feed(make_response(b_update, 200), V1), CALLER)
    assert isinstance(ok, Response) and ok.status == 200 and ok.cseq_method == "UPDATE"
    theirs = request("UPDATE", b_inv.call_id, "v1", b_inv.from_.tag, 1, V1)
    (a_update,) = only(lab.feed(theirs, V1), CALLER)
    assert isinstance(a_update, Request) and a_update.method == "UPDATE"
    assert a_update.call_id == "a-leg-1@10.1.1.1" and a_update.to.tag == "caller1"


def test_a_late_offer_invite_does_not_offer_100rel_to_the_vendor(tmp_path: Path) -> None:
    """Without SDP in our INVITE a reliable 18x could carry an offer, whose answer would
    have to ride our PRACK: so such an INVITE does not say 100rel."""
    lab = lab_with(tmp_path, TGS, base=BASE_ONE_VENDOR)
    ((b_inv, _),) = b_legs(lab.feed(invite(body=b""), CALLER))
    assert b_inv.get("Supported") == "timer" and not b_inv.body
