"""Trunk health: a small state machine per trunk, fed by OPTIONS probes and live traffic.

Like Kamailio's dispatcher (shared/STYLE.md §9), with the thresholds of the trunk group's
``monitoring``: a trunk is ``up`` until ``down_after`` consecutive failures (a probe that
times out, fails at the transport or is answered 503; a call attempt that times out), then
``down`` (skipped by hunting) until ``up_after`` consecutive answered probes. Any other
answer is a success, and resets the failure count.

    up --(down_after failures)--> down --(up_after successes)--> up

Pure: the caller reports outcomes; state is keyed by address so it survives reloads.
"""

from __future__ import annotations

from dataclasses import dataclass

Key = tuple[str, str, int]  # transport, ip, port


@dataclass(slots=True)
class TrunkHealth:
    up: bool = True
    failures: int = 0
    successes: int = 0
    last_error: str = ""


class Health:
    def __init__(self) -> None:
        self.trunks: dict[Key, TrunkHealth] = {}

    def is_up(self, key: Key) -> bool:
        h = self.trunks.get(key)
        return h is None or h.up

    def state(self, key: Key) -> str:
        return "up" if self.is_up(key) else "down"

    def observe(
        self, key: Key, ok: bool, down_after: int, up_after: int, error: str = ""
    ) -> str | None:
        """Record one outcome; return "up" or "down" when the trunk changes state."""
        h = self.trunks.get(key)
        if h is None:
            h = self.trunks[key] = TrunkHealth()
        if ok:
            h.failures = 0
            h.successes += 1
            if not h.up and h.successes >= up_after:
                h.up = True
                return "up"
            return None
        h.successes = 0
        h.failures += 1
        h.last_error = error
        if h.up and h.failures >= down_after:
            h.up = False
            return "down"
        return None
