"""Routeplans and manipulations, pure: select() and the B-leg the controller builds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from routing.select import CompiledPlan, select
from sbc.config.schema import RoutePlan
from sbc.sip.message import Request, Response, make_response
from tests.helpers import BASE, CALLER, V1, V2, VENDORS, b_legs, call, invite, lab_with, only

NOW = datetime(2026, 11, 21, tzinfo=UTC).timestamp()


def plan(**fields: object) -> CompiledPlan:
    import msgspec

    return CompiledPlan(msgspec.convert({"name": "p", **fields}, RoutePlan))


def test_longest_prefix_wins_and_no_route_is_404() -> None:
    p = plan(routes=[{"prefix": "1", "trunk_groups": ["a"]},
                     {"prefix": "1555", "trunk_groups": ["b", "a"]}])  # fmt: skip
    assert select(p, "1", "15551230000", "", NOW).trunk_groups == ["b", "a"]
    assert select(p, "1", "16001230000", "", NOW).trunk_groups == ["a"]
    assert select(p, "1", "445551230000", "", NOW).refusal == (404, "No Route", "no_route")


def test_filters_regex_list_404_media_ip_and_expiry() -> None:
    p = plan(
        filters=[
            {"type": "ani", "value": "^0+$", "error_code": 403, "error_message": "Bad ANI"},
            {"type": "dnis", "value": ["19005550000"], "error_code": 603, "error_message": "No"},
            {"type": "404", "value": ["15550000000"]},
            {"type": "media_ip", "value": r"^10\.", "error_code": 488, "error_message": "Media"},
            {"type": "dnis", "value": "^1800", "expires": "2026-01-01"},  # expired: no effect
        ],
        routes=[{"prefix": "", "trunk_groups": ["a"]}],
    )
    assert select(p, "000", "1555", "", NOW).refusal == (403, "Bad ANI", "filter_ani")
    assert select(p, "1", "19005550000", "", NOW).refusal == (603, "No", "filter_dnis")
    assert select(p, "1", "15550000000", "", NOW).refusal == (404, "Not Found", "filter_404")
    assert select(p, "1", "1555", "10.1.2.3", NOW).refusal == (488, "Media", "filter_media_ip")
    ok = select(p, "1", "18005550000", "192.0.2.1", NOW, explain=True)
    assert ok.refusal is None and ok.trunk_groups == ["a"]
    assert any("expired" in step for step in ok.steps)


def test_numbering_and_forwarding() -> None:
    p = plan(
        numbering=[{"number": "15551230000", "trunk_group": "pbx"}],
        forwarding=[
            {"number": "15551230001", "forward_to": "15557654321", "trunk_group": "b",
             "on_failure": False},
            {"number": "15551230002", "forward_to": "15557654322", "trunk_group": "b"},
        ],
        routes=[{"prefix": "", "trunk_groups": ["a"]}],
    )  # fmt: skip
    assert select(p, "1", "15551230000", "", NOW).trunk_groups == ["pbx"]
    fwd = select(p, "1", "15551230001", "", NOW)
    assert (fwd.dnis, fwd.trunk_groups) == ("15557654321", ["b"])
    later = select(p, "1", "15551230002", "", NOW)
    assert later.trunk_groups == ["a"] and later.on_failure is not None


def test_triggers_match_without_refusing() -> None:
    p = plan(
        triggers=[{"name": "emergency", "to": {"exact": "911"}},
                  {"name": "old", "to": {"prefix": "9"}, "expires": "2020-01-01"}],
        routes=[{"prefix": "", "trunk_groups": ["a"]}],
    )  # fmt: skip
    sel = select(p, "15550001000", "911", "", NOW)
    assert [t.name for t in sel.triggers] == ["emergency"] and sel.trunk_groups == ["a"]


# --- through the controller ----------------------------------------------------------------

ROUTED = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}], manipulations: [{field: dnis, search: '^\\+?1?(\\d{10})$',
     replace: '1\\1'}, {field: sip_code, search: '^486$', replace: '480'}]}
  - {name: vendor-1, relationship: vendor-x, direction: termination, send_e164: true,
     trunks: [{ip: 127.0.0.1, port: 5081}],
     manipulations: [{field: header, header: User-Agent, search: '.*', replace: sbc}]}
  - {name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
"""


def test_dnis_manipulation_and_send_e164_are_on_the_b_leg(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, ROUTED)
    out = lab.feed(invite(user="5551230000"), CALLER)  # 10 digits: normalized to 1NPANXXXXXX
    ((b_inv, to),) = b_legs(out)
    assert to == V1 and b_inv.ruri is not None and b_inv.ruri.user == "+15551230000"
    assert b_inv.to.uri.user == "+15551230000" and b_inv.from_.uri.user == "+15550001000"
    assert b_inv.get("User-Agent") == "sbc"  # set by a header rule; the caller's never crosses


def test_sip_code_manipulation_on_the_callers_answer(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, ROUTED)
    ((b_inv, to),) = b_legs(lab.feed(invite(), CALLER))
    out = lab.feed(make_response(b_inv, 486, to_tag="v"), to)
    assert [m.status for m in only(out, CALLER) if isinstance(m, Response)] == [480]


FORWARD = (
    """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: fwd,
     trunks: [{ip: 127.0.0.1}]}
"""
    + VENDORS
)
FORWARD_PLAN = (
    BASE.split("routeplans:")[0]
    + """routeplans:
  - name: fwd
    forwarding: [{number: "15551230000", forward_to: "15557654321", trunk_group: vendor-2}]
    triggers: [{name: emergency, to: {exact: "911"}, webhook: "http://127.0.0.1:9/hook"}]
    routes: [{prefix: "", trunk_groups: [vendor-1]}]
"""
)


def test_forwarding_on_failure_after_the_routes_fail(tmp_path: Path) -> None:
    """caller      sbc        vendor-1      vendor-2
    |--INVITE-->|--INVITE-->|             |
    |           |<------503-|             |
    |           |--INVITE 15557654321---->|   the forward_to number, via vendor-2
    """
    lab = lab_with(tmp_path, FORWARD, base=FORWARD_PLAN)
    ((b1, t1),) = b_legs(lab.feed(invite(), CALLER))
    assert t1 == V1
    ((b2, t2),) = b_legs(lab.feed(make_response(b1, 503, to_tag="x"), t1))
    assert t2 == V2 and b2.ruri is not None and b2.ruri.user == "15557654321"
    assert lab.events("call.forwarded") == [{"to": "15557654321", "trunk_group": "vendor-2"}]
    assert b2.get("Diversion") is None  # diversion_routing is off: no redirection history


def test_diversion_routing_adds_our_forwarding_above_the_callers_diversion(
    tmp_path: Path,
) -> None:
    """With diversion_routing, redirection headers cross (Diversion, CC-Diversion,
    History-Info), and our own forwarding is added on top, most recent first (RFC 5806)."""
    tgs = FORWARD.replace("routeplan: fwd,", "routeplan: fwd, diversion_routing: true,")
    lab = lab_with(tmp_path, tgs, base=FORWARD_PLAN)
    earlier = "<sip:15550009999@10.1.1.1>;reason=no-answer;counter=1"
    msg = invite().replace(
        b"Content-Type:",
        f"Diversion: {earlier}\r\nCC-Diversion: <tel:15550009999>\r\nContent-Type:".encode(),
    )
    ((b1, t1),) = b_legs(lab.feed(msg, CALLER))
    assert b1.get_all("Diversion") == [earlier] and b1.get("CC-Diversion") is not None
    ((b2, _),) = b_legs(lab.feed(make_response(b1, 503, to_tag="x"), t1))
    assert b2.get_all("Diversion") == [
        "<sip:15551230000@127.0.0.1>;reason=unavailable;counter=1",
        earlier,
    ]


def test_trigger_notifies_and_the_call_goes_on(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, FORWARD, base=FORWARD_PLAN)
    out = lab.feed(invite(user="911"), CALLER)
    assert [t for _, t in b_legs(out)] == [V1]  # not delayed
    (ev,) = lab.events("routing.trigger")
    assert ev["trigger"] == "emergency" and ev["dnis"] == "911"
    (notify,) = lab.notified
    assert notify.url == "http://127.0.0.1:9/hook" and notify.payload["dnis"] == "911"


def test_a_filtered_call_takes_no_port(tmp_path: Path) -> None:
    plan_yaml = """
  - name: default
    filters: [{type: ani, value: "^15550001000$", error_code: 403, error_message: Blocked}]
    routes: [{prefix: "", trunk_groups: [vendor-1]}]
"""
    tgs = (
        """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}], limits: {ports: 1}}
"""
        + VENDORS
    )
    base = BASE.split("routeplans:")[0] + "routeplans:" + plan_yaml
    lab = lab_with(tmp_path, tgs, base=base)
    got = call(lab, 1)
    assert [r.status for r in got] == [403] and got[0].reason == "Blocked"
    assert lab.store.in_use("tg:carrier-a") == 0  # refused before admission
    assert lab.events("call.refused")[0]["reason"] == "filter_ani"


MONITORED = """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor-1, relationship: vendor-x, direction: termination, hunting: failover,
     monitoring: {enabled: true, interval: 10, down_after: 3, up_after: 2},
     trunks: [{ip: 127.0.0.1, port: 5081}, {ip: 127.0.0.1, port: 5082}]}
  - {name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5083}]}
"""


def test_monitoring_takes_a_silent_trunk_down_and_brings_it_back(tmp_path: Path) -> None:
    """sbc --OPTIONS--> 5081 (answers 200), 5081 is silent: down after 3 missed pings
    (5 s each to answer), skipped by hunting; up again after 2 answered pings."""
    lab = lab_with(tmp_path, MONITORED)
    lab.ctrl.start(lab.now)
    out = lab.advance(0.0)  # the first pings go out at once

    def ping_round(out: list[tuple[Request | Response, object]], answer: bool) -> None:
        for m, t in out:
            if isinstance(m, Request) and m.method == "OPTIONS" and (t == V2 or answer):
                lab.feed(make_response(m, 200), t)  # type: ignore[arg-type]

    for _ in range(3):
        ping_round(out, answer=False)  # 5081 silent, 5082 answers
        lab.advance(5.0)  # the probe timeout
        out = lab.advance(5.0)  # the next round
    (down,) = lab.events("trunk.down")
    assert down == {"trunk_group": "vendor-1", "trunk": "udp:127.0.0.1:5081", "error": "timeout"}
    ((_, to),) = b_legs(lab.feed(invite(), CALLER))
    assert to == V2  # failover would pick 5081 first: it is down
    for _ in range(2):
        ping_round(out, answer=True)
        out = lab.advance(10.0)
    assert lab.events("trunk.up") == [{"trunk_group": "vendor-1", "trunk": "udp:127.0.0.1:5081",
                                      "error": ""}]  # fmt: skip
    assert lab.ctrl.monitor.transitions[("vendor-1", "down")] == 1


def test_a_503_to_options_counts_as_a_failure(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, MONITORED)
    lab.ctrl.start(lab.now)
    out = lab.advance(0.0)  # the first pings go out at once
    for _ in range(3):
        for m, t in out:
            if isinstance(m, Request) and m.method == "OPTIONS":
                lab.feed(make_response(m, 503 if t == V1 else 200), t)  # type: ignore[arg-type]
        out = lab.advance(10.0)
    assert [e["trunk"] for e in lab.events("trunk.down")] == ["udp:127.0.0.1:5081"]
