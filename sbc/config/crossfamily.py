"""Unanchored calls across address families, found in the configuration (pure; `sbc check`).

Without anchoring (no media profile with ``anchoring: true`` on either trunk group) the SDP
crosses sbc untouched: an IPv4 caller's ``c=IN IP4`` reaches an IPv6 vendor as it is, and
an IPv6-only media gateway cannot send RTP to it (nor the caller to the vendor's ``c=IN
IP6``). Only rtpengine, with an interface of each family, rewrites the SDP to the far side's
family (media/ng.py, ``address family``).

A warning, not an error: a trunk's signalling address does not prove its media family (a
vendor may take SIP over IPv6 and run dual-stack media gateways; the SDP may name another
host), and such a configuration can carry calls. But when every trunk of the caller's trunk
group is of one family and every trunk of the egress trunk group of the other, and neither
anchors, a carrier expects to hear of it before the first one-way call: each route entry
that can do so is named, with the file and line it is written at. Trunks named by host
(A or AAAA) and registration accounts (any address) have no known family and never warn.
"""

from __future__ import annotations

from typing import Protocol

from sbc.config.families import family
from sbc.config.schema import Config, TrunkGroup


class Locator(Protocol):
    def error(self, path: tuple[str | int, ...], message: str) -> Exception: ...


def families_of(tg: TrunkGroup) -> int | None:
    """4 or 6 when every trunk of ``tg`` has an IP of that family; else None (mixed, none,
    or a trunk whose address is not known from the configuration)."""
    found = set()
    for t in tg.trunks:
        if t.host or not t.ip:
            return None
        found.add(family(t.ip))
    return found.pop() if len(found) == 1 else None


def warnings(config: Config, located: Locator) -> list[Exception]:
    """One located warning per route, numbering or forwarding entry that can send calls
    from a trunk group of one family to one of the other with media unanchored."""
    profiles = {mp.name: mp for mp in config.media_profiles}
    tgs = {tg.name: tg for tg in config.trunk_groups}

    def anchors(tg: TrunkGroup) -> bool:
        profile = profiles.get(tg.media_profile) if tg.media_profile else None
        return profile is not None and profile.anchoring

    out: list[Exception] = []
    for i, rp in enumerate(config.routeplans):
        callers = [
            tg
            for tg in config.trunk_groups
            if tg.direction == "origination" and tg.routeplan == rp.name
        ]
        entries: list[tuple[tuple[str | int, ...], str]] = [
            (("routeplans", i, "routes", j, "trunk_groups", k), name)
            for j, route in enumerate(rp.routes)
            for k, name in enumerate(route.trunk_groups)
        ]
        for section in ("numbering", "forwarding"):
            entries += [
                (("routeplans", i, section, j, "trunk_group"), item.trunk_group)
                for j, item in enumerate(getattr(rp, section))
            ]
        for path, name in entries:
            egress = tgs.get(name)
            theirs = families_of(egress) if egress is not None else None
            if egress is None or theirs is None or anchors(egress):
                continue
            crossing = [
                tg.name
                for tg in callers
                if not anchors(tg) and families_of(tg) not in (None, theirs)
            ]
            if crossing:
                ours = 6 if theirs == 4 else 4
                out.append(
                    located.error(
                        path,
                        f"{name!r} has only IPv{theirs} trunks and {', '.join(crossing)} "
                        f"(routeplan {rp.name!r}) only IPv{ours} ones, and neither anchors "
                        f"media: the caller's SDP (c=IN IP{ours}) would reach {name!r} "
                        "unchanged. Cross-family media needs anchoring: a media_profile with "
                        "anchoring: true (rtpengine with an interface of each family) on "
                        "either trunk group",
                    )
                )
    return out
