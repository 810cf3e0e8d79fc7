"""Routing, hunting, monitoring, reload and explain with the real sbc and sipp (loopback).

One sbc on 127.0.0.1:5460; the first digit of the DNIS picks a route (routeplan `r`):

    1... -> weighted       5081 (weight 3), 5082 (weight 1)
    2... -> adv-503        5083 answers 503        -> advanced to `good` (5081)
    3... -> busy-486       5084 answers 486        -> relayed, not advanced
    4... -> dead           5085 nothing listens    -> left after b_timer 1 s -> `good`
    5... -> ringless       5086 only says 100      -> left after max_pdd 2 s (CANCEL) -> `good`
    6... -> monitored      5087, 5088 (failover, OPTIONS every 1 s, down after 2)
    7... -> e164           5089 (send_e164, checks the R-URI is +1NPANXXXXXX)
    8...       filtered: 403 Barred
    9555000001 numbering: the DID belongs to `good`
    9555000002 forwarded unconditionally to 25551239999 via `good`
    9555000003 routes to adv-503 (9...), fails, forwarded on failure to 15550009999 via `good`
    1999... also fires the trigger `watch`, whose webhook is a test HTTP server on :5499
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

from tests.helpers import sample

pytestmark = pytest.mark.e2e

PORT = 5460
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 5460, transport: udp}]
  flood: {exempt: [127.0.0.1]}   # sipp's 50-200 cps from one address: no flood
  admin: {listen: "127.0.0.1:5498"}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}],
     manipulations: [{field: dnis, search: '^7(\\d{10})$', replace: '71\\1'}]}
  - {name: weighted, relationship: vendor-x, direction: termination, hunting: weighted,
     trunks: [{ip: 127.0.0.1, port: 5081, weight: 3}, {ip: 127.0.0.1, port: 5082, weight: 1}]}
  - {name: good, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}]}
  - {name: adv-503, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5083}]}
  - {name: busy-486, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5084}]}
  - {name: dead, relationship: vendor-x, direction: termination, limits: {b_timer: 1},
     trunks: [{ip: 127.0.0.1, port: 5085}]}
  - {name: ringless, relationship: vendor-x, direction: termination, limits: {max_pdd: 2},
     trunks: [{ip: 127.0.0.1, port: 5086}]}
  - {name: monitored, relationship: vendor-x, direction: termination, hunting: failover,
     monitoring: {enabled: true, interval: 1, down_after: 2, up_after: 1},
     trunks: [{ip: 127.0.0.1, port: 5087}, {ip: 127.0.0.1, port: 5088}]}
  - {name: e164, relationship: vendor-x, direction: termination, send_e164: true,
     manipulations: [{field: dnis, search: '^7', replace: ''}],
     trunks: [{ip: 127.0.0.1, port: 5089}]}
routeplans:
  - name: r
    triggers: [{name: watch, to: {prefix: "1999"}, webhook: "http://127.0.0.1:5499/hook"}]
    filters: [{type: dnis, value: '^8', error_code: 403, error_message: Barred}]
    numbering: [{number: "9555000001", trunk_group: good}]
    forwarding:
      - {number: "9555000002", forward_to: "25551239999", trunk_group: good, on_failure: false}
      - {number: "9555000003", forward_to: "15550009999", trunk_group: good, on_failure: true}
    routes:
      - {prefix: "9", trunk_groups: [adv-503]}
      - {prefix: "1", trunk_groups: [weighted]}
      - {prefix: "2", trunk_groups: [adv-503, good]}
      - {prefix: "3", trunk_groups: [busy-486, good]}
      - {prefix: "4", trunk_groups: [dead, good]}
      - {prefix: "5", trunk_groups: [ringless, good]}
      - {prefix: "6", trunk_groups: [monitored]}
      - {prefix: "7", trunk_groups: [e164]}
"""


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("config")
    (d / "sbc.yaml").write_text(CONFIG)
    return d


@pytest.fixture(scope="module")
def sbc(config_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    root = tmp_path_factory.mktemp("routing")
    with (
        harness.sipp_servers("uas", [5081, 5082], root / "uas"),
        harness.sipp_servers("uas_options.xml", [5087, 5088], root / "monitored"),
        harness.sipp_servers("uas_503.xml", [5083], root / "f503"),
        harness.sipp_servers("uas_486.xml", [5084], root / "f486"),
        harness.sipp_servers("uas_trying.xml", [5086], root / "trying"),
        harness.sipp_servers("uas_e164.xml", [5089], root / "e164"),
    ):
        proc = harness.start_sbc(root / "sbc", config_dir, port=PORT)
        yield proc
        assert proc.alive(), "sbc died during the tests"
        assert proc.stop() == 0


def calls(dnis: str, n: int, port: int, workdir: Path, rate: float = 10) -> harness.SippResult:
    return harness.run_sipp(
        "uac", calls=n, rate=rate, port=port, workdir=workdir, remote=f"127.0.0.1:{PORT}",
        extra=["-s", dnis], timeout=60,
    )  # fmt: skip


def ends(sbc: harness.Sbc, since: int, count: int | None = None) -> list[dict[str, object]]:
    """call.end events after index ``since``; waits (5 s at most) for ``count`` of them: the
    sbc logs a call's end after the vendor answers its BYE, which may follow sipp's exit."""
    deadline = time.monotonic() + 5
    while True:
        found = sbc.events("call.end")[since:]
        if count is None or len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_trigger_posts_its_webhook_and_the_call_completes(sbc: harness.Sbc, tmp_path: Path) -> None:
    """The 911 case: the call is not held for the webhook; the POST arrives with the call's
    numbers as JSON."""
    before = len(sbc.events("call.end"))
    with harness.webhook_server(5499) as posts:
        r = calls("19995551234", 2, 5079, tmp_path)
        assert r.returncode == 0 and r.count("SuccessfulCall") == 2, r.output
        harness.wait_for(lambda: len(posts) >= 2)
    assert [p for p, _ in posts] == ["/hook", "/hook"]
    payload = posts[0][1]
    assert payload["trigger"] == "watch" and payload["dnis"] == "19995551234"
    assert payload["trunk_group"] == "carrier-a" and isinstance(payload["time"], float)
    assert len(sbc.events("routing.trigger")) >= 2
    assert sbc.events("trigger.webhook_failed") == []
    # the next test counts call.end lines: these calls' ends must be in before it does
    assert len(ends(sbc, before, 2)) == 2


def test_weighted_3_to_1_over_2000_calls(sbc: harness.Sbc, tmp_path: Path) -> None:
    before = len(sbc.events("call.end"))
    r = calls("15551230000", 2000, 5070, tmp_path, rate=200)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 2000, r.output
    first = Counter(e["attempts"][0]["trunk"] for e in ends(sbc, before, 2000))  # type: ignore[index]
    share = first["127.0.0.1:5081"] / 2000
    assert abs(share - 0.75) <= 0.05 * 0.75, first  # within 5 % of 3:1
    print(f"weighted 3:1 over 2000 calls: {dict(first)}")


def test_503_is_advanced_past_and_486_is_relayed(sbc: harness.Sbc, tmp_path: Path) -> None:
    before = len(sbc.events("call.end"))
    r = calls("25551230000", 10, 5071, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 10, r.output  # no failed call
    outcomes = {tuple(a["status"] for a in e["attempts"]) for e in ends(sbc, before, 10)}  # type: ignore[attr-defined]
    assert outcomes == {(503, 200)}
    before = len(sbc.events("call.end"))
    r = calls("35551230000", 5, 5072, tmp_path)
    assert r.count("FailedCall") == 5 and "486" in r.output
    assert {(e["status"], len(e["attempts"])) for e in ends(sbc, before, 5)} == {(486, 1)}  # type: ignore[arg-type]


def test_b_timer_and_max_pdd_move_on(sbc: harness.Sbc, tmp_path: Path) -> None:
    before = len(sbc.events("call.end"))
    r = calls("45551230000", 3, 5073, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 3, r.output
    r = calls("55551230000", 3, 5074, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 3, r.output
    outcomes = [tuple(a["outcome"] for a in e["attempts"]) for e in ends(sbc, before, 6)]  # type: ignore[attr-defined]
    assert outcomes == [("b_timer", "answered")] * 3 + [("max_pdd", "answered")] * 3


def test_manipulation_and_e164_reach_the_vendor(sbc: harness.Sbc, tmp_path: Path) -> None:
    """DNIS 75551230000: ingress rule -> 715551230000, route 7 -> e164, whose rule strips the
    7 and send_e164 adds '+': the vendor (which checks) sees sip:+15551230000@..."""
    before = len(sbc.events("call.end"))
    r = calls("75551230000", 3, 5075, tmp_path)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 3, r.output
    # sipp 3.6 answers a call whose check_it failed all the same, and only logs the miss
    assert harness.failed_checks(sbc.log_path.parent.parent / "e164") == ""
    assert len(ends(sbc, before, 3)) == 3  # in before the next test counts call.end lines


def test_explain_names_the_trunk_group_and_order_the_call_takes(
    sbc: harness.Sbc, config_dir: Path, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "explain", "--config", str(config_dir),
         "--from", "127.0.0.1:5076", "--to", "25551230000"],
        capture_output=True, text=True, cwd=harness.ROOT, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "ingress: trunk group carrier-a" in out
    planned = [
        line.split()[1:3] for line in out.splitlines() if line.startswith("  ") and ". " in line
    ]
    assert planned == [["adv-503", "udp:127.0.0.1:5083"], ["good", "udp:127.0.0.1:5081"]]
    before = len(sbc.events("call.end"))
    calls("25551230000", 1, 5076, tmp_path)
    (end,) = ends(sbc, before, 1)
    taken = [[a["trunk_group"], "udp:" + a["trunk"]] for a in end["attempts"]]  # type: ignore[attr-defined]
    assert taken == planned


def test_filters_numbering_and_forwarding_on_the_wire(sbc: harness.Sbc, tmp_path: Path) -> None:
    r = calls("85551230000", 2, 5069, tmp_path)
    assert r.count("SuccessfulCall") == 0 and r.count("FailedCall") == 2
    refused = [e for e in sbc.events("call.refused") if e.get("reason") == "filter_dnis"]
    assert len(refused) == 2 and {e["status"] for e in refused} == {403}
    cdr_path = sbc.log_path.parent / "cdr" / "cdr.jsonl"
    expected = {  # dialled -> (route matched, attempts as (trunk group, status), R-URI user sent)
        "9555000001": ("numbering", [("good", 200)], "9555000001"),
        "9555000002": ("forwarding", [("good", 200)], "25551239999"),
        "9555000003": ("route 9", [("adv-503", 503), ("good", 200)], "15550009999"),
    }
    for port, (dnis, (matched, attempts, sent)) in enumerate(expected.items(), 5066):
        before = len(sbc.events("call.end"))
        r = calls(dnis, 1, port, tmp_path)
        assert r.count("SuccessfulCall") == 1, r.output
        (end,) = ends(sbc, before, 1)
        start = next(e for e in sbc.events("call.start") if e["call_id"] == end["call_id"])
        assert start["route"] == matched, start
        taken = [(a["trunk_group"], a["status"]) for a in end["attempts"]]  # type: ignore[attr-defined]
        assert taken == attempts, (dnis, taken)
        cid = str(end["call_id"])
        assert harness.wait_for(lambda cid=cid: cid in cdr_path.read_text())  # type: ignore[misc]
        (rec,) = [json.loads(x) for x in cdr_path.read_text().splitlines() if cid in x]
        assert rec["dnis"] == dnis and rec["dnis_routed"] == sent, rec
    # forwarding on failure is a hunting step of its own; unconditional forwarding is the route
    assert [e["to"] for e in sbc.events("call.forwarded")] == ["15550009999"]


def test_killing_a_vendor_takes_its_trunk_down_and_no_call_fails(
    sbc: harness.Sbc, config_dir: Path, tmp_path: Path
) -> None:
    """interval 1 s x down_after 2, + the 0.5 s probe timeout: down within 2.5 s."""
    victims = [p for p in _sipp_on(5087)]
    assert victims, "no sipp on 5087"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while not sbc.events("trunk.down") and time.monotonic() - killed < 10:
        time.sleep(0.1)
    (down,) = sbc.events("trunk.down")
    took = time.monotonic() - killed
    assert down["trunk"] == "udp:127.0.0.1:5087" and took <= 1 * 2 + 0.5 + 0.3, took
    print(f"trunk down {took:.2f} s after the vendor was killed (interval 1 s, down_after 2)")
    # explain --live reads the node's health: the dead trunk is skipped as the node will
    out = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "explain", "--config", str(config_dir), "--live",
         "--from", "127.0.0.1:5077", "--to", "65551230000"],
        capture_output=True, text=True, cwd=harness.ROOT, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "  -  monitored udp:127.0.0.1:5087: skipped (down, live)" in out, out
    assert "1. monitored udp:127.0.0.1:5088 [failover, health up (live)]" in out, out
    before = len(sbc.events("call.end"))
    r = calls("65551230000", 20, 5077, tmp_path, rate=20)
    assert r.returncode == 0 and r.count("SuccessfulCall") == 20, r.output
    assert {e["attempts"][0]["trunk"] for e in ends(sbc, before, 20)} == {"127.0.0.1:5088"}  # type: ignore[index]


def test_a_good_reload_keeps_trunk_health_and_reconciles_monitoring(
    sbc: harness.Sbc, config_dir: Path
) -> None:
    """After the kill above, 5087 is down. A reload that only changes the policy keeps it
    down (health is keyed by address and carries over); one that turns monitoring off stops
    the pings, and the trunk is no longer monitored at all."""

    def health() -> dict[str, str]:
        with urllib.request.urlopen("http://127.0.0.1:5498/status", timeout=3) as resp:
            state = json.loads(resp.read())
        (group,) = [g for g in state["trunk_groups"] if g["name"] == "monitored"]
        return {t["trunk"]: t["health"] for t in group["trunks"]}

    def reload(text: str) -> None:
        count = len(sbc.events("config.reloaded"))
        (config_dir / "sbc.yaml").write_text(text)
        sbc.proc.send_signal(signal.SIGHUP)
        assert len(sbc.wait_events("config.reloaded", count + 1)) == count + 1

    policy = "monitoring: {enabled: true, interval: 1, down_after: 2, up_after: 1}"
    good = (config_dir / "sbc.yaml").read_text()
    assert health()["udp:127.0.0.1:5087"] == "down"
    with urllib.request.urlopen("http://127.0.0.1:5498/metrics", timeout=3) as resp:
        text = resp.read().decode()  # /metrics says what /status says
    for trunk, up in (("udp:127.0.0.1:5087", 0), ("udp:127.0.0.1:5088", 1)):
        assert sample(text, "sbc_trunk_up", trunk_group="monitored", trunk=trunk) == up
    downs = [e for e in sbc.events("trunk.down") if e["trunk_group"] == "monitored"]
    assert downs and sample(
        text, "sbc_trunk_transitions_total", trunk_group="monitored", change="down"
    ) == len(downs)
    try:
        reload(good.replace(policy, policy.replace("up_after: 1", "up_after: 3")))
        assert health() == {"udp:127.0.0.1:5087": "down", "udp:127.0.0.1:5088": "up"}
        reload(good.replace(policy, policy.replace("enabled: true", "enabled: false")))
        assert set(health().values()) == {"unmonitored"}
        ups = len(sbc.events("trunk.up"))
        probes_before = sbc_options_sent()
        time.sleep(2.5)  # two ping intervals of the old policy: none may go out
        assert sbc_options_sent() == probes_before and len(sbc.events("trunk.up")) == ups
    finally:
        reload(good)


def sbc_options_sent() -> float:
    """OPTIONS the node has sent, from its own /metrics (admin listener)."""
    with urllib.request.urlopen("http://127.0.0.1:5498/metrics", timeout=3) as resp:
        text = resp.read().decode()
    return sample(text, "sbc_sip_messages_total", direction="out", method="OPTIONS", code="")


def test_sighup_with_broken_yaml_keeps_the_old_config(
    sbc: harness.Sbc, config_dir: Path, tmp_path: Path
) -> None:
    good = (config_dir / "sbc.yaml").read_text()
    try:
        (config_dir / "sbc.yaml").write_text(good.replace("hunting: weighted", "hunting: sideways"))
        sbc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not sbc.events("config.reload_failed") and time.monotonic() < deadline:
            time.sleep(0.1)
        (failed,) = sbc.events("config.reload_failed")
        line = next(i for i, t in enumerate(good.splitlines(), 1) if "hunting: weighted" in t)
        assert failed["file"].endswith("sbc.yaml") and failed["line"] == line  # type: ignore[union-attr]
        assert failed["field"] == "trunk_groups[1].hunting"
        r = calls("15551230000", 20, 5078, tmp_path, rate=20)
        assert r.returncode == 0 and r.count("SuccessfulCall") == 20, r.output
    finally:
        (config_dir / "sbc.yaml").write_text(good)


def _sipp_on(port: int) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"sipp .*-p {port} "], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]
