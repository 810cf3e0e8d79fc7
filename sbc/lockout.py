"""Registrar lockout: a source (or an account) that keeps failing digest authentication is
shut out for a while. Pure: failures and ``now`` in, blocks out.

``node.registrar.lockout`` ({failures: 5, window: 60, block_for: 300, account_failures: 20}):

- per source IP: more than ``failures`` wrong credentials within ``window`` seconds block
  the IP for ``block_for`` seconds. sbc.edge then drops its REGISTERs and INVITEs before
  they are parsed: no answer, so a password guesser learns nothing more, not even that it
  was blocked.
- per account: more than ``account_failures`` within ``window``, from any sources (a guesser
  spread over many addresses), block the account for ``block_for`` seconds, except from the
  address of its live registration, so the PBX that owns it keeps working while strangers
  cannot lock it out.

What counts as a failure: a wrong response, an unknown user or an AoR that is not the
account's (sbc.registrar's verdicts); a stale nonce or a missing header is no guess.
Each block is reported once, when it starts (``Block``), for the log line fail2ban reads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from sbc.config.schema import LockoutConfig

FAILURES = frozenset(("bad_response", "unknown_user", "aor_mismatch"))
MAX_KEYS = 50_000  # failure histories kept; a spoofed flood must not grow them without bound

Scope = Literal["source", "account"]


@dataclass(frozen=True, slots=True)
class Block:
    """A block that starts now."""

    scope: Scope
    key: str  # the IP or the account name
    failures: int  # failures seen within the window


class Lockout:
    """Failure histories and blocks, by (scope, key)."""

    def __init__(self) -> None:
        self._failures: dict[tuple[Scope, str], deque[float]] = {}
        self._until: dict[tuple[Scope, str], float] = {}

    def blocked(self, scope: Scope, key: str, now: float) -> bool:
        until = self._until.get((scope, key))
        if until is None:
            return False
        if now < until:
            return True
        del self._until[(scope, key)]
        return False

    def block(self, scope: Scope, key: str, until: float) -> None:
        """A block another worker of the node started (sbc.worker)."""
        self._until[(scope, key)] = until
        while len(self._until) > MAX_KEYS:
            del self._until[next(iter(self._until))]

    def failed(self, cfg: LockoutConfig, ip: str, account: str, now: float) -> list[Block]:
        """One failed authentication from ``ip`` for ``account`` ("" when none was named):
        the blocks it starts."""
        out = []
        if ip and cfg.failures and not self.blocked("source", ip, now):
            out += self._count("source", ip, cfg.failures, cfg, now)
        if account and cfg.account_failures and not self.blocked("account", account, now):
            out += self._count("account", account, cfg.account_failures, cfg, now)
        return out

    def _count(
        self, scope: Scope, key: str, limit: int, cfg: LockoutConfig, now: float
    ) -> list[Block]:
        history = self._failures.pop((scope, key), None)
        if history is None:
            history = deque(maxlen=limit + 1)
        history.append(now)
        while history and history[0] <= now - cfg.window:
            history.popleft()
        if len(history) > limit:
            self._until[(scope, key)] = now + cfg.block_for
            while len(self._until) > MAX_KEYS:  # the oldest block goes first: O(1) each
                del self._until[next(iter(self._until))]
            return [Block(scope, key, len(history))]
        self._failures[(scope, key)] = history  # re-inserted: the dict stays oldest-first
        while len(self._failures) > MAX_KEYS:
            del self._failures[next(iter(self._failures))]
        return []

    @property
    def size(self) -> int:
        """Histories and blocks held: for the memory checks."""
        return len(self._failures) + len(self._until)
