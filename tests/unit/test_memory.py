"""A busy node gone quiet gives back what its calls used (sbc.memory.quiet): the parser's
recent-value caches emptied and the call path's maps re-sized for what they hold, the same
objects, so the node goes on serving calls as before."""

from __future__ import annotations

import sys

from sbc import memory
from sbc.sip import parser
from sbc.sip.message import Request, make_response
from sbc.trace import Ring
from tests.helpers import CALLER, SDP, Lab, invite

DIALOG = (
    "{m} sip:sbc@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{m}{n}\r\n"
    "From: <sip:15550001000@10.1.1.1>;tag=caller1\r\n"
    "To: <sip:15551230000@127.0.0.1>;tag={tag}\r\nCall-ID: q{n}@10.1.1.1\r\n"
    "CSeq: {c} {m}\r\nContent-Length: 0\r\n\r\n"
)


def set_up(lab: Lab, n: int) -> str:
    """INVITE, the vendor's 200, the caller's ACK; our To tag toward the caller."""
    out = lab.feed(invite(branch=f"z9hG4bKq{n}").replace(b"a-leg-1@", f"q{n}@".encode()), CALLER)
    b_inv, vendor = next((m, t) for m, t in out if t != CALLER and isinstance(m, Request))
    contact = [("Contact", f"<sip:v@127.0.0.1:{vendor.port}>")]
    out = lab.feed(make_response(b_inv, 200, to_tag="v", headers=contact, body=SDP), vendor)
    ok = next(m for m, t in out if t == CALLER and not isinstance(m, Request))
    tag = ok.to.tag
    assert tag is not None
    lab.feed(DIALOG.format(m="ACK", n=n, tag=tag, c=1).encode(), CALLER)
    return tag


def hang_up(lab: Lab, n: int, tag: str) -> None:
    out = lab.feed(DIALOG.format(m="BYE", n=n, tag=tag, c=2).encode(), CALLER)
    b_bye, vendor = next((m, t) for m, t in out if t != CALLER and isinstance(m, Request))
    lab.feed(make_response(b_bye, 200), vendor)


def test_quiet_empties_the_caches_and_resizes_the_maps_in_place() -> None:
    lab = Lab()
    correlation = lab.ctrl.blegs.correlation  # B-leg Call-ID -> A-leg's, one per live B-leg
    tags = [set_up(lab, n) for n in range(2000)]
    held = sys.getsizeof(correlation)
    for n, tag in enumerate(tags):
        hang_up(lab, n, tag)
    lab.advance(64 * lab.layer.timers.t1 + 8)  # the BYEs' transactions end
    assert not lab.ctrl.calls and not correlation and lab.layer.counts == (0, 0)
    assert sys.getsizeof(correlation) == held  # a dict keeps its table when its entries go...
    assert parser._VIAS and parser._ADDRS
    memory.quiet(lab.ctrl, lab.layer)
    assert not parser._VIAS and not parser._ADDRS and not parser._FIELDS
    assert sys.getsizeof(correlation) < held / 10  # ...and quiet() gives it back
    assert lab.ctrl.blegs.correlation is correlation
    lab.ctrl.pop_cdrs()
    hang_up(lab, 9999, set_up(lab, 9999))  # and calls go on as before
    (record,) = lab.ctrl.pop_cdrs()
    assert record["sip_call_id"] == "q9999@10.1.1.1" and record["status"] == 200
    assert not lab.ctrl.calls


def test_compact_keeps_every_entry() -> None:
    m = {i: str(i) for i in range(1000)}
    for i in range(990):
        del m[i]
    before = sys.getsizeof(m)
    memory.compact([m])
    assert m == {i: str(i) for i in range(990, 1000)} and sys.getsizeof(m) < before


def test_trim_policy_trims_after_a_big_drop_at_most_once_a_minute() -> None:
    """Fed calls + transactions every 10 s (fake time): a tenth of the peak is a big drop;
    while the node still holds some, at most one trim per ``every``; idle trims at once."""
    policy = memory.TrimPolicy(after=1000, every=60.0)
    assert not policy.check(20_000, 0.0)  # a burst
    assert not policy.check(2_500, 10.0)  # down, but more than a tenth
    assert policy.check(1_500, 20.0)  # a tenth: trimmed, calls still up
    assert policy.peak == 1_500
    assert not policy.check(100, 30.0)  # a big drop again, but 10 s after the last trim
    assert policy.check(0, 40.0)  # idle: at once
    assert not policy.check(0, 50.0) and not policy.check(900, 60.0)  # nothing to give back
    assert not policy.check(1_200, 70.0)
    assert not policy.check(100, 80.0)  # a drop from 1,200 to 100: within 60 s of the last
    assert policy.check(100, 100.0)  # and once the minute is over
    assert not policy.check(5, 110.0)  # its peak is now 100: below ``after``
    assert policy.check(0, 120.0)  # but it was busy since it last held nothing
    assert not policy.check(0, 130.0)


def test_trim_policy_trims_again_once_idle_after_a_partial_trim() -> None:
    """A burst of 3,000 ebbing: trimmed at 250 (a tenth), and again once at 0, though 250
    is below ``after``: what the last calls and their BYEs' transactions held goes too."""
    policy = memory.TrimPolicy(after=1000, every=60.0)
    loads = [3000, 1200, 250, 40, 0, 0]
    assert [policy.check(n, 10.0 * i) for i, n in enumerate(loads)] == [
        False, False, True, False, True, False,
    ]  # fmt: skip


def test_quiet_repacks_the_trace_ring() -> None:
    lab = Lab()
    ring = Ring(per_call=4)
    for n in range(50):
        ring.add(f"c{n}", float(n), True, "udp:127.0.0.1:5070", f"c{n}", b"INVITE sip:x SIP/2.0")
    before = {k: ring.ladder(k) for k in ring.rings}
    old = ring.rings
    memory.quiet(lab.ctrl, lab.layer, ring)
    assert ring.rings is not old and {k: ring.ladder(k) for k in ring.rings} == before
