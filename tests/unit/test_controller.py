"""The B2BUA's ladders, pure: the SBC's two layers joined to hand-driven peers, fake time.

Caller = carrier-a at 127.0.0.1:5070; vendors = the lab's 127.0.0.1:5081 and :5082.
"""

from __future__ import annotations

import msgspec
import pytest

from sbc.config.snapshot import Snapshot
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import CALLER, SDP, V1, V2, Lab, invite, only


def test_basic_call_ladder_hides_topology() -> None:
    """The ladder in sbc/call/controller.py's docstring, message by message."""
    lab = Lab()
    out = lab.feed(invite(), CALLER)
    (trying,) = only(out, CALLER)
    assert isinstance(trying, Response) and trying.status == 100 and trying.to.tag is None
    ((b_inv, vendor),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b_inv, Request) and vendor in (V1, V2)
    assert b_inv.call_id != "a-leg-1@10.1.1.1" and b_inv.from_.tag != "caller1"
    assert b_inv.vias[0].host == "127.0.0.1" and b_inv.vias[0].port == 5060
    assert len(b_inv.vias) == 1 and b_inv.max_forwards == 69
    assert b_inv.uri == f"sip:15551230000@127.0.0.1:{vendor.port}"
    assert b_inv.from_.uri.user == "15550001000" and b_inv.from_.display is None  # stripped
    # the lab's trunk groups are not trusted: the caller's PAI stays on its side (RFC 3325 §5)
    assert b_inv.get("User-Agent") is None and b_inv.get("P-Asserted-Identity") is None
    assert b"10.1.1.1" not in b_inv.to_bytes()
    assert b_inv.body == SDP

    out = lab.feed(make_response(b_inv, 180, to_tag="v1"), vendor)
    (ringing,) = only(out, CALLER)
    assert isinstance(ringing, Response) and ringing.status == 180
    a_tag = ringing.to.tag
    assert a_tag and a_tag != "v1" and ringing.contacts[0].uri.port == 5060

    ok = make_response(
        b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1:5081>")], body=SDP
    )
    ok.headers.append(("Content-Type", "application/sdp"))
    out = lab.feed(ok, vendor)
    (ack,) = only(out, vendor)
    (a_ok,) = only(out, CALLER)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.call_id == b_inv.call_id
    assert isinstance(a_ok, Response) and a_ok.status == 200 and a_ok.to.tag == a_tag
    assert a_ok.body == SDP and b"5081" not in a_ok.to_bytes()

    bye = (
        f"BYE sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb2"
        f";rport\r\nFrom: <sip:15550001000@10.1.1.1>;tag=caller1\r\n"
        f"To: <sip:15551230000@127.0.0.1>;tag={a_tag}\r\nCall-ID: a-leg-1@10.1.1.1\r\n"
        f"CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    out = lab.feed(bye, CALLER)
    (bye_ok,) = only(out, CALLER)
    (b_bye,) = only(out, vendor)
    assert isinstance(bye_ok, Response) and bye_ok.status == 200
    assert (
        isinstance(b_bye, Request) and b_bye.method == "BYE" and b_bye.uri == "sip:v@127.0.0.1:5081"
    )
    lab.feed(make_response(b_bye, 200), vendor)
    (end,) = lab.events("call.end")
    assert end["status"] == 200 and end["hangup"] == "caller"
    assert lab.ctrl.calls == {} and lab.ctrl.dialogs == {}


def first_attempt(lab: Lab) -> tuple[Request, Target]:
    out = lab.feed(invite(), CALLER)
    ((b_inv, vendor),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b_inv, Request)
    return b_inv, vendor


def test_503_advances_to_the_next_trunk_and_the_caller_never_sees_it() -> None:
    """caller      sbc        vendor1     vendor2
    |--INVITE-->|--INVITE-->|           |
    |           |<------503-|           |
    |           |--ACK----->|           |
    |           |--INVITE-------------->|
    |<-----200--|<------------------200-|
    """
    lab = Lab()
    b1, t1 = first_attempt(lab)
    out = lab.feed(make_response(b1, 503, to_tag="x"), t1)
    assert only(out, CALLER) == []
    (ack,) = only(out, t1)
    other = V2 if t1 == V1 else V1
    (b2,) = only(out, other)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert isinstance(b2, Request) and b2.method == "INVITE" and b2.call_id != b1.call_id
    out = lab.feed(
        make_response(b2, 200, to_tag="y", headers=[("Contact", "<sip:v@127.0.0.1>")]), other
    )
    assert [m.status for m in only(out, CALLER)] == [200]  # type: ignore[union-attr]


def test_486_is_relayed_not_advanced() -> None:
    lab = Lab()
    b1, t1 = first_attempt(lab)
    out = lab.feed(make_response(b1, 486, to_tag="x"), t1)
    (busy,) = only(out, CALLER)
    assert isinstance(busy, Response) and busy.status == 486
    assert [m for m, t in out if t not in (CALLER, t1)] == []  # no second attempt


def test_b_timer_moves_on_when_no_100_arrives() -> None:
    lab = Lab()
    _, t1 = first_attempt(lab)
    out = lab.advance(1.0)  # Timer A retransmission to vendor 1, nothing else
    assert [t for _, t in out] == [t1]
    out = lab.advance(1.1)  # b_timer 2 s elapsed
    other = V2 if t1 == V1 else V1
    (b2,) = only(out, other)
    assert isinstance(b2, Request) and b2.method == "INVITE"
    assert only(lab.advance(10.0), t1) == []  # the abandoned attempt is no longer retransmitted


def test_every_route_failing_on_advance_codes_gives_503() -> None:
    lab = Lab()
    b1, t1 = first_attempt(lab)
    out = lab.feed(make_response(b1, 500, to_tag="x"), t1)
    other = V2 if t1 == V1 else V1
    (b2,) = only(out, other)
    out = lab.feed(make_response(b2, 502, to_tag="y"), other)  # type: ignore[arg-type]
    (final,) = only(out, CALLER)
    assert isinstance(final, Response) and final.status == 503


def test_cancel_waits_for_a_provisional_before_cancelling_the_b_leg() -> None:
    """§9.1: a CANCEL may only follow a provisional; the caller gets 200 + 487 at once."""
    lab = Lab()
    b1, t1 = first_attempt(lab)
    cancel = (
        b"CANCEL sip:15551230000@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1;rport\r\n"
        b"From: <sip:15550001000@10.1.1.1>;tag=caller1\r\nTo: <sip:15551230000@127.0.0.1>\r\n"
        b"Call-ID: a-leg-1@10.1.1.1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = lab.feed(cancel, CALLER)
    assert sorted(m.status for m in only(out, CALLER)) == [200, 487]  # type: ignore[union-attr]
    assert only(out, t1) == []
    out = lab.feed(make_response(b1, 180, to_tag="x"), t1)
    (b_cancel,) = only(out, t1)
    assert isinstance(b_cancel, Request) and b_cancel.method == "CANCEL"
    assert b_cancel.vias[0].branch == b1.vias[0].branch and only(out, CALLER) == []


@pytest.mark.parametrize(("policy", "expected"), [("drop", []), ("reject", [403])])
def test_unknown_source(policy: str, expected: list[int]) -> None:
    lab = Lab()
    node = msgspec.structs.replace(lab.ctrl.snapshot.config.node, unknown_source=policy)
    lab.ctrl.snapshot = Snapshot.build(msgspec.structs.replace(lab.ctrl.snapshot.config, node=node))
    stranger = Target("udp", "127.0.0.9", 5070)
    out = lab.feed(invite(), stranger)
    assert [m.status for m, _ in out] == expected  # type: ignore[union-attr]
    if policy == "reject":
        assert lab.events("call.refused")[0]["reason"] == "unknown_source"
    else:  # dropped before the parser: counted and logged once, never answered
        (dropped,) = lab.events("edge.dropped")
        assert dropped["reason"] == "unknown_source" and dropped["method"] == "INVITE"
        assert lab.ctrl.gate.drops.counts["unknown_source"] == 1


def test_options_to_the_sbc_is_answered() -> None:
    lab = Lab()
    opts = (
        invite().replace(b"INVITE", b"OPTIONS").split(b"Content-Type")[0]
        + b"Content-Length: 0\r\n\r\n"
    )
    ((resp, to),) = lab.feed(opts, CALLER)
    assert isinstance(resp, Response) and resp.status == 200 and to == CALLER
    assert "INVITE" in (resp.get("Allow") or "")


def test_preserve_caller_id_keeps_the_display_name() -> None:
    lab = Lab(preserve_caller_id=True)
    b1, _ = first_attempt(lab)
    assert b1.from_.display_text == "Alice"
