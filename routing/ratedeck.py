"""Rate decks: a CSV of codes and per-minute rates, and the longest-prefix lookup. Pure.

The Perimeter guide (Rating chapter) loads a vendor's or customer's deck through a
"Ratedeck Mapping": which of the deck's own headers is the code, the rate, the effective
date and the description (``rate_decks[].columns``). Each row is one code's rate from its
effective date on (empty: always); a deck may hold several rows for one code, e.g. today's
rate and next month's, and the rate in force at a call's setup time applies.

Lookup is a dict probe per prefix length, longest first, bounded by the deck's longest
code: at most ~15 probes of one hash each, whatever the deck's size (lab/bench_rating.py
measures it over a million codes).

Orphan codes: a reloaded deck that no longer lists a code keeps that code's last rates for
``orphan_after_days`` from the reload that dropped it, then the code expires (a call to it
is unrated). The previous version of each deck file is remembered in this process by
``DeckCache`` (keyed by the file's path), across reloads; a restart starts from the file as
it is, so codes orphaned before the restart are gone.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

NEVER = math.inf


class DeckError(Exception):
    """A bad deck file: file, line (1-based, 0 = the file as a whole), column header."""

    def __init__(self, file: str, line: int, column: str, message: str) -> None:
        super().__init__(message)
        self.file, self.line, self.column, self.message = file, line, column, message


@dataclass(frozen=True, slots=True)
class Rate:
    """One code's rate from ``effective`` (Unix seconds; 0 = always) until ``expires``
    (an orphaned code's end; NEVER otherwise)."""

    prefix: str
    rate: Decimal  # per minute, in the deck's currency
    effective: float
    description: str
    expires: float = NEVER


@dataclass(frozen=True, slots=True)
class Columns:
    """The deck's own headers for our fields."""

    prefix: str = "prefix"
    rate: str = "rate"
    effective: str = "effective"
    description: str = "description"


@dataclass(slots=True)
class RateDeck:
    """The codes of one deck: prefix -> its rates, newest effective first."""

    name: str
    codes: dict[str, tuple[Rate, ...]] = field(default_factory=dict)
    max_len: int = 0
    loaded_at: float = 0.0
    orphans: int = 0  # codes kept only as orphans

    def lookup(self, number: str, at: float) -> Rate | None:
        """The rate in force at ``at`` for the longest code that starts ``number``; a code
        with no rate in force then (all future, or expired) gives way to a shorter one."""
        codes = self.codes
        n = min(len(number), self.max_len)
        while n > 0:
            rates = codes.get(number[:n])
            if rates is not None:
                for r in rates:
                    if r.effective <= at:
                        if at < r.expires:
                            return r
                        break
            n -= 1
        return None


def parse_effective(text: str) -> float:
    """An ISO date or date-time (UTC unless it says otherwise) as Unix seconds; empty = 0."""
    if not text:
        return 0.0
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse(name: str, file: str, text: str, columns: Columns, now: float) -> RateDeck:
    """A deck from its CSV text; DeckError names the line and column of the first bad row."""
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise DeckError(file, 0, "", "empty file: no header row") from None
    index: dict[str, int] = {h.strip(): i for i, h in enumerate(header)}
    wanted = (("prefix", columns.prefix, True), ("rate", columns.rate, True))
    optional = (("effective", columns.effective), ("description", columns.description))
    for _, col, _required in wanted:
        if col not in index:
            raise DeckError(file, 1, col, f"no column {col!r} in the header {header!r}")
    ip, ir = index[columns.prefix], index[columns.rate]
    ie = index.get(optional[0][1], -1)
    idesc = index.get(optional[1][1], -1)
    rates_pool: dict[str, Decimal] = {}
    desc_pool: dict[str, str] = {}
    rows: dict[str, list[Rate]] = {}
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ip, ir, ie, idesc):
            raise DeckError(file, line, "", f"{len(row)} cells, the header has {len(header)}")
        prefix = row[ip].strip().lstrip("+")
        if not prefix.isdigit():
            raise DeckError(file, line, columns.prefix, f"code {row[ip]!r} is not digits")
        text_rate = row[ir].strip()
        rate = rates_pool.get(text_rate)
        if rate is None:
            try:
                rate = Decimal(text_rate)
            except InvalidOperation:
                raise DeckError(
                    file, line, columns.rate, f"rate {text_rate!r}: not a number"
                ) from None
            if not rate.is_finite() or rate < 0:
                raise DeckError(file, line, columns.rate, f"rate {text_rate!r}: not >= 0")
            rates_pool[text_rate] = rate
        effective = 0.0
        if ie >= 0:
            try:
                effective = parse_effective(row[ie])
            except ValueError:
                raise DeckError(
                    file, line, columns.effective, f"date {row[ie]!r}: not ISO 8601"
                ) from None
        desc = row[idesc].strip() if idesc >= 0 else ""
        desc = desc_pool.setdefault(desc, desc)
        found = rows.get(prefix)
        r = Rate(prefix, rate, effective, desc)
        if found is None:
            rows[prefix] = [r]
        else:
            if any(x.effective == effective for x in found):
                raise DeckError(file, line, columns.prefix, f"code {prefix} twice for one date")
            found.append(r)
    deck = RateDeck(name, loaded_at=now)
    for prefix, found in rows.items():
        found.sort(key=lambda x: -x.effective)
        deck.codes[prefix] = tuple(found)
    deck.max_len = max((len(p) for p in deck.codes), default=0)
    return deck


def carry_orphans(deck: RateDeck, previous: RateDeck | None, days: int, now: float) -> None:
    """Codes of ``previous`` missing from ``deck`` stay for ``days`` from ``now`` (or from
    when they were first orphaned, if they already were)."""
    if previous is None or days <= 0:
        return
    until = now + days * 86400.0
    for prefix, rates in previous.codes.items():
        if prefix in deck.codes:
            continue
        if rates[0].expires == NEVER:
            rates = tuple(Rate(r.prefix, r.rate, r.effective, r.description, until) for r in rates)
        if rates[0].expires > now:
            deck.codes[prefix] = rates
            deck.orphans += 1
            deck.max_len = max(deck.max_len, len(prefix))


class DeckCache:
    """The decks loaded in this process, by file path: a file that has not changed (same
    size and mtime) is not parsed again (a reload, `sbc check` then the snapshot), and a
    changed one is merged with its previous version for orphan codes."""

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[tuple[int, int, str, Columns, int], RateDeck]] = {}

    def load(
        self, name: str, path: str, columns: Columns, orphan_days: int, now: float
    ) -> RateDeck:
        try:
            st = os.stat(path)
            key = (st.st_size, st.st_mtime_ns, name, columns, orphan_days)
            cached = self._by_path.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            text = Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise DeckError(path, 0, "", f"cannot read: {e}") from None
        deck = parse(name, path, text, columns, now)
        carry_orphans(deck, cached[1] if cached is not None else None, orphan_days, now)
        self._by_path[path] = (key, deck)
        return deck


DECKS = DeckCache()  # this process's decks: the memory orphan codes need across reloads
