"""Signaling manipulation per trunk group (Perimeter guide, Trunk Group chapter). Pure.

Rules run in configured order, each a Python regex search/replace (``\\1`` groups):

- ``ani`` / ``dnis``: the numbers. Ingress rules rewrite what routing sees; egress rules
  rewrite what the vendor receives.
- ``header``: a named header of the B-leg INVITE. A header that is absent is treated as
  empty, so ``search: '.*', replace: 'sbc'`` sets it.
- ``sip_code``: a final status. An egress rule rewrites the vendor's code before the route
  advance decision; an ingress rule rewrites the code the caller gets.
- ``ip``: the host of the B-leg Request-URI and To (cosmetic: the trunk's address is still
  where the INVITE goes).

Then the trunk group's number policy on what it sends: ``send_e164`` prepends '+' (never a
second one); ``send_npdi`` marks a North American number as already ported-dipped
(RFC 4694 ``;npdi`` in the Request-URI user).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sbc.config.schema import Manipulation, TrunkGroup


@dataclass(frozen=True, slots=True)
class Rule:
    """A manipulation compiled once, when the snapshot is built."""

    field: str
    header: str  # as configured; "" unless field is header
    key: str  # header, lowercased: what it is compared with
    pattern: re.Pattern[str]
    replace: str


Rules = tuple[Rule, ...]


def compile_rules(manipulations: list[Manipulation]) -> Rules:
    return tuple(
        Rule(m.field, m.header, m.header.lower(), re.compile(m.search), m.replace)
        for m in manipulations
    )


def apply(rules: Rules, field: str, value: str, header: str = "") -> str:
    """``value`` after every rule for ``field`` (and, for headers, that header name)."""
    lheader = header.lower()
    for r in rules:
        if r.field == field and (field != "header" or r.key == lheader):
            try:
                value = r.pattern.sub(r.replace, value)
            except (re.error, IndexError):  # a replacement naming a group the match lacks
                continue
    return value


def has(rules: Rules, field: str) -> bool:
    return any(r.field == field for r in rules)


def sip_code(rules: Rules, status: int) -> int:
    """A final status after the sip_code rules; unusable results are ignored."""
    if not rules or not has(rules, "sip_code"):
        return status
    out = apply(rules, "sip_code", str(status))
    if out.isdigit() and 300 <= int(out) <= 699:
        return int(out)
    return status


def e164(number: str) -> str:
    return number if number.startswith("+") else "+" + number


def npdi_user(number: str) -> str:
    """The Request-URI user of a number already dipped: '+15551230000;npdi' (RFC 4694)."""
    digits = number.lstrip("+")
    if len(digits) == 11 and digits.startswith("1") and digits.isdigit():
        return f"{number};npdi"
    return number


@dataclass(frozen=True, slots=True)
class Outbound:
    """What an egress trunk group's policy makes of the numbers and headers sent to it."""

    ani: str
    dnis: str
    ruri_user: str
    host: str | None  # an ip rule's Request-URI host, None = the trunk's
    headers: list[tuple[str, str]]


def outbound(
    tg: TrunkGroup, rules: Rules, ani: str, dnis: str, host: str, headers: list[tuple[str, str]]
) -> Outbound:
    """The numbers, Request-URI user and headers sent to ``tg`` under its ``rules``."""
    new_host: str | None = None
    if rules:
        ani = apply(rules, "ani", ani)
        dnis = apply(rules, "dnis", dnis)
        if has(rules, "ip"):
            rewritten = apply(rules, "ip", host)
            new_host = rewritten if rewritten != host else None
        names = [r.header for r in rules if r.field == "header"]
        if names:
            headers = _headers(rules, names, headers)
    if tg.send_e164:
        ani, dnis = e164(ani), e164(dnis)
    user = npdi_user(dnis) if tg.send_npdi else dnis
    return Outbound(ani, dnis, user, new_host, headers)


def _headers(
    rules: Rules, names: list[str], headers: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """A named header that is absent is added (as the rule spells it) when its rules make
    something of the empty string; one rewritten to nothing is removed."""
    wanted = {name.lower() for name in names}
    out = []
    seen = set()
    for n, v in headers:
        if n.lower() in wanted:
            seen.add(n.lower())
            v = apply(rules, "header", v, n)
            if not v:
                continue
        out.append((n, v))
    for name in dict.fromkeys(names):
        if name.lower() not in seen:
            value = apply(rules, "header", "", name)
            if value:
                out.append((name, value))
    return out
