"""Hunting: the order in which a trunk group's trunks are tried for one call.

Modes are named, never numbered (shared/STYLE.md §9):
- failover: always in configured order;
- load-balance: round robin over the trunks, the rest following as fallbacks;
- weighted: smooth weighted round robin (the first choice follows the weights exactly over
  any window of sum(weights) calls), the rest by descending weight as fallbacks.
The only state is a counter or current-weight vector per trunk group, kept by the caller in a
``HuntState`` so it survives config reloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class HuntState:
    rr: dict[str, int] = field(default_factory=dict)
    current: dict[str, list[int]] = field(default_factory=dict)


def hunt_order(name: str, mode: str, weights: Sequence[int], state: HuntState) -> list[int]:
    """Indices of the trunks of trunk group ``name`` in the order to try them."""
    n = len(weights)
    if n <= 1 or mode == "failover":
        return list(range(n))
    if mode == "weighted":
        cur = state.current.get(name)
        if cur is None or len(cur) != n:
            cur = state.current[name] = [0] * n
        total = 0
        best = -1
        for i, w in enumerate(weights):
            if w <= 0:
                continue
            cur[i] += w
            total += w
            if best < 0 or cur[i] > cur[best]:
                best = i
        if best < 0:
            return list(range(n))
        cur[best] -= total
        rest = sorted((i for i in range(n) if i != best), key=lambda i: -weights[i])
        return [best, *rest]
    start = state.rr.get(name, 0) % n
    state.rr[name] = start + 1
    return [(start + i) % n for i in range(n)]
