"""Trunks named by host, pure (routing.srv): the RFC 3263 query sequence, RFC 2782 order
with an injected random number, TTLs with an injected clock, and the call path hunting the
resolved addresses with health per address."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest

from routing.srv import Answer, Lookup, Naptr, Resolutions, Service, Srv, ordered
from sbc.config.loader import ConfigError, load_config
from sbc.sip.message import Request, make_response
from sbc.sip.transaction import Target
from tests.helpers import BASE, CALLER, V2, b_legs, invite, lab_with

A = Target("udp", "192.0.2.1", 5070)
B = Target("udp", "192.0.2.2", 5080)
C = Target("udp", "192.0.2.3", 5090)


def run(lookup: Lookup, zone: dict[tuple[str, str], tuple[list[object], float]]) -> list[str]:
    """Answer every query of ``lookup`` from ``zone`` (absent: NXDOMAIN); the queries asked."""
    asked = []
    while (q := lookup.query()) is not None:
        asked.append(f"{q[1]} {q[0]}")
        records, ttl = zone.get(q, ([], 0.0))
        lookup.answer(records, ttl)  # type: ignore[arg-type]
    return asked


def test_naptr_then_srv_then_a_with_the_least_ttl() -> None:
    zone = {
        ("vendor.test", "NAPTR"): (
            [
                Naptr(20, 10, "S", "SIP+D2T", "_sip._tcp.vendor.test."),  # another transport
                Naptr(10, 10, "S", "SIP+D2U", "_sip._udp.pool.vendor.test."),
                Naptr(10, 20, "s", "SIP+D2U", "_sip._udp.spare.vendor.test."),
            ],
            300.0,
        ),
        ("_sip._udp.pool.vendor.test", "SRV"): (
            [Srv(1, 10, 5070, "a.vendor.test."), Srv(2, 0, 5080, "b.vendor.test.")],
            60.0,
        ),
        ("a.vendor.test", "A"): (["192.0.2.1"], 30.0),
        ("b.vendor.test", "A"): (["192.0.2.2"], 120.0),
    }
    lookup = Lookup(("udp", "vendor.test", 0))
    assert run(lookup, zone) == [
        "NAPTR vendor.test",
        "SRV _sip._udp.pool.vendor.test",  # order, then preference (RFC 3403)
        "A a.vendor.test",
        "A b.vendor.test",
    ]
    answer = lookup.result()
    assert answer.services == (Service(1, 10, (A,)), Service(2, 0, (Target("udp", B.host, 5080),)))
    assert answer.ttl == 30.0  # the least of the records it came from


def test_no_naptr_the_transports_srv_name_and_aaaa_when_wanted() -> None:
    zone = {
        ("_sips._tcp.vendor.test", "SRV"): ([Srv(1, 1, 5061, "a.vendor.test")], 60.0),
        ("a.vendor.test", "A"): (["192.0.2.1"], 60.0),
        ("a.vendor.test", "AAAA"): (["2001:db8::1"], 60.0),
    }
    lookup = Lookup(("tls", "vendor.test", 0), ("A", "AAAA"))
    assert run(lookup, zone) == [
        "NAPTR vendor.test",
        "SRV _sips._tcp.vendor.test",
        "A a.vendor.test",
        "AAAA a.vendor.test",
    ]
    (service,) = lookup.result().services
    assert service.targets == (Target("tls", "192.0.2.1", 5061), Target("tls", "2001:db8::1", 5061))


def test_no_srv_the_host_itself_at_the_default_port_and_a_port_skips_srv() -> None:
    zone = {("vendor.test", "A"): (["192.0.2.9"], 60.0)}
    lookup = Lookup(("tcp", "vendor.test", 0))
    assert run(lookup, zone) == ["NAPTR vendor.test", "SRV _sip._tcp.vendor.test", "A vendor.test"]
    assert lookup.result().addresses() == [Target("tcp", "192.0.2.9", 5060)]
    lookup = Lookup(("udp", "vendor.test", 5099))  # RFC 3263 §4.2: a port, no SRV
    assert run(lookup, zone) == ["A vendor.test"]
    assert lookup.result().addresses() == [Target("udp", "192.0.2.9", 5099)]
    nothing = Lookup(("udp", "gone.test", 0))
    run(nothing, {})
    assert nothing.result().services == ()


def test_rfc2782_lower_priority_first_and_weights_within_one() -> None:
    answer = Answer((Service(2, 0, (C,)), Service(1, 30, (A,)), Service(1, 10, (B,))), 60)
    # the draw picks among the running sums 30 (A), 40 (B): 0.7 * 40 = 28 -> A; 0.8 -> B
    assert ordered(answer, lambda: 0.7) == [A, B, C]
    assert ordered(answer, lambda: 0.8) == [B, A, C]
    draws = itertools.cycle([i / 1000 for i in range(1000)])  # uniform
    firsts = Counter(ordered(answer, lambda: next(draws))[0] for _ in range(1000))
    assert firsts == {A: 751, B: 249}  # 30:10 (a running sum >= the draw: 30 itself is A's)
    zero = Answer((Service(1, 0, (A,)), Service(1, 10, (B,))), 60)
    assert ordered(zero, lambda: 0.5) == [B, A]  # weight 0: only on a draw of exactly 0
    assert ordered(zero, lambda: 0.0) == [A, B]


def answer(*targets: Target, ttl: float = 10) -> Answer:
    return Answer(tuple(Service(i, 1, (t,)) for i, t in enumerate(targets, 1)), ttl)


def test_ttl_expiry_retry_and_the_last_good_answer_kept(tmp_path: Path) -> None:
    config = load(tmp_path, "{host: vendor.test}")
    key = ("udp", "vendor.test", 0)
    dns = Resolutions(lambda: 0.5, min_ttl=2, max_ttl=600, retry=3)
    dns.want(config.trunk_groups, now=100)
    assert dns.due(100) == [key] and dns.ordered(config.trunk_groups[1].trunks[0]) == []
    assert dns.resolved(key, answer(A, B, ttl=10), 100) == "changed"
    assert dns.due(109.9) == [] and dns.next_due() == 110 and dns.due(110) == [key]
    assert dns.resolved(key, answer(A, B, ttl=10), 110) == "same"
    assert dns.resolved(key, answer(A, ttl=0.5), 120) == "changed"
    assert dns.next_due() == 122  # min_ttl
    assert dns.resolved(key, answer(A, ttl=86400), 122) == "same" and dns.next_due() == 722
    # the server is down: reported once, retried every 3 s, the last answer still used
    assert dns.failed(key, "LifetimeTimeout", 722) is True
    assert dns.failed(key, "LifetimeTimeout", 725) is False and dns.next_due() == 728
    assert dns.resolved(key, Answer((), 0), 728) == "failed"  # no address is no answer
    assert dns.ordered(config.trunk_groups[1].trunks[0]) == [A]
    assert dns.resolved(key, answer(B), 731) == "changed" and not dns.entries[key].failing
    dns.want([], now=740)  # a reload without the trunk: forgotten
    assert dns.entries == {}


def test_a_tls_host_trunks_addresses_must_prove_its_domain(tmp_path: Path) -> None:
    """RFC 5922 §4.1: the certificate of an address _sips._tcp.secure.test resolved to must
    name secure.test (not the SRV target, not the IP); a UDP host trunk's has no such name."""
    config = load(tmp_path, "{host: secure.test, protocol: tls}, {host: vendor.test}")
    dns = Resolutions(lambda: 0.5)
    dns.want(config.trunk_groups, now=0)
    tls_a = Target("tls", A.host, 5061)
    assert dns.resolved(("tls", "secure.test", 0), answer(tls_a), 0) == "changed"
    assert dns.resolved(("udp", "vendor.test", 0), answer(B), 0) == "changed"
    assert dns.domain_of(tls_a) == "secure.test"
    assert dns.domain_of(B) is None and dns.domain_of(Target("tls", C.host, 5061)) is None


def load(tmp_path: Path, trunks: str, monitoring: str = "") -> object:
    (tmp_path / "sbc.yaml").write_text(
        BASE.replace("[vendor-1, vendor-2]", "[vendor-dns, vendor-2]")
        + f"""
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1}}]}}
  - {{name: vendor-dns, relationship: vendor-x, direction: termination, trunks: [{trunks}]
     {monitoring}}}
  - {{name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: 5082}}]}}
"""
    )
    return load_config(tmp_path)


@pytest.mark.parametrize(
    ("trunks", "message"),
    [
        ("{host: 192.0.2.1}", "must be a domain name"),
        ("{host: 'bad name.test'}", "must be a domain name"),
        ("{host: vendor.test, ip: 192.0.2.1}", "give ip or host, not both"),
    ],
)
def test_sbc_check_accepts_a_host_trunk_and_refuses_bad_ones(
    tmp_path: Path, trunks: str, message: str
) -> None:
    load(tmp_path, "{host: vendor.test, protocol: tcp}, {host: sip.vendor.test., port: 5070}")
    with pytest.raises(ConfigError) as e:
        load(tmp_path, trunks)
    assert e.value.field == "trunk_groups[1].trunks[0].host" and message in e.value.message


def test_a_host_on_an_origination_trunk_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sbc.yaml").write_text(
        BASE
        + """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{host: pbx.test}]}
"""
    )
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert "ingress is matched by ip" in e.value.message


DNS = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor-1, relationship: vendor-x, direction: termination, limits: {b_timer: 2},
     monitoring: {enabled: true, interval: 10, down_after: 1, up_after: 1},
     trunks: [{host: vendor.test}]}
  - {name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
"""


def test_calls_hunt_the_resolved_addresses_and_a_dead_one_goes_down_alone(
    tmp_path: Path,
) -> None:
    """Not resolved yet: the host trunk has no address and the next trunk group takes the
    call. Resolved: each address is pinged; priority 1 (A) first, with the domain in the
    R-URI (RFC 3263 §4), priority 2 (B) after A's b_timer; A's silence (live traffic and
    its ping) takes only A down, and calls go straight to B."""
    lab = lab_with(tmp_path, DNS)
    key = ("udp", "vendor.test", 0)
    monitor = lab.ctrl.monitor
    monitor.dns.want(lab.ctrl.snapshot.config.trunk_groups, lab.now)
    lab.ctrl.start(lab.now)
    assert [t for _, t in b_legs(lab.feed(invite(branch="z9hG4bKn0"), CALLER))] == [V2]

    monitor.dns.resolved(key, answer(A, B, ttl=60), lab.now)
    monitor.dns_changed(lab.now)
    pings = [(m, t) for m, t in lab.advance(0) if isinstance(m, Request) and m.method == "OPTIONS"]
    assert sorted((t for _, t in pings), key=str) == [A, B]  # one ping per address
    (b_ping,) = [m for m, t in pings if t == B]
    lab.feed(make_response(b_ping, 200), B)

    second = invite(branch="z9hG4bKn1").replace(b"a-leg-1@", b"a-leg-2@")
    ((first, where),) = b_legs(lab.feed(second, CALLER))
    assert where == A and first.uri == "sip:15551230000@vendor.test"
    (to_b,) = [m for m, t in b_legs(lab.advance(2.1)) if t == B]  # b_timer: priority 2
    lab.feed(make_response(to_b, 486), B)  # an answer: B is alive
    lab.advance(3.0)  # A's ping timed out too
    assert [e["trunk"] for e in lab.events("trunk.down")] == ["udp:192.0.2.1:5070"]
    third = invite(branch="z9hG4bKn3").replace(b"a-leg-1@", b"a-leg-3@")
    assert [t for _, t in b_legs(lab.feed(third, CALLER))] == [B]


@pytest.mark.parametrize(
    ("contact", "to", "ruri"),
    [
        ("<sip:15559990000@192.0.2.2:5080>", B, "sip:15559990000@192.0.2.2:5080"),
        ("<sip:15559990000@vendor.test>", A, "sip:15559990000@vendor.test"),
    ],
)
def test_a_3xx_from_a_host_trunk_is_followed_to_its_addresses_or_its_domain(
    tmp_path: Path, contact: str, to: Target, ruri: str
) -> None:
    """vendor.test resolved to A (priority 1) and B (priority 2):

    caller          sbc                 A (vendor.test)           B
    |--INVITE------->|--INVITE---------->|                        |
    |                |<--302 Contact: B or vendor.test            |
    |                |--ACK------------->|                        |
    |                |--INVITE to B, or to vendor.test's first address (its domain in the
    |                |  Request-URI, RFC 3263 §4)
    A Contact at an address the trunk did not resolve to is not followed (the caller hears
    the 302's failure through route advance: vendor-2)."""
    lab = lab_with(tmp_path, DNS)
    dns = lab.ctrl.monitor.dns
    dns.want(lab.ctrl.snapshot.config.trunk_groups, lab.now)
    dns.resolved(("udp", "vendor.test", 0), answer(A, B, ttl=60), lab.now)
    ((first, where),) = b_legs(lab.feed(invite(), CALLER))
    assert where == A
    moved = make_response(first, 302, to_tag="r1", headers=[("Contact", contact)])
    ((again, dest),) = b_legs(lab.feed(moved, A))
    assert (dest, again.uri) == (to, ruri)
    (call,) = lab.ctrl.calls.values()
    assert [a.outcome for a in call.attempts][:1] == ["redirected"]


def test_a_3xx_to_an_address_the_host_trunk_never_resolved_to_is_not_followed(
    tmp_path: Path,
) -> None:
    lab = lab_with(tmp_path, DNS)
    dns = lab.ctrl.monitor.dns
    dns.want(lab.ctrl.snapshot.config.trunk_groups, lab.now)
    dns.resolved(("udp", "vendor.test", 0), answer(A, ttl=60), lab.now)
    ((first, _),) = b_legs(lab.feed(invite(), CALLER))
    moved = make_response(first, 302, to_tag="r1", headers=[("Contact", "<sip:1@192.0.2.9>")])
    assert [t for _, t in b_legs(lab.feed(moved, A))] == [V2]  # route advance, not 192.0.2.9
