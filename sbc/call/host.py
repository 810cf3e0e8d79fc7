"""What the pieces of the call path may ask of the controller that holds them (sbc.call.
controller implements it). Declared here, apart from the controller, so that intake and
blegs depend on this small surface and not on the controller's module: no import circle."""

from __future__ import annotations

from typing import Protocol

from sbc.call.model import Attempt, Call, Headers, Leg
from sbc.stats import Stats


class CallHost(Protocol):
    stats: Stats

    def bind(
        self, call: Call, key: tuple[str, str], leg: Leg, attempt: Attempt | None = None
    ) -> None:
        """(Call-ID, our tag) names this leg of the call from now on."""

    def hunt_on(self, call: Call, now: float) -> None:
        """Try the call's next candidate (sbc.call.hunt)."""

    def fail_caller(
        self, call: Call, status: int, now: float, reason: str | None = None, headers: Headers = ()
    ) -> None:
        """The caller's final answer to a call that did not connect."""

    def maybe_end(self, call: Call, now: float) -> None:
        """Forget the call if nobody needs it any more (sbc.call.ending)."""
