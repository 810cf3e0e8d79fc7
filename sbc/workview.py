"""The leader's view of the vendors, shared with the other workers of a node. Pure.

Worker 0 alone pings trunks (OPTIONS) and registers at vendors' registrars, so a carrier sees
one SBC's pings and one registration, never one per worker. The others hunt with its view:
each trunk's health and which of our registrations are up. A follower's own live-traffic
failures still count against a trunk until the next view (within a second) replaces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routing.health import TrunkHealth
from sbc.call.headers import trunk_target
from sbc.call.registration import Registration

if TYPE_CHECKING:
    from sbc.call.controller import CallController


def take(ctrl: CallController) -> dict[str, Any]:
    """What the leader knows, in plain tuples (they cross a pipe):
    {"health": {key: (up, failures, successes, last_error)}, "registered": {key: up}}."""
    return {
        "health": {
            key: (h.up, h.failures, h.successes, h.last_error)
            for key, h in ctrl.monitor.health.trunks.items()
        },
        "registered": {key: reg.up for key, reg in ctrl.registrations.by_key.items()},
    }


def apply(ctrl: CallController, view: dict[str, Any]) -> None:
    """Hunt with the leader's view from now on."""
    ctrl.monitor.health.trunks = {key: TrunkHealth(*h) for key, h in view["health"].items()}
    regs = ctrl.registrations.by_key
    by_name = {tg.name: tg for tg in ctrl.snapshot.config.trunk_groups}
    for key, up in view["registered"].items():
        reg = regs.get(key)
        if reg is None:
            tg = by_name.get(key[0])
            if tg is None or key[1] >= len(tg.trunks):
                continue
            trunk = tg.trunks[key[1]]
            reg = regs[key] = Registration(key, trunk, trunk_target(trunk), "", "")
        reg.up = up
    for key in set(regs) - set(view["registered"]):
        del regs[key]
