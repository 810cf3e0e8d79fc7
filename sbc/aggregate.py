"""One node's /metrics and /status from its workers' own. Pure: text and dicts in, out.

Counters, histograms and counts of things (calls, ports, CPS) add up across workers. State
gauges (a trunk up, a trigger firing, draining) take the highest: a trunk's health is the
leader's on every worker (sbc.workview). ASR and ALOC over the trigger windows are ratios a
worker knows only for its own calls: the node's is their mean, an approximation; the
counters (sbc_completions_total / sbc_attempts_total) give the exact ratio in PromQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

HIGHEST = frozenset(
    ("sbc_trunk_up", "sbc_metric_trigger_firing", "sbc_draining", "process_max_fds", "python_info")
)
LOWEST = frozenset(("process_start_time_seconds",))  # the oldest worker's
MEAN = frozenset(("sbc_asr_ratio", "sbc_aloc_seconds"))

Sample = tuple[str, tuple[tuple[str, str], ...]]


def merge_metrics(texts: Iterable[bytes], own: str = "") -> bytes:
    """Prometheus text of every worker, merged; ``own`` (the supervisor's) appended."""
    families: dict[str, tuple[str, str]] = {}  # name -> (type, help), in first-seen order
    values: dict[str, dict[Sample, list[float]]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text.decode()):
            families.setdefault(fam.name, (fam.type, fam.documentation))
            samples = values.setdefault(fam.name, {})
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                samples.setdefault(key, []).append(s.value)
    out: list[str] = []
    for name, (kind, doc) in families.items():
        head = name + "_total" if kind == "counter" else name  # as prometheus-client writes
        out.append(f"# HELP {head} {_escape_help(doc)}")
        out.append(f"# TYPE {head} {kind}")
        for (sample, labels), vals in values[name].items():
            out.append(f"{sample}{_labels(labels)} {_number(_combine(name, sample, vals))}")
    return ("\n".join(out) + "\n" + own).encode()


def _combine(family: str, sample: str, vals: list[float]) -> float:
    if sample.endswith("_created"):
        return min(vals)
    if family in HIGHEST:
        return max(vals)
    if family in LOWEST:
        return min(vals)
    if family in MEAN:
        return sum(vals) / len(vals)
    return sum(vals)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n")


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v)}.0"
    return repr(v)


def gauge(name: str, doc: str, value: float, kind: str = "gauge") -> str:
    """One metric of the supervisor's own, as Prometheus text."""
    sample = name + "_total" if kind == "counter" else name
    return f"# HELP {sample} {doc}\n# TYPE {sample} {kind}\n{sample} {_number(value)}\n"


def merge_status(reports: list[dict[str, Any]], node: dict[str, Any]) -> dict[str, Any]:
    """Workers' /status reports as one: calls and CPS add up; trunk health, limits and the
    layout are the leader's (the first report); raised triggers are all of theirs."""
    if not reports:
        return {"node": node, "trunk_groups": [], "capacity_groups": [], "alarms": []}
    first = reports[0]
    out = dict(first)
    out["node"] = node
    for section in ("trunk_groups", "capacity_groups"):
        merged = [dict(g) for g in first[section]]
        for report in reports[1:]:
            by_name = {g["name"]: g for g in report[section]}
            for g in merged:
                other = by_name.get(g["name"])
                if other is not None:
                    g["calls"] += other["calls"]
                    g["cps"] += other["cps"]
        out[section] = merged
    alarms = {tuple(sorted(a.items())): a for r in reports for a in r["alarms"]}
    out["alarms"] = [alarms[k] for k in sorted(alarms)]
    return out


def merge_memory(reports: list[dict[str, Any]], own_rss_kb: int) -> dict[str, Any]:
    """Workers' /memory reports as the node's: every count summed (RSS with the
    supervisor's own), and each worker's report as it is under ``workers``."""
    out = _sum([{k: v for k, v in r.items() if k != "gc"} for r in reports])
    out["rss_kb"] = out.get("rss_kb", 0) + own_rss_kb
    out["supervisor_rss_kb"] = own_rss_kb
    out["workers"] = reports
    return out


def _sum(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict):
                out[k] = _sum([out.get(k, {}), v])
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out
