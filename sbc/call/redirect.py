"""Attempts to somewhere other than a trunk's configured address. Pure.

Calls to a PBX that registered with us go to its binding (``registered``); and a vendor's
3xx (RFC 3261 §8.1.3.4, §21.3) says where the call may go next (``targets``).

``redirects`` on the egress trunk group says what a redirection means:

- ``follow`` (the default): its Contacts become further attempts, tried before the next
  route, highest q first (§20.10: equal q in the order given), at most ``MAX_TARGETS`` of
  them, and at most ``MAX_FOLLOWED`` for the whole call, so two vendors redirecting to each
  other cannot loop it. Only Contacts at a host of that trunk group's trunks are followed:
  a 3xx must not steer our traffic (and its cost) to an address nobody configured. For a
  trunk named by host, those are the addresses it resolved to, and its domain itself (sent
  to its first resolved address, the domain kept in the Request-URI as RFC 3263 §4 asks).
- ``relay``: the 3xx is the caller's final answer, its Contacts with it.
- ``fail``: a route-advance failure, as a 503 would be.

    caller            sbc               vendor A            vendor A' (same trunk group)
      |--INVITE------->|--INVITE--------->|                   |
      |                |<-------------302-|  Contact: <sip:15551230000@10.0.0.7:5082>
      |                |--ACK------------>|                   |
      |                |--INVITE------------------------------>|  attempt 2, R-URI from
      |<---------200---|<----------------------------------200-|  the Contact
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sbc.config.schema import Trunk, TrunkGroup
from sbc.sip.errors import SipError
from sbc.sip.grammar import Uri, parse_uri
from sbc.sip.message import Response
from sbc.sip.transaction import Target
from sbc.state import Binding

MAX_TARGETS = 5  # Contacts followed from one 3xx
MAX_FOLLOWED = 5  # redirected attempts in one call


@dataclass(frozen=True, slots=True)
class Redirect:
    """An attempt to somewhere other than a trunk's own address, on trunk ``index`` of
    ``trunk_group`` (its credentials and media profile): sent to ``target`` with Request-URI
    ``ruri``. What a 3xx asked for (``by``: the attempt whose 3xx named it), a registered
    PBX's contact (``by`` None; sbc.call.controller), or an address a trunk named by host
    resolved to (``ruri`` None: the trunk's own, with its host; routing.srv)."""

    trunk_group: TrunkGroup
    index: int
    target: Target
    ruri: Uri | None
    by: int | None = None


def _q(value: str | None) -> float:
    try:
        return float(value) if value is not None else 1.0
    except ValueError:
        return 0.0


def targets(
    etg: TrunkGroup,
    resp: Response,
    by: int,
    followed: int,
    resolved: Callable[[Trunk], list[Target]] | None = None,
) -> list[Redirect]:
    """The attempts a 3xx from trunk group ``etg`` leads to (``followed``: redirected
    attempts the call made so far; ``resolved``: a host trunk's addresses, routing.srv)."""
    room = min(MAX_TARGETS, MAX_FOLLOWED - followed)
    if room <= 0:
        return []
    hosts = {t.ip: i for i, t in enumerate(etg.trunks) if t.type == "ip" and t.ip}
    domains: dict[str, Target] = {}  # a host trunk's domain -> its first resolved address
    for i, t in enumerate(etg.trunks):
        if t.type == "ip" and t.host and resolved is not None:
            for n, address in enumerate(resolved(t)):
                hosts.setdefault(address.host, i)
                if n == 0:
                    domains.setdefault(t.host.lower(), address)
                    hosts.setdefault(t.host.lower(), i)
    ordered = sorted(enumerate(resp.contacts), key=lambda c: (-_q(c[1].params.get("q")), c[0]))
    out: list[Redirect] = []
    for _, contact in ordered:
        uri = contact.uri
        name = uri.host.strip("[]").lower()  # an IPv6reference names the trunk's IP
        index = hosts.get(name)
        if uri.scheme not in ("sip", "sips") or index is None or not uri.user:
            continue
        trunk = etg.trunks[index]
        # sips: is TLS whatever its parameters say (RFC 3261 §26.2.2, RFC 5630 §3.1.3)
        sips = uri.scheme == "sips"
        transport = "tls" if sips else _param(uri.params, "transport") or trunk.protocol
        if transport not in ("udp", "tcp", "tls"):
            continue
        port = uri.port or (5061 if transport == "tls" else 5060)
        target = Target(transport, name, port)
        if name in domains:  # the trunk's domain: where it resolved to (SRV's port if none)
            address = domains[name]
            target = Target(transport, address.host, uri.port or address.port)
        # The Contact is the new Request-URI (§8.1.3.4), without its header parameters.
        ruri = Uri(uri.scheme, uri.user, None, uri.host, uri.port, uri.params)
        out.append(Redirect(etg, index, target, ruri, by))
        if len(out) == room:
            break
    return out


def _param(params: str, name: str) -> str:
    for p in params.split(";"):
        key, _, value = p.partition("=")
        if key.strip().lower() == name:
            return value.strip().lower()
    return ""


def registered(etg: TrunkGroup, index: int, b: Binding) -> Redirect | None:
    """A call to a PBX's account ``index`` of ``etg``, whose binding is ``b``: sent to the
    address its REGISTER came from (what NAT leaves us; RFC 5626 §3 reasons so), with its
    registered Contact as the Request-URI (RFC 3261 §16.5). None for a Contact we cannot
    use (not sip:)."""
    try:
        contact = parse_uri(b.contact)
    except SipError:
        return None
    if contact.scheme != "sip":
        return None
    ruri = Uri("sip", contact.user, None, contact.host, contact.port, contact.params)
    return Redirect(etg, index, Target(b.transport, b.host, b.port), ruri)
