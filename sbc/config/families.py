"""IPv4 and IPv6 in the configuration (pure): IP literals in one spelling, and the address we
tell peers of each family to send to.

A socket names an IPv6 peer in its compressed, lower-case form (``::1``, ``2001:db8::5``);
``canonical`` rewrites every IP literal of the config (listen addresses, switch_ip, trunk IPs)
so, and trunk identification, dialog checks and duplicate checks compare like with like.

Dual stack: a node may listen on IPv4 and IPv6 at once. A peer is told (Via, Contact, From,
our SDP address via rtpengine) an address of its own family (``advertised``): switch_ip when
it is of that family, else ``switch_ip6`` for IPv6, else the first listen address of that
family that names one host (not ``0.0.0.0`` / ``::``).
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

import msgspec

from sbc.config.schema import Config


class Locator(Protocol):
    def error(self, path: tuple[str | int, ...], message: str) -> Exception: ...


def family(host: str) -> int:
    """4 or 6: the family of an IP literal (an IPv6 one has colons, bracketed or not)."""
    return 6 if ":" in host else 4


def _canon(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip("[]") if ":" in value else value))
    except ValueError:
        return value  # not an IP: the loader's checks say so where it matters


def canonical(config: Config) -> Config:
    """The config with every IP literal spelled as sockets spell it."""
    node = config.node
    listen = [msgspec.structs.replace(x, address=_canon(x.address)) for x in node.listen]
    node = msgspec.structs.replace(
        node, listen=listen, switch_ip=_canon(node.switch_ip), switch_ip6=_canon(node.switch_ip6)
    )
    groups = []
    for tg in config.trunk_groups:
        trunks = [msgspec.structs.replace(t, ip=_canon(t.ip)) if t.ip else t for t in tg.trunks]
        groups.append(msgspec.structs.replace(tg, trunks=trunks))
    return msgspec.structs.replace(config, node=node, trunk_groups=groups)


def _specific(address: str) -> bool:
    return not ipaddress.ip_address(address).is_unspecified


def advertised(config: Config) -> dict[int, str]:
    """Family (4, 6) -> the address peers of that family are told, for each family the
    node listens on."""
    node = config.node
    out: dict[int, str] = {}
    for x in node.listen:
        f = family(x.address)
        if f in out:
            continue
        if family(node.switch_ip) == f:
            out[f] = node.switch_ip
        elif f == 6 and node.switch_ip6:
            out[f] = node.switch_ip6
        else:
            first = [
                y.address for y in node.listen if family(y.address) == f and _specific(y.address)
            ]
            if first:
                out[f] = first[0]
    return out


def check(config: Config, located: Locator) -> None:
    """switch_ip6 is an IPv6 address; every family we listen on has an address to advertise."""
    node = config.node
    if node.switch_ip6:
        try:
            ipaddress.IPv6Address(node.switch_ip6)
        except ValueError:
            raise located.error(("node", "switch_ip6"), "must be an IPv6 address") from None
    have = advertised(config)
    for i, x in enumerate(node.listen):
        f = family(x.address)
        if f not in have:
            hint = "set node.switch_ip6" if f == 6 else "set node.switch_ip to an IPv4 address"
            raise located.error(
                ("node", "listen", i, "address"),
                f"{x.address} names no address to tell IPv{f} peers: {hint}",
            )
