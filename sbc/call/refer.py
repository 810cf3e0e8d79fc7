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

An attended transfer (Refer-To with ``?Replaces=``, RFC 3891) would name a dialog the far
side never saw; sbc cannot map that yet, so it is refused 403 rather than half done.
"""

from __future__ import annotations

from sbc.sip.errors import SipError
from sbc.sip.grammar import NameAddr, Uri, parse_name_addr
from sbc.sip.message import Request


def mapped(req: Request, host: str, port: int) -> list[tuple[str, str]] | None:
    """Refer-To and Referred-By rewritten to our address ``host:port``, user and header
    parameters kept; None when the REFER must be refused (no Refer-To, more than one
    (§3.4.1), one we cannot parse, or an attended transfer)."""
    values = req.get_all("Refer-To")
    if len(values) != 1:
        return None
    refer_to = _ours(values[0], host, port)
    if refer_to is None or "replaces" in refer_to.uri.headers.lower():
        return None
    out = [("Refer-To", str(refer_to))]
    by = req.get("Referred-By")
    if by is not None:
        ours = _ours(by, host, port)
        if ours is not None:
            out.append(("Referred-By", str(ours)))
    return out


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
