"""Ending a relationship's calls when its balance reaches suspend_at with
``balance.on_suspend: hangup`` (sbc.cutoff decides when; the keeper tells each worker).
The stop is the drain's and `sbc ctl kill`'s: BYE both legs of an answered call (RFC 3261
§15.1.1), CANCEL (§9.1) the pending attempt of one in setup and answer its caller 503;
CDR hangup ``sbc``, reason ``balance_suspended``."""

from __future__ import annotations

from collections.abc import Callable

from sbc.call.controller import CallController

REASON = "balance_suspended"


def end_calls(ctrl: CallController, relationship: str, now: float) -> int:
    """Stop every call up from ``relationship`` (its ingress trunk group's); how many."""
    ended = 0
    for call in list(ctrl.calls.values()):
        if call.ingress.relationship == relationship and ctrl.stop(call, REASON, now):
            ended += 1
    return ended


async def ending(
    ctrl: CallController, relationship: str, now: Callable[[], float], pump: Callable[[], None]
) -> None:
    """``end_calls`` on a later turn of the loop (the keeper may be asked from inside a
    pump), then send what it says."""
    end_calls(ctrl, relationship, now())
    pump()
