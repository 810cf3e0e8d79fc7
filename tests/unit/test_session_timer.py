"""Session timers (RFC 4028) on each leg, pure: the controller and fake time.

Caller = carrier-a at 127.0.0.1:5070; vendor-1 at 127.0.0.1:5081 (vendor-2 :5082).
"""

from __future__ import annotations

from pathlib import Path

from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import CALLER, Lab, b_legs, invite, one_vendor_lab, only, request

V1 = Target("udp", "127.0.0.1", 5081)


def timer_lab(tmp_path: Path, vendor_timer: str = "{}") -> Lab:
    return one_vendor_lab(tmp_path, f"session_timer: {vendor_timer}, ")


def timed_invite(expires: int, extra: str = "Supported: timer\r\n") -> bytes:
    added = f"Max-Forwards: 70\r\nSession-Expires: {expires}\r\n{extra}"
    return invite().replace(b"Max-Forwards: 70\r\n", added.encode())


def answer(
    lab: Lab, data: bytes, vendor_headers: tuple[tuple[str, str], ...] = ()
) -> tuple[Response, Request]:
    """The caller's INVITE answered by vendor-1: the caller's 200 and the B-leg INVITE."""
    ((b_inv, vendor),) = b_legs(lab.feed(data, CALLER))
    assert vendor == V1
    ok = make_response(
        b_inv, 200, to_tag="v1",
        headers=[("Contact", "<sip:v@127.0.0.1:5081>"), ("Allow", "INVITE, ACK, BYE, UPDATE"),
                 *vendor_headers],
    )  # fmt: skip
    (a_ok,) = [m for m in only(lab.feed(ok, V1), CALLER) if isinstance(m, Response)]
    assert a_ok.status == 200 and a_ok.to.tag
    lab.feed(request("ACK", "a-leg-1@10.1.1.1", "caller1", a_ok.to.tag, 1, CALLER), CALLER)
    return a_ok, b_inv


def byes(out: list[tuple[Request | Response, Target]]) -> list[Target]:
    return [t for m, t in out if isinstance(m, Request) and m.method == "BYE"]


def test_a_caller_that_stops_refreshing_gets_bye_on_both_legs(tmp_path: Path) -> None:
    """caller                  sbc                 vendor
    |--INVITE SE: 90--------->|--INVITE----------->|  Supported: timer (no SE: its
    |                         |<--------------200--|   trunk group asks for none)
    |<--200 SE: 90;refresher=uac, Require: timer   |
    |   ... 90 - min(32, 90/3) = 60 s, no refresh ...
    |<--BYE-------------------|--BYE-------------->|  hangup sbc, reason session_timer
    """
    lab = timer_lab(tmp_path)
    a_ok, b_inv = answer(lab, timed_invite(90))
    assert a_ok.get("Session-Expires") == "90;refresher=uac" and a_ok.get("Require") == "timer"
    assert b_inv.get("Supported") == "100rel, timer" and b_inv.get("Session-Expires") is None
    assert byes(lab.advance(59.0)) == []
    assert sorted(byes(lab.advance(1.5)), key=str) == [CALLER, V1]
    (expired,) = lab.events("call.session_expired")
    assert expired["leg"] == "a"
    (call,) = lab.ctrl.calls.values()
    assert call.reason == "session_timer" and call.hangup == "sbc"


def test_a_refresh_from_the_caller_keeps_the_call_up(tmp_path: Path) -> None:
    """caller              sbc                 vendor
    |--UPDATE (40 s)----->|--UPDATE----------->|
    |<-200 SE: 90;ref=uac-|<--------------200--|   both sessions renewed: BYE at 100 s
    """
    lab = timer_lab(tmp_path)
    a_ok, _ = answer(lab, timed_invite(90))
    lab.advance(40.0)
    update = request(
        "UPDATE", "a-leg-1@10.1.1.1", "caller1", a_ok.to.tag, 2, CALLER,
        extra="Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n",
    )  # fmt: skip
    (b_update,) = only(lab.feed(update, CALLER), V1)
    assert isinstance(b_update, Request) and b_update.method == "UPDATE"
    assert b_update.get("Session-Expires") is None  # the vendor's leg has no timer
    (ok,) = only(lab.feed(make_response(b_update, 200), V1), CALLER)
    assert isinstance(ok, Response) and ok.get("Session-Expires") == "90;refresher=uac"
    assert byes(lab.advance(59.0)) == []  # 99 s: still up
    assert len(byes(lab.advance(1.5))) == 2


def test_a_session_expires_below_min_se_gets_422(tmp_path: Path) -> None:
    lab = timer_lab(tmp_path)
    out = lab.feed(timed_invite(60), CALLER)
    (answer_,) = [m for m in only(out, CALLER) if isinstance(m, Response) and m.status >= 200]
    assert answer_.status == 422 and answer_.get("Min-SE") == "90"
    assert b_legs(out) == []


def test_require_timer_is_no_longer_a_bad_extension(tmp_path: Path) -> None:
    lab = timer_lab(tmp_path)
    a_ok, _ = answer(lab, timed_invite(1800, "Require: timer\r\nSupported: timer\r\n"))
    assert a_ok.get("Session-Expires") == "1800;refresher=uac"


def test_we_refresh_the_vendor_leg_and_a_dead_vendor_ends_the_call(tmp_path: Path) -> None:
    """caller          sbc                       vendor
    |--INVITE-------->|--INVITE SE: 120, Min-SE: 90->|
    |                 |<---200 SE: 120;refresher=uac-|   we refresh this leg
    |   60 s          |--UPDATE SE: 120;refresher=uac>|
    |                 |<-------------------------200-|
    |   60 s          |--UPDATE------------------->X |   unanswered: Timer F, 32 s
    |<--BYE-----------|--BYE------------------------>|
    """
    lab = timer_lab(tmp_path, "{expires: 120}")
    _, b_inv = answer(lab, invite(), (("Session-Expires", "120;refresher=uac"),))
    assert (b_inv.get("Session-Expires"), b_inv.get("Min-SE")) == ("120", "90")
    out = lab.advance(60.0)
    (upd,) = only(out, V1)
    assert isinstance(upd, Request) and upd.method == "UPDATE"
    assert upd.get("Session-Expires") == "120;refresher=uac"
    lab.feed(make_response(upd, 200, headers=[("Session-Expires", "120;refresher=uac")]), V1)
    (upd2,) = only(lab.advance(60.0), V1)
    assert isinstance(upd2, Request) and upd2.method == "UPDATE" and upd2.cseq > upd.cseq
    ended = []
    for _ in range(40):  # Timer F (64*T1 = 32 s) fires in there, or the interval ends
        ended += byes(lab.advance(1.0))
        if ended:
            break
    assert sorted(ended, key=str) == [CALLER, V1]


def test_a_vendors_422_gets_the_invite_again_with_its_min_se(tmp_path: Path) -> None:
    lab = timer_lab(tmp_path, "{expires: 120}")
    ((b_inv, vendor),) = b_legs(lab.feed(invite(), CALLER))
    too_small = make_response(b_inv, 422, to_tag="x", headers=[("Min-SE", "1800")])
    ((again, _),) = b_legs(lab.feed(too_small, vendor))
    assert again.cseq == b_inv.cseq + 1 and again.call_id == b_inv.call_id
    assert (again.get("Session-Expires"), again.get("Min-SE")) == ("1800", "1800")
    assert len(again.get_all("Session-Expires")) == 1


def test_a_481_to_our_refresh_ends_the_call(tmp_path: Path) -> None:
    """RFC 4028 §10: a refresh answered 481 (or 408) means the peer lost the session."""
    lab = timer_lab(tmp_path, "{expires: 120}")
    answer(lab, invite(), (("Session-Expires", "120;refresher=uac"),))
    (upd,) = only(lab.advance(60.0), V1)
    assert isinstance(upd, Request) and upd.method == "UPDATE"
    out = lab.feed(make_response(upd, 481), V1)
    assert sorted(byes(out), key=str) == [CALLER, V1]
