"""Messages made without a transaction user's say: the ACK for a non-2xx final and the CANCEL
(both reuse the INVITE's branch, RFC 3261 §17.1.1.3, §9.1), and the stateless answer to a
request we could not parse (§8.2.6.1, with its own raw Via, From, To, Call-ID and CSeq)."""

from __future__ import annotations

from sbc.sip.errors import reason_phrase
from sbc.sip.grammar import NameAddr
from sbc.sip.message import Request, Response, canonical_name


def _reusing_invite(invite: Request, method: str, to: NameAddr, to_value: str) -> Request:
    """A request that keeps the INVITE's Request-URI, top Via (so its branch), From, Call-ID,
    CSeq number and Route set: the ACK for a non-2xx final and the CANCEL."""
    headers = [("Via", invite.vias[0].raw)]
    headers += [(n, v) for n, v in invite.headers if n in ("Route", "Max-Forwards", "From")]
    headers += [("To", to_value), ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq} {method}")]
    return Request(
        headers=headers,
        body=b"",
        vias=invite.vias[:1],
        from_=invite.from_,
        to=to,
        call_id=invite.call_id,
        cseq=invite.cseq,
        cseq_method=method,
        max_forwards=invite.max_forwards,
        method=method,
        uri=invite.uri,
        ruri=invite.ruri,
    )


def make_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (§17.1.1.3): To as in the response (its tag)."""
    return _reusing_invite(invite, "ACK", response.to, response.get("To") or str(response.to))


def make_cancel(invite: Request) -> Request:
    """CANCEL for a pending INVITE (§9.1): To as in the INVITE."""
    return _reusing_invite(invite, "CANCEL", invite.to, invite.get("To") or str(invite.to))


def raw_headers(data: bytes) -> list[tuple[str, str]]:
    """(canonical name, value) of each header line of a message we could not parse."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    out = []
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and "\r" not in value and "\n" not in value:
            out.append((canonical_name(name.strip()), value.strip()))
    return out


_ECHOED = ("Via", "From", "To", "Call-ID", "CSeq")


def stateless_error(headers: list[tuple[str, str]], status: int) -> bytes | None:
    """A response to a request we could not parse, with its raw Via, From, To, Call-ID and
    CSeq copied (§8.2.6.1). None when one is missing or a single-value one is repeated."""
    lines = [f"{n}: {v}" for n, v in headers if n in _ECHOED]
    names = [n for n, _ in headers if n in _ECHOED]
    if any(names.count(n) != 1 for n in _ECHOED[1:]) or "Via" not in names:
        return None
    start = f"SIP/2.0 {status} {reason_phrase(status)}"
    return "\r\n".join([start, *lines, "Content-Length: 0", "", ""]).encode(
        "utf-8", "surrogateescape"
    )
