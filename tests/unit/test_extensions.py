"""SIP extensions real trunks use (issue 15), pure: the controller and fake time.

Caller = carrier-a at 127.0.0.1:5070; vendor-1 at 127.0.0.1:5081, vendor-2 at :5082.
"""

from __future__ import annotations

from pathlib import Path

from sbc.cdr import from_call
from sbc.sip.digest import authorization, pick_challenge
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import (
    CALLER,
    TGS,
    V1,
    V2,
    Lab,
    b_legs,
    invite,
    lab_with,
    only,
    register,
    request,
)


def redirect_lab(tmp_path: Path, redirects: str) -> Lab:
    return lab_with(
        tmp_path,
        f"""
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1}}]}}
  - {{name: vendor-1, relationship: vendor-x, direction: termination, redirects: {redirects},
     trunks: [{{ip: 127.0.0.1, port: 5081}}]}}
  - {{name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 10.0.0.2, port: 5082}}]}}
""",
    )


def moved(b_inv: Request, *contacts: str) -> Response:
    return make_response(b_inv, 302, to_tag="r1", headers=[("Contact", c) for c in contacts])


def test_a_302_is_followed_to_its_contacts_in_q_order(tmp_path: Path) -> None:
    """caller       sbc                 vendor-1 :5081      127.0.0.1:5083 / :5084
    |--INVITE---->|--INVITE---------->|                     |
    |             |<--------------302-|  Contact: ...5084;q=0.5, ...5083;q=0.9
    |             |--ACK------------->|                     |
    |             |--INVITE (R-URI 15559990001@...:5083)---->|  attempt 2
    |             |<-----------------------------------503--|
    |             |--INVITE (R-URI 15559990002@...:5084)---->|  attempt 3
    |<------200---|<-----------------------------------200--|
    """
    lab = redirect_lab(tmp_path, "follow")
    ((b1, t1),) = b_legs(lab.feed(invite(), CALLER))
    assert t1 == V1
    out = lab.feed(
        moved(
            b1,
            "<sip:15559990002@127.0.0.1:5084>;q=0.5",
            "<sip:15559990001@127.0.0.1:5083>;q=0.9",
            "<sip:15559990003@192.0.2.66:5060>",  # no trunk of vendor-1's: never followed
        ),
        t1,
    )
    assert only(out, CALLER) == []  # the caller hears nothing of it
    ((b2, t2),) = b_legs(out)
    assert t2 == Target("udp", "127.0.0.1", 5083) and b2.uri.startswith("sip:15559990001@")
    (event,) = lab.events("call.redirected")
    assert event["to"] == ["udp:127.0.0.1:5083", "udp:127.0.0.1:5084"]
    ((b3, t3),) = b_legs(lab.feed(make_response(b2, 503, to_tag="x"), t2))
    assert t3 == Target("udp", "127.0.0.1", 5084) and b3.uri.startswith("sip:15559990002@")
    ok = make_response(b3, 200, to_tag="y", headers=[("Contact", "<sip:v@127.0.0.1:5084>")])
    assert [m.status for m in only(lab.feed(ok, t3), CALLER)] == [200]  # type: ignore[union-attr]
    (call,) = lab.ctrl.calls.values()
    record = from_call(call, 0.0, None)
    assert [(a["trunk"], a["outcome"], a["redirected_by"]) for a in record["attempts"]] == [
        ("127.0.0.1:5081", "redirected", None),
        ("127.0.0.1:5083", "code", 1),
        ("127.0.0.1:5084", "answered", 1),
    ]


def test_redirects_relay_gives_the_caller_the_302_with_its_contacts(tmp_path: Path) -> None:
    lab = redirect_lab(tmp_path, "relay")
    ((b1, t1),) = b_legs(lab.feed(invite(), CALLER))
    out = lab.feed(moved(b1, "<sip:15559990001@127.0.0.1:5083>"), t1)
    assert b_legs(out) == []  # no further attempt, not even the next route
    (final,) = only(out, CALLER)
    assert isinstance(final, Response) and final.status == 302
    assert [str(c.uri) for c in final.contacts] == ["sip:15559990001@127.0.0.1:5083"]


def test_redirects_fail_advances_to_the_next_route(tmp_path: Path) -> None:
    lab = redirect_lab(tmp_path, "fail")
    ((b1, t1),) = b_legs(lab.feed(invite(), CALLER))
    ((_, t2),) = b_legs(lab.feed(moved(b1, "<sip:15559990001@127.0.0.1:5083>"), t1))
    assert t2 == Target("udp", "10.0.0.2", 5082)


def test_a_3xx_with_nothing_to_follow_is_a_route_advance(tmp_path: Path) -> None:
    lab = redirect_lab(tmp_path, "follow")
    ((b1, t1),) = b_legs(lab.feed(invite(), CALLER))
    ((_, t2),) = b_legs(lab.feed(moved(b1, "<sip:1@192.0.2.66>"), t1))
    assert t2 == Target("udp", "10.0.0.2", 5082)


def test_redirect_loops_stop_after_five_followed_attempts(tmp_path: Path) -> None:
    lab = redirect_lab(tmp_path, "follow")
    ((b, t),) = b_legs(lab.feed(invite(), CALLER))
    targets = []
    for _ in range(10):  # vendor-1 redirects every attempt back to itself
        legs = b_legs(lab.feed(moved(b, "<sip:15551230000@127.0.0.1:5081>"), t))
        if not legs or legs[0][1] != V1:
            break
        ((b, t),) = legs
        targets.append(t)
    assert len(targets) == 5  # then the next route


def answered(lab: Lab) -> tuple[str, Request, Target]:
    """An answered call: the caller's To tag, the B-leg INVITE and its vendor."""
    out = lab.feed(invite(), CALLER)
    ((b_inv, vendor),) = b_legs(out)
    ok = make_response(b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1:5081>")])
    (a_ok,) = only(lab.feed(ok, vendor), CALLER)
    assert isinstance(a_ok, Response) and a_ok.to.tag
    return a_ok.to.tag, b_inv, vendor


def test_refer_is_answered_403_and_never_crosses() -> None:
    """caller        sbc          vendor
    |--REFER------->|             |   Refer-To: <sip:2000@192.0.2.9>
    |<---------403--|             |   (nothing reaches the vendor)
    """
    lab = Lab()
    a_tag, _, vendor = answered(lab)
    refer = request(
        "REFER", "a-leg-1@10.1.1.1", "caller1", a_tag, 2, CALLER,
        extra="Refer-To: <sip:2000@192.0.2.9>\r\n",
    )  # fmt: skip
    out = lab.feed(refer, CALLER)
    (answer,) = only(out, CALLER)
    assert isinstance(answer, Response) and answer.status == 403
    assert only(out, vendor) == [] and only(out, V2 if vendor == V1 else V1) == []


def test_refer_relay_names_us_in_refer_to() -> None:
    """caller        sbc                 vendor
    |--REFER------->|--REFER------------>|   Refer-To: <sip:2000@192.0.2.9>
    |               |                    |     -> <sip:2000@127.0.0.1:5060>: the vendor's
    |<---------202--|<--------------202--|     INVITE comes back to us as a new call
    (attended transfers, with Replaces: tests/unit/test_replaces.py)
    """
    lab = Lab(refer="relay")
    a_tag, _, vendor = answered(lab)
    refer = request(
        "REFER", "a-leg-1@10.1.1.1", "caller1", a_tag, 2, CALLER,
        extra="Refer-To: <sip:2000@192.0.2.9;user=phone>\r\n"
        "Referred-By: <sip:15550001000@10.1.1.1>\r\n",
    )  # fmt: skip
    (b_refer,) = only(lab.feed(refer, CALLER), vendor)
    assert isinstance(b_refer, Request) and b_refer.method == "REFER"
    assert b_refer.get("Refer-To") == "<sip:2000@127.0.0.1:5060>"
    assert b_refer.get("Referred-By") == "<sip:15550001000@127.0.0.1:5060>"
    (accepted,) = only(lab.feed(make_response(b_refer, 202), vendor), CALLER)
    assert isinstance(accepted, Response) and accepted.status == 202
    # the transfer's progress (RFC 3515 §2.4.5) crosses back, its event and sipfrag intact
    (call,) = lab.ctrl.calls.values()
    b = call.b_dialog
    assert b is not None and b.remote.tag
    notify = request(
        "NOTIFY", b.call_id, b.remote.tag, b.local_tag, 1, vendor,
        body=b"SIP/2.0 100 Trying\r\n",
        extra="Event: refer\r\nSubscription-State: active;expires=60\r\n",
    ).replace(b"application/sdp", b"message/sipfrag")  # fmt: skip
    (a_notify,) = only(lab.feed(notify, vendor), CALLER)
    assert isinstance(a_notify, Request) and a_notify.method == "NOTIFY"
    assert a_notify.get("Event") == "refer" and a_notify.body == b"SIP/2.0 100 Trying\r\n"
    assert a_notify.get("Content-Type") == "message/sipfrag"


PBX_DID = """
node:
  listen: [{address: 127.0.0.1, port: 5060, transport: udp}]
relationships: [{name: carrier-a}, {name: vendor-x}]
routeplans:
  - name: default
    numbering: [{number: "15557770000", trunk_group: pbx}]
    routes: [{prefix: "", trunk_groups: [vendor-1, vendor-2]}]
"""
PBX = Target("udp", "10.9.9.9", 5077)


def pbx_lab(tmp_path: Path, register_it: bool) -> Lab:
    lab = lab_with(tmp_path, TGS, base=PBX_DID)
    if register_it:
        (challenge,) = only(lab.feed(register(), PBX), PBX)
        assert isinstance(challenge, Response)
        params = pick_challenge(challenge.get_all("WWW-Authenticate"))
        assert params is not None
        auth = authorization(params, "REGISTER", "sip:127.0.0.1", "pbx1", "s3cret")
        (ok,) = only(lab.feed(register(cseq=2, auth=auth), PBX), PBX)
        assert isinstance(ok, Response) and ok.status == 200
    return lab


def test_a_did_of_a_registered_pbx_goes_to_its_binding(tmp_path: Path) -> None:
    """carrier       sbc                    PBX (registered from 10.9.9.9:5077)
    |--INVITE------>|                       |   DID 15557770000: numbering -> pbx
    |               |--INVITE-------------->|   R-URI: its Contact sip:pbx1@10.9.9.9:5077
    |<-------200----|<------------------200-|   To: the DID
    """
    lab = pbx_lab(tmp_path, register_it=True)
    ((b_inv, to),) = b_legs(lab.feed(invite(user="15557770000"), CALLER))
    assert to == PBX and b_inv.uri == "sip:pbx1@10.9.9.9:5077"
    assert b_inv.to.uri.user == "15557770000"
    ok = make_response(b_inv, 200, to_tag="p1", headers=[("Contact", "<sip:pbx1@10.9.9.9:5077>")])
    assert [m.status for m in only(lab.feed(ok, PBX), CALLER)] == [200]  # type: ignore[union-attr]


def test_a_did_of_a_pbx_with_no_binding_gets_480_and_says_why(tmp_path: Path) -> None:
    lab = pbx_lab(tmp_path, register_it=False)
    out = lab.feed(invite(user="15557770000"), CALLER)
    assert b_legs(out) == []
    assert [m.status for m in only(out, CALLER) if m.status >= 200] == [480]  # type: ignore[union-attr]
    (record,) = lab.ctrl.cdrs
    assert record["reason"] == "not_registered" and record["status"] == 480


def test_181_and_182_count_as_ringing_for_max_pdd_and_199_crosses_without(
    tmp_path: Path,
) -> None:
    """vendor-1 has max_pdd 2 s: a 181 or 182 stops it (the caller hears progress), a 199
    (RFC 6228) crosses to the caller but does not, and the call moves on to vendor-2."""
    for status, moves_on in ((181, False), (182, False), (199, True)):
        (tmp_path / str(status)).mkdir()
        lab = lab_with(
            tmp_path / str(status),
            """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor-1, relationship: vendor-x, direction: termination, limits: {max_pdd: 2},
     trunks: [{ip: 127.0.0.1, port: 5081}]}
  - {name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{ip: 10.0.0.2, port: 5082}]}
""",
        )
        ((b1, t1),) = b_legs(lab.feed(invite(), CALLER))
        out = lab.feed(make_response(b1, status, to_tag="v1"), t1)
        assert [m.status for m in only(out, CALLER)] == [status]  # type: ignore[union-attr]
        later = b_legs(lab.advance(2.5))
        assert bool(later) == moves_on, status
