"""`sbc explain`: what the call path would decide for one hypothetical call, sending nothing.

It runs the same pure functions the controller runs, in the same order: identification,
static admission checks (status, time of day), the ingress manipulations, select() over the
routeplan, the egress policy (manipulations, E.164, NPDI) and the hunting order. Live state
(port counts, CPS windows, trunk health, registration bindings) belongs to the running node:
given the node's `/status` (``sbc explain --live`` reads it from the admin endpoint),
explain shows each trunk's health and skips down trunks as the node would; otherwise it
reports the monitoring policy instead, and says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from routing.hunting import HuntState, hunt_order
from routing.ratedeck import Rate
from routing.select import select
from routing.srv import Answer, Key, key_of
from sbc import manipulate
from sbc.admission import identify, static_refusal, time_refusal
from sbc.call.headers import trunk_target
from sbc.config.snapshot import Snapshot
from sbc.lcr import Arranged, arrange


def explain(
    snap: Snapshot,
    source: str,
    dnis: str,
    ani: str = "15550001000",
    at: datetime | None = None,
    transport: str = "udp",
    media_ip: str = "",
    live: dict[str, Any] | None = None,
    resolved: dict[Key, Answer | str] | None = None,
) -> tuple[list[str], bool]:
    """Lines to print, and whether the call would be attempted at all. ``live``: a running
    node's status (trunk health by trunk group); ``resolved``: what each trunk named by host
    resolves to now (routing.srv), or why it does not."""
    health: dict[tuple[str, str], str] = {}
    for g in (live or {}).get("trunk_groups", []):
        for t in g.get("trunks", []):
            health[(g["name"], t["trunk"])] = t.get("health", "")
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    wall = at.timestamp()
    if source.startswith("["):  # [IPv6]:port, or [IPv6]
        host, _, port_text = source[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:  # IPv4:port, or a bare IP of either family
        host, _, port_text = source.rpartition(":") if source.count(":") == 1 else (source, "", "")
    port = int(port_text or 0)
    out = [f"call: {transport}:{host}:{port or 'any'} ani {ani} dnis {dnis} at {at.isoformat()}"]
    found = identify(snap, transport, host, port or 5060, dnis)
    if found is None:
        out.append(
            f"ingress: no trunk group claims {transport}:{host}:{port or 5060} with dnis "
            f"{dnis!r} (registered PBXs are not known offline) -> "
            f"unknown_source: {snap.config.node.unknown_source}"
        )
        return out, False
    tg, number = found
    prefix = f", tech prefix {tg.tech_prefix!r} stripped" if tg.tech_prefix else ""
    out.append(f"ingress: trunk group {tg.name} (relationship {tg.relationship or '-'}){prefix}")
    refusal = static_refusal(snap, tg) or time_refusal(tg, wall)
    if refusal is not None:
        out.append(f"admission: refused {refusal.status} ({refusal.label})")
        return out, False
    limits = ", ".join(
        f"{s.kind} {s.name}: ports {s.ports or 'unlimited'}, cps {s.cps or 'unlimited'}"
        for s in snap.scopes[tg.name]
    )
    out.append(f"admission: enabled, inside time of day; limits {limits} (live counts apply)")
    rules = snap.rules[tg.name]
    if rules:
        new_ani = manipulate.apply(rules, "ani", ani)
        new_dnis = manipulate.apply(rules, "dnis", number)
        out.append(
            f"manipulations ({tg.name}): ani {ani} -> {new_ani}, dnis {number} -> {new_dnis}"
        )
        ani, number = new_ani, new_dnis
    sel = select(snap.plans[tg.routeplan], ani, number, media_ip, wall, explain=True)
    out.append(f"routeplan {tg.routeplan}:")
    out += [f"  {step}" for step in sel.steps]
    if sel.refusal is not None:
        status, reason, label = sel.refusal
        out.append(f"result: {status} {reason} ({label})")
        return out, False
    if snap.tariffs and sel.trunk_groups:
        done = arrange(snap, tg.name, sel.trunk_groups, sel.dnis, wall, True)
        out += _rates(snap, tg.name, sel.trunk_groups, sel.dnis, done)
        if sel.lcr or done.guarded:
            kept = done.names if sel.lcr else [n for n in sel.trunk_groups if n in done.names]
            sel.trunk_groups = kept
        if not sel.trunk_groups and sel.on_failure is None:
            out.append("result: 503 Service Unavailable (max_cost)")
            return out, False
    out.append("attempts, in order (hunting state of a fresh node):")
    hunt = HuntState()
    n = 0
    groups = [(name, sel.dnis) for name in sel.trunk_groups]
    if sel.on_failure is not None:
        groups.append((sel.on_failure.trunk_group, sel.on_failure.forward_to))
    for name, called in groups:
        etg = snap.trunk_groups[name]
        if static_refusal(snap, etg) is not None:
            out.append(f"  -  {name}: skipped (disabled)")
            continue
        if time_refusal(etg, wall) is not None:
            out.append(f"  -  {name}: skipped (outside its time of day)")
            continue
        order = hunt_order(name, etg.hunting, [t.weight for t in etg.trunks], hunt)
        sent = manipulate.outbound(etg, snap.rules[name], ani, called, "", [])
        monitoring = (
            f"monitored every {etg.monitoring.interval} s, live health on the node"
            if etg.monitoring.enabled
            else "not monitored"
        )
        for i in order:
            t = etg.trunks[i]
            where = str(trunk_target(t))
            kind = "" if t.type == "ip" else " (registration: only while registered)"
            if live is not None and etg.monitoring.enabled:
                state = health.get((name, where), "unknown")
                monitoring = f"health {state} (live)"
                if state == "down":
                    out.append(f"  -  {name} {where}: skipped (down, live)")
                    continue
            n += 1
            out.append(
                f"  {n}. {name} {where}{kind} [{etg.hunting}, {monitoring}] "
                f"R-URI user {sent.ruri_user}, From {sent.ani}"
            )
            if t.type == "ip" and t.host:
                answer = (resolved or {}).get(key_of(t))
                live_of = None
                if live is not None and etg.monitoring.enabled:
                    live_of = {w: s for (g, w), s in health.items() if g == name}
                out.append(f"       {_resolution(t.host, answer, live_of)}")
    return out, n > 0


def _resolution(host: str, found: Answer | str | None, live: dict[str, str] | None = None) -> str:
    """A host trunk's addresses (RFC 3263), lowest priority first, with their live health
    when known; the node tries equal priorities in a weighted random order (RFC 2782) and
    skips those monitoring took down."""
    if found is None:
        return f"{host} -> not resolved (explain resolves only with node.dns reachable)"
    if isinstance(found, str):
        return f"{host} -> resolution failed: {found}"
    if not found.services:
        return f"{host} -> no address"
    services = sorted(found.services, key=lambda s: s.priority)
    shown = ", ".join(
        f"{t} (priority {s.priority}, weight {s.weight}"
        + (f", health {live.get(str(t), 'unknown')} (live))" if live is not None else ")")
        for s in services
        for t in s.targets
    )
    return f"{host} -> {shown}; TTL {found.ttl:g} s"


def _rates(snap: Snapshot, ingress: str, names: list[str], dnis: str, done: Arranged) -> list[str]:
    """The rating lines: the call's revenue rate and each candidate's cost rate."""
    t_in = snap.tariffs.get(ingress)

    def shown(r: Rate | None, deck: str | None) -> str:
        if deck is None:
            return "no rate deck"
        if r is None:
            return f"deck {deck}: unrated (no code for {dnis})"
        return f"deck {deck}: code {r.prefix} rate {r.rate}/min ({r.description or '-'})"

    out = [f"rating: revenue {shown(done.revenue, t_in.deck.name if t_in else None)}"]
    for name in names:
        t = snap.tariffs.get(name)
        guard = snap.trunk_groups[name].max_cost
        note = ""
        if name in done.guarded:
            note = f" -> skipped (max_cost {guard})"
        elif guard:
            note = f" (max_cost {guard}: within)"
        out.append(
            f"  {name}: cost {shown(done.rates.get(name), t.deck.name if t else None)}{note}"
        )
    return out


def render_status(state: dict[str, Any]) -> list[str]:
    """`sbc status`: a running node's /status, for a terminal."""
    node = state.get("node", {})
    draining = node.get("draining_since")
    out = [
        f"sbc pid {node.get('pid')} up since {node.get('started')}, config {node.get('config')} "
        f"loaded {node.get('config_loaded')}",
        f"calls up: {node.get('calls')}, CDRs written: {node.get('cdr_records')} "
        f"to {node.get('cdr_path')}" + (f", DRAINING since {draining}" if draining else ""),
        "",
        f"{'trunk group':<24} {'dir':<5} {'status':<9} {'calls':>9} {'cps':>9}",
    ]
    for g in state.get("trunk_groups", []):
        calls = f"{g['calls']}/{g['ports'] or '-'}"
        cps = f"{g['cps']}/{g['cps_limit'] or '-'}"
        direction = "orig" if g["direction"] == "origination" else "term"
        out.append(f"{g['name']:<24} {direction:<5} {g['status']:<9} {calls:>9} {cps:>9}")
        for t in g.get("trunks", []):
            error = f" ({t['last_error']})" if t.get("last_error") else ""
            out.append(f"    {t['trunk']:<30} {t['health']}{error}")
    for cg in state.get("capacity_groups", []):
        out.append(
            f"capacity group {cg['name']}: calls {cg['calls']}/{cg['ports'] or '-'}, "
            f"cps {cg['cps']}/{cg['cps_limit'] or '-'}"
        )
    alarms = state.get("alarms", [])
    out.append("alarms: " + (", ".join(f"{a['owner']}/{a['trigger']}" for a in alarms) or "none"))
    return out
