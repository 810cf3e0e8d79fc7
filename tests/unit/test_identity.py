"""Asserted identity and privacy between the legs (sbc.call.identity): the pure rules, then
the B2BUA applying them to the B-leg INVITE, the answer relayed back, in-dialog requests,
the ANI and the CDR."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbc import manipulate
from sbc.call import identity
from sbc.config.loader import ConfigError, load_config
from sbc.config.schema import Manipulation, TrunkGroup
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import SDP, V1, V2, Lab, lab_with, only

HOST = "192.0.2.10"
PAI = ("P-Asserted-Identity", "<sip:+15551234567@10.1.1.1>")
IDENTITY = (
    "Identity",
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0.eyJhdHRlc3QiOiJBIn0."
    "c2lnbmF0dXJl;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken",
)


def cross(headers: list[tuple[str, str]], sender: bool, receiver: bool) -> list[tuple[str, str]]:
    return identity.cross(headers, sender, receiver, HOST)


# --- the rules -----------------------------------------------------------------------------


def test_nothing_about_identity_passes_as_it_is() -> None:
    headers = [("Content-Type", "application/sdp"), IDENTITY]
    assert cross(headers, False, False) is headers


def test_pai_crosses_between_trusted_trunk_groups_on_our_host() -> None:
    headers = [PAI, ("P-Asserted-Identity", '"Alice Smith" <sip:alice@pbx.example;user=phone>')]
    assert cross(headers, True, True) == [
        ("P-Asserted-Identity", f"<sip:+15551234567@{HOST}>"),
        ("P-Asserted-Identity", f'"Alice Smith" <sip:alice@{HOST};user=phone>'),
    ]


def test_tel_uris_are_unchanged_and_a_list_stays_one_line() -> None:
    value = "<sip:+15551234567@10.1.1.1:5070>, <tel:+15551234567>"
    assert cross([("P-Asserted-Identity", value)], True, True) == [
        ("P-Asserted-Identity", f"<sip:+15551234567@{HOST}>, <tel:+15551234567>")
    ]


def test_an_address_without_user_or_that_does_not_parse_is_not_asserted() -> None:
    headers = [("P-Asserted-Identity", "<sip:10.1.1.1>"), ("P-Asserted-Identity", "<sip:a b@x>")]
    assert cross(headers, True, True) == []


@pytest.mark.parametrize(("sender", "receiver"), [(False, True), (False, False), (True, False)])
def test_pai_and_rpid_stay_unless_both_sides_are_trusted(sender: bool, receiver: bool) -> None:
    rpid = ("Remote-Party-ID", "<sip:+15551234567@10.1.1.1>;party=calling;screen=yes")
    assert cross([PAI, rpid, ("Content-Type", "application/sdp")], sender, receiver) == [
        ("Content-Type", "application/sdp")
    ]


def test_rpid_is_treated_like_pai() -> None:
    rpid = ("Remote-Party-ID", '"A" <sip:+15551234567@10.1.1.1>;party=calling;privacy=off')
    assert cross([rpid], True, True) == [
        ("Remote-Party-ID", f'"A" <sip:+15551234567@{HOST}>;party=calling;privacy=off')
    ]


def test_privacy_id_crosses_inside_the_trust_domain() -> None:
    headers = [PAI, ("Privacy", "id")]
    assert cross(headers, True, True) == [
        ("P-Asserted-Identity", f"<sip:+15551234567@{HOST}>"),
        ("Privacy", "id"),
    ]


def test_privacy_none_lets_pai_leave_the_trust_domain_unaltered() -> None:
    """RFC 3325 §7: under "none" the proxy MUST NOT remove PAI; RFC 3323 §4.2: nor alter
    the Privacy header."""
    headers = [PAI, ("Privacy", "none")]
    assert cross(headers, True, False) == [
        ("P-Asserted-Identity", f"<sip:+15551234567@{HOST}>"),
        ("Privacy", "none"),
    ]
    assert cross(headers, False, True) == [("Privacy", "none")]  # still no PAI from outside


def test_at_the_boundary_we_apply_privacy_and_remove_what_we_applied() -> None:
    assert cross([PAI, ("Privacy", "id")], True, False) == []
    assert cross([("Privacy", "id; critical")], True, False) == []
    assert cross([("Privacy", "user;session;critical")], False, True) == [
        ("Privacy", "session;critical")
    ]
    two = [("Privacy", "user"), ("Privacy", "session")]
    assert cross(two, True, False) == [("Privacy", "session")]
    subject = ("Subject", "call me")
    assert cross([("Privacy", "user"), subject], True, False) == []  # RFC 3323 §5.3
    assert cross([("Privacy", "user"), subject], True, True) == [("Privacy", "user"), subject]


def test_ppi_never_crosses_but_a_trusted_one_is_what_we_assert() -> None:
    ppi = ("P-Preferred-Identity", "<sip:+15550009999@pbx.example>")
    assert cross([ppi], True, True) == [("P-Asserted-Identity", f"<sip:+15550009999@{HOST}>")]
    assert cross([PAI, ppi], True, True) == [("P-Asserted-Identity", f"<sip:+15551234567@{HOST}>")]
    assert cross([ppi], False, True) == []
    assert cross([ppi], True, False) == []


def test_ipv6_host_is_bracketed() -> None:
    assert identity.cross([PAI], True, True, "2001:db8::1") == [
        ("P-Asserted-Identity", "<sip:+15551234567@[2001:db8::1]>")
    ]


def test_identity_is_left_to_manipulations_that_name_it() -> None:
    tg = TrunkGroup(name="v", direction="termination")
    headers = [IDENTITY, ("Subject", "x")]
    rules = manipulate.compile_rules(
        [Manipulation(field="header", header="Subject", search="x", replace="y")]
    )
    out = manipulate.outbound(tg, rules, "1", "2", "h", headers)
    assert out.headers == [IDENTITY, ("Subject", "y")]


# --- the B2BUA -----------------------------------------------------------------------------

CALLER = Target("udp", "127.0.0.1", 5070)
STRANGER = Target("udp", "127.0.0.2", 5070)
BASE = """
node:
  listen: [{address: 127.0.0.1, port: 5060, transport: udp}]
relationships: [{name: carrier-a}, {name: vendor-x}]
routeplans:
  - name: default
    routes: [{prefix: "1", trunk_groups: [trusted-v]}, {prefix: "2", trunk_groups: [open-v]}]
"""
TGS = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trusted: true, ani_from_pai: true, trunks: [{ip: 127.0.0.1}]}
  - {name: stranger, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.2}]}
  - {name: trusted-v, relationship: vendor-x, direction: termination, trusted: true,
     trunks: [{ip: 127.0.0.1, port: 5081}]}
  - {name: open-v, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
"""


def a_invite(user: str, src: Target, extra: str) -> bytes:
    return (
        f"INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src.host}:5070;branch=z9hG4bK{user};rport\r\n"
        f"From: <sip:15550001000@10.1.1.1>;tag=caller1\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: a-{user}@10.1.1.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{src.host}:5070>\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def b_leg(lab: Lab, user: str, extra: str, src: Target = CALLER) -> tuple[Request, Target]:
    out = lab.feed(a_invite(user, src, extra), src)
    ((b_inv, vendor),) = [(m, t) for m, t in out if t != src]
    assert isinstance(b_inv, Request)
    return b_inv, vendor


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return lab_with(tmp_path, TGS, base=BASE)


IDENTITY_LINE = f"{IDENTITY[0]}: {IDENTITY[1]}\r\n"
PAI_LINE = f"{PAI[0]}: {PAI[1]}\r\n"
DATE = "Sat, 13 Nov 2010 23:29:00 GMT"


def test_trusted_to_trusted_asserts_on_our_host_and_identity_crosses(lab: Lab) -> None:
    b_inv, vendor = b_leg(lab, "15551230000", PAI_LINE + IDENTITY_LINE + f"Date: {DATE}\r\n")
    assert vendor == V1
    assert b_inv.get_all("P-Asserted-Identity") == ["<sip:+15551234567@127.0.0.1>"]
    assert b_inv.get_all("Identity") == [IDENTITY[1]] and b_inv.get("Date") == DATE
    assert b_inv.from_.uri.user == "+15551234567"  # ani_from_pai: the asserted number
    (start,) = lab.events("call.start")
    assert start["ani"] == "+15551234567"


def test_toward_an_untrusted_vendor_no_pai_but_identity(lab: Lab) -> None:
    b_inv, vendor = b_leg(lab, "25551230000", PAI_LINE + IDENTITY_LINE)
    assert vendor == V2 and b_inv.get("P-Asserted-Identity") is None
    assert b_inv.get_all("Identity") == [IDENTITY[1]]
    assert b"10.1.1.1" not in b_inv.to_bytes()


def test_privacy_id_hides_the_asserted_number_from_from(lab: Lab) -> None:
    b_inv, _ = b_leg(lab, "15551230000", PAI_LINE + "Privacy: id\r\n")
    assert b_inv.get("P-Asserted-Identity") == "<sip:+15551234567@127.0.0.1>"
    assert b_inv.get("Privacy") == "id"
    assert str(b_inv.from_).startswith('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=')
    b_inv, _ = b_leg(lab, "25551230000", PAI_LINE + "Privacy: id\r\n")
    assert b_inv.get("P-Asserted-Identity") is None and b_inv.get("Privacy") is None
    assert b_inv.from_.uri.host == "anonymous.invalid"
    assert b"15551234567" not in b_inv.to_bytes()


def test_an_untrusted_callers_pai_never_crosses_nor_becomes_the_ani(lab: Lab) -> None:
    b_inv, vendor = b_leg(lab, "15551230000", PAI_LINE + "Privacy: user\r\n", STRANGER)
    assert vendor == V1 and b_inv.get("P-Asserted-Identity") is None
    assert b_inv.get("Privacy") is None  # applied here: From anonymous (RFC 3323 §5.3)
    assert b_inv.from_.uri.user == "anonymous"
    assert lab.events("call.start")[0]["ani"] == "15550001000"


def test_connected_identity_and_in_dialog_requests_follow_the_same_rule(lab: Lab) -> None:
    for dnis, vendor, crosses in (("15551230000", V1, True), ("25551230000", V2, False)):
        b_inv, to = b_leg(lab, dnis, "")
        assert to == vendor
        callee = [("P-Asserted-Identity", "<sip:+15559876543@10.2.2.2>"), ("Privacy", "none")]
        ok = make_response(
            b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1>"), *callee[:1]]
        )
        (a_ok,) = [m for m in only(lab.feed(ok, vendor), CALLER) if isinstance(m, Response)]
        expected = ["<sip:+15559876543@127.0.0.1>"] if crosses else []
        assert a_ok.get_all("P-Asserted-Identity") == expected
        # the vendor's re-INVITE with PAI and Privacy: none reaches the trusted caller
        # with its PAI only from the trusted vendor
        reinvite = (
            f"INVITE sip:sbc@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{vendor.port};branch=z9hG4bKre{dnis};rport\r\n"
            f"From: <sip:{dnis}@127.0.0.1>;tag=v1\r\nTo: {b_inv.from_}\r\n"
            f"Call-ID: {b_inv.call_id}\r\nCSeq: 5 INVITE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:v@127.0.0.1:{vendor.port}>\r\n"
            + "".join(f"{n}: {v}\r\n" for n, v in callee)
            + "Content-Length: 0\r\n\r\n"
        ).encode()
        out = only(lab.feed(reinvite, vendor), CALLER)
        (relayed,) = [m for m in out if isinstance(m, Request)]
        assert relayed.get_all("P-Asserted-Identity") == expected
        assert relayed.get("Privacy") == "none"


def test_the_cdr_ani_is_the_asserted_number(lab: Lab) -> None:
    b_inv, vendor = b_leg(lab, "15551230000", PAI_LINE)
    lab.feed(make_response(b_inv, 486), vendor)
    (record,) = lab.ctrl.pop_cdrs()
    assert record["ani"] == "+15551234567" and record["ani_routed"] == "+15551234567"


def test_ani_from_pai_needs_a_trusted_trunk_group(tmp_path: Path) -> None:
    untrusted = TGS.replace("trusted: true, ani_from_pai", "ani_from_pai")
    (tmp_path / "sbc.yaml").write_text(BASE + untrusted)
    with pytest.raises(ConfigError, match="ani_from_pai: needs trusted: true"):
        load_config(tmp_path)
