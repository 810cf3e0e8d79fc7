"""Messages made without a transaction user's say: the ACK for a non-2xx final and the CANCEL
(both reuse the INVITE's branch, RFC 3261 §17.1.1.3, §9.1), and the stateless answer to a
request we could not parse (§8.2.6.1, with its own raw Via, From, To, Call-ID and CSeq)."""

from __future__ import annotations

from sbc.sip.errors import reason_phrase
from sbc.sip.grammar import NameAddr, Via
from sbc.sip.message import Request, Response, canonical_name

# What a settled request holds instead of its lists: shared, never written (a held call
# keeps its settled INVITEs, and four empty lists each were about 450 B of every call).
_NO_HEADERS: list[tuple[str, str]] = []
_NO_VIAS: list[Via] = []
_NO_ADDRS: list[NameAddr] = []


def settled(req: Request) -> Request:
    """What a transaction (and the call) still needs of a request once it has its final
    answer: method, Call-ID, CSeq, From, To and Request-URI (matching, counters, records),
    without its header list, Vias, Contacts or body (the lists shared: read, never written)."""
    return Request(
        headers=_NO_HEADERS, body=b"", vias=_NO_VIAS, from_=req.from_, to=req.to,
        call_id=req.call_id, cseq=req.cseq, cseq_method=req.cseq_method,
        max_forwards=req.max_forwards, method=req.method, uri=req.uri, ruri=req.ruri,
        contacts=_NO_ADDRS, record_routes=_NO_ADDRS,
    )  # fmt: skip


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


def _split_params(raw: str) -> list[str]:
    """A via-parm cut at its semicolons, none inside a quoted string."""
    if '"' not in raw:
        return raw.split(";")
    parts, start, quoted = [], 0, False
    for i, ch in enumerate(raw):
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append(raw[start:i])
            start = i + 1
    parts.append(raw[start:])
    return parts


def stamp_raw(raw: str, host: str, port: int) -> str:
    """A top via-parm as the server transport stamps it: ``received`` with the source
    address when ``rport`` is asked for or the sent-by host is not the source (RFC 3261
    §18.2.1), and ``rport`` given the source port when asked for (RFC 3581 §4). Any
    received/rport values already there are replaced."""
    parts = _split_params(raw)
    out, asked = [parts[0]], False
    for p in parts[1:]:
        name = p.partition("=")[0].strip().lower()
        if name == "rport":
            asked = True
            out.append(f"rport={port}")
        elif name != "received":
            out.append(p)
    sent_by = parts[0].rpartition(" ")[2].strip()
    sent_host = sent_by[1 : sent_by.find("]")] if sent_by.startswith("[") else sent_by
    sent_host = sent_host.partition(":")[0] if not sent_by.startswith("[") else sent_host
    if asked or sent_host != host:
        out.append(f"received={host}")
    return ";".join(out)


def stamped(via: Via, source_host: str, source_port: int) -> Via:
    """``via`` with ``received``/``rport`` as stamp_raw puts them, for the responses that
    copy it."""
    params = dict(via.params)
    if "rport" in params:
        params["rport"] = str(source_port)
    params["received"] = source_host
    raw = stamp_raw(via.raw, source_host, source_port)
    return Via(via.transport, via.host, via.port, params, raw)


def stateless_error(
    headers: list[tuple[str, str]],
    status: int,
    source: tuple[str, int] | None = None,
    to_tag: str = "",
    server: str = "",
) -> bytes | None:
    """A response to a request we could not parse, with its raw Via, From, To, Call-ID and
    CSeq copied (§8.2.6.1): the top Via stamped for ``source`` (host, port; ``stamp_raw``),
    the To given ``to_tag`` when it has none (§8.2.6.2), and ``server`` as Server when set.
    None when one is missing or a single-value one is repeated."""
    names = [n for n, _ in headers if n in _ECHOED]
    if any(names.count(n) != 1 for n in _ECHOED[1:]) or "Via" not in names:
        return None
    lines, first_via = [], True
    for n, v in headers:
        if n not in _ECHOED:
            continue
        if n == "Via" and first_via and source is not None:
            first_via = False
            top, sep, rest = v.partition(",")
            v = stamp_raw(top.strip(), *source) + (sep + rest if sep else "")
        elif n == "To" and to_tag and ";tag=" not in v.replace(" ", "").lower():
            v = f"{v};tag={to_tag}"
        lines.append(f"{n}: {v}")
    if server:
        lines.append(f"Server: {server}")
    start = f"SIP/2.0 {status} {reason_phrase(status)}"
    return "\r\n".join([start, *lines, "Content-Length: 0", "", ""]).encode(
        "utf-8", "surrogateescape"
    )
