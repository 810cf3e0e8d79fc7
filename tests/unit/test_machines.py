"""The call path's small machines on their own, in fake time: an attempt's ladder, the
hunting rule, OPTIONS monitoring and our registrations at vendors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from routing.monitor import Monitor, Probe, SendProbe, Transition
from sbc.call import attempt as ladder
from sbc.call import hunt
from sbc.call.headers import trunk_target
from sbc.call.model import Cancel, Phase
from sbc.call.outbox import Outbox
from sbc.call.registration import (
    REGISTER_RETRY,
    RegistrationChanged,
    Registrations,
    SendRegister,
)
from sbc.config.schema import Monitoring
from sbc.sip.message import Request, Response, make_response
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import Target, TransactionLayer
from tests.helpers import CALLER, V1, V2, Lab, invite, lab_with, only, vendor_registrar


def test_an_attempts_cancel_waits_for_its_first_provisional() -> None:
    """RFC 3261 §9.1: leaving a CALLING attempt makes its CANCEL pending; the first
    provisional (a 100 will do) sends it, once; the B-timer and Max PDD read the phase."""
    lab = Lab()
    lab.feed(invite(), CALLER)
    (call,) = lab.ctrl.calls.values()
    a = call.attempts[0]
    assert a.phase is Phase.CALLING and ladder.b_timer_due(a) and ladder.max_pdd_due(a)
    assert ladder.cancel(a) is False and a.cancel is Cancel.PENDING
    assert ladder.heard(a, 100, 1.0) is True and a.cancel is Cancel.SENT
    assert ladder.heard(a, 180, 2.0) is False  # sent once
    assert a.phase is Phase.RINGING and a.provisional_at == 2.0
    assert not ladder.b_timer_due(a) and not ladder.max_pdd_due(a) and ladder.live(a)
    assert ladder.challenged(a) and a.phase is Phase.CALLING  # the new INVITE: no 100 yet
    assert not ladder.challenged(a)  # one challenge per attempt


def test_hunting_asks_for_a_lease_then_originates_then_says_what_the_caller_hears(
    tmp_path: Path,
) -> None:
    tgs = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}], route_advance: {codes: '^5', normalize_sip_code: true}}
  - {name: vendor-1, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}], limits: {ports: 1}}
  - {name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
"""
    lab = lab_with(tmp_path, tgs)
    lab.feed(invite(), CALLER)
    (call,) = lab.ctrl.calls.values()
    assert [a.trunk_group.name for a in call.attempts] == ["vendor-1"]  # its lease granted
    call.egress.clear()
    call.candidates = hunt.candidates(
        call.snap, ["vendor-1", "vendor-2"], lab.ctrl.hunt, lambda tg, i: True, 0.0
    )
    step = hunt.next_step(call)
    assert isinstance(step, hunt.NeedLease) and step.trunk_group.name == "vendor-1"
    call.egress = {"vendor-1": None}
    step = hunt.next_step(call)
    assert isinstance(step, hunt.Originate) and step.trunk_group.name == "vendor-1"
    assert hunt.failed(call, 503, timeout=False, rang=False, response=None)  # advance
    step = hunt.next_step(call)
    assert isinstance(step, hunt.Originate) and step.trunk_group.name == "vendor-2"
    assert hunt.failed(call, 502, timeout=False, rang=False, response=None)
    step = hunt.next_step(call)
    assert step == hunt.Exhausted(503)  # normalized; a 486 would be relayed as it is
    assert not hunt.failed(call, 486, timeout=False, rang=False, response=None)
    assert hunt.exhausted(call) == hunt.Exhausted(486)


def test_monitoring_pings_on_its_interval_and_goes_down_after_three_timeouts() -> None:
    """interval 10 s: pings at 0, 10, 20, ...; each unanswered one times out after 5 s;
    the third timeout (t=25) takes the trunk down; two answered pings bring it back."""
    key = ("udp", "127.0.0.1", 5081)
    timers = TimerHeap(None)  # the monitor arms its own handlers on the layer's heap
    monitor = Monitor(timers)
    monitor.reconcile({key: ("vendor", Monitoring(enabled=True, interval=10))}, 0.0)
    seen: list[tuple[float, object]] = []
    now = 0.0
    while now <= 30.0:
        timers.fire(now)
        seen += [(now, action) for action in monitor.take()]
        now += 0.5
    pings = [t for t, a in seen if isinstance(a, SendProbe)]
    assert pings == [0.0, 10.0, 20.0, 30.0]
    (down,) = [(t, a) for t, a in seen if isinstance(a, Transition)]
    assert down[0] == 25.0 and down[1] == Transition("vendor", key, "down", "timeout")
    assert not monitor.is_up(key)
    assert monitor.answered(Probe(key), True, "200 OK") is None
    assert monitor.answered(Probe(key), True, "200 OK") == Transition("vendor", key, "up", "200 OK")


def test_a_vendor_registration_refreshes_at_80_percent_and_retries_every_30_s(
    tmp_path: Path,
) -> None:
    lab = lab_with(
        tmp_path,
        vendor_registrar(100),
    )
    ids = (f"id{n}" for n in itertools.count())
    timers = TimerHeap(None)
    regs = Registrations(Outbox(TransactionLayer(), lab.ctrl.snapshot), timers, lambda: next(ids))
    (send,) = regs.reconcile(trunk_target, 0.0)
    assert isinstance(send, SendRegister) and send.request.get("Expires") == "100"
    reg = send.registration
    ok = make_response(send.request, 200, to_tag="r")
    (up,) = regs.on_response(reg, ok, 0.0)
    assert isinstance(up, RegistrationChanged) and up.event == "registration.up"
    assert regs.is_up("vendor-1", 0) and timers.next_deadline() == 80.0
    timers.fire(80.0)
    (again,) = regs.take()
    assert isinstance(again, SendRegister) and again.request.cseq == 2
    (failed,) = regs.on_response(reg, make_response(again.request, 403, to_tag="r"), 80.0)
    assert isinstance(failed, RegistrationChanged) and failed.event == "registration.failed"
    assert not regs.is_up("vendor-1", 0) and timers.next_deadline() == 80.0 + REGISTER_RETRY


PDD_TGS = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}], route_advance: {codes: '^5', stop_on_18x_failure: STOP}}
  - {name: vendor-1, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081, username: u, password: p}], limits: {max_pdd: 3}}
  - {name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
"""


def pdd_lab(tmp_path: Path, stop: bool = False) -> tuple[Lab, Request]:
    lab = lab_with(tmp_path, PDD_TGS.replace("STOP", str(stop).lower()))
    out = lab.feed(invite(), CALLER)
    (b1,) = [m for m, t in out if t == V1 and isinstance(m, Request)]
    return lab, b1


def cancel_from_caller(lab: Lab) -> list[tuple[Request | Response, Target]]:
    (call,) = lab.ctrl.calls.values()
    via = call.a_invite.vias[0].raw
    return lab.feed(
        f"CANCEL sip:15551230000@127.0.0.1:5060 SIP/2.0\r\nVia: {via}\r\n"
        f"From: <sip:15550001000@10.1.1.1>;tag=caller1\r\nTo: <sip:15551230000@127.0.0.1>\r\n"
        f"Call-ID: a-leg-1@10.1.1.1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n".encode(),
        CALLER,
    )


def test_a_cancel_that_waited_goes_with_the_vendors_100(tmp_path: Path) -> None:
    """caller CANCELs before the vendor said anything; the vendor's 100 releases it (§9.1)."""
    lab, b1 = pdd_lab(tmp_path)
    out = cancel_from_caller(lab)
    assert only(out, V1) == []  # nothing heard from the vendor yet: no CANCEL may go
    out = lab.feed(make_response(b1, 100), V1)
    assert [m.method for m in only(out, V1)] == ["CANCEL"]  # type: ignore[union-attr]


def test_max_pdd_after_a_100_cancels_and_hunts_on(tmp_path: Path) -> None:
    lab, b1 = pdd_lab(tmp_path)
    lab.feed(make_response(b1, 100), V1)
    out = lab.advance(3.1)
    assert [m.method for m in only(out, V1)] == ["CANCEL"]  # type: ignore[union-attr]
    assert [m.method for m in only(out, V2)] == ["INVITE"]  # type: ignore[union-attr]


def test_a_cancelled_call_waits_for_the_vendors_487(tmp_path: Path) -> None:
    """The caller CANCELs a call whose vendor sent 100 (our CANCEL goes out); Max PDD then
    fires: the call is still held until the vendor's 487 (its port, its record)."""
    lab, b1 = pdd_lab(tmp_path)
    lab.feed(make_response(b1, 100), V1)
    cancel_from_caller(lab)
    lab.advance(3.1)
    assert lab.ctrl.calls  # not forgotten before the vendor's final answer
    lab.feed(make_response(b1, 487, to_tag="v"), V1)
    assert lab.ctrl.calls == {}


def test_a_digest_retry_keeps_the_ring_that_came_before_it(tmp_path: Path) -> None:
    """180, then 407 (answered with credentials): Max PDD was met by the 180, so it does not
    give up on the retried INVITE, and the attempt's first ring time stays the 180's."""
    lab, b1 = pdd_lab(tmp_path)
    lab.feed(make_response(b1, 180, to_tag="v"), V1)
    (call,) = lab.ctrl.calls.values()
    rang = call.attempts[0].provisional_at
    challenge = 'Digest realm="v", nonce="n", algorithm=MD5, qop="auth"'
    out = lab.feed(
        make_response(b1, 407, to_tag="v", headers=[("Proxy-Authenticate", challenge)]), V1
    )
    (b1_again,) = [m for m in only(out, V1) if isinstance(m, Request) and m.method == "INVITE"]
    assert b1_again.get("Proxy-Authorization") is not None
    assert only(lab.advance(3.5), V2) == []  # no hunting on
    assert call.attempts[0].provisional_at == rang


@pytest.mark.parametrize("stop", [False, True])
def test_stop_on_18x_failure_relays_a_failure_after_ringing(tmp_path: Path, stop: bool) -> None:
    lab, b1 = pdd_lab(tmp_path, stop)
    lab.feed(make_response(b1, 180, to_tag="v"), V1)
    out = lab.feed(make_response(b1, 503, to_tag="v"), V1)
    hunted = [m for m in only(out, V2) if isinstance(m, Request)]
    finals = [m.status for m in only(out, CALLER) if isinstance(m, Response) and m.status >= 200]
    assert (len(hunted), finals) == ((0, [503]) if stop else (1, []))


CALLER_PDD_TGS = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}], limits: {max_pdd: 5}}
  - {name: vendor-1, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}], limits: {max_pdd: 3}}
  - {name: vendor-2, relationship: vendor-x, direction: termination, hunting: failover,
     trunks: [{ip: 127.0.0.1, port: 5082}, {ip: 127.0.0.1, port: 5083}]}
"""
V3 = Target("udp", "127.0.0.1", 5083)


def test_the_callers_max_pdd_ends_hunting_when_no_ring_came_in_time(tmp_path: Path) -> None:
    """caller      sbc         vendor-1 (max_pdd 3)   vendor-2 (5082, then 5083)
    |--INVITE-->|--INVITE-->|                        t=0
    |           |<--100-----|
    |           |--CANCEL-->|--INVITE--------------> t=3: vendor-1's Max PDD
    |           |<--100------------------------------|
    |<--503-----|--CANCEL--------------------------->  t=5: carrier-a's Max PDD (from the
                                                       caller's INVITE): 5083 is never tried"""
    lab = lab_with(tmp_path, CALLER_PDD_TGS)
    out = lab.feed(invite(), CALLER)
    (b1,) = [m for m, t in out if t == V1 and isinstance(m, Request)]
    lab.feed(make_response(b1, 100), V1)
    out = lab.advance(3.0)
    assert [m.method for m in only(out, V1)] == ["CANCEL"]  # type: ignore[union-attr]
    (b2,) = only(out, V2)
    assert isinstance(b2, Request) and b2.method == "INVITE"
    lab.feed(make_response(b2, 100), V2)
    out = lab.advance(1.9)
    assert only(out, V2) == [] and only(out, CALLER) == []  # (V1 gets its CANCEL again)
    out = lab.advance(0.1)
    assert [m.method for m in only(out, V2)] == ["CANCEL"]  # type: ignore[union-attr]
    assert only(out, V3) == []
    assert [m.status for m in only(out, CALLER)] == [503]  # type: ignore[union-attr]
    (call,) = lab.ctrl.calls.values()
    assert [a.outcome for a in call.attempts] == ["max_pdd", "max_pdd"]


def test_the_callers_max_pdd_is_met_by_a_ring_from_an_earlier_attempt(tmp_path: Path) -> None:
    """vendor-1 rings, then fails with 503: the caller has heard ringing, so only the
    vendors' own Max PDD applies to the attempts that follow (vendor-2 has none)."""
    lab = lab_with(tmp_path, CALLER_PDD_TGS)
    out = lab.feed(invite(), CALLER)
    (b1,) = [m for m, t in out if t == V1 and isinstance(m, Request)]
    lab.feed(make_response(b1, 180, to_tag="v1"), V1)
    lab.advance(1.0)
    out = lab.feed(make_response(b1, 503, to_tag="v1"), V1)
    (b2,) = only(out, V2)
    lab.feed(make_response(b2, 100), V2)  # type: ignore[arg-type]
    out = lab.advance(10.0)
    assert only(out, V2) == [] and only(out, CALLER) == []
    (call,) = lab.ctrl.calls.values()
    assert ladder.live(call.attempts[1]) and ladder.caller_pdd_at(call) is None
