"""INVITE with Replaces (RFC 3891) from a caller, pure: the controller with fake time.
Caller = carrier-a at 127.0.0.1:5070 (the lab config: vendor-pool at :5081 and :5082)."""

from __future__ import annotations

import msgspec

from sbc.call.replaces import parse
from sbc.config.loader import load_config
from sbc.sip import ids
from sbc.sip.message import Request, Response, make_response
from sbc.sip.steer import owner, replaced_call_id
from sbc.sip.transaction import Target
from sbc.worker import Worker
from tests.helpers import CALLER, Lab, b_legs, invite, only, request


def answered(lab: Lab) -> tuple[str, Request]:
    """Call 1 answered: the caller's To tag (ours) and the B-leg INVITE."""
    ((b_inv, vendor),) = b_legs(lab.feed(invite(), CALLER))
    ok = make_response(b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@10.7.7.7:5099>")])
    (a_ok,) = only(lab.feed(ok, vendor), CALLER)
    assert isinstance(a_ok, Response) and a_ok.to.tag
    ack = request("ACK", "a-leg-1@10.1.1.1", "caller1", a_ok.to.tag, 1, CALLER)
    lab.feed(ack, CALLER)
    return a_ok.to.tag, b_inv


def replacing(replaces: str, n: int = 2) -> bytes:
    """The PBX's second phone: a new call (its own Call-ID) replacing call 1."""
    data = invite(branch=f"z9hG4bKr{n}").replace(b"a-leg-1@10.1.1.1", f"a-leg-{n}".encode())
    data = data.replace(b"tag=caller1", f"tag=phone{n}".encode())
    return data.replace(b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\n{replaces}\r\n".encode())


def test_a_replaces_naming_our_a_leg_goes_to_the_vendor_naming_our_b_leg() -> None:
    """caller phone 2      sbc                          vendor (call 1's: 10.7.7.7:5099)
    |--INVITE------------>|  Replaces: a-leg-1@10.1.1.1;to-tag=<ours>;from-tag=caller1
    |                     |--INVITE--------------------->|  R-URI: call 1's remote target
    |                     |  Replaces: <b1 Call-ID>;to-tag=v1;from-tag=<our b1 tag>
    |<----------------200-|<--------------------------200|
    |                     |<--------------BYE (b1)-------|
    |  (phone 1)<----BYE--|  call 1 ends: hangup vendor
    """
    lab = Lab()
    a_tag, b1 = answered(lab)
    head = f"Replaces: a-leg-1@10.1.1.1;to-tag={a_tag};from-tag=caller1"
    out = lab.feed(replacing(head), CALLER)
    ((b2, to),) = b_legs(out)
    assert (to.host, to.port) == ("10.7.7.7", 5099) and b2.uri == "sip:v@10.7.7.7:5099"
    assert b2.get("Replaces") == f"{b1.call_id};to-tag=v1;from-tag={b1.from_.tag}"
    assert b2.call_id != b1.call_id and "a-leg" not in b2.to_bytes().decode()
    (notice,) = lab.events("call.replaces")
    assert notice["replaced"] in lab.ctrl.calls
    ok = make_response(b2, 200, to_tag="v2", headers=[("Contact", "<sip:v@10.7.7.7:5099>")])
    finals = [m.status for m in only(lab.feed(ok, to), CALLER) if isinstance(m, Response)]
    assert finals == [200]
    # the vendor ends the replaced dialog; its BYE reaches phone 1's dialog
    bye = make_bye(b1)
    out = lab.feed(bye, to)
    a_byes = [m for m in only(out, CALLER) if isinstance(m, Request) and m.method == "BYE"]
    assert len(a_byes) == 1 and a_byes[0].call_id == "a-leg-1@10.1.1.1"


def make_bye(b1: Request) -> bytes:
    return (
        f"BYE sip:sbc@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.7.7.7:5099;branch=z9hG4bKbye1;rport\r\n"
        f"From: <sip:x@10.7.7.7>;tag=v1\r\nTo: {b1.from_}\r\n"
        f"Call-ID: {b1.call_id}\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_replaces_naming_no_dialog_we_know_gets_481_and_sends_nothing() -> None:
    lab = Lab()
    a_tag, _ = answered(lab)
    for n, head in enumerate(
        (
            "Replaces: nosuch@10.1.1.1;to-tag=x;from-tag=caller1",
            f"Replaces: a-leg-1@10.1.1.1;to-tag={a_tag};from-tag=someone-else",
            "Replaces: a-leg-1@10.1.1.1;to-tag=caller1;from-tag=" + a_tag,  # tags swapped
        ),
        start=2,
    ):
        out = lab.feed(replacing(head, n), CALLER)
        assert b_legs(out) == []
        finals = [m.status for m in only(out, CALLER) if isinstance(m, Response)]
        assert finals == [481], head


def test_early_only_malformed_and_unanswered_calls() -> None:
    lab = Lab()
    a_tag, _ = answered(lab)
    head = f"Replaces: a-leg-1@10.1.1.1;to-tag={a_tag};from-tag=caller1;early-only"
    out = lab.feed(replacing(head, 2), CALLER)
    assert [m.status for m in only(out, CALLER)] == [486]  # type: ignore[union-attr]
    out = lab.feed(replacing("Replaces: a-leg-1@10.1.1.1;to-tag=x", 3), CALLER)
    assert [m.status for m in only(out, CALLER)] == [400]  # type: ignore[union-attr]
    # a call still ringing: we are the UAS of that early dialog (§3): 481
    lab2 = Lab()
    out = lab2.feed(invite(), CALLER)
    ((b_inv, vendor),) = b_legs(out)
    (ringing,) = only(lab2.feed(make_response(b_inv, 180, to_tag="v1"), vendor), CALLER)
    assert isinstance(ringing, Response) and ringing.to.tag
    head = f"Replaces: a-leg-1@10.1.1.1;to-tag={ringing.to.tag};from-tag=caller1"
    out = lab2.feed(replacing(head, 4), CALLER)
    assert [m.status for m in only(out, CALLER)] == [481]  # type: ignore[union-attr]


def test_parse() -> None:
    assert parse("abc@h;to-tag=1;from-tag=2") == ("abc@h", "1", "2", False)
    assert parse(" abc@h ; from-tag=2 ; to-tag=1 ; early-only") == ("abc@h", "1", "2", True)
    assert parse("abc@h;to-tag=1") is None and parse(";to-tag=1;from-tag=2") is None


def test_a_replacing_invite_steers_to_the_replaced_calls_worker_and_pins_its_dialog() -> None:
    """With several workers the replaced call lives with the Call-ID Replaces names; the new
    dialog's Call-ID is pinned there, so its ACK, CANCEL and BYE follow (sbc.sip.steer)."""
    a1 = next(f"a1-{i}".encode() for i in range(100) if owner(f"a1-{i}".encode(), 4) == 3)
    a2 = next(f"a2-{i}".encode() for i in range(100) if owner(f"a2-{i}".encode(), 4) == 1)
    head = b"Replaces: " + a1 + b";to-tag=x;from-tag=y"
    inv = replacing(head.decode()).replace(b"a-leg-2", a2)
    assert replaced_call_id(inv) == a1
    assert replaced_call_id(inv.replace(b"INVITE sip:", b"OPTIONS sip:", 1)) is None
    assert replaced_call_id(invite()) is None
    worker = Worker(0, 4, 0, None)  # a real one: compiled, Steer checks its type
    try:
        steer = worker.steer
        assert steer.owner_of(a2, inv) == 3
        bye = request("BYE", a2.decode(), "phone2", "t", 2, CALLER)
        assert steer.owner_of(a2, bye) == 3  # pinned
        assert steer.owner_of(b"other", bye) == owner(b"other", 4)
    finally:
        worker.sock.close()
        ids.configure(0, 1)  # a Worker names this process's ids: back to a lone process


def two_calls(lab: Lab) -> tuple[tuple[str, Request, Target], tuple[str, Request, Target]]:
    """Calls 1 (a-leg-1, caller1) and 2 (a-leg-2, caller2) from the PBX, both answered:
    for each our A tag, its B-leg INVITE and its vendor (whose Contact is where it is)."""
    calls = []
    for n in (1, 2):
        data = invite(branch=f"z9hG4bKc{n}").replace(b"a-leg-1", f"a-leg-{n}".encode())
        data = data.replace(b"tag=caller1", f"tag=caller{n}".encode())
        ((b_inv, vendor),) = b_legs(lab.feed(data, CALLER))
        contact = f"<sip:v{n}@{vendor.host}:{vendor.port}>"
        ok = make_response(b_inv, 200, to_tag=f"v{n}", headers=[("Contact", contact)])
        (a_ok,) = only(lab.feed(ok, vendor), CALLER)
        assert isinstance(a_ok, Response) and a_ok.status == 200 and a_ok.to.tag
        ack = request("ACK", f"a-leg-{n}@10.1.1.1", f"caller{n}", a_ok.to.tag, 1, CALLER)
        lab.feed(ack, CALLER)
        calls.append((a_ok.to.tag, b_inv, vendor))
    return calls[0], calls[1]


def test_a_pbxs_attended_transfer_names_no_caller_call_id_and_reaches_call_2s_vendor() -> None:
    """The PBX (transferor) joins the vendor's party of call 1 (transferee) to the vendor's
    party of call 2 (target); the vendor never sees the PBX's Call-IDs (RFC 3891 §5).

    PBX                  sbc                                   vendor
    |--REFER (a1)------->|--REFER (b1)------------------------->|
    |  Refer-To: <sip:2000@10.1.1.1?Replaces=a-leg-2@10.1.1.1;to-tag=<our a2 tag>;
    |    from-tag=caller2>   -> <sip:2000@127.0.0.1:5060?Replaces=<our a2 tag>;
    |                           to-tag=<our a2 tag>;from-tag=caller2>
    |<--------------202--|<----------------------------------202-|
    |                    |<---INVITE (x3, that Replaces)---------|  the transferee
    |                    |--INVITE (b3)------------------------->|  to call 2's Contact,
    |                    |  Replaces: <b2>;to-tag=v2;from-tag=<our b2 tag>
    |                    |<---------------------------------200-|
    |                    |--200 (x3)---------------------------->|
    |                    |<---------------------------BYE (b2)---|  the target's old dialog
    |<---------BYE (a2)--|                                       |
    """
    lab = Lab(refer="relay")
    (a1_tag, _, v1), (a2_tag, b2, v2) = two_calls(lab)
    named = f"a-leg-2%4010.1.1.1%3Bto-tag%3D{a2_tag}%3Bfrom-tag%3Dcaller2"
    refer = request(
        "REFER", "a-leg-1@10.1.1.1", "caller1", a1_tag, 2, CALLER,
        extra=f"Refer-To: <sip:2000@10.1.1.1?Replaces={named}>\r\n",
    )  # fmt: skip
    (b_refer,) = only(lab.feed(refer, CALLER), v1)
    assert isinstance(b_refer, Request) and b_refer.method == "REFER"
    token = f"{a2_tag}%3Bto-tag%3D{a2_tag}%3Bfrom-tag%3Dcaller2"
    assert b_refer.get("Refer-To") == f"<sip:2000@127.0.0.1:5060?Replaces={token}>"
    assert b"a-leg" not in b_refer.to_bytes() and b"10.1.1.1" not in b_refer.to_bytes()
    (accepted,) = only(lab.feed(make_response(b_refer, 202), v1), CALLER)
    assert isinstance(accepted, Response) and accepted.status == 202
    # the transferee's INVITE, as its UA builds it from the Refer-To
    x3 = invite(user="2000", branch="z9hG4bKx3").replace(b"a-leg-1@10.1.1.1", b"x3@vendor")
    x3 = x3.replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5070", f"Via: SIP/2.0/UDP {v1.host}:{v1.port}".encode()
    )
    x3 = x3.replace(
        b"Contact: <sip:alice@127.0.0.1:5070>", f"Contact: <sip:x@{v1.host}:{v1.port}>".encode()
    )
    replaces = f"Replaces: {a2_tag};to-tag={a2_tag};from-tag=caller2"
    x3 = x3.replace(b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\n{replaces}\r\n".encode())
    ((b3, to),) = b_legs(lab.feed(x3, v1))
    assert to == v2 and b3.uri == f"sip:v2@{v2.host}:{v2.port}"
    assert b3.get("Replaces") == f"{b2.call_id};to-tag=v2;from-tag={b2.from_.tag}"
    ok = make_response(b3, 200, to_tag="v3", headers=[("Contact", f"<sip:v3@{v2.host}:{v2.port}>")])
    finals = [m.status for m in only(lab.feed(ok, v2), v1) if isinstance(m, Response)]
    assert finals == [200]
    bye = make_bye(b2).replace(b"tag=v1", b"tag=v2")
    a_byes = [m for m in only(lab.feed(bye, v2), CALLER) if isinstance(m, Request)]
    assert [(m.method, m.call_id) for m in a_byes] == [("BYE", "a-leg-2@10.1.1.1")]


def test_a_vendors_attended_transfer_comes_back_to_the_pbx_naming_its_own_dialog() -> None:
    """The vendor (transferor) joins the PBX's party of call 1 to the PBX's party of call 2:
    its Replaces names our B-leg (ids we minted) and crosses as it is.

    PBX                  sbc                                   vendor
    |<-------REFER (a1)--|<---------------------------REFER (b1)-|
    |  Refer-To: <sip:sbc@127.0.0.1:5060?Replaces=<b2>;to-tag=<our b2 tag>;from-tag=v2>
    |--INVITE (a3, that Replaces)-->|                            |  the transferee
    |<---------INVITE (b3)----------|  to call 2's caller (its Contact), Replaces:
    |                    |  a-leg-2@10.1.1.1;to-tag=caller2;from-tag=<our a2 tag>
    |--200 (b3)--------->|                                       |
    |<---------200 (a3)--|                                       |
    |--BYE (a2)--------->|--BYE (b2)---------------------------->|
    """
    config = load_config("config/lab")
    tgs = list(config.trunk_groups)
    tgs[1] = msgspec.structs.replace(tgs[1], refer="relay")
    lab = Lab(msgspec.structs.replace(config, trunk_groups=tgs))
    (_, b1, v1), (a2_tag, b2, v2) = two_calls(lab)
    ours = f"{b2.call_id}%3Bto-tag%3D{b2.from_.tag}%3Bfrom-tag%3Dv2"
    refer = request(
        "REFER", b1.call_id, "v1", b1.from_.tag, 1, v1,
        extra=f"Refer-To: <sip:sbc@127.0.0.1:5060?Replaces={ours}>\r\n",
    ).replace(b"From: <sip:15550001000", b"From: <sip:15551230000")  # fmt: skip
    (a_refer,) = only(lab.feed(refer, v1), CALLER)
    assert isinstance(a_refer, Request) and a_refer.method == "REFER"
    assert a_refer.call_id == "a-leg-1@10.1.1.1"
    assert a_refer.get("Refer-To") == f"<sip:sbc@127.0.0.1:5060?Replaces={ours}>"
    head = f"Replaces: {b2.call_id};to-tag={b2.from_.tag};from-tag=v2"
    out = lab.feed(replacing(head, 3), CALLER)
    ((b3, to),) = b_legs(out)
    assert to == CALLER and b3.uri == "sip:alice@127.0.0.1:5070"
    assert b3.get("Replaces") == f"a-leg-2@10.1.1.1;to-tag=caller2;from-tag={a2_tag}"
    assert b3.call_id not in ("a-leg-2@10.1.1.1", "a-leg-3")
    ok = make_response(b3, 200, to_tag="phone3b", headers=[("Contact", "<sip:p@127.0.0.1:5070>")])
    out = lab.feed(ok, CALLER)
    finals = [m for m in only(out, CALLER) if isinstance(m, Response) and m.call_id == "a-leg-3"]
    assert [m.status for m in finals] == [200]
    bye = request("BYE", "a-leg-2@10.1.1.1", "caller2", a2_tag, 3, CALLER)
    b_byes = [m for m in only(lab.feed(bye, CALLER), v2) if isinstance(m, Request)]
    assert [(m.method, m.call_id) for m in b_byes] == [("BYE", b2.call_id)]


def test_a_replaces_token_or_b_leg_naming_is_checked_like_any_other() -> None:
    """A token with the wrong caller tag, or naming no call, gets 481; a REFER whose
    Replaces is malformed is refused 403 and never crosses."""
    lab = Lab(refer="relay")
    (a1_tag, _, v1), (a2_tag, b2, _) = two_calls(lab)
    for n, head in enumerate(
        (
            f"Replaces: {a2_tag};to-tag={a2_tag};from-tag=someone",
            f"Replaces: {'0' * 16};to-tag={'0' * 16};from-tag=caller2",
            f"Replaces: {b2.call_id};to-tag={b2.from_.tag};from-tag=not-v2",
        ),
        start=4,
    ):
        out = lab.feed(replacing(head, n), CALLER)
        assert b_legs(out) == [] and [m.status for m in only(out, CALLER)] == [481], head  # type: ignore[union-attr]
    bad = request(
        "REFER", "a-leg-1@10.1.1.1", "caller1", a1_tag, 2, CALLER,
        extra="Refer-To: <sip:2000@10.1.1.1?Replaces=abc%3Bto-tag%3D1>\r\n",
    )  # fmt: skip
    out = lab.feed(bad, CALLER)
    assert [m.status for m in only(out, CALLER)] == [403] and only(out, v1) == []  # type: ignore[union-attr]
