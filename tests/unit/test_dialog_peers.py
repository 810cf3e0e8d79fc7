"""Whose requests and responses a call takes, with every peer on a host of its own (the lab
puts everyone on 127.0.0.1, which hides host mix-ups). Pure, fake time.

    carrier 10.1.0.1 ---- sbc ---- vendor-1 10.2.0.1 (its Contact: 10.9.0.9)
                                \\-- vendor-2 10.3.0.1
    a registrar that is no call's peer: 10.5.0.1        a stranger: 10.66.0.1
"""

from __future__ import annotations

from pathlib import Path

from sbc.call.model import Phase
from sbc.config.loader import load_config
from sbc.config.snapshot import Snapshot
from sbc.sip.digest import authorization, pick_challenge
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import SDP, Lab, lab_with, only, register_from, request

CARRIER = Target("udp", "10.1.0.1", 5060)
V1 = Target("udp", "10.2.0.1", 5060)
V2 = Target("udp", "10.3.0.1", 5060)
V1_CONTACT = Target("udp", "10.9.0.9", 5060)
STRANGER = Target("udp", "10.66.0.1", 5060)
TGS = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 10.1.0.1}], route_advance: {codes: '^5', normalize_sip_code: false}}
  - {name: vendor-1, relationship: vendor-x, direction: termination, trunks: [{ip: 10.2.0.1}]}
  - {name: vendor-2, relationship: vendor-x, direction: termination, trunks: [{ip: 10.3.0.1}]}
"""


def lab(tmp_path: Path, tgs: str = TGS) -> Lab:
    return lab_with(tmp_path, tgs)


def ring(lab: Lab, call_id: str = "a1") -> tuple[Request, Target]:
    """The carrier's INVITE and the first B-leg INVITE it became."""
    out = lab.feed(request("INVITE", call_id, "c1", None, 1, CARRIER, SDP), CARRIER)
    ((b_inv, vendor),) = [(m, t) for m, t in out if t != CARRIER]
    assert isinstance(b_inv, Request)
    return b_inv, vendor


def answer(lab: Lab, b_inv: Request, vendor: Target, contact: Target) -> str:
    """The vendor answers with its Contact on ``contact``; the carrier ACKs. sbc's A-tag."""
    ok = make_response(
        b_inv, 200, to_tag="v1", headers=[("Contact", f"<sip:v@{contact.host}:{contact.port}>")]
    )
    (a_ok,) = only(lab.feed(ok, vendor), CARRIER)
    assert isinstance(a_ok, Response) and a_ok.status == 200 and a_ok.to.tag
    lab.feed(request("ACK", "a1", "c1", a_ok.to.tag, 1, CARRIER), CARRIER)
    return a_ok.to.tag


def test_the_vendors_contact_host_may_hang_up_and_answer_our_bye(tmp_path: Path) -> None:
    """vendor-1 answers from 10.2.0.1 with Contact 10.9.0.9, a host no trunk group has:
    our in-dialog requests go there, so its BYE and its 200 to ours are the call's."""
    lab_ = lab(tmp_path)
    b_inv, vendor = ring(lab_)
    assert vendor == V1
    answer(lab_, b_inv, V1, V1_CONTACT)
    bye = request("BYE", b_inv.call_id, "v1", b_inv.from_.tag, 2, V1_CONTACT)
    out = lab_.feed(bye, V1_CONTACT)
    assert [m.status for m in only(out, V1_CONTACT)] == [200]  # type: ignore[union-attr]
    (a_bye,) = [m for m in only(out, Target("udp", "10.1.0.1", 5060)) if isinstance(m, Request)]
    lab_.feed(make_response(a_bye, 200), CARRIER)
    (end,) = lab_.events("call.end")
    assert end["hangup"] == "callee" and lab_.ctrl.calls == {}
    # ... and when we hang up, the Contact host's 200 to our BYE is taken
    lab_ = lab(tmp_path)
    b_inv, _ = ring(lab_, "a1")
    a_tag = answer(lab_, b_inv, V1, V1_CONTACT)
    out = lab_.feed(request("BYE", "a1", "c1", a_tag, 2, CARRIER), CARRIER)
    (b_bye,) = [m for m in only(out, V1_CONTACT) if isinstance(m, Request)]
    lab_.feed(make_response(b_bye, 200), V1_CONTACT)
    assert lab_.ctrl.calls == {} and lab_.ctrl.gate.drops.counts["unknown_source"] == 0


def test_another_vendor_or_a_wrong_tag_gets_481_and_an_old_cseq_500(tmp_path: Path) -> None:
    lab_ = lab(tmp_path)
    b_inv, _ = ring(lab_)
    answer(lab_, b_inv, V1, V1)
    # vendor-2 is a known host, but not this call's
    out = lab_.feed(request("BYE", b_inv.call_id, "v1", b_inv.from_.tag, 2, V2), V2)
    assert [m.status for m in only(out, V2)] == [481]  # type: ignore[union-attr]
    out = lab_.feed(request("BYE", b_inv.call_id, "not-v1", b_inv.from_.tag, 2, V1), V1)
    assert [m.status for m in only(out, V1)] == [481]  # type: ignore[union-attr]
    # the carrier's host may not speak for the vendor either
    out = lab_.feed(request("BYE", b_inv.call_id, "v1", b_inv.from_.tag, 2, CARRIER), CARRIER)
    assert [m.status for m in only(out, CARRIER)] == [481]  # type: ignore[union-attr]
    out = lab_.feed(request("INFO", b_inv.call_id, "v1", b_inv.from_.tag, 5, V1), V1)
    assert [m.method for m in only(out, CARRIER)] == ["INFO"]  # type: ignore[union-attr]
    out = lab_.feed(request("BYE", b_inv.call_id, "v1", b_inv.from_.tag, 4, V1), V1)
    assert [m.status for m in only(out, V1)] == [500]  # type: ignore[union-attr]  # §12.2.2
    assert lab_.ctrl.calls and lab_.ctrl.gate.drops.counts["in_dialog"] == 0


def test_a_response_is_taken_only_from_the_host_its_request_went_to(tmp_path: Path) -> None:
    """A stranger's 200 is dropped at the edge; vendor-1's host, which we are still
    waiting on (its 503's transaction), cannot answer the INVITE sent to vendor-2."""
    lab_ = lab(tmp_path)
    b1, _ = ring(lab_)
    out = lab_.feed(make_response(b1, 503, to_tag="x"), V1)
    (b2,) = [m for m in only(out, V2) if isinstance(m, Request) and m.method == "INVITE"]
    fake = make_response(b2, 200, to_tag="evil", headers=[("Contact", "<sip:x@10.66.0.1>")])
    assert lab_.feed(fake, STRANGER) == []
    assert lab_.ctrl.gate.drops.counts["unknown_source"] == 1
    assert lab_.feed(fake, V1) == [] and lab_.ctrl.layer.strays == 1
    ok = make_response(b2, 200, to_tag="v2", headers=[("Contact", "<sip:v@10.3.0.1>")])
    assert [m.status for m in only(lab_.feed(ok, V2), CARRIER)] == [200]  # type: ignore[union-attr]


def test_a_vendor_removed_by_a_reload_can_still_end_its_live_call(tmp_path: Path) -> None:
    lab_ = lab(tmp_path)
    b_inv, _ = ring(lab_)
    answer(lab_, b_inv, V1, V1)
    text = (tmp_path / "sbc.yaml").read_text()
    vendor_1 = next(line for line in text.splitlines(keepends=True) if "name: vendor-1" in line)
    text = text.replace(vendor_1, "").replace("[vendor-1, vendor-2]", "[vendor-2]")
    (tmp_path / "sbc.yaml").write_text(text)
    lab_.ctrl.snapshot = Snapshot.build(load_config(tmp_path))
    assert "10.2.0.1" not in lab_.ctrl.snapshot.peer_hosts
    out = lab_.feed(request("BYE", b_inv.call_id, "v1", b_inv.from_.tag, 2, V1), V1)
    assert [m.status for m in only(out, V1)] == [200]  # type: ignore[union-attr]


def test_a_late_answer_to_a_relayed_reinvite_after_the_call_ended_is_acked(
    tmp_path: Path,
) -> None:
    """carrier --re-INVITE--> sbc --re-INVITE--> vendor
    carrier --BYE---------> sbc --BYE-------> vendor   (both answered: the call is over)
    vendor  --200 (re-INVITE)-> sbc --ACK--> vendor     (no crash; the 2xx is confirmed)"""
    lab_ = lab(tmp_path)
    b_inv, _ = ring(lab_)
    a_tag = answer(lab_, b_inv, V1, V1)
    out = lab_.feed(request("INVITE", "a1", "c1", a_tag, 2, CARRIER, SDP), CARRIER)
    (reinvite,) = [m for m in only(out, V1) if isinstance(m, Request)]
    out = lab_.feed(request("BYE", "a1", "c1", a_tag, 3, CARRIER), CARRIER)
    (b_bye,) = [m for m in only(out, V1) if isinstance(m, Request)]
    lab_.feed(make_response(b_bye, 200), V1)
    assert lab_.ctrl.calls == {}
    late = make_response(reinvite, 200, headers=[("Contact", "<sip:v@10.2.0.1>")], body=SDP)
    out = lab_.feed(late, V1)
    assert [m.method for m in only(out, V1)] == ["ACK"]  # type: ignore[union-attr]


def test_an_unanswered_cancel_ends_the_attempt_as_cancelled_after_64_t1(
    tmp_path: Path,
) -> None:
    """RFC 3261 §9.1: the vendor rang, the carrier cancelled, and the vendor never answers
    our CANCEL or the INVITE: 32 s later the attempt ends, 487 cancelled, the trunk not
    blamed, and the call is forgotten."""
    lab_ = lab(tmp_path)
    b_inv, _ = ring(lab_)
    lab_.feed(make_response(b_inv, 180, to_tag="r"), V1)
    (call,) = lab_.ctrl.calls.values()
    via = call.a_invite.vias[0].raw.encode()  # §9.1: the INVITE's own Via, so its branch
    cancel = (
        b"CANCEL sip:x@192.0.2.1 SIP/2.0\r\nVia: " + via + b"\r\n"
        b"From: <sip:15550001000@10.1.0.1>;tag=c1\r\nTo: <sip:15551230000@x>\r\n"
        b"Call-ID: a1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = lab_.feed(cancel, CARRIER)
    assert sorted(m.status for m in only(out, CARRIER)) == [200, 487]  # type: ignore[union-attr]
    assert [m.method for m in only(out, V1)] == ["CANCEL"]  # type: ignore[union-attr]
    assert call.attempts[0].phase is Phase.RINGING
    lab_.advance(31.0)
    assert lab_.ctrl.calls
    lab_.advance(1.5)
    assert lab_.ctrl.calls == {}
    (end,) = lab_.events("call.end")
    assert end["attempts"] == [  # type: ignore[comparison-overlap]
        {"n": 1, "trunk_group": "vendor-1", "trunk": "10.2.0.1:5060", "status": 487,
         "outcome": "cancelled"}
    ]  # fmt: skip


REGISTRAR_TGS = (
    TGS
    + """
  - {name: vendor-reg, relationship: vendor-x, direction: termination,
     trunks: [{type: registration, ip: 10.5.0.1, port: 5060, username: u, password: p}]}
"""
)


def test_a_vendor_registrar_that_is_no_calls_peer_is_heard(tmp_path: Path) -> None:
    lab_ = lab(tmp_path, REGISTRAR_TGS)
    registrar = Target("udp", "10.5.0.1", 5060)
    lab_.ctrl.start(lab_.now)
    (register,) = only(lab_.run(), registrar)
    assert isinstance(register, Request)
    lab_.feed(make_response(register, 200, to_tag="r"), registrar)
    assert [e["trunk_group"] for e in lab_.events("registration.up")] == ["vendor-reg"]


PBX_TGS = (
    TGS
    + """
  - {name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{type: registration, username: pbx1, password: s3cret}]}
"""
)


def test_spoofed_failures_cannot_lock_a_carrier_out(tmp_path: Path) -> None:
    """Six REGISTERs 'from' the carrier's address with a made-up nonce and account count
    for nothing (a forged nonce earns a challenge, never a failure); and a nonce fetched at
    one address is no good from another."""
    lab_ = lab(tmp_path, PBX_TGS)
    forged = (
        'Digest username="nobody", realm="127.0.0.1", nonce="x", uri="sip:127.0.0.1", '
        'response="00", cnonce="c", nc=00000001, qop=auth, algorithm=MD5'
    )
    for i in range(6):
        (r,) = only(lab_.feed(register_from(CARRIER, 10 + i, "nobody", forged), CARRIER), CARRIER)
        assert isinstance(r, Response) and r.status == 401  # a fresh challenge
    assert lab_.events("auth.blocked") == []
    _, vendor = ring(lab_)  # the carrier still calls
    assert vendor == V1
    # a nonce minted for 10.7.0.1, replayed from 10.7.0.2: challenged again, not counted
    a, b = Target("udp", "10.7.0.1", 5060), Target("udp", "10.7.0.2", 5060)
    (challenge,) = only(lab_.feed(register_from(a, 1), a), a)
    assert isinstance(challenge, Response)
    params = pick_challenge(challenge.get_all("WWW-Authenticate"))
    assert params is not None
    auth = authorization(params, "REGISTER", "sip:127.0.0.1", "pbx1", "s3cret")
    (r,) = only(lab_.feed(register_from(b, 2, auth=auth), b), b)
    assert isinstance(r, Response) and r.status == 401


def test_a_locked_out_carrier_address_loses_registers_not_calls(tmp_path: Path) -> None:
    lab_ = lab(tmp_path, PBX_TGS)
    for i in range(6):  # real failures from the carrier's own address (a NATed PBX)
        out = only(lab_.feed(register_from(CARRIER, 10 * i + 1), CARRIER), CARRIER)
        if not out:
            break
        params = pick_challenge(out[0].get_all("WWW-Authenticate"))  # type: ignore[union-attr]
        assert params is not None
        auth = authorization(params, "REGISTER", "sip:127.0.0.1", "pbx1", f"wrong{i}")
        lab_.feed(register_from(CARRIER, 10 * i + 2, auth=auth), CARRIER)
    (blocked,) = lab_.events("auth.blocked")
    assert blocked["ip"] == "10.1.0.1"
    assert only(lab_.feed(register_from(CARRIER, 99), CARRIER), CARRIER) == []  # REGISTER: dropped
    _, vendor = ring(lab_, "a9")  # INVITE: the carrier's trunk still works
    assert vendor == V1
