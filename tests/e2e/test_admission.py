"""Admission with the real sbc and sipp: ports, CPS, capacity groups, tech prefixes.

One sbc on 127.0.0.1:5160 with ingress trunk groups told apart by tech prefix on the same
IP, each with its own limits; vendors are sipp UAS on 5081/5082 that fail any call whose
Request-URI is not exactly sip:15551230000@... (so every admitted call also proves the
prefix was stripped). Callers run lab/sipp/uac_limits.xml:

    uac              sbc                 uas
     |--INVITE------->|                    |
     |<-----------100-|                    |
     |<-----------503-|  over the limit: Retry-After, Reason: Q.850;cause=34 (checked)
     |--ACK---------->|                    |
                 or
     |<-----------200-|<--INVITE/200/ACK-->|  admitted: held -d ms, then BYE
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.e2e

PORT = 5160
CONFIG = """
node:
  listen: [{address: 127.0.0.1, port: 5160, transport: udp}]
  unknown_source: reject
relationships: [{name: carrier-a}, {name: vendor-x}]
capacity_groups: [{name: shared6, ports: 6}]
trunk_groups:
  - {name: ports5, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "1001#", trunks: [{ip: 127.0.0.1}], limits: {ports: 5}}
  - {name: cps10, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "1002#", trunks: [{ip: 127.0.0.1}], limits: {cps: 10}}
  - {name: cap-a, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "1003#", trunks: [{ip: 127.0.0.1}], limits: {ports: 5}, capacity_group: shared6}
  - {name: cap-b, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "1004#", trunks: [{ip: 127.0.0.1}], limits: {ports: 5}, capacity_group: shared6}
  - {name: vendor-pool, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}, {ip: 127.0.0.1, port: 5082}], limits: {b_timer: 2}}
routeplans:
  - name: default
    routes: [{prefix: "", trunk_groups: [vendor-pool]}]
"""


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    config = tmp_path_factory.mktemp("config")
    (config / "sbc.yaml").write_text(CONFIG)
    proc = harness.start_sbc(tmp_path_factory.mktemp("sbc"), config, port=PORT)
    uas = tmp_path_factory.mktemp("uas")
    with harness.sipp_servers("uas_dnis.xml", [5081, 5082], uas):
        yield proc
    assert proc.alive(), "sbc died during the tests"
    assert proc.stop() == 0
    # sipp 3.6 answers a call whose check_it failed (the DNIS as sent) and only logs it
    assert harness.failed_checks(uas) == ""


def caller(
    prefix: str, *, calls: int, rate: float, hold_ms: int, port: int, workdir: Path
) -> harness.SippResult:
    r = harness.run_sipp(
        "uac_limits.xml",
        calls=calls,
        rate=rate,
        port=port,
        workdir=workdir,
        remote=f"127.0.0.1:{PORT}",
        extra=["-s", prefix.replace("#", "%23") + "15551230000", "-d", str(hold_ms)],
        timeout=60,
    )
    assert "regexp match" not in r.output, r.output  # a 503's Reason was checked
    return r


def test_ports_5_with_held_calls(sbc: harness.Sbc, tmp_path: Path) -> None:
    """12 calls offered within 0.3 s and held 3 s, so all would overlap: exactly 5 are up,
    7 get 503 with the Reason. Once they end, the ports are free again: 5 more go up."""
    for batch in (1, 2):
        r = caller("1001#", calls=12, rate=40, hold_ms=3000, port=5070, workdir=tmp_path)
        assert r.returncode == 0, r.output
        assert (r.received(200), r.received(503)) == (5 + 5, 7), f"batch {batch}: {r.counts}"
    refused = [e for e in sbc.events("call.refused") if e.get("trunk_group") == "ports5"]
    assert len(refused) == 14 and {e["reason"] for e in refused} == {"trunk_group_ports"}


def test_cps_10_under_a_40_cps_offer(sbc: harness.Sbc, tmp_path: Path) -> None:
    """400 calls at 40 cps for 10 s against cps 10: about 100 admitted (within 15 %)."""
    r = caller("1002#", calls=400, rate=40, hold_ms=0, port=5071, workdir=tmp_path)
    assert r.returncode == 0, r.output
    admitted, refused = r.received(200) // 2, r.received(503)
    assert admitted + refused == 400
    assert 85 <= admitted <= 115, f"admitted {admitted}"
    print(f"cps 10 under 40 cps for 10 s: {admitted} admitted, {refused} refused")
    cps = [e for e in sbc.events("call.refused") if e.get("trunk_group") == "cps10"]
    assert len(cps) == refused and {e["reason"] for e in cps} == {"trunk_group_cps"}


def test_capacity_group_of_6_over_two_trunk_groups_of_5(sbc: harness.Sbc, tmp_path: Path) -> None:
    """Both trunk groups offer 8 held calls at once: 6 up in total, never more; neither
    trunk group above its own 5."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(
            lambda args: caller(
                args[0],
                calls=8,
                rate=40,
                hold_ms=3000,
                port=args[1],
                workdir=tmp_path / args[0][:4],
            ),
            [("1003#", 5072), ("1004#", 5073)],
        )
    assert a.returncode == 0 and b.returncode == 0, a.output + b.output
    up_a, up_b = a.received(200) // 2, b.received(200) // 2
    assert up_a + up_b == 6 and up_a <= 5 and up_b <= 5
    assert a.received(503) + b.received(503) == 10
    reasons = {
        e["reason"]
        for e in sbc.events("call.refused")
        if e.get("trunk_group") in ("cap-a", "cap-b")
    }
    assert "capacity_group_ports" in reasons


def test_tech_prefix_picks_the_trunk_group_and_is_stripped(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    """The UAS only answers sip:15551230000@...; an unknown prefix is not ours (403)."""
    before = len(sbc.events("call.start"))
    r = caller("1001#", calls=3, rate=10, hold_ms=0, port=5074, workdir=tmp_path)
    assert r.returncode == 0 and r.received(200) == 6, r.output
    starts = sbc.events("call.start")[before:]
    assert [(e["trunk_group"], e["dnis"]) for e in starts] == [("ports5", "15551230000")] * 3
    stranger = harness.run_sipp(
        "uac",
        calls=1,
        rate=1,
        port=5075,
        workdir=tmp_path,
        remote=f"127.0.0.1:{PORT}",
        extra=["-s", "9999%2315551230000"],
        timeout=10,
    )
    assert stranger.count("FailedCall") == 1
    assert sbc.events("call.refused")[-1]["reason"] == "unknown_source"


def test_sbc_check_refuses_an_ambiguous_pair_naming_both(tmp_path: Path) -> None:
    ambiguous = CONFIG.replace('tech_prefix: "1002#"', 'tech_prefix: "1001#"')
    (tmp_path / "sbc.yaml").write_text(textwrap.dedent(ambiguous))
    proc = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "check", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=harness.ROOT,
        timeout=30,
    )
    assert proc.returncode == 1
    err = proc.stderr + proc.stdout
    assert "sbc.yaml:" in err and "'ports5'" in err and "'cps10'" in err, err
