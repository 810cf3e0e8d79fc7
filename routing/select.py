"""Routing as a pure function: which egress trunk groups, in which order, for one call.

``select(plan, ani, dnis, media_ip, wall)`` applies a compiled routeplan in the Perimeter
guide's order (Routing chapter) and explains itself, so `sbc explain` prints exactly what the
call path decides:

1. triggers: a matching trigger is reported (a log event, an optional webhook), never delays;
2. filters (ani, dnis, media_ip, 404): the first live match refuses the call with its code;
3. forwarding that is not on_failure: the number is replaced and sent through its trunk group;
4. numbering: a DID or toll-free number goes to the trunk group that owns it;
5. routes: the longest DNIS prefix gives the ordered egress trunk groups;
6. forwarding on_failure: its trunk group (with the new number) is tried after all of those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from routing.plan import PrefixIndex
from sbc.config.schema import Filter, Forwarding, RoutePlan, Trigger, TriggerMatch


def expiry(text: str) -> float | None:
    """An ISO date or date-time (UTC unless it says otherwise) as Unix seconds."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    filter: Filter
    pattern: re.Pattern[str] | None  # a regex value
    values: frozenset[str]  # a list value
    expires: float | None

    def matches(self, text: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        return text in self.values


@dataclass(frozen=True, slots=True)
class CompiledTrigger:
    trigger: Trigger
    expires: float | None


class CompiledPlan:
    """A routeplan with its lookups built once per snapshot."""

    def __init__(self, plan: RoutePlan) -> None:
        self.plan = plan
        self.routes = PrefixIndex((r.prefix, r) for r in plan.routes)
        self.filters = []
        for f in plan.filters:
            if isinstance(f.value, str):
                cf = CompiledFilter(f, re.compile(f.value), frozenset(), expiry(f.expires))
            else:
                cf = CompiledFilter(f, None, frozenset(f.value), expiry(f.expires))
            self.filters.append(cf)
        self.numbering = {n.number: n for n in plan.numbering}
        self.forwarding: dict[str, Forwarding] = {f.number: f for f in plan.forwarding}
        self.triggers = [CompiledTrigger(t, expiry(t.expires)) for t in plan.triggers]


@dataclass(slots=True)
class Selection:
    """The routing decision for one call, with the reasons, step by step."""

    dnis: str  # the number to send (forwarding may change it)
    trunk_groups: list[str] = field(default_factory=list)  # egress, in hunting order
    refusal: tuple[int, str, str] | None = None  # status, reason phrase, label
    triggers: list[Trigger] = field(default_factory=list)
    on_failure: Forwarding | None = None  # tried after trunk_groups, with its number
    steps: list[str] = field(default_factory=list)  # only when explaining
    matched: str = ""  # what decided: "route <prefix>", "numbering", "forwarding", ...
    lcr: bool = False  # the route asks for least-cost order (sbc.lcr)
    guarded: list[str] = field(default_factory=list)  # left out by a margin guard (sbc.lcr)


def _match(m: TriggerMatch | None, number: str) -> bool:
    if m is None:
        return True
    if m.anonymous and number.lower() in ("anonymous", "", "restricted", "unavailable"):
        return True
    if m.exact and number == m.exact:
        return True
    return bool(m.prefix) and number.startswith(m.prefix)


def select(
    plan: CompiledPlan, ani: str, dnis: str, media_ip: str, wall: float, explain: bool = False
) -> Selection:
    """The decision; with ``explain`` also the reasons as text (off on the call path: no
    string building per call)."""
    sel = Selection(dnis=dnis)
    for ct in plan.triggers:
        t = ct.trigger
        if ct.expires is not None and wall >= ct.expires:
            continue
        if (
            (t.to is not None or t.from_ is not None)
            and _match(t.to, dnis)
            and _match(t.from_, ani)
        ):
            sel.triggers.append(t)
            if explain:
                sel.steps.append(f"trigger {t.name!r} matches: notify")
    subjects = {"ani": ani, "dnis": dnis, "media_ip": media_ip, "404": dnis} if plan.filters else {}
    for cf in plan.filters:
        f = cf.filter
        if cf.expires is not None and wall >= cf.expires:
            if explain:
                sel.steps.append(f"filter {f.type} {f.value!r} expired {f.expires}: skipped")
            continue
        if cf.matches(subjects[f.type]):
            code, text = (404, "Not Found") if f.type == "404" else (f.error_code, f.error_message)
            sel.refusal = (code, text, f"filter_{f.type}")
            if explain:
                sel.steps.append(
                    f"filter {f.type} {f.value!r} matches {subjects[f.type]!r}: {code}"
                )
            return sel
    fwd = plan.forwarding.get(dnis)
    if fwd is not None and not fwd.on_failure:
        sel.dnis = fwd.forward_to
        sel.trunk_groups = [fwd.trunk_group]
        sel.matched = "forwarding"
        if explain:
            sel.steps.append(f"forwarding {dnis} -> {fwd.forward_to} via {fwd.trunk_group}")
        return sel
    owned = plan.numbering.get(dnis)
    if owned is not None:
        sel.trunk_groups = [owned.trunk_group]
        sel.matched = "numbering"
        if explain:
            sel.steps.append(
                f"numbering: {owned.number_type} {dnis} belongs to {owned.trunk_group}"
            )
    else:
        route = plan.routes.lookup(dnis)
        if route is None:
            if explain:
                sel.steps.append(f"no route for {dnis!r}")
        else:
            sel.trunk_groups = list(route.trunk_groups)
            sel.matched = f"route {route.prefix}"
            sel.lcr = route.order == "lcr"
            if explain:
                order = " (order: lcr)" if sel.lcr else ""
                sel.steps.append(
                    f"route prefix {route.prefix!r} -> {', '.join(route.trunk_groups)}{order}"
                )
    if fwd is not None:  # on_failure
        sel.on_failure = fwd
        if explain:
            sel.steps.append(
                f"forwarding on failure: {dnis} -> {fwd.forward_to} via {fwd.trunk_group}"
            )
    if not sel.trunk_groups and sel.on_failure is None:
        sel.refusal = (404, "No Route", "no_route")
    return sel
