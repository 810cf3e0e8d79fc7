"""Loading the configuration directory on SIGHUP, and the audit trail of every load.

One place for what a lone node (sbc.runtime) and a node's supervisor (sbc.supervisor) both
do: validate the whole directory; refuse it with file, line and field named and change
nothing, or accept it; count both; write an audit record of either (in the log always, and
in ``node.audit.path`` when set).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sbc import audit
from sbc.cdr import JsonLines, iso
from sbc.config import crossfamily
from sbc.config.loader import ConfigError, load_config_with_origins
from sbc.config.schema import Config
from sbc.config.snapshot import Snapshot


class Reloads:
    def __init__(self, config_dir: Path, log: Any, audit_path: str) -> None:
        self.config_dir = config_dir
        self.log = log
        self.file = JsonLines(audit_path) if audit_path else None
        self.counts = {"accepted": 0, "refused": 0}
        self.last_success = 0.0  # wall clock of the last load swapped in (startup's too)
        self.last: dict[str, Any] = {}  # the latest record (`sbc ctl reload` answers with it)
        self.actor: dict[str, Any] = {}  # who asked (`sbc ctl`: the peer's uid), while it runs

    def loaded(self, config: Config) -> None:
        self.last_success = time.time()
        self.record("config.loaded", changes=audit.changes(None, config))
        try:  # the warnings `sbc check` prints, located: the directory read once more
            _, located = load_config_with_origins(self.config_dir)
        except ConfigError:
            return  # changed since it was loaded: the next reload says what it found
        self._warn(crossfamily.warnings(config, located))

    def _warn(self, warnings: list[Exception]) -> None:
        for w in warnings:
            self.log.warning("config.warning", warning=str(w))

    def load(self, old: Config) -> Snapshot | None:
        """The directory as a new snapshot, or None (refused, logged, audited)."""
        try:
            config, located = load_config_with_origins(self.config_dir)
            snapshot = Snapshot.build(config)
        except ConfigError as e:
            self.counts["refused"] += 1
            self.log.error(
                "config.reload_failed", file=e.file, line=e.line, field=e.field, error=e.message
            )
            error = {"file": e.file, "line": e.line, "field": e.field, "message": e.message}
            self.record("config.reload_refused", error=error)
            return None
        self.counts["accepted"] += 1
        self.last_success = time.time()
        self.record("config.reloaded", changes=audit.changes(old, snapshot.config))
        self._warn(crossfamily.warnings(config, located))
        return snapshot

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"time": iso(time.time()), "event": event, "directory": str(self.config_dir)}
        record.update(self.actor)
        record.update(fields)
        if "changes" in fields:
            record["summary"] = audit.summary(fields["changes"])
        self.log.info(
            "config.audit", **{k: v for k, v in record.items() if k != "event"}, action=event
        )
        if self.file is not None:
            try:
                self.file.write(record)
            except OSError as e:
                self.log.error("audit.write_failed", path=str(self.file.path), error=str(e))
        self.last = record
        return record

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def gauges(self) -> list[tuple[str, str, float]]:
        return [
            ("sbc_config_reloads_accepted_total", "Reloads swapped in.", self.counts["accepted"]),
            (
                "sbc_config_reloads_refused_total",
                "Reloads refused (invalid config).",
                self.counts["refused"],
            ),
        ]
