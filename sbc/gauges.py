"""The lone process's or a worker's own gauges and counters for /metrics, read from the
runtime at scrape time: drain state, CDR file and backlog, TCP, HEP, reloads (a lone node),
steering (a worker)."""

from __future__ import annotations

from typing import Any


def of(rt: Any) -> list[tuple[str, str, float]]:
    """``rt``: an sbc.runtime.Runtime (not imported: it imports this module)."""
    out = [
        (
            "sbc_draining",
            "1 while the node drains after SIGTERM.",
            1.0 if rt.draining_since is not None else 0.0,
        ),
        ("sbc_cdr_records_total", "CDR records written.", float(rt.cdrs.written)),
        *rt.tcp.gauges(),
        (
            "sbc_cdr_backlog",
            "CDR records waiting for a writable file.",
            float(len(rt.spool.backlog)),
        ),
        (
            "sbc_cdr_dropped_total",
            "CDR records lost: the file was unwritable and the backlog full.",
            float(rt.spool.dropped),
        ),
    ]
    out += rt.hep.gauges()
    if rt.worker is None:
        return [*out, *rt.reloads.gauges()]
    handed, lost = rt.worker.steered  # the supervisor adds its own (reloads, workers)
    return [
        *out,
        (
            "sbc_steered_total",
            "Messages (datagrams, or read from TCP/TLS) handed to their Call-ID's worker.",
            float(handed),
        ),
        (
            "sbc_steer_lost_total",
            "Messages (or TCP/TLS writes) a sibling worker could not take (restarting, full).",
            float(lost),
        ),
    ]
