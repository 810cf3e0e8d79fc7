"""Flood protection (sbc.flood, node.flood), the fingerprints we leave, and the fail2ban
filter, with fake time: no sleeps."""

from __future__ import annotations

import configparser
import io
import json
import re
import sys
from pathlib import Path

import msgspec
import pytest

from sbc import log as sbc_log
from sbc.config.loader import load_config
from sbc.config.node import FloodConfig
from sbc.flood import Flood
from sbc.sip.message import Response
from sbc.sip.stateless import raw_headers, stamp_raw, stateless_error
from sbc.sip.transaction import Target
from tests.helpers import CALLER, Lab, invite

ROOT = Path(__file__).resolve().parents[2]
STRANGER = Target("udp", "127.0.0.2", 5099)
CFG = FloodConfig(requests=10, window=1.0, block_for=30.0)


def options(src: Target, n: int, via_host: str | None = None, rport: bool = True) -> bytes:
    host = via_host or src.host
    rp = ";rport" if rport else ""
    return (
        f"OPTIONS sip:sbc@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{src.port};branch=z9hG4bKo{n}{rp}\r\n"
        f"From: <sip:ping@{src.host}>;tag=f{n}\r\nTo: <sip:sbc@127.0.0.1>\r\n"
        f"Call-ID: o-{n}@{src.host}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def lab_with_flood(**flood: object) -> Lab:
    config = load_config(ROOT / "config/lab")
    node = msgspec.structs.replace(
        config.node, flood=msgspec.structs.replace(config.node.flood, **flood)
    )
    return Lab(msgspec.structs.replace(config, node=node))


# --- the pure module ----------------------------------------------------------------------


def test_one_request_too_many_in_the_window_bans_the_source() -> None:
    f = Flood()
    assert [f.count(CFG, "10.0.0.1", 0.01 * i) for i in range(10)] == [None] * 10
    ban = f.count(CFG, "10.0.0.1", 0.5)
    assert ban is not None and ban.requests == 11 and ban.until == 30.5
    assert f.banned("10.0.0.1", 1.0) and f.banned("10.0.0.1", 30.4)
    assert not f.banned("10.0.0.1", 30.5)
    assert not f.banned("10.0.0.2", 1.0)  # others are not touched
    assert f.expire("10.0.0.1", 30.0) is None  # not yet
    assert f.expire("10.0.0.1", 30.5) == [30.5, 2.0]  # the two drops above
    assert f.bans == {}


def test_a_steady_rate_under_the_limit_is_never_banned() -> None:
    f = Flood()
    # 10 a second for a minute: each window holds 10, never 11
    assert all(f.count(CFG, "10.0.0.1", i * 0.1) is None for i in range(600))


def test_exempt_ips_and_cidrs_are_never_counted() -> None:
    cfg = FloodConfig(requests=1, exempt=["10.1.0.0/16", "192.0.2.7", "2001:db8::/32"])
    f = Flood()
    for host in ("10.1.2.3", "192.0.2.7", "2001:db8::1"):
        assert all(f.count(cfg, host, 0.0) is None for _ in range(50)), host
    assert f.count(cfg, "192.0.2.8", 0.0) is None
    assert f.count(cfg, "192.0.2.8", 0.0) is not None


def test_a_sibling_workers_ban_is_held_without_a_new_one() -> None:
    f = Flood()
    assert f.share("10.0.0.9", 100.0)
    assert not f.share("10.0.0.9", 50.0)  # already held for longer
    assert f.banned("10.0.0.9", 99.0)


def test_the_counting_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sbc.flood.MAX_HOSTS", 100)
    f = Flood()
    for i in range(1000):  # a spoofed flood from 1000 addresses in one instant
        f.count(CFG, f"10.9.{i // 256}.{i % 256}", 0.0)
    assert f.size <= 100
    f.count(CFG, "10.8.0.1", 5.0)  # later: expired windows make room
    assert f.size == 1


# --- through the screen ---------------------------------------------------------------------


def test_a_strangers_flood_is_banned_once_dropped_before_parsing_and_unbanned_once() -> None:
    """200 OPTIONS from 127.0.0.2 in one second against requests: 50: one edge.dropped line,
    one flood.banned line, everything counted; after block_for one flood.unbanned."""
    lab = lab_with_flood(requests=50, window=1.0, block_for=10.0)
    for i in range(200):
        assert lab.feed(options(STRANGER, i), STRANGER) == []
        lab.now += 0.004
    notices = lab.ctrl.pop_notices()
    assert [n.event for n in notices] == ["edge.dropped", "flood.banned"]
    banned = notices[1].fields
    assert banned == {"ip": "127.0.0.2", "requests": 51, "window": 1.0, "block_for": 10.0}
    counts = lab.ctrl.gate.drops.counts
    assert counts["unknown_source"] == 50 and counts["flood"] == 150
    lab.advance(10.0)
    (unbanned,) = lab.events("flood.unbanned")
    assert unbanned == {"ip": "127.0.0.2", "dropped": 149}
    assert 'sbc_sip_dropped_total{reason="flood"} 150.0' in lab.scrape()


def test_a_trunk_that_floods_is_banned_too_and_responses_never_count() -> None:
    """The caller's address (a trunk's) with no exemption: 30 OPTIONS in a second against
    requests: 20 are answered 20 times, then nothing; the ban ends and it is answered again."""
    lab = lab_with_flood(requests=20, window=1.0, block_for=5.0, exempt=[])
    answers = 0
    for i in range(30):
        answers += len(lab.feed(options(CALLER, i), CALLER))
    assert answers == 20
    assert [e["ip"] for e in lab.events("flood.banned")] == ["127.0.0.1"]
    lab.advance(5.0)
    assert len(lab.feed(options(CALLER, 99), CALLER)) == 1


def test_off_with_requests_zero() -> None:
    lab = lab_with_flood(requests=0, exempt=[])
    assert sum(len(lab.feed(options(CALLER, i), CALLER)) for i in range(500)) == 500


# --- fingerprints -------------------------------------------------------------------------


def test_options_answer_names_no_product_and_has_no_empty_supported() -> None:
    lab = lab_with_flood()
    ((resp, _),) = lab.feed(options(CALLER, 1), CALLER)
    assert isinstance(resp, Response) and resp.status == 200
    assert resp.get("Server") is None and resp.get("User-Agent") is None
    assert resp.get("Supported") == "100rel, timer, replaces"
    assert all(v.strip() for _, v in resp.headers)


def test_server_header_names_us_in_answers_and_requests() -> None:
    config = load_config(ROOT / "config/lab")
    config = msgspec.structs.replace(
        config, node=msgspec.structs.replace(config.node, server_header="sbc-edge")
    )
    lab = Lab(config)
    ((resp, _),) = lab.feed(options(CALLER, 1), CALLER)
    assert resp.get("Server") == "sbc-edge"
    out = lab.feed(invite(), CALLER)
    b_leg = [m for m, t in out if t.port == 5081 or t.port == 5082]
    assert b_leg and b_leg[0].get("User-Agent") == "sbc-edge"  # not the caller's SecretPBX


def test_rport_and_received_are_stamped_on_answers() -> None:
    """RFC 3581 §4: rport asked: rport=<source port> and received=<source IP>; RFC 3261
    §18.2.1: a sent-by host that is not the source gets received= even without rport."""
    lab = lab_with_flood()
    ((resp, _),) = lab.feed(options(CALLER, 1), CALLER)
    assert resp.vias[0].raw.endswith(";rport=5070;received=127.0.0.1")
    ((resp, _),) = lab.feed(options(CALLER, 2, via_host="10.0.0.5", rport=False), CALLER)
    assert resp.vias[0].raw.endswith(";branch=z9hG4bKo2;received=127.0.0.1")
    ((resp, _),) = lab.feed(options(CALLER, 3, rport=False), CALLER)
    assert "received" not in resp.vias[0].raw and "rport" not in resp.vias[0].raw


def test_stamp_raw_keeps_quoted_params_and_replaces_old_values() -> None:
    raw = 'SIP/2.0/UDP [2001:db8::1]:5060;x="a;b";rport=1;received=9.9.9.9;branch=z9hG4bKx'
    assert stamp_raw(raw, "2001:db8::2", 7000) == (
        'SIP/2.0/UDP [2001:db8::1]:5060;x="a;b";rport=7000;branch=z9hG4bKx;received=2001:db8::2'
    )


def test_a_stateless_error_gets_a_random_to_tag_not_a_fixed_one() -> None:
    data = (
        b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKq;rport"
        b"\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    errs = [stateless_error(raw_headers(data), 400, ("127.0.0.1", 6000), t) for t in "ab"]
    assert all(e is not None for e in errs)
    texts = [e.decode() for e in errs if e is not None]
    assert "To: <sip:x@y>;tag=a\r\n" in texts[0] and "To: <sip:x@y>;tag=b\r\n" in texts[1]
    assert "rport=6000;received=127.0.0.1" in texts[0]


# --- fail2ban ------------------------------------------------------------------------------

# fail2ban's <HOST> (filter.d/common's host part, IPv4 and IPv6)
HOST = (
    r"(?:::f{4,6}:)?(?P<host>(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9a-fA-F]{1,4}::?|::){1,7}"
    r"(?:[0-9a-fA-F]{1,4}|(?<=:):))"
)


def failregexes() -> list[re.Pattern[str]]:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "contrib/fail2ban/filter.d/sbc.conf")
    lines = parser.get("Definition", "failregex").strip().splitlines()
    return [re.compile(line.strip().replace("<HOST>", HOST)) for line in lines]


def logged(events: list[tuple[str, dict[str, object]]]) -> list[str]:
    """The JSON lines sbc writes for these notices (sbc.log, as sbc.runtime logs them)."""
    out = io.StringIO()
    saved, sys.stdout = sys.stdout, out
    try:
        log = sbc_log.setup("info")
        for event, fields in events:
            log.warning(event, call_id=None, **fields)
    finally:
        sys.stdout = saved
        import structlog

        structlog.reset_defaults()
    return out.getvalue().splitlines()


def test_the_fail2ban_filter_matches_sbcs_ban_lines_and_nothing_else() -> None:
    lab = lab_with_flood(requests=5, block_for=1.0)
    for i in range(10):
        lab.feed(options(STRANGER, i), STRANGER)
    lab.advance(2.0)
    notices = [(n.event, n.fields) for n in lab.ctrl.pop_notices()]
    assert [e for e, _ in notices] == ["edge.dropped", "flood.banned", "flood.unbanned"]
    blocked = ("auth.blocked", {"ip": "2001:db8::7", "scope": "source", "username": "pbx1"})
    lines = logged([*notices, blocked])
    assert all(json.loads(line) for line in lines)
    regexes = failregexes()
    hosts = []
    for line in lines:
        found = [m.group("host") for r in regexes if (m := r.search(line))]
        hosts += found
    assert hosts == ["127.0.0.2", "2001:db8::7"]  # the ban and the lockout, once each
    date = re.compile(r'"timestamp": ?"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"')
    assert all(date.search(line) for line in lines)
