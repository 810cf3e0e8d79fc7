"""Traffic statistics per trunk group (and capacity group): cumulative totals for Prometheus,
and a five-minute window of one-second buckets for the guide's metric triggers.

Pure: the controller calls ``attempt`` / ``completion`` / ``ended`` with ``now`` at the points
where those things happen (a call per event, never per SIP message), and ``sample`` once a
second with the ports in use. Nothing here reads a clock or formats anything.

Definitions (per trunk group, its own direction: calls received on an origination trunk
group, B-leg attempts sent to a termination one):
- attempts: calls offered (ingress, refused ones included) or INVITEs sent (egress);
- completions: answered;  ASR = completions / attempts;
- minutes: answered seconds of calls that ended, / 60;  ALOC = those seconds / those calls;
- PDD: INVITE received to first 180/183 (or the answer when there was none), ingress only;
- ports: calls up (in setup or answered);  CPS: attempts per second;
- revenue, cost: the rated amounts (README, Rating) of calls that ended through the trunk
  group, either side; profit: revenue - cost of the calls rated on both sides; margin: that
  profit in % of their revenue; PPM: that profit per minute of those calls. Fed by
  ``rated`` once the call's record is made (money in Decimal; a trigger compares floats).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)

WINDOW = 300  # the guide's longest sample window: five minutes
PDD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)


@dataclass(slots=True)
class Histogram:
    """Prometheus-style: counts per upper bound (the last slot is +Inf), a sum and a count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


@dataclass(slots=True)
class Totals:
    """Since the process started, for one trunk group on one side (ingress or egress)."""

    attempts: int = 0
    completions: int = 0
    ended: int = 0  # answered calls that have ended
    seconds: float = 0.0  # their answered seconds
    pdd: Histogram = field(default_factory=lambda: Histogram(PDD_BUCKETS))


@dataclass(slots=True)
class Bucket:
    second: int = -1
    attempts: int = 0
    completions: int = 0
    ended: int = 0
    seconds: float = 0.0
    pdd_sum: float = 0.0
    pdd_n: int = 0
    ports: int = 0  # the peak sampled in this second
    revenue: Decimal = ZERO
    cost: Decimal = ZERO
    profit: Decimal = ZERO  # of calls rated on both sides
    profit_revenue: Decimal = ZERO  # their revenue
    profit_seconds: float = 0.0  # their answered seconds

    def reset(self, second: int) -> None:
        self.second = second
        self.attempts = self.completions = self.ended = self.pdd_n = self.ports = 0
        self.seconds = self.pdd_sum = self.profit_seconds = 0.0
        self.revenue = self.cost = self.profit = self.profit_revenue = ZERO


class Window:
    """The last WINDOW seconds of one scope, a bucket per second in a ring."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets = [Bucket() for _ in range(WINDOW)]

    def at(self, now: float) -> Bucket:
        second = int(now)
        b = self.buckets[second % WINDOW]
        if b.second != second:
            b.reset(second)
        return b

    def recent(self, now: float, seconds: int) -> list[Bucket]:
        """Buckets of the last ``seconds`` whole seconds, the current one included."""
        last = int(now)
        first = last - min(seconds, WINDOW) + 1
        return [b for b in self.buckets if first <= b.second <= last]

    def value(self, kind: str, now: float, seconds: int) -> float | None:
        """A trigger type's value over the window; None when it is undefined (an ASR with no
        attempts, an ALOC with no ended call, a PDD with no answer)."""
        bs = self.recent(now, seconds)
        if kind == "attempts":
            return float(sum(b.attempts for b in bs))
        if kind == "completions":
            return float(sum(b.completions for b in bs))
        if kind == "minutes":
            return sum(b.seconds for b in bs) / 60
        if kind == "asr":
            attempts = sum(b.attempts for b in bs)
            return 100.0 * sum(b.completions for b in bs) / attempts if attempts else None
        if kind == "aloc":
            ended = sum(b.ended for b in bs)
            return sum(b.seconds for b in bs) / 60 / ended if ended else None
        if kind == "pdd":
            n = sum(b.pdd_n for b in bs)
            return sum(b.pdd_sum for b in bs) / n if n else None
        if kind == "ports":
            return float(max((b.ports for b in bs), default=0))
        if kind == "cps":
            return float(max((b.attempts for b in bs), default=0))
        if kind in ("revenue", "cost", "profit"):
            return float(sum((getattr(b, kind) for b in bs), ZERO))
        profit = sum((b.profit for b in bs), ZERO)
        if kind == "margin":
            base = sum((b.profit_revenue for b in bs), ZERO)
            return float(100 * profit / base) if base else None
        if kind == "ppm":
            talked = sum(b.profit_seconds for b in bs)
            return float(profit) * 60 / talked if talked else None
        raise ValueError(kind)


class Stats:
    """Every trunk group's totals (by side) and window; capacity groups get a window too,
    fed by their member trunk groups."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], Totals] = {}  # (trunk group, ingress|egress)
        self.windows: dict[tuple[str, str], Window] = {}  # (tg|cg, name)

    def _total(self, tg: str, side: str) -> Totals:
        t = self.totals.get((tg, side))
        if t is None:
            t = self.totals[(tg, side)] = Totals()
        return t

    def window(self, scope: str, name: str) -> Window:
        w = self.windows.get((scope, name))
        if w is None:
            w = self.windows[(scope, name)] = Window()
        return w

    def _buckets(self, tg: str, cg: str, now: float) -> list[Bucket]:
        out = [self.window("tg", tg).at(now)]
        if cg:
            out.append(self.window("cg", cg).at(now))
        return out

    def attempt(self, tg: str, side: str, cg: str, now: float) -> None:
        self._total(tg, side).attempts += 1
        for b in self._buckets(tg, cg, now):
            b.attempts += 1

    def completion(self, tg: str, side: str, cg: str, pdd: float | None, now: float) -> None:
        t = self._total(tg, side)
        t.completions += 1
        if pdd is not None:
            t.pdd.observe(pdd)
        for b in self._buckets(tg, cg, now):
            b.completions += 1
            if pdd is not None:
                b.pdd_sum += pdd
                b.pdd_n += 1

    def ended(self, tg: str, side: str, cg: str, seconds: float, now: float) -> None:
        t = self._total(tg, side)
        t.ended += 1
        t.seconds += seconds
        for b in self._buckets(tg, cg, now):
            b.ended += 1
            b.seconds += seconds

    def rated(self, records: list[dict[str, Any]], cgs: dict[str, str], now: float) -> None:
        """Ended calls' records: their revenue, cost and profit count toward the windows of
        their ingress and egress trunk groups (``cgs``: trunk group -> capacity group)."""
        for rec in records:
            revenue, cost, margin = rec.get("revenue"), rec.get("cost"), rec.get("margin")
            if revenue is None and cost is None:
                continue
            r = Decimal(revenue) if revenue else ZERO
            c = Decimal(cost) if cost else ZERO
            for tg in (rec.get("trunk_group"), rec.get("egress_trunk_group")):
                if not tg:
                    continue
                for b in self._buckets(tg, cgs.get(tg, ""), now):
                    b.revenue += r
                    b.cost += c
                    if margin is not None:
                        b.profit += Decimal(margin)
                        b.profit_revenue += r
                        b.profit_seconds += float(rec.get("duration") or 0.0)

    def sample(self, ports: dict[tuple[str, str], int], now: float) -> None:
        """Ports in use right now, by (tg|cg, name); scopes not listed have none."""
        for key, w in self.windows.items():
            b = w.at(now)
            b.ports = max(b.ports, ports.get(key, 0))
        for key, n in ports.items():
            if key not in self.windows:
                b = self.window(*key).at(now)
                b.ports = max(b.ports, n)

    def cps(self, scope: str, name: str, now: float) -> int:
        """Attempts in the last whole second."""
        w = self.windows.get((scope, name))
        if w is None:
            return 0
        b = w.buckets[(int(now) - 1) % WINDOW]
        return b.attempts if b.second == int(now) - 1 else 0
