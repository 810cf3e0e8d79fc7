"""Admission, pure: trunk-group limits, capacity groups, time of day, tech prefixes, with the
memory state store and fake time. The same decisions the e2e tests show with sipp."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sbc.admission import within
from sbc.config.loader import ConfigError
from sbc.config.schema import TimeWindow
from sbc.explain import explain
from sbc.sip.message import Request, Response, make_response
from sbc.state import Scope
from sbc.state.memory import MemoryStore
from tests.helpers import (
    BASE,
    CALLER,
    V1,
    V2,
    VENDORS,
    b_legs,
    call,
    ingress,
    invite,
    lab_with,
    only,
    sample,
)


def test_ports_limit_refuses_with_503_retry_after_and_q850_cause_34(tmp_path: Path) -> None:
    """ports 2: two calls up, the third refused, a port freed by the end of a call.

    caller        sbc
      |--INVITE--->|   call 3 while 1 and 2 are up
      |<------100--|
      |<------503--|   Retry-After: 5, Reason: Q.850;cause=34
    """
    lab = lab_with(tmp_path, ingress("{ports: 2}"))
    assert [r.status for r in call(lab, 1)] == [100]
    assert [r.status for r in call(lab, 2)] == [100]
    got = call(lab, 3)
    assert [r.status for r in got] == [100, 503]
    refused = got[1]
    assert refused.status == 503 and refused.get("Retry-After") == "5"
    assert (refused.get("Reason") or "").startswith("Q.850;cause=34")
    (ev,) = lab.events("call.refused")
    assert ev == {"trunk_group": "carrier-a", "reason": "trunk_group_ports", "status": 503}
    assert lab.ctrl.refusals[("carrier-a", "trunk_group_ports")] == 1
    assert lab.store.in_use("tg:carrier-a") == 2


def test_cps_is_a_sliding_one_second_window(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, ingress("{cps: 3}"))
    statuses = []
    for n in range(8):
        statuses.append(call(lab, n)[-1].status)
        lab.advance(0.25)
    # t=0, .25, .5 admitted; .75 is the 4th in one second; at 1.0 the call of t=0 has left
    # the window, at 1.25 the one of .25, at 1.5 the one of .5; 1.75 is the 4th again
    assert statuses == [100, 100, 100, 503, 100, 100, 100, 503]
    assert lab.ctrl.refusals[("carrier-a", "trunk_group_cps")] == 2


def test_a_port_comes_back_when_the_call_ends(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, ingress("{ports: 1}"))
    data = invite(branch="z9hG4bKp1")
    out = lab.feed(data, CALLER)
    ((b_inv, vendor),) = b_legs(out)
    assert call(lab, 2)[-1].status == 503
    out = lab.feed(make_response(b_inv, 486, to_tag="v"), vendor)
    assert [m.status for m in only(out, CALLER) if isinstance(m, Response)] == [486]
    assert lab.store.in_use("tg:carrier-a") == 0 and lab.store.in_use("tg:vendor-1") == 0
    assert call(lab, 3)[-1].status == 100


def test_capacity_group_caps_trunk_groups_together(tmp_path: Path) -> None:
    """Two ingress trunk groups of 5 ports each sharing a capacity group of 6."""
    tgs = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "11#", trunks: [{ip: 127.0.0.1}], limits: {ports: 5}, capacity_group: shared}
  - {name: carrier-b, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "22#", trunks: [{ip: 127.0.0.1}], limits: {ports: 5}, capacity_group: shared}
""" + VENDORS.replace("limits: {ports: 1}", "")
    lab = lab_with(tmp_path, tgs, "capacity_groups: [{name: shared, ports: 6}]\n")
    got = [
        call(lab, n, user=("11%23" if n % 2 else "22%23") + "15551230000")[-1] for n in range(10)
    ]
    assert [r.status for r in got] == [100] * 6 + [503] * 4
    refused = lab.events("call.refused")
    assert {e["reason"] for e in refused} == {"capacity_group_ports"}
    assert lab.store.in_use("cg:shared") == 6
    text = lab.scrape()
    assert sample(text, "sbc_capacity_group_ports_in_use", capacity_group="shared") == 6
    for tg in ("carrier-a", "carrier-b"):  # calls 6-9 alternate between them
        assert (
            sample(text, "sbc_refusals_total", trunk_group=tg, reason="capacity_group_ports") == 2
        )


def test_an_egress_trunk_group_at_its_limit_is_skipped(tmp_path: Path) -> None:
    """vendor-1 has one port: the second call goes straight to vendor-2, no INVITE to 5081."""
    lab = lab_with(tmp_path, ingress())
    out = lab.feed(invite(branch="z9hG4bKe1"), CALLER)
    assert [t for _, t in b_legs(out)] == [V1]
    out = lab.feed(invite(branch="z9hG4bKe2").replace(b"a-leg-1@", b"a-leg-2@"), CALLER)
    assert [t for _, t in b_legs(out)] == [V2]
    (skip,) = lab.events("call.egress_skipped")
    assert skip == {"trunk_group": "vendor-1", "reason": "trunk_group_ports"}


def test_every_egress_trunk_group_full_gives_503_cause_34(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, ingress().replace("port: 5082}]", "port: 5082}], limits: {ports: 1}"))
    call(lab, 1)
    call(lab, 2)
    _, refused = call(lab, 3)
    assert refused.status == 503 and "cause=34" in (refused.get("Reason") or "")


def test_disabled_trunk_group_and_relationship_get_403(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, ingress(more=", status: disabled"))
    assert [r.status for r in call(lab, 1)] == [403]
    disabled = BASE.replace("{name: carrier-a}", "{name: carrier-a, status: disabled}")
    lab = lab_with(tmp_path, ingress(), base=disabled)
    assert [r.status for r in call(lab, 1)] == [403]
    assert lab.events("call.refused")[0]["reason"] == "relationship_disabled"


def test_time_of_day_window(tmp_path: Path) -> None:
    tod = (
        ', time_of_day: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "20:00",'
        " timezone: America/New_York}]"
    )
    lab = lab_with(tmp_path, ingress(more=tod))
    monday_noon_ny = datetime(2026, 11, 23, 17, 0, tzinfo=UTC).timestamp()
    lab.ctrl.wall_offset = monday_noon_ny - lab.now
    assert call(lab, 1)[-1].status == 100
    lab.ctrl.wall_offset += 9 * 3600  # 21:00 in New York
    assert call(lab, 2)[-1].status == 403
    assert lab.events("call.refused")[-1]["reason"] == "time_of_day"


def test_a_termination_trunk_group_outside_its_time_of_day_is_skipped(tmp_path: Path) -> None:
    """vendor-1 takes calls 08:00-20:00 New York time: at noon the call goes to it, at
    21:00 hunting leaves it out and the call goes to vendor-2."""
    tod = (
        ', time_of_day: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "20:00",'
        " timezone: America/New_York}]"
    )
    lab = lab_with(tmp_path, ingress().replace("limits: {ports: 1}", "limits: {}" + tod))
    lab.ctrl.wall_offset = datetime(2026, 11, 23, 17, 0, tzinfo=UTC).timestamp() - lab.now
    ((_, first),) = b_legs(lab.feed(invite(branch="z9hG4bKt1"), CALLER))
    lab.ctrl.wall_offset += 9 * 3600
    data = invite(branch="z9hG4bKt2").replace(b"a-leg-1@10.1.1.1", b"a-leg-2@10.1.1.1")
    ((_, second),) = b_legs(lab.feed(data, CALLER))
    assert (first, second) == (V1, V2)
    at = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Monday 21:00 in New York
    lines, attempted = explain(lab.ctrl.snapshot, "127.0.0.1", "15551230000", at=at)
    assert attempted and "  -  vendor-1: skipped (outside its time of day)" in lines


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        ("2026-11-23T21:59", True),  # Monday 22:59 in Paris, window 22:00-06:00
        ("2026-11-24T04:30", True),  # Tuesday 05:30: the Monday window still runs
        ("2026-11-24T05:00", False),  # Tuesday 06:00: end is exclusive
        ("2026-11-22T22:30", False),  # Sunday 23:30: not a listed day
        ("2026-11-23T00:30", False),  # Monday 01:30 belongs to Sunday's window: not listed
    ],
)
def test_window_spanning_midnight(utc: str, expected: bool) -> None:
    w = TimeWindow(days=["mon", "tue"], start="22:00", end="06:00", timezone="Europe/Paris")
    wall = datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp()
    assert within(w, wall) is expected


def test_tech_prefix_tells_two_trunk_groups_apart_and_is_stripped(tmp_path: Path) -> None:
    tgs = (
        """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "7001#", trunks: [{ip: 127.0.0.1}]}
  - {name: carrier-b, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "7002#", trunks: [{ip: 127.0.0.1}], status: disabled}
"""
        + VENDORS
    )
    lab = lab_with(tmp_path, tgs)
    out = lab.feed(invite(user="7001%2315551230000"), CALLER)
    ((b_inv, _),) = b_legs(out)
    assert b_inv.ruri is not None and b_inv.ruri.user == "15551230000"
    assert call(lab, 2, user="7002%2315551230000")[-1].status == 403  # carrier-b, disabled
    assert lab.events("call.start")[0]["trunk_group"] == "carrier-a"


def test_ambiguous_trunk_groups_are_refused_naming_both(tmp_path: Path) -> None:
    tgs = (
        """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}]}
  - {name: carrier-b, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}]}
"""
        + VENDORS
    )
    with pytest.raises(ConfigError) as e:
        lab_with(tmp_path, tgs)
    assert "carrier-a" in str(e.value) and "carrier-b" in str(e.value)
    assert e.value.field.startswith("trunk_groups[1].trunks[0]")


def test_memory_store_is_all_or_nothing_and_scales_by_share() -> None:
    store = MemoryStore()
    tg, cg = Scope("tg:a", 2, 0), Scope("cg:g", 1, 0)
    assert store.acquire("l1", (tg, cg), 0.0) is None
    denied = store.acquire("l2", (tg, cg), 0.0)
    assert denied is not None and denied.label == "capacity_group_ports"
    assert store.in_use("tg:a") == 1  # nothing taken from tg:a for the refused lease
    store.release("l1")
    store.release("l1")  # twice: no effect
    assert store.in_use("tg:a") == 0 and store.in_use("cg:g") == 0
    half = Scope("tg:b", 5, 0)
    granted = [store.acquire(f"h{i}", (half,), 0.0, share=0.5) is None for i in range(5)]
    assert granted == [True, True, True, False, False]  # ceil(5 * 0.5)


@pytest.mark.parametrize(
    ("caller", "vendor"),
    [
        ("{max_call_duration: 60}", "{ports: 1}"),  # the origination trunk group's
        ("{}", "{ports: 1, max_call_duration: 60}"),  # the termination trunk group's
        ("{max_call_duration: 90}", "{ports: 1, max_call_duration: 60}"),  # the shorter
        ("{max_call_duration: 60}", "{ports: 1, max_call_duration: 90}"),
    ],
)
def test_max_call_duration_ends_the_call_with_bye_on_both_legs(
    tmp_path: Path, caller: str, vendor: str
) -> None:
    """caller        sbc          vendor
    |<------200----|<------200---|   answered at t
    |<------BYE----|-------BYE-->|   t + max_call_duration, Reason: ... Max Call Duration
    (either side's limit acts; with both, the shorter)"""
    tgs = ingress(caller).replace("limits: {ports: 1}", f"limits: {vendor}")
    lab = lab_with(tmp_path, tgs)
    out = lab.feed(invite(branch="z9hG4bKm1"), CALLER)
    ((b_inv, vendor),) = b_legs(out)
    ok = make_response(b_inv, 200, to_tag="v", headers=[("Contact", "<sip:v@127.0.0.1:5081>")])
    (a_ok,) = [m for m in only(lab.feed(ok, vendor), CALLER) if isinstance(m, Response)]
    ack = (
        f"ACK sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKm2"
        f"\r\nFrom: <sip:15550001000@10.1.1.1>;tag=caller1\r\n"
        f"To: <sip:15551230000@127.0.0.1>;tag={a_ok.to.tag}\r\nCall-ID: a-leg-1@10.1.1.1\r\n"
        f"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    lab.feed(ack, CALLER)
    assert [m for m, _ in lab.advance(59.0) if isinstance(m, Request)] == []
    out = lab.advance(1.0)
    byes = [(m, t) for m, t in out if isinstance(m, Request) and m.method == "BYE"]
    assert sorted(t.port for _, t in byes) == sorted([CALLER.port, vendor.port])
    assert all("Max Call Duration" in (m.get("Reason") or "") for m, _ in byes)
    for m, t in byes:
        lab.feed(make_response(m, 200), t)
    (end,) = lab.events("call.end")
    assert end["hangup"] == "sbc" and end["duration"] == 60.0
    assert lab.store.in_use("tg:carrier-a") == 0
