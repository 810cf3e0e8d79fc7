"""What contrib/ ships for a NOC's Prometheus and Grafana names only what sbc exports: every
metric in every alert expression and dashboard panel is on a live node's /metrics (after one
call through it, so labelled families have samples), and `promtool check rules` passes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import harness
import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "sbc-alerts.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "sbc.json"
PORT, METRICS = 6810, 6813
CONFIG = """
node:
  workers: 2
  listen: [{address: 127.0.0.1, port: 6810, transport: udp}]
  metrics: {listen: "127.0.0.1:6813"}
  cdr: {path: cdr/cdr.jsonl}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 6811}]}
routeplans:
  - name: r
    routes: [{prefix: "", trunk_groups: [vendor]}]
"""
# Prometheus's own series and PromQL words that look like names
NOT_OURS = {"up"}
NAME = re.compile(r"\b((?:sbc|process|python)_[a-z0-9_]+|up)\b")


def expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs += [t["expr"] for p in panels for t in p["targets"]]
    return exprs


def exported(text: str) -> set[str]:
    """Sample names on /metrics, and what each # TYPE line's family may be queried as (a
    labelled histogram has no samples before its first observation)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}
            names.update([name, *(name + x for x in suffixes.get(kind, ()))])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_contrib_names_is_exported_and_the_rules_check() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian's prometheus) is not installed: ./lab/install"
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_metric_in_alerts_and_dashboard_is_on_metrics(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "sbc.yaml").write_text(CONFIG)
    with harness.sipp_servers("uas", [6811], tmp_path / "uas"):
        sbc = harness.start_sbc(tmp_path / "run", config, port=PORT)
        try:
            result = harness.run_sipp(
                "uac", calls=2, rate=10, port=6812, workdir=tmp_path / "uac",
                remote=f"127.0.0.1:{PORT}", extra=["-s", "15551230000", "-d", "100"],
            )  # fmt: skip
            assert result.count("SuccessfulCall") == 2, result.output
            with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=5) as r:
                text = r.read().decode()
        finally:
            sbc.stop()
    have = exported(text)
    named = {n for e in expressions() for n in NAME.findall(e)} - NOT_OURS
    assert len(named) >= 15  # the parse found the expressions' names
    missing = sorted(n for n in named if n not in have)
    assert missing == [], f"contrib names metrics sbc does not export: {missing}"
