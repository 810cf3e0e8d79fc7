"""Parse SIP messages from bytes (RFC 3261 §7, §18.3, §20, §25) and frame TCP streams.

``parse_message`` takes one datagram (or one framed stream message) and returns a Request or
Response, or raises ``SipError``. It is strict where the RFC 4475 torture tests ask for
strictness (start-line spacing, LWS inside URIs, unbalanced quotes, scalar ranges, duplicated
single-value headers, CSeq/method mismatch, Content-Length framing) and liberal where they ask
for liberality (folding, compact forms, odd-but-legal characters, RFC 2543 messages without
Max-Forwards or a magic-cookie branch, extra octets after the body of a datagram).

``check_request`` applies the UAS checks that come after parsing (§8.2.1-§8.2.3): URI scheme
(416), Require (420), body type (415) and Accept (406).
"""

from __future__ import annotations

from typing import TypeVar

from sbc.sip.errors import SipError
from sbc.sip.grammar import (
    NameAddr,
    Uri,
    Via,
    is_token,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_list,
)
from sbc.sip.message import CANONICAL, Request, Response

MAX_HEADER_BYTES = 32 * 1024
MAX_BODY_BYTES = 64 * 1024
# Methods we understand; others are legal tokens answered with 501 by the B2BUA.
KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)
_DIGITS = frozenset("0123456789")
_WSP = " \t"
_CSEQ_LIMIT = 2**31  # §8.1.1.5: a 32-bit unsigned integer less than 2**31


def _digits(value: str, what: str) -> int:
    if not value or not _DIGITS.issuperset(value) or len(value) > 10:
        raise SipError(400, f"bad {what}")
    return int(value)


def _unfold(lines: list[str]) -> list[str]:
    """The header lines with each continuation line joined to its field (§7.3.1): the
    field's text, one SP, then the continuation without its surrounding whitespace."""
    out: list[str] = []
    joined = -1
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not out:
                raise SipError(400, "continuation line before any header field")
            if joined != len(out):
                out[-1] = out[-1].rstrip(_WSP)
                joined = len(out)
            out[-1] += " " + line.strip(_WSP)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipError(400, "header line without a name and colon")
        _header_name(line[:colon])  # line errors come in line order, before any value's
        out.append(line)
    return out


def _header_name(name: str) -> str:
    """The canonical name of a header field (compact forms expanded, §7.3.3)."""
    canon = _NAMES.get(name)
    if canon is None:
        name = name.rstrip(_WSP)
        canon = CANONICAL.get(name.lower())
        if canon is None:
            if not is_token(name):
                raise SipError(400, "bad header name")
            canon = name
    return canon


# The names as usually spelled (canonical case, compact forms in either case), so most lines
# need neither rstrip nor lower; anything else goes through CANONICAL.
_NAMES: dict[str, str] = {c: c for c in CANONICAL.values()}
_NAMES.update((k, v) for k, v in CANONICAL.items() if len(k) == 1)
_NAMES.update((k.upper(), v) for k, v in CANONICAL.items() if len(k) == 1)
# What the value loop does per name; any other name is only kept.
_VIA, _FROM, _TO, _CALL_ID, _CSEQ, _MAX_FORWARDS, _CONTENT_LENGTH = range(1, 8)
_CONTACT, _RECORD_ROUTE, _ROUTE, _CONTENT_TYPE, _DATE = range(8, 13)
_KIND = {
    "Via": _VIA,
    "From": _FROM,
    "To": _TO,
    "Call-ID": _CALL_ID,
    "CSeq": _CSEQ,
    "Max-Forwards": _MAX_FORWARDS,
    "Content-Length": _CONTENT_LENGTH,
    "Contact": _CONTACT,
    "Record-Route": _RECORD_ROUTE,
    "Route": _ROUTE,
    "Content-Type": _CONTENT_TYPE,
    "Date": _DATE,
}


# Header values parsed lately, by their exact text. A response repeats its request's Via,
# From, To and Call-ID (§8.2.6.2), in-dialog requests their dialog's From and To (§12.2.1.1),
# a retransmission everything, and Contact, Route and the Request-URI of in-dialog requests
# (our own Contact) are often the same for every call of a peer: those are parsed once.
# Only values that parsed are kept, so a message is refused exactly when the parser would.
# The parsed objects are then shared between messages (grammar.py: never mutate them). Each
# map is emptied when full, so it stays small; the churning ones (Via branches, From tags)
# cannot evict the steady ones.
_RECENT_MAX = 512
_VIAS: dict[str, Via] = {}
_ADDRS: dict[str, NameAddr] = {}  # From, To
_CONTACTS: dict[str, NameAddr] = {}
_ROUTES: dict[str, NameAddr] = {}  # Route, Record-Route: brackets required
_URIS: dict[str, Uri] = {}  # Request-URI
# Whole lines of the headers we only keep (User-Agent, Allow, P-Asserted-Identity, ...):
# a held message shares the (name, value) pair with every other that has the same line.
_FIELDS: dict[str, tuple[str, str]] = {}
_T = TypeVar("_T")


def forget_recent() -> None:
    """Empty the caches above. Called when a busy node goes quiet (sbc.memory.quiet): their
    entries were allocated among the calls' objects, and each one left pins its allocator
    pool, so 10,000 ended calls' memory could not go back to the system while they stay."""
    for cache in (_VIAS, _ADDRS, _CONTACTS, _ROUTES, _URIS, _FIELDS):
        cache.clear()


def _keep(cache: dict[str, _T], text: str, parsed: _T) -> _T:
    if len(cache) >= _RECENT_MAX:
        cache.clear()
    cache[text] = parsed
    return parsed


def parse_message(data: bytes) -> Request | Response:
    """Parse one whole message: a UDP datagram, or one message cut from a stream."""
    start = 0
    while data.startswith(b"\r\n", start):  # §7.5: CRLFs before the start-line are ignored
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipError(400, "no empty line after the header section")
    if end - start > MAX_HEADER_BYTES:
        raise SipError(513, "header section too large")
    head = data[start:end].decode("utf-8", "surrogateescape")
    if head.count("\n") != head.count("\r"):
        raise SipError(400, "bare CR or LF in the header section")
    lines = head.split("\r\n")
    first = lines[0]
    del lines[0]
    # Header fields in one pass; folded ones (rare) are joined first. A malformed header
    # line is reported before any malformed value, wherever it is (the verdicts of the
    # two-pass parser this replaced), so a value's error waits until every line is checked.
    if "\r\n " in head or "\r\n\t" in head:
        lines = _unfold(lines)

    headers: list[tuple[str, str]] = []
    vias: list[Via] = []
    contacts: list[NameAddr] = []
    record_routes: list[NameAddr] = []
    from_: NameAddr | None = None
    to: NameAddr | None = None
    call_id: str | None = None
    cseq_text: str | None = None
    max_forwards: int | None = None
    content_length: int | None = None
    content_type = False
    late: SipError | None = None
    append = headers.append
    for line in lines:
        field = _FIELDS.get(line)
        if field is not None:  # a line that parsed before, as a header we only keep
            if late is None:
                append(field)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipError(400, "header line without a name and colon")
        name = line[:colon]
        name = _NAMES.get(name) or _header_name(name)
        if late is not None:
            continue
        value = line[colon + 1 :].strip(_WSP)
        kind = _KIND.get(name)
        if kind is None:
            append(_keep(_FIELDS, line, (name, value)))
            continue
        try:
            if kind == _VIA:
                for part in split_list(value):
                    via = _VIAS.get(part) or _keep(_VIAS, part, parse_via(part))
                    vias.append(via)
                    append(("Via", via.raw))
                continue
            if kind == _FROM:
                if from_ is not None:
                    raise SipError(400, "more than one From")
                from_ = _ADDRS.get(value) or _keep(_ADDRS, value, parse_name_addr(value))
            elif kind == _TO:
                if to is not None:
                    raise SipError(400, "more than one To")
                to = _ADDRS.get(value) or _keep(_ADDRS, value, parse_name_addr(value))
            elif kind == _CALL_ID:
                if call_id is not None:
                    raise SipError(400, "more than one Call-ID")
                # callid = word [ "@" word ]: any visible characters, no whitespace
                if not value or " " in value or "\t" in value:
                    raise SipError(400, "bad Call-ID")
                call_id = value
            elif kind == _CSEQ:
                if cseq_text is not None:
                    raise SipError(400, "more than one CSeq")
                cseq_text = value
            elif kind >= _CONTACT and kind <= _ROUTE:
                if kind == _CONTACT and value == "*":
                    append((name, value))
                    continue
                brackets = kind != _CONTACT
                cache = _ROUTES if brackets else _CONTACTS
                for part in split_list(value):
                    na = cache.get(part) or _keep(
                        cache, part, parse_name_addr(part, require_brackets=brackets)
                    )
                    if kind == _CONTACT:
                        contacts.append(na)
                    elif kind == _RECORD_ROUTE:
                        record_routes.append(na)
                    append((name, part.strip(_WSP)))
                continue
            elif kind == _MAX_FORWARDS:
                if max_forwards is not None:
                    raise SipError(400, "more than one Max-Forwards")
                max_forwards = _digits(value, "Max-Forwards")
                if max_forwards > 255:
                    raise SipError(400, "Max-Forwards above 255")
            elif kind == _CONTENT_LENGTH:
                if content_length is not None:
                    raise SipError(400, "more than one Content-Length")
                content_length = _digits(value, "Content-Length")
                continue
            elif kind == _CONTENT_TYPE:
                if content_type:
                    raise SipError(400, "more than one Content-Type")
                content_type = True
            elif not value.endswith(" GMT"):  # Date
                # SIP-date = rfc1123-date, whose only zone is "GMT" (§25.1, RFC 4475 §3.1.2.11)
                raise SipError(400, "Date not in GMT")
        except SipError as e:
            late = e
            continue
        append((name, value))
    if late is not None:
        raise late

    if from_ is None or to is None or call_id is None or cseq_text is None or not vias:
        raise SipError(400, "missing Via, From, To, Call-ID or CSeq")
    # CSeq = 1*DIGIT LWS Method
    cseq_parts = cseq_text.split()
    if len(cseq_parts) != 2 or not is_token(cseq_parts[1]):
        raise SipError(400, "bad CSeq")
    cseq = _digits(cseq_parts[0], "CSeq")
    if cseq >= _CSEQ_LIMIT:
        raise SipError(400, "CSeq out of range")
    cseq_method = cseq_parts[1]

    # Body (§18.3): on a datagram, octets past Content-Length are ignored; fewer is an error.
    body_start = end + 4
    available = len(data) - body_start
    if content_length is None:
        content_length = available
    elif content_length > available:
        raise SipError(400, "Content-Length larger than the body")
    if content_length > MAX_BODY_BYTES:
        raise SipError(513, "body too large")
    body = data[body_start : body_start + content_length]

    if first.startswith("SIP/"):
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
        version, _, rest = first.partition(" ")
        code_text, _, reason = rest.partition(" ")
        if version != "SIP/2.0":
            raise SipError(505, "version is not SIP/2.0")
        if len(code_text) != 3 or not _DIGITS.issuperset(code_text):
            raise SipError(400, "bad status code")
        status = int(code_text)
        if not 100 <= status <= 699:
            raise SipError(400, "status code out of range")
        return Response(
            headers=headers,
            body=body,
            vias=vias,
            from_=from_,
            to=to,
            call_id=call_id,
            cseq=cseq,
            cseq_method=cseq_method,
            max_forwards=max_forwards,
            contacts=contacts,
            record_routes=record_routes,
            status=status,
            reason=reason,
        )

    # Request-Line = Method SP Request-URI SP SIP-Version CRLF: exactly one SP each.
    parts = first.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipError(400, "bad Request-Line")
    method, uri_text, version = parts
    if version.upper() != "SIP/2.0":
        v = version[4:].split(".") if version.upper().startswith("SIP/") else []
        if len(v) == 2 and all(x and _DIGITS.issuperset(x) for x in v):
            raise SipError(505, "version is not SIP/2.0")
        raise SipError(400, "bad SIP-Version")
    if method not in KNOWN_METHODS and not is_token(method):
        raise SipError(400, "bad method")
    if "\t" in uri_text:
        raise SipError(400, "whitespace in Request-URI")
    ruri = _URIS.get(uri_text) or _keep(_URIS, uri_text, parse_uri(uri_text))
    if ruri.is_sip and ruri.headers:
        raise SipError(400, "headers in the Request-URI")  # RFC 4475 §3.1.2.10
    if cseq_method != method:
        raise SipError(400 if method in KNOWN_METHODS else 501, "CSeq method mismatch")
    return Request(
        headers=headers,
        body=body,
        vias=vias,
        from_=from_,
        to=to,
        call_id=call_id,
        cseq=cseq,
        cseq_method=cseq_method,
        max_forwards=max_forwards,
        contacts=contacts,
        record_routes=record_routes,
        method=method,
        uri=uri_text,
        ruri=ruri,
    )


SUPPORTED_SCHEMES = frozenset(("sip", "sips", "tel"))
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    ("timer", "100rel", "replaces")
)  # sbc.call.sessiontimer, .reliable, .replaces
_SESSION_METHODS = frozenset(("INVITE", "UPDATE", "ACK", "PRACK"))
_SDP_TYPES = ("application/sdp", "multipart/mixed")
_SDP_ACCEPT = ("application/sdp", "application/*", "*/*")


def check_request(req: Request) -> None:
    """The UAS checks of RFC 3261 §8.2 that follow a successful parse."""
    ruri: Uri | None = req.ruri
    if ruri is None or ruri.scheme not in SUPPORTED_SCHEMES:
        raise SipError(416, "unsupported Request-URI scheme")
    if req.method not in ("ACK", "CANCEL"):
        required = req.get_all("Require") + req.get_all("Proxy-Require")
        if required:
            unsupported = [
                opt.strip(" \t")
                for value in required
                for opt in value.split(",")
                if opt.strip(" \t").lower() not in SUPPORTED_EXTENSIONS
            ]
            if unsupported:
                raise SipError(
                    420, "unsupported extension", (("Unsupported", ", ".join(unsupported)),)
                )
    if req.method in _SESSION_METHODS:
        ctype = req.content_type
        if req.body and ctype is None:
            raise SipError(400, "body without Content-Type")
        if ctype is not None and req.body:
            mime = ctype.split(";", 1)[0].strip(" \t").lower()
            if mime not in _SDP_TYPES:
                raise SipError(415, "unsupported body type", (("Accept", "application/sdp"),))
        accept = req.get_all("Accept")
        if accept and req.method != "ACK":
            types = [t.split(";", 1)[0].strip(" \t").lower() for a in accept for t in a.split(",")]
            if not any(t in _SDP_ACCEPT for t in types):
                raise SipError(406, "Accept excludes application/sdp")


class StreamFramer:
    """Cuts messages out of a TCP/TLS byte stream using Content-Length (§18.3).

    On a stream Content-Length is mandatory. A header section or body over the caps, or a
    missing or malformed Content-Length, is a framing error the connection cannot recover
    from: ``feed`` raises ``SipError`` and the caller answers if it can and closes.
    Double-CRLF keep-alives (RFC 5626 §4.4.1) are reported as ``b"\\r\\n\\r\\n"``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> bool:
        """Part of a message is buffered, waiting for the rest."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while buf:
            if buf.startswith(b"\r\n"):
                if buf.startswith(b"\r\n\r\n"):
                    out.append(b"\r\n\r\n")
                    del buf[:4]
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break
                del buf[:2]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise SipError(513, "header section too large")
                break
            length = self._content_length(bytes(buf[:end]))
            total = end + 4 + length
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @staticmethod
    def _content_length(head: bytes) -> int:
        found: int | None = None
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.strip().lower() in (b"content-length", b"l"):
                v = value.strip()
                if found is not None or not v.isdigit() or len(v) > 10:
                    raise SipError(400, "bad or repeated Content-Length on a stream")
                found = int(v)
        if found is None:
            raise SipError(400, "no Content-Length on a stream")
        if found > MAX_BODY_BYTES:
            raise SipError(513, "body too large")
        return found
