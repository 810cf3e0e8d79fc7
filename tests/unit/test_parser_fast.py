"""The parser's shortcuts keep its verdicts: the quote-free parameter split, the one-pass
header loop, the joined continuation lines and the maps of recently parsed values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.sip import parser
from sbc.sip.errors import SipError
from sbc.sip.grammar import _parse_params_quoted, parse_params, parse_uri
from sbc.sip.message import Request
from sbc.sip.parser import parse_message

HEAD = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK1\r\n"
    "From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n"
    "Call-ID: fast-1\r\nCSeq: 1 INVITE\r\n"
)


def message(extra: str = "", head: str = HEAD) -> bytes:
    return (head + extra + "Content-Length: 0\r\n\r\n").encode()


def outcome(f: object, text: str) -> object:
    try:
        return f(text)  # type: ignore[operator]
    except SipError as e:
        return (e.status, e.detail)


@given(st.text(alphabet=" \t;=ab1.-[]:%!\x00é,", max_size=30))
def test_quote_free_parameters_split_as_the_scan_does(text: str) -> None:
    assert outcome(parse_params, text) == outcome(_parse_params_quoted, text)


def test_continuation_lines_join_with_one_space_each() -> None:
    msg = parse_message(message("Subject: a  \r\n   \r\n \tb \r\nX-Blank:\r\n c\r\n"))
    # "a", then one SP per continuation (the blank one included), then "b"
    assert msg.get("Subject") == "a  b"
    assert msg.get("X-Blank") == "c"


def test_a_bad_header_line_wins_over_an_earlier_bad_value() -> None:
    data = message("Via: SIP/3.0/UDP h\r\nBad Name: x\r\n")
    with pytest.raises(SipError) as err:
        parse_message(data)
    assert (err.value.status, err.value.detail) == (400, "bad header name")
    with pytest.raises(SipError) as err:
        parse_message(message("Via: SIP/3.0/UDP h\r\n"))
    assert err.value.status == 505


def test_a_value_seen_as_contact_is_still_refused_as_a_route() -> None:
    # Contact may be a bare addr-spec, Route may not (§20.34): separate maps.
    ok = parse_message(message("Contact: sip:c@example.com\r\n"))
    assert ok.contacts[0].uri.user == "c"
    with pytest.raises(SipError):
        parse_message(message("Route: sip:c@example.com\r\n"))


def test_a_refused_value_is_refused_every_time() -> None:
    bad = message("Contact: <sip:c@exa mple.com>\r\n")
    for _ in range(2):
        with pytest.raises(SipError):
            parse_message(bad)


def test_repeated_messages_parse_to_equal_messages() -> None:
    one, two = parse_message(message()), parse_message(message())
    assert isinstance(one, Request) and isinstance(two, Request)
    assert one.headers == two.headers and one.vias == two.vias and one.ruri == two.ruri
    assert (one.from_, one.to) == (two.from_, two.to)


def test_the_maps_of_recent_values_stay_bounded() -> None:
    for n in range(parser._RECENT_MAX + 10):
        parse_message(message(head=HEAD.replace("tag=a", f"tag=a{n}")))
    assert 0 < len(parser._ADDRS) <= parser._RECENT_MAX


def test_uri_text_is_kept_once_made() -> None:
    uri = parse_uri("sip:alice@[2001:db8::1]:5070;transport=tcp?x=y")
    assert str(uri) == "sip:alice@[2001:db8::1]:5070;transport=tcp?x=y"
    assert str(uri) is str(uri)
