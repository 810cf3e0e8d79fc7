"""Metric triggers (the guide's trunk group and capacity group triggers): thresholds on a
sample window of traffic, evaluated once a second. Pure: a config snapshot, the statistics
and ``wall`` (Unix seconds) in; crossings and recoveries out.

A trigger fires once when its condition becomes true and recovers once when it no longer
is (or when it leaves its time frame or expires, so no alarm stays raised for ever). A
window only counts once it has been observed whole: right after start (or after the
trigger appeared in a reload) "attempts less than 10 in 5 minutes" waits 5 minutes rather
than firing on an empty window. An undefined value (an ASR with no attempts) changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from routing.select import expiry
from sbc.admission import within
from sbc.config.schema import Config, MetricTrigger
from sbc.stats import Stats


@dataclass(frozen=True, slots=True)
class Alarm:
    """A crossing (``firing``) or a recovery of one trigger."""

    scope: str  # trunk_group | capacity_group
    owner: str
    trigger: MetricTrigger
    firing: bool
    value: float | None

    def payload(self, wall: float) -> dict[str, object]:
        t = self.trigger
        return {
            "event": "metric.trigger" if self.firing else "metric.recovered",
            "trigger": t.name,
            self.scope: self.owner,
            "type": t.type,
            "condition": t.condition,
            "threshold": t.value,
            "value": None if self.value is None else round(self.value, 3),
            "window": t.window,
            "contact": t.contact,
            "time": datetime.fromtimestamp(wall, UTC).isoformat(),
        }


class Alarms:
    """Which triggers are raised, and since when each trigger has been watched."""

    def __init__(self) -> None:
        self.firing: set[tuple[str, str, str]] = set()  # (scope, owner, trigger name)
        self.since: dict[tuple[str, str, str], float] = {}

    @staticmethod
    def configured(config: Config) -> list[tuple[str, str, MetricTrigger]]:
        out = [("trunk_group", tg.name, t) for tg in config.trunk_groups for t in tg.triggers]
        out += [
            ("capacity_group", cg.name, t) for cg in config.capacity_groups for t in cg.triggers
        ]
        return out

    def evaluate(self, config: Config, stats: Stats, now: float, wall: float) -> list[Alarm]:
        """``now`` is the statistics' clock (monotonic), ``wall`` the time of day."""
        out: list[Alarm] = []
        live: set[tuple[str, str, str]] = set()
        for scope, owner, t in self.configured(config):
            key = (scope, owner, t.name)
            live.add(key)
            since = self.since.setdefault(key, now)
            expires = expiry(t.expires)
            active = (expires is None or wall < expires) and (
                not t.time_frame or any(within(w, wall) for w in t.time_frame)
            )
            if not active:
                if key in self.firing:
                    self.firing.discard(key)
                    out.append(Alarm(scope, owner, t, False, None))
                continue
            if now - since < t.window:
                continue  # the window is not whole yet
            window = stats.window("tg" if scope == "trunk_group" else "cg", owner)
            value = window.value(t.type, now, t.window)
            if value is None:
                continue
            crossed = value < t.value if t.condition == "less_than" else value > t.value
            if crossed and key not in self.firing:
                self.firing.add(key)
                out.append(Alarm(scope, owner, t, True, value))
            elif not crossed and key in self.firing:
                self.firing.discard(key)
                out.append(Alarm(scope, owner, t, False, value))
        for key in set(self.since) - live:  # removed by a reload: forgotten quietly
            self.since.pop(key)
            self.firing.discard(key)
        return out
