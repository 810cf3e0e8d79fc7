"""Longest-prefix route lookup.

The index is a dict from prefix to value plus the set of prefix lengths in use: a lookup
tries each length once, longest first, so its cost depends on how many distinct lengths the
routeplan has (a dozen or so for E.164), not on how many prefixes (100,000 is fine).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class PrefixIndex(Generic[V]):
    """Maps a number to the value of its longest matching prefix ('' matches everything)."""

    __slots__ = ("_lengths", "_map")

    def __init__(self, items: Iterable[tuple[str, V]]) -> None:
        self._map: dict[str, V] = {}
        for prefix, value in items:
            self._map.setdefault(prefix, value)  # the first route for a prefix wins
        self._lengths = sorted({len(p) for p in self._map}, reverse=True)

    def lookup(self, number: str) -> V | None:
        get = self._map.get
        n = len(number)
        for length in self._lengths:
            if length <= n:
                value = get(number[:length])
                if value is not None:
                    return value
        return None

    def __len__(self) -> int:
        return len(self._map)
