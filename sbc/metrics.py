"""Prometheus metrics, read from the pure layers at scrape time.

The call path counts in plain ints and Counters (sbc.stats, the controller, the transaction
layer); nothing here runs per message. A scrape walks those structures in the event loop
(the HTTP endpoint is served by the same loop, so there is no thread racing the counters)
and renders Prometheus text with prometheus-client. rtpengine and Redis round trips, which
the I/O adapters time, go to ordinary prometheus-client histograms.

ASR, ALOC and CPS gauges are over the trigger windows (5 minutes; CPS: the last whole
second); PromQL over the counters gives any other window:
``rate(sbc_completions_total[5m]) / rate(sbc_attempts_total[5m])``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sbc import native
from sbc.edge import REASONS
from sbc.sip.transaction import Target
from sbc.stats import WINDOW

if TYPE_CHECKING:
    from sbc.call.controller import CallController
    from sbc.reloads import Reloads
    from sbc.sip.transaction import TransactionLayer

RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class SbcCollector(Collector):
    """Everything the controller and the transaction layer know, as metric families."""

    def __init__(
        self,
        controller: Callable[[], CallController],
        layer: TransactionLayer,
        now: Callable[[], float],
        extra: Callable[[], list[tuple[str, str, float]]],
    ) -> None:
        self.controller = controller
        self.layer = layer
        self.now = now
        self.extra = extra  # the runtime's own: (name, help, value); *_total is a counter

    def collect(self) -> Iterator[Metric]:
        ctrl = self.controller()
        now = self.now()
        snap = ctrl.snapshot
        stats = ctrl.stats
        side_labels = ["trunk_group", "side"]
        attempts = CounterMetricFamily(
            "sbc_attempts",
            "Calls offered on an ingress trunk group (refused ones included), or INVITEs sent "
            "to an egress one.",
            labels=side_labels,
        )
        completions = CounterMetricFamily(
            "sbc_completions", "Answered calls (ingress) or attempts (egress).", labels=side_labels
        )
        ended = CounterMetricFamily(
            "sbc_answered_calls_ended", "Answered calls that have ended.", labels=side_labels
        )
        seconds = CounterMetricFamily(
            "sbc_answered_seconds",
            "Answered seconds of ended calls (ALOC = rate of this / rate of ended).",
            labels=side_labels,
        )
        pdd = HistogramMetricFamily(
            "sbc_pdd_seconds",
            "Post-dial delay of answered calls: INVITE to first 180/183 (or the answer).",
            labels=side_labels,
        )
        for (tg, side), t in sorted(stats.totals.items()):
            attempts.add_metric([tg, side], t.attempts)
            completions.add_metric([tg, side], t.completions)
            ended.add_metric([tg, side], t.ended)
            seconds.add_metric([tg, side], t.seconds)
            pdd.add_metric([tg, side], t.pdd.cumulative(), t.pdd.sum)
        yield from (attempts, completions, ended, seconds, pdd)

        asr = GaugeMetricFamily(
            "sbc_asr_ratio",
            f"Answer-seizure ratio over the last {WINDOW} s (absent with no attempts).",
            labels=["trunk_group"],
        )
        aloc = GaugeMetricFamily(
            "sbc_aloc_seconds",
            f"Average length of answered calls that ended in the last {WINDOW} s.",
            labels=["trunk_group"],
        )
        # No CPS gauge: rate(sbc_attempts_total{side="ingress"}[1m]) is the counter's job.
        for tg in sorted(snap.trunk_groups):
            w = stats.windows.get(("tg", tg))
            if w is None:
                continue
            ratio = w.value("asr", now, WINDOW)
            if ratio is not None:
                asr.add_metric([tg], ratio / 100)
            minutes = w.value("aloc", now, WINDOW)
            if minutes is not None:
                aloc.add_metric([tg], minutes * 60)
        yield from (asr, aloc)

        ports = ctrl.ports_in_use()
        # Ports, as the guide's admission counts them: a call holds one on its ingress trunk
        # group and one on the egress group of its current attempt, so these do not sum to
        # calls; sbc_calls is the one name for calls up.
        active = GaugeMetricFamily(
            "sbc_ports_in_use",
            "Ports (concurrent calls) held on a trunk group, ingress or egress.",
            labels=["trunk_group"],
        )
        for tg in sorted(snap.trunk_groups):
            active.add_metric([tg], ports.get(("tg", tg), 0))
        cg_active = GaugeMetricFamily(
            "sbc_capacity_group_ports_in_use",
            "Ports held on a capacity group's trunk groups.",
            labels=["capacity_group"],
        )
        for cg in sorted(snap.capacity_groups):
            cg_active.add_metric([cg], ports.get(("cg", cg), 0))
        calls = GaugeMetricFamily(
            "sbc_calls", "Calls up (in setup or answered) on this node.", value=len(ctrl.calls)
        )
        yield from (active, cg_active, calls)

        refusals = CounterMetricFamily(
            "sbc_refusals", "Calls refused, by reason.", labels=["trunk_group", "reason"]
        )
        for (tg, reason), n in sorted(ctrl.refusals.items()):
            refusals.add_metric([tg, reason], n)
        yield refusals
        dropped = CounterMetricFamily(
            "sbc_sip_dropped",
            "Messages dropped without an answer: from unknown sources, from locked-out "
            "sources, in-dialog requests not from the dialog's peer, responses from a host "
            "we did not send to.",
            labels=["reason"],
        )
        for reason in REASONS:
            dropped.add_metric([reason], ctrl.gate.drops.counts[reason])
        dropped.add_metric(["stray_response"], self.layer.strays)
        yield dropped

        up = GaugeMetricFamily(
            "sbc_trunk_up",
            "A monitored trunk is up (1) or down (0).",
            labels=["trunk_group", "trunk"],
        )
        for key, (tg, _) in sorted(ctrl.monitor.monitored.items()):
            up.add_metric([tg, str(Target(*key))], 1 if ctrl.monitor.health.is_up(key) else 0)
        transitions = CounterMetricFamily(
            "sbc_trunk_transitions", "Trunk health changes.", labels=["trunk_group", "change"]
        )
        for (tg, change), n in sorted(ctrl.monitor.transitions.items()):
            transitions.add_metric([tg, change], n)
        yield from (up, transitions)

        sip = CounterMetricFamily(
            "sbc_sip_messages",
            "SIP messages by method and status (code empty for requests): in, every message "
            "that parsed, a peer's retransmissions included; out, first transmissions only.",
            labels=["direction", "method", "code"],
        )
        for direction, counter in (("in", self.layer.received), ("out", self.layer.sent)):
            for (method, code), n in sorted(counter.items()):
                sip.add_metric([direction, method, str(code) if code else ""], n)
        yield sip

        media = CounterMetricFamily(
            "sbc_media_failures", "rtpengine commands that failed.", labels=["reason"]
        )
        for reason, n in sorted(ctrl.media.failures.items()):
            media.add_metric([reason], n)
        yield media

        firing = GaugeMetricFamily(
            "sbc_metric_trigger_firing",
            "A metric trigger is raised (1).",
            labels=["scope", "owner", "trigger"],
        )
        for scope, owner, name in sorted(ctrl.alarms.firing):
            firing.add_metric([scope, owner, name], 1)
        yield firing

        for name, doc, value in self.extra():
            if name.endswith("_total"):
                yield CounterMetricFamily(name.removesuffix("_total"), doc, value=value)
            else:
                yield GaugeMetricFamily(name, doc, value=value)


class NodeCollector(Collector):
    """What the node says once, whatever its workers: sbc_build_info, and its config
    loads (counted by result, and when the last good one was). Served by a lone runtime, or
    by the supervisor after its workers' merged metrics."""

    def __init__(self, reloads: Reloads) -> None:
        self.reloads = reloads

    def collect(self) -> Iterator[Metric]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("sbc")
        except PackageNotFoundError:  # a source tree that was never installed
            ours = "unknown"
        info = GaugeMetricFamily(
            "sbc_build_info",
            "sbc's version, the Python running it, and whether its core is mypyc or pure (1).",
            labels=["version", "python_version", "core"],
        )
        info.add_metric([ours, platform.python_version(), native.mode()], 1)
        yield info
        reloads = CounterMetricFamily(
            "sbc_config_reloads",
            "Config reloads (SIGHUP, `sbc ctl reload`), by result: accepted or refused.",
            labels=["result"],
        )
        for result in ("accepted", "refused"):
            reloads.add_metric([result], self.reloads.counts[result])
        yield reloads
        yield GaugeMetricFamily(
            "sbc_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded (startup or the last accepted reload), Unix time.",
            value=self.reloads.last_success,
        )


def node_metrics(reloads: Reloads) -> bytes:
    """The supervisor's own NodeCollector, as Prometheus text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(reloads))
    return generate_latest(registry)


class Metrics:
    """The registry: the collector plus the round-trip histograms the I/O adapters feed, the
    process and Python GC collectors of prometheus-client (process_*, python_gc_*,
    python_info), and for a lone node (``node``) the NodeCollector."""

    def __init__(self, collector: SbcCollector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        for standard in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            self.registry.register(standard)
        self.rtpengine_rtt = Histogram(
            "sbc_rtpengine_rtt_seconds",
            "rtpengine ng round trips that were answered, by command.",
            ["command"],
            buckets=RTT_BUCKETS,
            registry=self.registry,
        )
        self.redis_rtt = Histogram(
            "sbc_redis_rtt_seconds",
            "Redis round trips that were answered, by operation.",
            ["operation"],
            buckets=RTT_BUCKETS,
            registry=self.registry,
        )

    def node(self, reloads: Reloads) -> None:
        self.registry.register(NodeCollector(reloads))

    def observe_rtpengine(self, command: str, seconds: float) -> None:
        self.rtpengine_rtt.labels(command).observe(seconds)

    def observe_redis(self, operation: str, seconds: float) -> None:
        self.redis_rtt.labels(operation).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
