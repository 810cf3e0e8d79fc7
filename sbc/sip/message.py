"""SIP requests and responses (RFC 3261 §7).

A message keeps every header field in order as ``(name, value)`` pairs, with known names in
their canonical spelling and compact forms expanded (§7.3.3), one pair per value for the list
headers we route on (Via, Contact, Route, Record-Route). ``Content-Length`` is framing, not
content: the serializer always writes the real body length. The parsed views (vias, from_,
to, call_id, cseq, ...) are filled in by the parser or by the builders in this module, so the
transaction layer and the B2BUA never re-parse text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sbc.sip.errors import reason_phrase
from sbc.sip.grammar import NameAddr, Uri, Via
from sbc.sip.tagdict import tag_params

# Compact forms (RFC 3261 §7.3.3, RFC 3265, RFC 3515, RFC 3892, RFC 4028, RFC 3841, RFC 4474)
# and the canonical spelling of the names we read or write. Keys are lower case.
CANONICAL: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}
for _name in (
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Route",
    "Record-Route",
    "Require",
    "Proxy-Require",
    "Supported",
    "Unsupported",
    "Allow",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Date",
    "Expires",
    "User-Agent",
    "Server",
    "Reason",
    "Retry-After",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "Privacy",
    "Diversion",
    "History-Info",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Subject",
    "Event",
    "Subscription-State",
    "Refer-To",
    "Referred-By",
    "Session-Expires",
    "Min-SE",
    "Info-Package",
    "Recv-Info",
    "Warning",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Organization",
    "Priority",
    "Timestamp",
    "RSeq",
    "RAck",
    "Allow-Events",
    "Identity",
    "Identity-Info",
    "MIME-Version",
    "Content-Transfer-Encoding",
    "Min-Expires",
    "Path",
    "Service-Route",
    "Call-Info",
    "Alert-Info",
    "Error-Info",
    "In-Reply-To",
    "Reply-To",
):
    CANONICAL[_name.lower()] = _name
del _name


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; unknown names are returned unchanged."""
    return CANONICAL.get(name.lower(), name)


Address = tuple[str, int]


@dataclass(slots=True, eq=False)
class Message:
    headers: list[tuple[str, str]]
    body: bytes
    vias: list[Via]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: int
    cseq_method: str
    max_forwards: int | None = None
    contacts: list[NameAddr] = field(default_factory=list)
    record_routes: list[NameAddr] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any spelling), or None."""
        canon = canonical_name(name)
        lname = canon.lower()
        size = len(canon)
        for n, v in self.headers:
            # names of another length cannot match: no lower() copy for each of them
            if n == canon or (len(n) == size and n.lower() == lname):
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        canon = canonical_name(name)
        lname = canon.lower()
        size = len(canon)
        return [v for n, v in self.headers if n == canon or (len(n) == size and n.lower() == lname)]

    @property
    def content_type(self) -> str | None:
        return self.get("Content-Type")

    def add_missing(self, name: str, value: str) -> None:
        """Append header ``name`` (canonical spelling) unless ``value`` is empty or the
        message has one already."""
        if value and self.get(name) is None:
            self.headers.append((name, value))

    def _serialize(self, start_line: str) -> bytes:
        # ": ".join of each (name, value) pair runs in C, unlike an f-string per header
        body = self.body
        text = "\r\n".join(
            [start_line, *map(": ".join, self.headers), f"Content-Length: {len(body)}\r\n\r\n"]
        )
        return text.encode("utf-8", "surrogateescape") + body


@dataclass(slots=True, eq=False)
class Request(Message):
    method: str = ""
    uri: str = ""  # Request-URI as received / to be sent
    ruri: Uri | None = None

    def to_bytes(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} SIP/2.0")

    @property
    def branch(self) -> str | None:
        return self.vias[0].branch if self.vias else None


@dataclass(slots=True, eq=False)
class Response(Message):
    status: int = 0
    reason: str = ""

    def to_bytes(self) -> bytes:
        return self._serialize(f"SIP/2.0 {self.status} {self.reason}")


def make_response(
    req: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``req`` per RFC 3261 §8.2.6: Via, From, Call-ID and CSeq copied, To
    copied with ``to_tag`` added unless the request's To already has one."""
    to = req.to
    to_value = req.get("To") or str(to)
    if to_tag is not None and to.tag is None:
        params = {**to.params, "tag": to_tag} if to.params else tag_params(to_tag)
        to = NameAddr(to.display, to.uri, params, to.raw_uri)
        to_value = f"{to_value};tag={to_tag}"
    hdrs: list[tuple[str, str]] = [("Via", v.raw) for v in req.vias]
    hdrs += [
        ("From", req.get("From") or str(req.from_)),
        ("To", to_value),
        ("Call-ID", req.call_id),
        ("CSeq", f"{req.cseq} {req.method}"),
    ]
    hdrs.extend(headers)
    return Response(
        headers=hdrs,
        body=body,
        vias=req.vias,
        from_=req.from_,
        to=to,
        call_id=req.call_id,
        cseq=req.cseq,
        cseq_method=req.method,
        status=status,
        reason=reason if reason is not None else reason_phrase(status),
    )


def make_request(
    method: str,
    ruri: Uri,
    *,
    via: Via,
    from_: NameAddr,
    to: NameAddr,
    call_id: str,
    cseq: int,
    max_forwards: int = 70,
    contact: NameAddr | None = None,
    routes: list[NameAddr] | tuple[NameAddr, ...] = (),
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    cseq_method: str | None = None,
) -> Request:
    """A request with the mandatory header fields of RFC 3261 §8.1.1 in their usual order."""
    hdrs: list[tuple[str, str]] = [
        ("Via", via.raw),
        ("Max-Forwards", str(max_forwards)),
        ("From", str(from_)),
        ("To", str(to)),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {cseq_method or method}"),
    ]
    hdrs.extend(("Route", str(r)) for r in routes)
    if contact is not None:
        hdrs.append(("Contact", str(contact)))
    hdrs.extend(headers)
    return Request(
        headers=hdrs,
        body=body,
        vias=[via],
        from_=from_,
        to=to,
        call_id=call_id,
        cseq=cseq,
        cseq_method=cseq_method or method,
        max_forwards=max_forwards,
        contacts=[contact] if contact is not None else [],
        method=method,
        uri=str(ruri),
        ruri=ruri,
    )


def option_tags(msg: Message, name: str) -> set[str]:
    """The comma-separated tokens of every ``name`` header (Supported, Require, Allow),
    lower-cased: what an extension check compares (RFC 3261 §20.37, §20.32)."""
    return {t.strip(" \t").lower() for v in msg.get_all(name) for t in v.split(",")}


def resend(req: Request, via: Via, cseq: int, headers: list[tuple[str, str]]) -> Request:
    """``req`` again with a new top Via and CSeq and ``headers`` added (replacing any earlier
    credentials, and any header of those names): the retry with credentials after a 401/407
    (RFC 3261 §22.2, §8.1.3.5), or with a larger Session-Expires after a 422 (RFC 4028)."""
    drop = {"Via", "Authorization", "Proxy-Authorization", *(n for n, _ in headers)}
    hdrs: list[tuple[str, str]] = [("Via", via.raw)]
    for n, v in req.headers:
        if n in drop:
            continue
        hdrs.append((n, f"{cseq} {req.cseq_method}" if n == "CSeq" else v))
    hdrs.extend(headers)
    return replace(req, headers=hdrs, vias=[via], cseq=cseq)
