"""OPTIONS monitoring of vendor trunks: when to ping, and what each outcome means. Pure.

Every IP trunk of an enabled-monitoring termination trunk group is pinged every
``monitoring.interval`` seconds; a ping is a failure when it times out (half the interval,
at most ``PROBE_TIMEOUT``), fails at the transport or is answered 503 (RFC 3261 §21.5.4:
overloaded or out of service); any other answer is a success. Live traffic reports too (an
attempt that hits its B-timer or Timer B). The outcomes feed routing.health's state
machine; this module owns which addresses are watched and when, like Kamailio's dispatcher
with ``ds_ping_interval`` (shared/STYLE.md §9).

Theory of operation: ``reconcile`` after each (re)load; the pings run on the caller's timer
heap (one deadline order for the whole layer), and after firing it the caller ``take``s the
probes to send (``SendProbe``) and the ``Transition``s timeouts caused; it reports answers
with ``answered`` and live failures with ``observe``, which return their transition.
Health is keyed by address, so it survives a reload. A trunk named by host is watched as
each address it resolved to (``dns``, routing.srv): ``dns_changed`` after a resolution that
changed them pings a new address now; one no longer resolved stops at its next ping.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from routing.health import Health, Key
from routing.srv import Resolutions
from sbc.config.schema import Monitoring, Trunk, TrunkGroup
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import ClientTransaction, Target

PROBE_TIMEOUT = 5.0  # seconds a ping may take at most: a dead trunk is down within
# interval * down_after + this


@dataclass(slots=True, eq=False)
class Probe:
    """One OPTIONS ping; the caller puts its transaction in ``tx``."""

    key: Key
    tx: ClientTransaction | None = None  # its ``quiet`` is set when the ping times out
    settled: bool = False


@dataclass(frozen=True, slots=True)
class SendProbe:
    """Send an OPTIONS to ``probe.key``, with ``probe`` as the transaction's context."""

    probe: Probe


@dataclass(frozen=True, slots=True)
class Transition:
    """A trunk went up or down."""

    trunk_group: str
    key: Key
    change: Literal["up", "down"]
    error: str


Action = SendProbe | Transition


def watched(
    trunk_groups: list[TrunkGroup], target_of: Callable[[Trunk], Target]
) -> dict[Key, tuple[str, Monitoring]]:
    """Address -> (trunk group, policy) for every monitored IP trunk (the first trunk group
    naming an address decides its policy). Trunks named by host: see Monitor.dns."""
    out: dict[Key, tuple[str, Monitoring]] = {}
    for tg in trunk_groups:
        if tg.direction == "termination" and tg.monitoring.enabled:
            for t in tg.trunks:
                if t.type == "ip" and not t.host:
                    out.setdefault(target_of(t).key, (tg.name, tg.monitoring))
    return out


class Monitor:
    def __init__(self, timers: TimerHeap) -> None:
        self.health = Health()
        self.dns = Resolutions(random.random)  # trunks named by host (sbc.resolver fills it)
        self._configured: dict[Key, tuple[str, Monitoring]] = {}
        self._monitored: dict[Key, tuple[str, Monitoring]] = {}
        self._pinging = False  # reconcile was called: this monitor pings (the leader's)
        self.transitions: Counter[tuple[str, str]] = Counter()  # (trunk group, up|down)
        self._probing: set[Key] = set()  # addresses with a ping timer armed
        self._timers = timers  # shared with the rest of the layer: one deadline order
        self._out: list[Action] = []

    @property
    def monitored(self) -> dict[Key, tuple[str, Monitoring]]:
        """The watched addresses: the configured ones and those trunks' hosts resolved to."""
        return self._monitored

    @monitored.setter
    def monitored(self, configured: dict[Key, tuple[str, Monitoring]]) -> None:
        self._configured = configured
        self._monitored = {**self.dns.watched(), **configured}

    def reconcile(self, monitored: dict[Key, tuple[str, Monitoring]], now: float) -> None:
        """Watch exactly ``monitored`` (and the resolved addresses) from now on; a newly
        watched address is pinged now, one no longer watched stops at its next ping."""
        self.monitored = monitored
        self._pinging = True
        self._arm(now)

    def dns_changed(self, now: float) -> None:
        """A host trunk resolved to other addresses: watch them instead."""
        self.monitored = self._configured
        if self._pinging:
            self._arm(now)

    def _arm(self, now: float) -> None:
        for key in self._monitored:
            if key not in self._probing:
                self._probing.add(key)
                self._timers.arm(now, key, "probe", self)

    def is_up(self, key: Key) -> bool:
        return self.health.is_up(key)

    def take(self) -> list[Action]:
        """What the pings' timers decided since the last call: probes to send, transitions."""
        out, self._out = self._out, []
        return out

    def _timer_probe(self, key: Key, now: float) -> None:
        entry = self.monitored.get(key)
        if entry is None:
            self._probing.discard(key)
            return
        policy = entry[1]
        probe = Probe(key)
        self._out.append(SendProbe(probe))
        timeout = now + min(policy.interval / 2, PROBE_TIMEOUT)
        self._timers.arm(timeout, probe, "probe_timeout", self)
        self._timers.arm(now + policy.interval, key, "probe", self)

    def _timer_probe_timeout(self, probe: Probe, now: float) -> None:
        if not probe.settled:
            if probe.tx is not None:
                probe.tx.quiet = True  # stop retransmitting a ping nobody answers
            transition = self.answered(probe, False, "timeout")
            if transition is not None:
                self._out.append(transition)

    def answered(self, probe: Probe, ok: bool, error: str) -> Transition | None:
        """A ping's outcome (its answer, or its transaction's failure); only the first
        counts."""
        if probe.settled:
            return None
        probe.settled = True
        probe.tx = None  # it is the transaction's ctx: no cycle left behind
        return self.observe(probe.key, ok, error)

    def observe(self, key: Key, ok: bool, error: str) -> Transition | None:
        """One outcome for a monitored address, from a ping or from live traffic."""
        entry = self.monitored.get(key)
        if entry is None:
            return None
        tg_name, policy = entry
        change = self.health.observe(key, ok, policy.down_after, policy.up_after, error)
        if change is None:
            return None
        self.transitions[(tg_name, change)] += 1
        return Transition(tg_name, key, "up" if change == "up" else "down", error)
