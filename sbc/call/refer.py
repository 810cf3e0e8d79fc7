"""REFER (RFC 3515) through the B2BUA, for trunk groups with ``refer: relay``. Pure.

The caller's or vendor's Refer-To names an address on its own side, which the far side
cannot (and must not) reach: topology hiding holds both ways. So the far side is asked to
send its new INVITE to us instead, for the same user, and that INVITE is routed as any
other call from that trunk group. Referred-By (RFC 3892) names us the same way.

    vendor            sbc                    caller PBX
      |--REFER-------->|--REFER--------------->|  Refer-To: <sip:2000@10.0.0.9>
      |                |                       |    -> <sip:2000@<our address>>
      |<---------202---|<------------------202-|
      |<--------NOTIFY-|<---------------NOTIFY-|  message/sipfrag crosses as it is
      |                |<---------------INVITE-|  sip:2000@<our address>: a new call

An attended transfer (RFC 3891 §5) names, in the Refer-To's ``?Replaces=``, the sender's
dialog with us of its other call; the transferee sends it back to us in its INVITE, and
sbc.call.replaces takes that call to the replaced call's far party:

    caller PBX            sbc                        vendor
      |  (call 1: a1 / b1, call 2: a2 / b2, both answered)
      |--REFER (a1)-------->|--REFER (b1)--------------->|  Refer-To: <sip:..@<us>
      |  Replaces=a2;to-tag=<our a2 tag>;                |    ?Replaces=<our a2 tag>;
      |    from-tag=<PBX's a2 tag>                       |    to-tag=<our a2 tag>;from-tag=..>
      |                     |<-------------INVITE (a3)---|  the transferee, with that Replaces
      |                     |--INVITE (b3)-------------->|  Replaces: b2 as the vendor sees it
      |                     |<-------BYE (b2)------------|  -> BYE to the PBX on a2

A caller's dialog with us carries the caller's own Call-ID, which must not cross: it is
replaced by our A-leg tag (the call's id, which finds the call in the worker that minted
it). A vendor's REFER names our B-leg, whose ids we minted: its Replaces crosses as it is.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from sbc.call.model import Leg
from sbc.call.replaces import parse
from sbc.sip.errors import SipError
from sbc.sip.grammar import NameAddr, Uri, parse_name_addr
from sbc.sip.message import Request


def mapped(req: Request, host: str, port: int, leg: Leg) -> list[tuple[str, str]] | None:
    """Refer-To and Referred-By of a REFER from ``leg``, rewritten to our address
    ``host:port``, user and header parameters kept, a Replaces as above; None when the REFER
    must be refused (no Refer-To, more than one (§3.4.1), one we cannot parse, a bad
    Replaces)."""
    values = req.get_all("Refer-To")
    if len(values) != 1:
        return None
    refer_to = _ours(values[0], host, port)
    if refer_to is None:
        return None
    if "replaces" in refer_to.uri.headers.lower():
        carried = _attended(refer_to.uri.headers, leg)
        if carried is None:
            return None
        u = refer_to.uri
        moved = Uri(u.scheme, u.user, None, u.host, u.port, "", carried)
        refer_to = NameAddr(refer_to.display, moved, refer_to.params, str(moved))
    out = [("Refer-To", str(refer_to))]
    by = req.get("Referred-By")
    if by is not None:
        ours = _ours(by, host, port)
        if ours is not None:
            out.append(("Referred-By", str(ours)))
    return out


def _attended(headers: str, leg: Leg) -> str | None:
    """The Refer-To's URI headers with its Replaces as the far side may see it (RFC 3891
    §5: escaped in the URI); None when there is more than one or it is malformed."""
    parts = headers.split("&")
    found = [i for i, h in enumerate(parts) if h.partition("=")[0].strip().lower() == "replaces"]
    if len(found) != 1:
        return None
    named = parse(unquote(parts[found[0]].partition("=")[2]))
    if named is None:
        return None
    call_id, to_tag, from_tag, early_only = named
    if leg == "a":  # the caller's Call-ID stays on its side: our tag, the call's id, instead
        call_id = to_tag
    value = f"{call_id};to-tag={to_tag};from-tag={from_tag}" + (";early-only" if early_only else "")
    parts[found[0]] = "Replaces=" + quote(value, safe="")
    return "&".join(parts)


def _ours(value: str, host: str, port: int) -> NameAddr | None:
    try:
        na = parse_name_addr(value)
    except SipError:
        return None
    uri = na.uri
    if uri.scheme not in ("sip", "sips"):
        return None
    moved = Uri(uri.scheme, uri.user, None, host, port, "", uri.headers)
    params = {k: v for k, v in na.params.items()}
    text = str(moved)
    return NameAddr(na.display, moved, params, text)
