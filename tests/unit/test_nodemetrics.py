"""The node's own metrics (sbc.metrics.NodeCollector) and how a supervisor merges its
workers' text (sbc.aggregate): counters keep their ``_total`` name in HELP and TYPE, as
prometheus-client writes them and promtool expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sbc import aggregate, metrics
from sbc.reloads import Reloads
from tests.helpers import sample


class _Log:
    def info(self, *a: Any, **k: Any) -> None:
        pass

    error = info


def test_node_metrics_say_build_and_reloads(tmp_path: Path) -> None:
    reloads = Reloads(tmp_path, _Log(), "")
    reloads.counts["refused"] = 2
    reloads.last_success = 1234.5
    text = metrics.node_metrics(reloads).decode()
    assert sample(text, "sbc_build_info") == 1
    assert 'python_version="' in text and 'core="' in text
    assert sample(text, "sbc_config_reloads_total", result="refused") == 2
    assert sample(text, "sbc_config_reloads_total", result="accepted") == 0
    assert sample(text, "sbc_config_last_reload_success_timestamp_seconds") == 1234.5
    assert "# TYPE sbc_config_reloads_total counter" in text


def test_merge_names_counters_with_total_and_keeps_process_start_the_oldest() -> None:
    a = (
        b"# HELP x_total X.\n# TYPE x_total counter\nx_total 1.0\n"
        b"# HELP process_start_time_seconds S.\n# TYPE process_start_time_seconds gauge\n"
        b"process_start_time_seconds 100.0\n"
    )
    b = a.replace(b"x_total 1.0", b"x_total 2.0").replace(b" 100.0", b" 90.0")
    text = aggregate.merge_metrics([a, b], aggregate.gauge("own", "Own.", 3, "counter")).decode()
    assert "# HELP x_total X.\n# TYPE x_total counter\nx_total 3.0" in text
    assert sample(text, "process_start_time_seconds") == 90
    assert "# TYPE own_total counter\nown_total 3.0" in text
