"""Rate decks and billing arithmetic (routing.ratedeck, routing.rating), with fake time."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from routing.ratedeck import Columns, DeckCache, DeckError, parse, parse_effective
from routing.rating import Tariff, billed_seconds, lcr_order, over_ceiling, rate_call

COLS = Columns("Code", "Rate", "Effective Date", "Destination")
T0 = parse_effective("2026-12-01T00:00:00")
DAY = 86400.0


def deck(text: str, now: float = T0):  # type: ignore[no-untyped-def]
    return parse("d", "d.csv", text, COLS, now)


def tariff(text: str, first: int = 60, nxt: int = 6, digits: int = 4) -> Tariff:
    return Tariff(deck(text), "USD", digits, first, nxt, False)


HEAD = "Code,Rate,Effective Date,Destination\n"


def test_issue_example_61s_at_one_cent_billed_66s_costs_0_0110() -> None:
    t = tariff(HEAD + "1,0.0100,,USA\n")
    r = rate_call(t, "15551230000", T0, 61.0)
    assert r is not None
    assert (r.prefix, r.billed_seconds, str(r.amount), str(r.rate)) == ("1", 66, "0.0110", "0.0100")


@pytest.mark.parametrize(
    ("duration", "first", "nxt", "delay", "billed"),
    [
        (0.0, 60, 6, False, 0),
        (0.2, 60, 6, False, 60),
        (60.0, 60, 6, False, 60),
        (60.001, 60, 6, False, 66),
        (58.5, 60, 6, True, 60),
        (60.0, 60, 6, True, 66),
        (13.0, 6, 6, False, 18),
        (13.2, 1, 1, False, 14),
    ],
)
def test_increments(duration: float, first: int, nxt: int, delay: bool, billed: int) -> None:
    assert billed_seconds(duration, first, nxt, delay) == billed


def test_rounding_half_up_per_deck() -> None:
    t = tariff(HEAD + "44,0.0125,,UK\n", first=1, nxt=1, digits=2)
    r = rate_call(t, "4420", T0, 60.0)  # 0.0125 -> 0.01 at 2 digits (half up of 0.0125)
    assert r is not None and r.amount == Decimal("0.01") and str(r.amount) == "0.01"
    t = tariff(HEAD + "44,0.015,,UK\n", first=1, nxt=1, digits=2)
    assert str(rate_call(t, "4420", T0, 60.0).amount) == "0.02"  # type: ignore[union-attr]


def test_longest_prefix_wins_and_unrated_is_none() -> None:
    d = deck(HEAD + "1,0.01,,USA\n1212,0.02,,NYC\n44,0.03,,UK\n")
    assert d.lookup("12125550000", T0).prefix == "1212"  # type: ignore[union-attr]
    assert d.lookup("13105550000", T0).prefix == "1"  # type: ignore[union-attr]
    assert d.lookup("33123", T0) is None


def test_effective_date_switches_at_the_right_second() -> None:
    d = deck(HEAD + "1,0.0100,2026-12-01,USA\n1,0.0200,2026-12-10T12:00:00Z,USA\n")
    switch = parse_effective("2026-12-10T12:00:00Z")
    assert str(d.lookup("1555", switch - 1).rate) == "0.0100"  # type: ignore[union-attr]
    assert str(d.lookup("1555", switch).rate) == "0.0200"  # type: ignore[union-attr]
    assert d.lookup("1555", T0 - 1) is None  # before any rate is in force


def test_a_future_rate_gives_way_to_a_shorter_code() -> None:
    d = deck(HEAD + "1,0.01,,USA\n1212,0.02,2027-01-01,NYC\n")
    assert d.lookup("12125550000", T0).prefix == "1"  # type: ignore[union-attr]
    assert d.lookup("12125550000", parse_effective("2027-01-01")).prefix == "1212"  # type: ignore[union-attr]


def test_orphan_rates_until_its_day_passes_then_unrated(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text(HEAD + "1,0.01,,USA\n44,0.03,,UK\n")
    cache = DeckCache()
    cache.load("d", str(f), COLS, 2, T0)
    f.write_text(HEAD + "1,0.01,,USA\n")  # 44 dropped from the reloaded deck
    reloaded = cache.load("d", str(f), COLS, 2, T0 + 10)
    assert reloaded.orphans == 1
    assert reloaded.lookup("4420", T0 + 10 + 2 * DAY - 1).prefix == "44"  # type: ignore[union-attr]
    assert reloaded.lookup("4420", T0 + 10 + 2 * DAY) is None  # expired: unrated
    # a later reload (the code still missing) keeps the first orphaning's expiry
    f.write_text(HEAD + "1,0.011,,USA\n")
    again = cache.load("d", str(f), COLS, 2, T0 + DAY)
    assert again.lookup("4420", T0 + 10 + 2 * DAY) is None
    assert again.lookup("4420", T0 + DAY).prefix == "44"  # type: ignore[union-attr]


def test_no_orphans_when_orphan_after_days_is_0(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text(HEAD + "44,0.03,,UK\n")
    cache = DeckCache()
    cache.load("d", str(f), COLS, 0, T0)
    f.write_text(HEAD + "1,0.01,,USA\n")
    assert cache.load("d", str(f), COLS, 0, T0).lookup("4420", T0) is None


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        (HEAD + "1,0.01,,USA\n1x,0.01,,USA\n", 3, "Code"),
        (HEAD + "1,abc,,USA\n", 2, "Rate"),
        (HEAD + "1,-1,,USA\n", 2, "Rate"),
        (HEAD + "1,0.01,01/12/2026,USA\n", 2, "Effective Date"),
        (HEAD + "1,0.01\n", 2, ""),
        ("Prefix,Rate\n1,0.01\n", 1, "Code"),
        (HEAD + "1,0.01,,A\n1,0.02,,B\n", 3, "Code"),
    ],
)
def test_bad_rows_name_line_and_column(text: str, line: int, column: str) -> None:
    with pytest.raises(DeckError) as e:
        deck(text)
    assert (e.value.file, e.value.line, e.value.column) == ("d.csv", line, column)


def test_lcr_cheapest_first_unrated_last_ties_in_route_order() -> None:
    a = deck(HEAD + "1,0.010,,USA\n").lookup("1", T0)
    b = deck(HEAD + "1,0.005,,USA\n").lookup("1", T0)
    c = deck(HEAD + "1,0.005,,USA\n").lookup("1", T0)
    order = lcr_order(["none", "a", "b", "c"], {"none": None, "a": a, "b": b, "c": c})
    assert order == ["b", "c", "a", "none"]


def test_margin_guard() -> None:
    cost = deck(HEAD + "1,0.010,,USA\n").lookup("1", T0)
    revenue = deck(HEAD + "1,0.008,,USA\n").lookup("1", T0)
    assert over_ceiling("revenue", cost, revenue)
    assert not over_ceiling("revenue", cost, None)  # nothing to compare
    assert not over_ceiling("0.01", cost, None) and over_ceiling("0.009", cost, None)
    assert over_ceiling("revenue", None, revenue)  # unknown cost under a guard
    assert not over_ceiling("", None, None)


CONFIG = """
node: {workers: 1}
relationships: [{name: carrier-a}, {name: vendor-x}]
rate_decks:
  - name: v
    file: rates/v.csv
    columns: {prefix: Code, rate: Rate, effective: "Effective Date", description: Destination}
    increment: {first: 60, next: 6}
trunk_groups:
  - {name: in, relationship: carrier-a, direction: origination, routeplan: rp,
     trunks: [{ip: 127.0.0.1}]}
  - {name: out, relationship: vendor-x, direction: termination, rate_deck: v,
     trunks: [{ip: 127.0.0.1, port: 5081}]}
routeplans:
  - {name: rp, routes: [{prefix: "", trunk_groups: [out], order: lcr}]}
"""


def _check(tmp_path: Path, csv_text: str, yaml_text: str = CONFIG) -> tuple[int, str]:
    import contextlib
    import io

    from sbc.cli import main

    (tmp_path / "rates").mkdir(exist_ok=True)
    (tmp_path / "rates" / "v.csv").write_text(csv_text)
    (tmp_path / "sbc.yaml").write_text(yaml_text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["check", "--config", str(tmp_path)])
    return rc, err.getvalue()


def test_check_names_the_csv_file_line_and_column(tmp_path: Path) -> None:
    assert _check(tmp_path, HEAD + "1,0.01,,USA\n") == (0, "")
    rc, err = _check(tmp_path, HEAD + "1,0.01,,USA\n44,0.0x,,UK\n")
    assert rc == 1
    assert f"{tmp_path / 'rates' / 'v.csv'}:3: Rate: rate '0.0x': not a number" in err


def test_check_refuses_unknown_decks_and_bad_ceilings_and_takes_balances_anywhere(
    tmp_path: Path,
) -> None:
    rc, err = _check(tmp_path, HEAD, CONFIG.replace("rate_deck: v", "rate_deck: w"))
    assert rc == 1 and "trunk_groups[1].rate_deck: unknown rate deck 'w'" in err
    rc, err = _check(tmp_path, HEAD, CONFIG.replace("rate_deck: v", "rate_deck: v, max_cost: x"))
    assert rc == 1 and "max_cost: 'x': write revenue or a rate per minute" in err
    with_balance = CONFIG.replace("{name: carrier-a}", "{name: carrier-a, balance: {}}")
    assert _check(tmp_path, HEAD, with_balance)[0] == 0
    assert _check(tmp_path, HEAD, with_balance.replace("workers: 1", "workers: 2"))[0] == 0
    redis = "workers: 2, state: {backend: redis, url: 'redis://127.0.0.1:1/0'}"
    assert _check(tmp_path, HEAD, with_balance.replace("workers: 1", redis))[0] == 0
    rc, err = _check(tmp_path, HEAD, CONFIG.replace("rates/v.csv", "rates/none.csv"))
    assert rc == 1 and "rate_decks[0].file: cannot read" in err


LCR = """
node: {workers: 1}
relationships: [{name: carrier-a}, {name: vendor-x}]
rate_decks:
  - {name: dear, file: dear.csv}
  - {name: cheap, file: cheap.csv}
  - {name: sell, file: sell.csv}
trunk_groups:
  - {name: in, relationship: carrier-a, direction: origination, routeplan: rp,
     rate_deck: sell, trunks: [{ip: 127.0.0.1}]}
  - {name: dear, relationship: vendor-x, direction: termination, rate_deck: dear,
     trunks: [{ip: 127.0.0.1, port: 5081}]}
  - {name: cheap, relationship: vendor-x, direction: termination, rate_deck: cheap,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
  - {name: none, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5083}]}
routeplans:
  - {name: rp, routes: [{prefix: "1", trunk_groups: [none, dear, cheap], order: lcr}]}
"""


def _lcr(tmp_path: Path, yaml_text: str = LCR):  # type: ignore[no-untyped-def]
    from sbc.config.loader import load_config
    from sbc.config.snapshot import Snapshot

    for name, rate in (("dear", "0.010"), ("cheap", "0.005"), ("sell", "0.008")):
        (tmp_path / f"{name}.csv").write_text(f"prefix,rate,description\n1,{rate},USA\n")
    (tmp_path / "sbc.yaml").write_text(yaml_text)
    return Snapshot.build(load_config(tmp_path))


def test_explain_shows_each_candidates_rate_and_the_lcr_order(tmp_path: Path) -> None:
    from sbc.explain import explain

    lines, ok = explain(_lcr(tmp_path), "127.0.0.1:5070", "15551230000")
    text = "\n".join(lines)
    assert ok
    assert "rating: revenue deck sell: code 1 rate 0.008/min (USA)" in text
    assert "dear: cost deck dear: code 1 rate 0.010/min" in text
    assert "cheap: cost deck cheap: code 1 rate 0.005/min" in text
    assert "none: cost no rate deck" in text
    attempts = [ln.split()[1] for ln in lines if ln.startswith("  ") and ". " in ln[:6]]
    assert attempts == ["cheap", "dear", "none"]


def test_explain_margin_guard_skips_a_vendor_dearer_than_revenue(tmp_path: Path) -> None:
    from sbc.explain import explain

    guarded = LCR.replace("rate_deck: dear,", "rate_deck: dear, max_cost: revenue,")
    lines, _ = explain(_lcr(tmp_path, guarded), "127.0.0.1:5070", "15551230000")
    text = "\n".join(lines)
    assert "-> skipped (max_cost revenue)" in text
    attempts = [ln.split()[1] for ln in lines if ln.startswith("  ") and ". " in ln[:6]]
    assert attempts == ["cheap", "none"]


def _rated_lab(tmp_path: Path, vendor_deck: str):  # type: ignore[no-untyped-def]
    import msgspec

    from sbc.config.loader import load_config
    from tests.helpers import Lab

    text = Path("config/lab/sbc.yaml").read_text()
    (tmp_path / "sell.csv").write_text(HEAD + "1,0.0100,,USA\n")
    (tmp_path / "buy.csv").write_text(HEAD + vendor_deck)
    cols = '{prefix: Code, rate: Rate, effective: "Effective Date", description: Destination}'
    (tmp_path / "sbc.yaml").write_text(
        text
        + "\nrate_decks:\n"
        + f"  - {{name: sell, file: sell.csv, columns: {cols},"
        + " increment: {first: 60, next: 6}}\n"
        + f"  - {{name: buy, file: buy.csv, columns: {cols}, increment: {{first: 6, next: 6}},"
        + " rounding_digits: 5, propagation_delay: true}\n"
    )
    config = load_config(tmp_path)
    tgs = [
        msgspec.structs.replace(tg, rate_deck="sell" if tg.direction == "origination" else "buy")
        for tg in config.trunk_groups
    ]
    return Lab(msgspec.structs.replace(config, trunk_groups=tgs))


def _answered_call(lab, hold: float) -> None:  # type: ignore[no-untyped-def]
    """caller -INVITE-> sbc -INVITE-> vendor (a 503, then the other trunk answers); the
    caller ACKs the 200, holds ``hold`` s and hangs up."""
    from sbc.sip.message import Request, Response, make_response
    from tests.helpers import CALLER, V1, V2, invite, only
    from tests.unit.test_ops import WALL, a_bye

    lab.ctrl.wall_offset = WALL
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    out = lab.feed(make_response(b1, 503, to_tag="x"), t1)
    t2 = V2 if t1 == V1 else V1
    (b2,) = [m for m in only(out, t2) if isinstance(m, Request) and m.method == "INVITE"]
    ok = make_response(b2, 200, to_tag="y", headers=[("Contact", "<sip:v@127.0.0.1:5082>")])
    (a_ok,) = only(lab.feed(ok, t2), CALLER)
    assert isinstance(a_ok, Response)
    ack = a_bye(a_ok.to.tag).replace(b"BYE sip", b"ACK sip").replace(b"2 BYE", b"1 ACK")
    lab.feed(ack.replace(b"z9hG4bKb2", b"z9hG4bKack"), CALLER)
    lab.advance(hold)
    (b_bye,) = only(lab.feed(a_bye(a_ok.to.tag), CALLER), t2)
    lab.feed(make_response(b_bye, 200), t2)


def test_a_61s_call_through_the_controller_is_billed_66s_and_costs_0_0110(
    tmp_path: Path,
) -> None:
    lab = _rated_lab(tmp_path, "1,0.0060,,USA\n")
    _answered_call(lab, hold=61.0)
    (rec,) = lab.ctrl.pop_cdrs()
    assert rec["duration"] == 61.0
    assert (rec["rate_status"], rec["rate_deck"], rec["rate"], rec["billed_seconds"]) == (
        "rated",
        "sell",
        "0.0100",
        66,
    )
    # the vendor's deck: 6/6 with propagation delay, 5 digits: 62 s -> 66 s at 0.006
    assert (rec["revenue"], rec["cost_billed_seconds"], rec["cost"]) == ("0.0110", 66, "0.00660")
    assert rec["margin"] == "0.00440"
    failed, answered = rec["attempts"]
    assert (failed["billed_seconds"], failed["cost"]) == (0, "0.00000")
    assert (answered["billed_seconds"], answered["cost"]) == (66, "0.00660")


def test_a_call_with_no_matching_code_is_unrated(tmp_path: Path) -> None:
    lab = _rated_lab(tmp_path, "44,0.0060,,UK\n")
    _answered_call(lab, hold=10.0)
    (rec,) = lab.ctrl.pop_cdrs()
    assert rec["rate_status"] == "unrated" and rec["revenue"] == "0.0100"
    assert rec["cost"] is None and rec["margin"] is None
    assert rec["attempts"][1]["rate_status"] == "unrated"


def test_a_reload_swaps_decks_with_the_snapshot_or_keeps_the_old_ones(tmp_path: Path) -> None:
    import os

    from sbc.reloads import Reloads
    from tests.unit.test_balance import Log

    snap = _lcr(tmp_path)
    log = Log()
    reloads = Reloads(tmp_path, log, "")
    cheap = tmp_path / "cheap.csv"
    cheap.write_text("prefix,rate,description\n1,0.0x,USA\n")
    os.utime(cheap, ns=(1, 1))  # a new mtime even within the same tick
    assert reloads.load(snap.config) is None
    (failed,) = [f for e, f in log.events if e == "config.reload_failed"]
    assert (failed["file"], failed["line"], failed["field"]) == (str(cheap), 2, "rate")
    assert str(snap.tariffs["cheap"].deck.lookup("1", 0).rate) == "0.005"  # type: ignore[union-attr]
    cheap.write_text("prefix,rate,description\n1,0.003,USA\n")
    os.utime(cheap, ns=(2, 2))
    new = reloads.load(snap.config)
    assert new is not None
    assert str(new.tariffs["cheap"].deck.lookup("1", 0).rate) == "0.003"  # type: ignore[union-attr]
    assert str(snap.tariffs["cheap"].deck.lookup("1", 0).rate) == "0.005"  # type: ignore[union-attr]


def test_revenue_cost_profit_margin_and_ppm_over_a_window_and_a_trigger_fires() -> None:
    import msgspec

    from sbc.alarms import Alarms
    from sbc.config.schema import Config
    from sbc.stats import Stats

    stats = Stats()
    rec = {
        "trunk_group": "in",
        "egress_trunk_group": "out",
        "revenue": "0.0110",
        "cost": "0.0060",
        "margin": "0.0050",
        "duration": 61.0,
    }
    unrated_cost = {**rec, "cost": None, "margin": None, "revenue": "0.0100", "duration": 30.0}
    stats.rated([rec, unrated_cost, {"trunk_group": "in", "revenue": None}], {"in": "cg"}, 100.0)
    w = stats.window("tg", "in")
    values = {k: w.value(k, 100.5, 60) for k in ("revenue", "cost", "profit", "margin", "ppm")}
    assert values["revenue"] == pytest.approx(0.021) and values["cost"] == pytest.approx(0.006)
    assert values["profit"] == pytest.approx(0.005)
    assert values["margin"] == pytest.approx(100 * 0.005 / 0.011)  # of calls rated both sides
    assert values["ppm"] == pytest.approx(0.005 * 60 / 61)
    assert stats.window("tg", "out").value("cost", 100.5, 60) == pytest.approx(0.006)
    assert stats.window("cg", "cg").value("revenue", 100.5, 60) == pytest.approx(0.021)
    assert stats.window("tg", "in").value("margin", 500.0, 60) is None  # nothing in the window
    config = msgspec.convert(
        {
            "trunk_groups": [
                {
                    "name": "in",
                    "direction": "origination",
                    "triggers": [
                        {
                            "name": "low-margin",
                            "type": "margin",
                            "condition": "less_than",
                            "value": 50,
                            "window": 60,
                        }
                    ],
                }
            ]
        },
        Config,
    )
    alarms = Alarms()
    assert alarms.evaluate(config, stats, 40.0, 0.0) == []  # the window is not whole yet
    (fired,) = alarms.evaluate(config, stats, 100.5, 0.0)
    assert fired.firing and fired.value == pytest.approx(100 * 0.005 / 0.011)
