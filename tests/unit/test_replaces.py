"""INVITE with Replaces (RFC 3891) from a caller, pure: the controller with fake time.
Caller = carrier-a at 127.0.0.1:5070 (the lab config: vendor-pool at :5081 and :5082)."""

from __future__ import annotations

from sbc.call.replaces import parse
from sbc.sip import ids
from sbc.sip.message import Request, Response, make_response
from sbc.sip.steer import owner, replaced_call_id
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
