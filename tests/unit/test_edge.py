"""The edge against an attacker, pure and in fake time: ids nobody can guess, in-dialog
requests only from the dialog's peer, nothing at all for strangers, Timer C, registrar
lockout, and a node that gives its memory back after a burst.

The attacker is 127.0.0.2, an address no trunk group of the lab config has; the caller is
carrier-a at 127.0.0.1:5070 and the vendors are 127.0.0.1:5081 and :5082.
"""

from __future__ import annotations

import gc
import os
import string
from pathlib import Path

import msgspec
import pytest

from sbc.call.model import Attempt, Call
from sbc.config.schema import Limits, RouteAdvance
from sbc.config.snapshot import Snapshot
from sbc.memory import TrimPolicy, trim
from sbc.sip.digest import authorization, pick_challenge
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import ClientTransaction, ServerTransaction, Target
from tests.helpers import (
    CALLER,
    SDP,
    TGS,
    V1,
    V2,
    Lab,
    invite,
    lab_with,
    only,
    register_from,
    request,
    sample,
)

STRANGER = Target("udp", "127.0.0.2", 5070)
EVIL_SDP = SDP.replace(b"127.0.0.1", b"127.0.0.2")


def with_policy(lab: Lab, policy: str) -> Lab:
    node = msgspec.structs.replace(lab.ctrl.snapshot.config.node, unknown_source=policy)
    lab.ctrl.snapshot = Snapshot.build(msgspec.structs.replace(lab.ctrl.snapshot.config, node=node))
    return lab


def answered(lab: Lab, n: int = 1) -> tuple[Request, Target, str]:
    """One call answered by its vendor (to-tag "v<n>") and ACKed by the caller: the B-leg
    INVITE, the vendor, and the A-leg tag sbc gave the caller."""
    out = lab.feed(
        invite(branch=f"z9hG4bKcall{n}").replace(b"a-leg-1@", f"a-leg-{n}@".encode()), CALLER
    )
    ((b_inv, vendor),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b_inv, Request)
    ok = make_response(
        b_inv,
        200,
        to_tag=f"v{n}",
        headers=[
            ("Contact", f"<sip:v@127.0.0.1:{vendor.port}>"),
            ("Content-Type", "application/sdp"),
        ],
        body=SDP,
    )
    (a_ok,) = only(lab.feed(ok, vendor), CALLER)
    assert isinstance(a_ok, Response) and a_ok.status == 200 and a_ok.to.tag
    lab.feed(request("ACK", f"a-leg-{n}@10.1.1.1", "caller1", a_ok.to.tag, 1, CALLER), CALLER)
    return b_inv, vendor, a_ok.to.tag


def test_ids_are_random_64_bit_and_share_no_prefix() -> None:
    """20 calls' B-leg Call-IDs, From tags and branches: 16 hex digits (64 bits) each, and
    no two share 8 leading characters (the old scheme shared a node prefix and counted)."""
    lab = Lab()
    ids: dict[str, list[str]] = {"call_id": [], "tag": [], "branch": []}
    for n in range(20):
        out = lab.feed(invite(branch=f"z9hG4bKi{n}").replace(b"a-leg-1", f"a{n}".encode()), CALLER)
        ((b_inv, _),) = [(m, t) for m, t in out if t != CALLER]
        assert isinstance(b_inv, Request)
        ids["call_id"].append(b_inv.call_id)
        ids["tag"].append(b_inv.from_.tag or "")
        ids["branch"].append((b_inv.vias[0].branch or "").removeprefix("z9hG4bK"))
    for kind, values in ids.items():
        assert all(len(v) == 16 and set(v) <= set(string.hexdigits) for v in values), kind
        assert len({v[:8] for v in values}) == 20, kind


@pytest.mark.parametrize("policy", ["drop", "reject"])
def test_a_strangers_bye_and_reinvite_with_the_exact_ids_change_nothing(policy: str) -> None:
    """The attacker sniffed the B-leg (Call-ID, both tags) and the A-leg. With drop the
    edge screen stops him before the parser; with reject he reaches the dialog checks,
    which drop him too (a stranger gets no 481 either):

    attacker(127.0.0.2) --BYE/re-INVITE (B-leg ids)--> sbc      (dropped: no answer)
    attacker(127.0.0.2) --BYE/re-INVITE (A-leg ids)--> sbc      (dropped: no answer)
    caller ----BYE----> sbc ----BYE----> vendor                  the call ends normally
    caller <----200---- sbc <----200---- vendor
    """
    lab = with_policy(Lab(), policy)
    b_inv, vendor, a_tag = answered(lab)
    b_ids = (b_inv.call_id, "v1", b_inv.from_.tag)  # the vendor's view: its tag is From
    for cseq in range(1, 101):
        out = lab.feed(request("BYE", *b_ids, cseq, STRANGER), STRANGER)
        out += lab.feed(request("INVITE", *b_ids, 100 + cseq, STRANGER, EVIL_SDP), STRANGER)
        out += lab.feed(request("BYE", "a-leg-1@10.1.1.1", "caller1", a_tag, 2, STRANGER), STRANGER)
        assert out == [], cseq
        lab.advance(0.02)  # 150 requests a second: under node.flood's 200, no ban
    out = lab.advance(40.0)  # nothing was answered, so nothing is retransmitted
    assert [t for _, t in out] == []
    reason = "unknown_source" if policy == "drop" else "in_dialog"
    assert lab.ctrl.gate.drops.counts[reason] == 300
    assert len(lab.events("edge.dropped")) == 1  # logged once per address per minute
    (call,) = lab.ctrl.calls.values()
    assert call.state == "answered"

    out = lab.feed(request("BYE", "a-leg-1@10.1.1.1", "caller1", a_tag, 2, CALLER), CALLER)
    (bye_ok,) = only(out, CALLER)
    (b_bye,) = only(out, vendor)
    assert isinstance(bye_ok, Response) and bye_ok.status == 200
    assert isinstance(b_bye, Request) and b_bye.method == "BYE" and b_bye.cseq == 2
    lab.feed(make_response(b_bye, 200), vendor)
    (end,) = lab.events("call.end")
    assert end["hangup"] == "caller"


def test_strangers_get_nothing_and_nothing_is_retransmitted() -> None:
    """unknown_source: drop decides on the source address and the first word: OPTIONS, an
    INVITE with Require: foo (once a 420, retransmitted 11 times), a BYE with a random tag,
    a CANCEL, a 64 KB header and a garbage datagram all go unanswered."""
    lab = Lab()
    big = "X-Pad: " + "a" * 65_000 + "\r\n"
    messages = [
        request("OPTIONS", "o1", "t", None, 1, STRANGER),
        request("INVITE", "i1", "t", None, 1, STRANGER, SDP, extra="Require: foo\r\n"),
        request("BYE", "b1", "t", os.urandom(4).hex(), 2, STRANGER),
        request("CANCEL", "c1", "t", None, 1, STRANGER),
        request("INVITE", "i2", "t", None, 1, STRANGER, extra=big),
        b"\x00\x01garbage\r\n\r\n",
        request("REGISTER", "r1", "t", None, 1, STRANGER),  # no registration trunk groups
    ]
    for m in messages:
        assert lab.feed(m, STRANGER) == []
    assert lab.advance(40.0) == []
    assert lab.ctrl.gate.drops.counts["unknown_source"] == len(messages)
    assert sample(lab.scrape(), "sbc_sip_dropped_total", reason="unknown_source") == len(messages)
    assert lab.ctrl.layer.counts == (0, 0)  # not even a transaction was made


def test_a_stranger_may_register_where_registration_trunks_exist_and_only_register(
    tmp_path: Path,
) -> None:
    lab = lab_with(tmp_path, TGS)
    pbx = Target("udp", "10.9.9.9", 5077)
    (challenge,) = only(lab.feed(register_from(pbx, 1), pbx), pbx)
    assert isinstance(challenge, Response) and challenge.status == 401
    assert lab.feed(request("OPTIONS", "o1", "t", None, 1, pbx), pbx) == []


def timer_c_lab(normalize: bool) -> Lab:
    advance = RouteAdvance(codes=r"^(5\d\d|408)$", normalize_sip_code=normalize)
    return Lab(route_advance=advance)


@pytest.mark.parametrize("normalize", [False, True])
def test_timer_c_cancels_a_b_leg_that_rings_for_ever_and_hunts_on(normalize: bool) -> None:
    """RFC 3261 §16.6 item 11, 180 s by default, restarted by each provisional:

    caller     sbc           vendor1        vendor2
      |-INVITE->|--INVITE------>|               |
      |<---180--|<---------180--|   (t=0; again at t=100: Timer C restarts)
      |         |--CANCEL------>|   t=280       |
      |         |--INVITE---------------------->|
      |         |<---------------------------180|
      |<--408---|--CANCEL---------------------->|   t=460: none left (503 if normalized)
    """
    lab = timer_c_lab(normalize)
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b1, Request)
    lab.feed(make_response(b1, 180, to_tag="r1"), t1)
    lab.advance(100.0)
    lab.feed(make_response(b1, 180, to_tag="r1"), t1)
    out = lab.advance(179.0)  # 279 s: 179 s since the last provisional
    assert [m for m, t in out if isinstance(m, Request) and m.method == "CANCEL"] == []
    out = lab.advance(1.5)
    (cancel,) = [m for m, t in out if t == t1 and isinstance(m, Request)]
    assert cancel.method == "CANCEL" and cancel.vias[0].branch == b1.vias[0].branch
    t2 = V2 if t1 == V1 else V1
    (b2,) = only(out, t2)
    assert isinstance(b2, Request) and b2.method == "INVITE"
    lab.feed(make_response(b1, 487, to_tag="r1"), t1)
    lab.feed(make_response(b2, 180, to_tag="r2"), t2)
    out = lab.advance(180.5)
    assert [m.method for m, t in out if t == t2 and isinstance(m, Request)] == ["CANCEL"]
    (final,) = [m for m in only(out, CALLER) if isinstance(m, Response) and m.status >= 200]
    assert isinstance(final, Response) and final.status == (503 if normalize else 408)
    lab.feed(make_response(b2, 487, to_tag="r2"), t2)
    (end,) = lab.events("call.end")
    assert [a["outcome"] for a in end["attempts"]] == ["timer_c", "timer_c"]  # type: ignore[index]


def lockout_lab(tmp_path: Path, lockout: str) -> Lab:
    base = (
        "node:\n  listen: [{address: 127.0.0.1, port: 5060, transport: udp}]\n"
        f"  registrar: {{lockout: {lockout}}}\n"
        "relationships: [{name: carrier-a}, {name: vendor-x}]\n"
        "routeplans:\n  - name: default\n    routes: [{prefix: '', trunk_groups: [vendor-1]}]\n"
    )
    return lab_with(tmp_path, TGS, base=base)


def attempt_register(lab: Lab, src: Target, password: str, cseq: int) -> int | None:
    """One REGISTER, its 401, and the REGISTER with credentials: the final status, or None
    when sbc said nothing."""
    out = only(lab.feed(register_from(src, cseq), src), src)
    if not out:
        return None
    (challenge,) = out
    assert isinstance(challenge, Response) and challenge.status == 401
    params = pick_challenge(challenge.get_all("WWW-Authenticate"))
    assert params is not None
    auth = authorization(params, "REGISTER", "sip:127.0.0.1", "pbx1", password)
    out = only(lab.feed(register_from(src, cseq + 1, auth=auth), src), src)
    return out[0].status if out else None  # type: ignore[union-attr]


def test_a_sixth_wrong_password_locks_the_source_out_until_block_for_ends(tmp_path: Path) -> None:
    """Five wrong digests get 403; the sixth in the window gets no answer and one auth.blocked
    line; then even the right password from that address gets nothing (not even a 401)
    until block_for ends, while another address registers."""
    lab = lockout_lab(tmp_path, "{failures: 5, window: 60, block_for: 300}")
    guesser, other = Target("udp", "10.7.7.7", 5070), Target("udp", "10.6.6.6", 5070)
    for i in range(5):
        assert attempt_register(lab, guesser, f"guess{i}", 10 * i) == 403
        lab.advance(1.0)
    assert attempt_register(lab, guesser, "guess5", 50) is None
    (blocked,) = lab.events("auth.blocked")
    assert blocked["ip"] == "10.7.7.7" and blocked["scope"] == "source"
    assert blocked["failures"] == 6 and blocked["username"] == "pbx1"
    assert attempt_register(lab, guesser, "s3cret", 60) is None
    assert attempt_register(lab, other, "s3cret", 1) == 200
    lab.advance(290.0)
    assert attempt_register(lab, guesser, "s3cret", 70) is None  # 295 s into the block
    lab.advance(10.0)
    assert attempt_register(lab, guesser, "s3cret", 80) == 200
    assert lab.events("auth.blocked") == []  # one line per block, none since


def test_failures_spread_over_a_minute_do_not_block(tmp_path: Path) -> None:
    lab = lockout_lab(tmp_path, "{failures: 5, window: 60, block_for: 300}")
    guesser = Target("udp", "10.7.7.7", 5070)
    for i in range(12):
        assert attempt_register(lab, guesser, "wrong", 10 * i) == 403
        lab.advance(13.0)  # five failures fit in 60 s, a sixth never does
    assert lab.events("auth.blocked") == []


def test_an_account_guessed_from_many_addresses_locks_except_for_its_own_pbx(
    tmp_path: Path,
) -> None:
    lab = lockout_lab(tmp_path, "{failures: 5, window: 60, block_for: 300, account_failures: 3}")
    pbx = Target("udp", "10.9.9.9", 5077)
    assert attempt_register(lab, pbx, "s3cret", 1) == 200
    for i in range(3):
        assert attempt_register(lab, Target("udp", f"10.5.5.{i}", 5070), "x", 1) == 403
    assert attempt_register(lab, Target("udp", "10.5.5.9", 5070), "x", 1) is None
    (blocked,) = lab.events("auth.blocked")
    assert blocked["scope"] == "account" and blocked["username"] == "pbx1"
    assert attempt_register(lab, Target("udp", "10.5.5.8", 5070), "s3cret", 1) is None
    assert attempt_register(lab, pbx, "s3cret", 10) == 200  # its own PBX keeps registering


def live(*types: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, types))


def burst(lab: Lab, first: int, calls: int) -> None:
    """``calls`` calls: a third answered and hung up by the caller, a third busy, a third
    ringing until Timer C (then hunted to a vendor that never answers: B-timer, 503)."""
    for i in range(first, first + calls):
        if i % 3 == 0:
            _, vendor, a_tag = answered(lab, i)
            bye = request("BYE", f"a-leg-{i}@10.1.1.1", "caller1", a_tag, 2, CALLER)
            (b_bye,) = only(lab.feed(bye, CALLER), vendor)
            lab.feed(make_response(b_bye, 200), vendor)  # type: ignore[arg-type]
            continue
        call = invite(branch=f"z9hG4bKx{i}").replace(b"a-leg-1@", f"a-leg-{i}@".encode())
        ((b, t),) = [(m, t) for m, t in lab.feed(call, CALLER) if t != CALLER]
        lab.feed(make_response(b, 486 if i % 3 == 1 else 180, to_tag="r"), t)  # type: ignore[arg-type]
    for _ in range(6):  # Timer C, CANCELs, B-timers, Timers B, D, H, J, K: all run out
        lab.advance(100.0)


def test_a_burst_of_calls_leaves_nothing_behind() -> None:
    """Three bursts of 300 calls with Max Call Duration armed: once every transaction has
    ended, no Call, Attempt, transaction or message of theirs is alive, and reference
    counting alone freed them (the cyclic collector is off for the whole run), so a node
    does not wait for a collection to give its memory back."""
    lab = Lab(limits=Limits(max_call_duration=14_400))
    types = (Call, Attempt, ClientTransaction, ServerTransaction, Request, Response)
    gc.collect()
    baseline = live(*types)
    gc.disable()
    try:
        for n in range(3):
            burst(lab, 1000 * n, 300)
            assert lab.ctrl.calls == {} and lab.ctrl.dialogs == {}
            assert lab.ctrl.layer.counts == (0, 0)
            assert lab.ctrl.timers_pending == 0  # Max Call Duration timers were cancelled
            assert live(*types) == baseline
        assert len(lab.events("call.end")) == 900
    finally:
        gc.enable()


def test_a_quiet_node_trims_once_after_it_was_busy() -> None:
    policy = TrimPolicy(after=1000)
    checks = iter(range(0, 1000, 10))  # the keeper's period, fake time

    def check(n: int) -> bool:
        return policy.check(n, float(next(checks)))

    assert [check(n) for n in (0, 10, 999, 0)] == [False] * 4  # never busy enough
    assert [check(n) for n in (1500, 200, 0, 0)] == [False, False, True, False]
    assert trim()[1] >= 0  # runs here (glibc), RSS read from /proc
