"""Digest (RFC 3261 §22, RFC 8760) and the registrar, pure, with fake time."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.sip.digest import NonceBook, authorization, parse_params, pick_challenge, response
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import BASE, TGS, Lab, lab_with, only, register, vendor_registrar

# RFC 7616 §3.9.1: Mufasa / "Circle of Life", GET /dir/index.html
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "qop": "auth",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example_responses(algorithm: str, expected: str) -> None:
    assert response(algorithm, **RFC7616) == expected


def test_client_picks_the_first_supported_challenge_and_answers_it() -> None:
    challenges = [
        'Digest realm="r", nonce="n1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"',
    ]
    challenge = pick_challenge(challenges)
    assert challenge is not None and challenge["algorithm"] == "SHA-256"
    value = authorization(challenge, "INVITE", "sip:1@h", "u", "p", cnonce="c", nc=1)
    scheme, p = parse_params(value)
    assert scheme == "digest" and p["qop"] == "auth" and p["nc"] == "00000001"
    assert p["response"] == response("SHA-256", "u", "r", "p", "INVITE", "sip:1@h", "n1",
                                     "00000001", "c", "auth")  # fmt: skip


def book_and_credentials(
    wall: float, nc: int = 1, password: str = "s3cret"
) -> tuple[NonceBook, str]:
    book = NonceBook(b"k", lifetime=60)
    (challenge,) = book.challenge("sbc", wall, ("SHA-256",))
    params = parse_params(challenge)[1]
    return book, authorization(params, "REGISTER", "sip:sbc", "pbx1", password, nc=nc)


def check(book: NonceBook, value: str, wall: float) -> str:
    v = book.check(value, "REGISTER", "sbc", {"pbx1": "s3cret"}.get, wall, ("SHA-256", "MD5"))
    return "ok" if v.ok else v.why


def test_nonce_accepted_once_per_count_then_replay_then_stale() -> None:
    book, value = book_and_credentials(1000.0)
    assert check(book, value, 1001.0) == "ok"
    assert check(book, value, 1002.0) == "replay"  # the same nc again
    nonce = parse_params(value)[1]["nonce"]
    challenge = {"realm": "sbc", "nonce": nonce, "algorithm": "SHA-256", "qop": "auth"}
    nc2 = authorization(challenge, "REGISTER", "sip:sbc", "pbx1", "s3cret", nc=2)
    assert check(book, nc2, 1003.0) == "ok"
    nc3 = authorization(challenge, "REGISTER", "sip:sbc", "pbx1", "s3cret", nc=3)
    assert check(book, nc3, 1061.0) == "stale"  # older than the 60 s lifetime


def test_wrong_password_forged_nonce_and_other_key() -> None:
    book, wrong = book_and_credentials(1000.0, password="nope")
    assert check(book, wrong, 1001.0) == "bad_response"
    _, value = book_and_credentials(1000.0)
    assert check(NonceBook(b"other-key", 60), value, 1001.0) == "bad_nonce"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_check_never_raises_on_any_authorization(value: str) -> None:
    """Whatever a peer puts in Authorization, the answer is a verdict, not an exception."""
    book, good = book_and_credentials(1000.0)
    for candidate in (value, "Digest " + value, good[: len(value) % len(good)] + value):
        assert check(book, candidate, 1001.0) != "ok"


# --- the registrar inside the call controller -----------------------------------------------

PBX = Target("udp", "10.9.9.9", 5077)


def registered_lab(
    tmp_path: Path, password: str = "s3cret"
) -> tuple[Lab, Response, dict[str, str]]:
    """REGISTER, 401 with SHA-256 first, REGISTER with SHA-256 credentials: the answer."""
    lab = lab_with(tmp_path, TGS)
    (challenge,) = only(lab.feed(register(), PBX), PBX)
    assert isinstance(challenge, Response) and challenge.status == 401
    offered = challenge.get_all("WWW-Authenticate")
    assert [parse_params(v)[1]["algorithm"] for v in offered] == ["SHA-256", "MD5"]
    params = pick_challenge(offered)
    assert params is not None
    auth = authorization(params, "REGISTER", "sip:127.0.0.1", "pbx1", password)
    (answer,) = only(lab.feed(register(cseq=2, auth=auth), PBX), PBX)
    assert isinstance(answer, Response)
    return lab, answer, params


def test_register_with_sha256_then_call_from_the_bound_address(tmp_path: Path) -> None:
    lab, ok, _ = registered_lab(tmp_path)
    assert ok.status == 200 and ok.get("Contact") == "<sip:pbx1@10.9.9.9:5077>;expires=300"
    (ev,) = lab.events("registrar.registered")
    assert ev["trunk_group"] == "pbx" and ev["source"] == "udp:10.9.9.9:5077"
    invite = (
        b"INVITE sip:9%2315551230000@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.9.9.9:5077;branch=z9hG4bKi1\r\n"
        b"From: <sip:15550001000@10.9.9.9>;tag=c1\r\nTo: <sip:15551230000@127.0.0.1>\r\n"
        b"Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx1@10.9.9.9:5077>\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = lab.feed(invite, PBX)
    b_legs = [m for m, t in out if t != PBX]
    assert len(b_legs) == 1 and b_legs[0].ruri is not None  # type: ignore[union-attr]
    assert b_legs[0].ruri.user == "15551230000"  # type: ignore[union-attr]
    (start,) = lab.events("call.start")
    assert start["trunk_group"] == "pbx"
    # from another port of the same host there is no binding: not ours
    out = lab.feed(invite.replace(b"z9hG4bKi1", b"z9hG4bKi2"), Target("udp", "10.9.9.9", 5099))
    assert out == []  # unknown_source: drop


def test_wrong_password_gets_403_and_no_binding(tmp_path: Path) -> None:
    lab, answer, _ = registered_lab(tmp_path, password="wrong")
    assert answer.status == 403
    (ev,) = lab.events("auth.refused")
    assert ev["reason"] == "bad_response" and ev["username"] == "pbx1"
    assert lab.store.bindings == {}


def test_binding_expires_and_unregister(tmp_path: Path) -> None:
    lab, _, params = registered_lab(tmp_path)
    wall = lab.now + lab.ctrl.wall_offset
    assert lab.store.binding_from("udp", "10.9.9.9", 5077, wall) is not None
    assert lab.store.binding_from("udp", "10.9.9.9", 5077, wall + 301) is None  # expired
    auth = authorization(params, "REGISTER", "sip:127.0.0.1", "pbx1", "s3cret", nc=2)
    (ok,) = only(lab.feed(register(cseq=3, auth=auth, expires=0), PBX), PBX)
    assert isinstance(ok, Response) and ok.status == 200
    assert lab.store.binding_from("udp", "10.9.9.9", 5077, wall) is None  # removed
    assert [e["expires"] for e in lab.events("registrar.unregistered")] == [0]


@pytest.mark.parametrize("policy", ["drop", "reject"])
def test_invite_claiming_an_account_without_binding_is_challenged_407(
    tmp_path: Path, policy: str
) -> None:
    """With unknown_source: reject (an address with no binding may authenticate its INVITE):

    pbx ------INVITE (From pbx1)------> sbc
    pbx <------------407---------------  Proxy-Authenticate
    pbx ------INVITE + Proxy-Authorization (CSeq 2)--> sbc --INVITE--> vendor

    With drop, a stranger's only way in is REGISTER: the INVITE gets no answer at all."""
    base = BASE.replace("node:\n", f"node:\n  unknown_source: {policy}\n")
    lab = lab_with(tmp_path, TGS, base=base)
    stranger = Target("udp", "10.8.8.8", 5060)

    def invite(cseq: int, auth: str = "") -> bytes:
        extra = f"Proxy-Authorization: {auth}\r\n" if auth else ""
        return (
            f"INVITE sip:15551230000@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.8.8.8:5060;branch=z9hG4bKp{cseq}\r\n"
            f"From: <sip:pbx1@10.8.8.8>;tag=c1\r\nTo: <sip:15551230000@127.0.0.1>\r\n"
            f"Call-ID: call-2\r\nCSeq: {cseq} INVITE\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Length: 0\r\n\r\n"
        ).encode()

    if policy == "drop":
        assert lab.feed(invite(1), stranger) == []
        assert lab.ctrl.gate.drops.counts["unknown_source"] == 1
        return
    (challenge,) = only(lab.feed(invite(1), stranger), stranger)
    assert isinstance(challenge, Response) and challenge.status == 407
    params = pick_challenge(challenge.get_all("Proxy-Authenticate"))
    assert params is not None
    auth = authorization(params, "INVITE", "sip:15551230000@127.0.0.1", "pbx1", "s3cret")
    out = lab.feed(invite(2, auth), stranger)
    assert [m for m, t in out if t != stranger]  # a B-leg INVITE went out
    assert lab.events("call.start")[0]["trunk_group"] == "pbx"


def test_vendor_registration_trunk_needs_the_registrar_ip(tmp_path: Path) -> None:
    from sbc.config.loader import ConfigError

    bad = (
        TGS
        + """
  - {name: vendor-reg, relationship: vendor-x, direction: termination,
     trunks: [{type: registration, username: u, password: p}]}
"""
    )
    with pytest.raises(ConfigError, match="registrar's IP"):
        lab_with(tmp_path, bad, base=BASE)


def test_non_ascii_nonce_or_response_is_refused_not_raised() -> None:
    book, _ = book_and_credentials(1000.0)
    for nonce, resp in (("1a2b3c4d5e.é", "00"), ("x" * 12, "é" * 64)):
        value = (
            f'Digest username="pbx1", realm="sbc", nonce="{nonce}", uri="sip:sbc", '
            f'response="{resp}", cnonce="c", nc=00000001, qop=auth, algorithm=SHA-256'
        )
        assert check(book, value, 1001.0) in ("bad_nonce", "bad_response")


@pytest.mark.parametrize("expires", ["soon", "-5", "0", ""])
def test_an_unreadable_expires_from_a_vendor_registrar_keeps_what_we_asked(
    tmp_path: Path, expires: str
) -> None:
    """sbc                     vendor registrar (127.0.0.1:5090)
    |--REGISTER (Expires 600)->|
    |<-200 Expires: <garbage>--|   registration.up, expires 600: the refresh is due at 480 s
    |--REGISTER--------------->|   at 480 s, not before
    """
    lab = lab_with(
        tmp_path,
        vendor_registrar(600),
    )
    registrar = Target("udp", "127.0.0.1", 5090)
    lab.ctrl.start(lab.now)
    (register,) = only(lab.run(), registrar)
    assert isinstance(register, Request) and register.get("Expires") == "600"
    contact = f"<sip:u@127.0.0.1:5060>;expires={expires}" if expires else "<sip:u@127.0.0.1>"
    ok = make_response(
        register, 200, to_tag="r", headers=[("Contact", contact), ("Expires", expires or "x")]
    )
    lab.feed(ok, registrar)
    (up,) = lab.events("registration.up")
    assert up["expires"] == 600
    assert only(lab.advance(479), registrar) == []
    (again,) = only(lab.advance(1.5), registrar)
    assert isinstance(again, Request) and again.method == "REGISTER"
