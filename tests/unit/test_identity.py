"""Asserted identity and privacy between the legs (sbc.call.identity): the pure rules."""

from __future__ import annotations

import pytest

from sbc import manipulate
from sbc.call import identity
from sbc.config.schema import Manipulation, TrunkGroup

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
