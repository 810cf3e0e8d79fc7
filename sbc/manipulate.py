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

_compiled: dict[str, re.Pattern[str]] = {}


def _pattern(search: str) -> re.Pattern[str]:
    p = _compiled.get(search)
    if p is None:
        p = _compiled[search] = re.compile(search)
    return p


def apply(rules: list[Manipulation], field: str, value: str, header: str = "") -> str:
    """``value`` after every rule for ``field`` (and, for headers, that header name)."""
    for m in rules:
        if m.field == field and (field != "header" or m.header.lower() == header.lower()):
            try:
                value = _pattern(m.search).sub(m.replace, value)
            except (re.error, IndexError):  # a replacement naming a group the match lacks
                continue
    return value


def has(rules: list[Manipulation], field: str) -> bool:
    return any(m.field == field for m in rules)


def sip_code(tg: TrunkGroup, status: int) -> int:
    """A final status after the trunk group's sip_code rules; unusable results are ignored."""
    if not tg.manipulations or not has(tg.manipulations, "sip_code"):
        return status
    out = apply(tg.manipulations, "sip_code", str(status))
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
    tg: TrunkGroup, ani: str, dnis: str, host: str, headers: list[tuple[str, str]]
) -> Outbound:
    rules = tg.manipulations
    new_host: str | None = None
    if rules:
        ani = apply(rules, "ani", ani)
        dnis = apply(rules, "dnis", dnis)
        if has(rules, "ip"):
            rewritten = apply(rules, "ip", host)
            new_host = rewritten if rewritten != host else None
        names = [m.header for m in rules if m.field == "header"]
        if names:
            headers = _headers(rules, names, headers)
    if tg.send_e164:
        ani, dnis = e164(ani), e164(dnis)
    user = npdi_user(dnis) if tg.send_npdi else dnis
    return Outbound(ani, dnis, user, new_host, headers)


def _headers(
    rules: list[Manipulation], names: list[str], headers: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    out = []
    seen = set()
    for n, v in headers:
        if n.lower() in {x.lower() for x in names}:
            seen.add(n.lower())
            v = apply(rules, "header", v, n)
            if not v:
                continue  # rewritten to nothing: the header goes
        out.append((n, v))
    for name in dict.fromkeys(names):
        if name.lower() not in seen:
            value = apply(rules, "header", "", name)
            if value:
                out.append((name, value))
    return out
