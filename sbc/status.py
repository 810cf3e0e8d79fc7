"""The node's live state for `sbc status` and the admin endpoint's /status. Pure: read from
the controller at request time, never kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sbc.call.headers import trunk_target

if TYPE_CHECKING:
    from sbc.call.controller import CallController


def _health(
    ctrl: CallController, key: tuple[str, str, int], label: str, host: str = ""
) -> dict[str, Any]:
    entry: dict[str, Any] = {"trunk": label}
    if host:
        entry["host"] = host
    if key in ctrl.monitor.monitored:
        health = ctrl.monitor.health.trunks.get(key)
        entry["health"] = ctrl.monitor.health.state(key)
        entry["last_error"] = health.last_error if health is not None else ""
    else:
        entry["health"] = "unmonitored"
    return entry


def report(ctrl: CallController, now: float, node: dict[str, Any]) -> dict[str, Any]:
    """Calls, ports and CPS per trunk group and capacity group against their limits, each
    trunk's health, the raised triggers; ``node`` is what the runtime knows of itself."""
    snap = ctrl.snapshot
    ports = ctrl.ports_in_use()
    groups = []
    for tg in snap.config.trunk_groups:
        trunks = []
        for t in tg.trunks:
            if t.type != "ip":
                continue
            if t.host:  # one entry per address it resolved to (routing.srv)
                for target in ctrl.monitor.dns.addresses(t):
                    trunks.append(_health(ctrl, target.key, str(target), t.host))
                continue
            port = t.port or (5060 if tg.direction == "termination" else "any")
            trunks.append(_health(ctrl, trunk_target(t).key, f"{t.protocol}:{t.ip}:{port}"))
        groups.append(
            {
                "name": tg.name,
                "direction": tg.direction,
                "status": tg.status,
                "calls": ports.get(("tg", tg.name), 0),
                "ports": tg.limits.ports,
                "cps": ctrl.stats.cps("tg", tg.name, now),
                "cps_limit": tg.limits.cps,
                "trunks": trunks,
            }
        )
    return {
        "node": node,
        "trunk_groups": groups,
        "capacity_groups": [
            {
                "name": cg.name,
                "calls": ports.get(("cg", cg.name), 0),
                "ports": cg.ports,
                "cps": ctrl.stats.cps("cg", cg.name, now),
                "cps_limit": cg.cps,
            }
            for cg in snap.config.capacity_groups
        ],
        "alarms": [
            {"scope": scope, "owner": owner, "trigger": name}
            for scope, owner, name in sorted(ctrl.alarms.firing)
        ],
    }
