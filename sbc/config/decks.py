"""The rating half of `sbc check`: rate decks, the trunk groups and routes that use them, and
balances. Called by the loader once the YAML is valid.

Deck files are named relative to the config directory; the checked config carries their
absolute paths, so a worker process (or a reload) reads the same file whatever its working
directory. Each CSV is parsed here (routing.ratedeck.DECKS keeps it, so the snapshot built
next does not parse it again); a bad row is refused with its file, line and column header,
as a bad YAML key is.
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

import msgspec

from routing.ratedeck import DECKS, Columns, DeckError, RateDeck
from sbc.config.schema import Config, RateDeckConfig


class Locator(Protocol):
    """The loader's map from a config path to its file and line."""

    def error(self, path: tuple[str | int, ...], message: str) -> Exception: ...


def columns(deck: RateDeckConfig) -> Columns:
    c = deck.columns
    return Columns(c.prefix, c.rate, c.effective, c.description)


def load_deck(deck: RateDeckConfig, now: float | None = None) -> RateDeck:
    """The deck's codes (parsed once per version of its file in this process)."""
    return DECKS.load(
        deck.name, deck.file, columns(deck), deck.orphan_after_days, now or time.time()
    )


def check(config: Config, root: Path, located: Locator) -> Config:
    """The config with absolute deck paths, after checking every rating reference; a bad
    CSV row raises DeckError."""
    decks = []
    for i, deck in enumerate(config.rate_decks):
        path = Path(deck.file)
        if not path.is_absolute():
            path = root / path
        deck = msgspec.structs.replace(deck, file=str(path.absolute()))
        try:
            load_deck(deck)
        except DeckError as e:  # the loader names the CSV's file:line:column
            if e.line == 0 and not path.exists():
                raise located.error(("rate_decks", i, "file"), e.message) from None
            raise
        decks.append(deck)
    names = {d.name for d in decks}
    for i, tg in enumerate(config.trunk_groups):
        if tg.rate_deck and tg.rate_deck not in names:
            known = ", ".join(sorted(names)) or "none"
            raise located.error(
                ("trunk_groups", i, "rate_deck"),
                f"unknown rate deck {tg.rate_deck!r} (rate_decks defines: {known})",
            )
        if tg.max_cost:
            if tg.direction != "termination":
                raise located.error(
                    ("trunk_groups", i, "max_cost"),
                    "the margin guard skips an egress trunk group: termination ones only",
                )
            if tg.max_cost != "revenue":
                try:
                    ok = Decimal(tg.max_cost).is_finite() and Decimal(tg.max_cost) >= 0
                except InvalidOperation:
                    ok = False
                if not ok:
                    raise located.error(
                        ("trunk_groups", i, "max_cost"),
                        f"{tg.max_cost!r}: write revenue or a rate per minute such as 0.02",
                    )
    return msgspec.structs.replace(config, rate_decks=decks)
