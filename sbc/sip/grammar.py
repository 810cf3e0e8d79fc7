"""RFC 3261 §25 grammar for the header fields the SBC must understand.

Each parser sits under the ABNF it implements. They work on already-unfolded header values
(the parser turns ``CRLF 1*WSP`` into one SP, §7.3.1) and use str methods and character sets,
not regular expressions, because they run for every message on the hot path. Any deviation
raises ``SipError(400)``; nothing else may escape.

Uri, NameAddr and Via are values: the parser shares one parsed object between the messages
that carry the same header text, and ``str()`` of a Uri or NameAddr is computed once and kept.
Never assign to their fields or change their ``params``; build a new one instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sbc.sip.errors import SipError
from sbc.sip.tagdict import tag_params

# alphanum = ALPHA / DIGIT
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = _ALNUM | frozenset("-.!%*_+`'~")
# mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")" ; unreserved = alphanum / mark
_UNRESERVED = _ALNUM | frozenset("-_.!~*'()")
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
_USER_CHARS = _UNRESERVED | frozenset("&=+$,;?/%")
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_CHARS = _UNRESERVED | frozenset("&=+$,%")
# paramchar = param-unreserved / unreserved / escaped ; param-unreserved = "[" / "]" / "/" /
# ":" / "&" / "+" / "$"   (plus the ";" and "=" that separate uri-parameters)
_URI_PARAM_CHARS = _UNRESERVED | frozenset("[]/:&+$%;=")
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"  (plus "=" and "&" separators)
_URI_HEADER_CHARS = _UNRESERVED | frozenset("[]/?:+$%=&")
# hostname = *( domainlabel "." ) toplabel [ "." ] ; IPv4address ; IPv6reference
_HOST_CHARS = _ALNUM | frozenset("-.")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_HEX = frozenset("0123456789abcdefABCDEF")
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_CHARS = _ALNUM | frozenset("+-.")
# opaque URI text for schemes we do not interpret: anything visible but the delimiters of
# name-addr, so a foreign URI cannot smuggle whitespace, quotes or angle brackets.
_WS = frozenset(" \t\r\n")
_OPAQUE_BAD = _WS | frozenset('<>"')
_DIGITS = frozenset("0123456789")
# gen-value = token / host / quoted-string (host includes IPv6 references)
_PARAM_VALUE_CHARS = TOKEN_CHARS | _IPV6_CHARS | frozenset("[]")


def is_token(s: str) -> bool:
    """token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")."""
    return bool(s) and TOKEN_CHARS.issuperset(s)


def _bad(detail: str) -> SipError:
    return SipError(400, detail)


def _check_escapes(s: str, what: str) -> None:
    # escaped = "%" HEXDIG HEXDIG
    i = s.find("%")
    while i >= 0:
        pair = s[i + 1 : i + 3]
        if len(pair) != 2 or not _HEX.issuperset(pair):
            raise _bad(f"bad escape in {what}")
        i = s.find("%", i + 3)


def parse_port(s: str) -> int:
    """port = 1*DIGIT, here 1..65535."""
    if not s or not _DIGITS.issuperset(s) or len(s) > 5:
        raise _bad("bad port")
    port = int(s)
    if not 0 < port < 65536:
        raise _bad("port out of range")
    return port


def check_host(host: str) -> None:
    """host = hostname / IPv4address / IPv6reference."""
    if not host:
        raise _bad("empty host")
    if host[0] == "[":
        if host[-1] != "]" or len(host) < 4 or not _IPV6_CHARS.issuperset(host[1:-1]):
            raise _bad("bad IPv6 reference")
    elif not _HOST_CHARS.issuperset(host):
        raise _bad("bad host")


def split_hostport(hostport: str) -> tuple[str, int | None]:
    """hostport = host [ ":" port ]; an IPv6 reference keeps its brackets."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad("unterminated IPv6 reference")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if not rest:
            port = None
        elif rest[0] == ":":
            port = parse_port(rest[1:])
        else:
            raise _bad("junk after IPv6 reference")
    else:
        host, sep, p = hostport.partition(":")
        port = parse_port(p) if sep else None
    check_host(host)
    return host, port


@dataclass(slots=True)
class Uri:
    """A parsed URI. SIP and SIPS URIs are split into parts (RFC 3261 §19.1.1); for other
    schemes (tel, isbn, http, ...) only ``scheme`` and ``opaque`` are filled in. The user part
    stays escaped exactly as received, because unescaping is the application's business and
    must never shorten it at an escaped NUL (RFC 4475 §3.1.1.4)."""

    scheme: str
    user: str = ""
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: str = ""  # ";a=b;lr" as received, without the leading ";"
    headers: str = ""  # "a=b&c=d" as received, without the leading "?"
    opaque: str = ""
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> str | None:
        """The value of uri-parameter ``name`` ('' for a flag), or None when absent."""
        if not self.params:
            return None
        name = name.lower()
        for item in self.params.split(";"):
            key, _, value = item.partition("=")
            if key.lower() == name:
                return value
        return None

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._text = self._format()
        return text

    def _format(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        if self.params:
            out += [";", self.params]
        if self.headers:
            out += ["?", self.headers]
        return "".join(out)


_SCHEMES = {"sip": "sip", "sips": "sips", "tel": "tel"}


def parse_uri(s: str) -> Uri:
    """absoluteURI / SIP-URI / SIPS-URI.

    SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
    """
    colon = s.find(":")
    if colon == 3 and s.startswith("sip"):  # the usual spelling: one shared scheme string
        scheme = "sip"
    else:
        if colon <= 0:
            raise _bad("URI without scheme")
        scheme = s[:colon]
        if not (scheme[0].isascii() and scheme[0].isalpha()) or not _SCHEME_CHARS.issuperset(
            scheme
        ):
            raise _bad("bad URI scheme")
        scheme = _SCHEMES.get(scheme) or scheme.lower()
    rest = s[colon + 1 :]
    if not rest:
        raise _bad("empty URI")
    if scheme not in ("sip", "sips"):
        if not _OPAQUE_BAD.isdisjoint(rest):
            raise _bad("bad character in URI")
        return Uri(scheme=scheme, opaque=rest)
    # A SIP URI holds at most one unescaped "@": neither host, params nor headers may.
    at = rest.find("@")
    user = ""
    password: str | None = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        if not user or not _USER_CHARS.issuperset(user):
            raise _bad("bad URI user")
        if sep:
            if not _PASSWORD_CHARS.issuperset(pw):
                raise _bad("bad URI password")
            password = pw
            if "%" in pw:
                _check_escapes(pw, "URI password")
        if "%" in user:
            _check_escapes(user, "URI user")
    headers = ""
    q = rest.find("?")
    if q >= 0:
        rest, headers = rest[:q], rest[q + 1 :]
        if not headers or not _URI_HEADER_CHARS.issuperset(headers):
            raise _bad("bad URI headers")
    params = ""
    semi = rest.find(";")
    if semi >= 0:
        rest, params = rest[:semi], rest[semi + 1 :]
        if not _URI_PARAM_CHARS.issuperset(params) or "" in params.split(";"):
            raise _bad("bad URI parameters")
        if "%" in params:
            _check_escapes(params, "URI parameters")
    if rest[:1] == "[":
        host, port = split_hostport(rest)
    else:  # split_hostport and check_host inlined: a host name or IPv4 address
        host, sep, p = rest.partition(":")
        port = parse_port(p) if sep else None
        if not host:
            raise _bad("empty host")
        if not _HOST_CHARS.issuperset(host):
            raise _bad("bad host")
    return Uri(scheme, user, password, host, port, params, headers)


def find_quote_end(s: str, start: int) -> int:
    """Index just past the quoted-string that opens at ``s[start] == '"'``.

    quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
    quoted-pair   = "\\" (%x00-09 / %x0B-0C / %x0E-7F)
    """
    i = start + 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return i + 1
        if c == "\\":
            if i + 1 >= n or s[i + 1] in "\r\n":
                break
            i += 2
            continue
        i += 1
    raise _bad("unterminated quoted string")


def unquote(s: str) -> str:
    """The text of a quoted-string (with its quotes), quoted-pairs resolved."""
    inner = s[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            i += 1
        out.append(inner[i])
        i += 1
    return "".join(out)


def quote(s: str) -> str:
    """A quoted-string holding ``s``."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(s: str) -> dict[str, str | None]:
    """*( SEMI generic-param ), given the text after the first ";".

    generic-param = token [ EQUAL gen-value ] ; gen-value = token / host / quoted-string
    Names are lowercased; quoted values keep their quotes so they serialize unchanged.
    """
    if '"' in s:
        return _parse_params_quoted(s)
    # No quoted-string: every ";" separates parameters and every first "=" a value, so str
    # methods do what the scan below does, several times faster (this runs for each Via,
    # From, To and Contact of every message).
    params: dict[str, str | None] = {}
    for item in s.split(";"):
        name, eq, value = item.partition("=")
        name = name.strip(" \t")
        if not name or not TOKEN_CHARS.issuperset(name):
            raise _bad("bad parameter name")
        if eq:
            value = value.strip(" \t")
            if not value or not _PARAM_VALUE_CHARS.issuperset(value):
                raise _bad("bad parameter value")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _parse_params_quoted(s: str) -> dict[str, str | None]:
    """parse_params for text holding a quote: a ";" or "=" inside a quoted value is not a
    separator, so scan."""
    params: dict[str, str | None] = {}
    i = 0
    n = len(s)
    while True:
        # name
        j = i
        while j < n and s[j] not in ";=":
            if s[j] == '"':
                raise _bad("quote in parameter name")
            j += 1
        name = s[i:j].strip(" \t")
        if not is_token(name):
            raise _bad("bad parameter name")
        value: str | None = None
        if j < n and s[j] == "=":
            k = j + 1
            while k < n and s[k] in " \t":
                k += 1
            if k < n and s[k] == '"':
                end = find_quote_end(s, k)
                value = s[k:end]
                j = end
                while j < n and s[j] in " \t":
                    j += 1
                if j < n and s[j] != ";":
                    raise _bad("junk after quoted parameter")
            else:
                j = s.find(";", k)
                if j < 0:
                    j = n
                value = s[k:j].strip(" \t")
                if not value or not _PARAM_VALUE_CHARS.issuperset(value):
                    raise _bad("bad parameter value")
        params[name.lower()] = value
        if j >= n:
            return params
        i = j + 1


@dataclass(slots=True)
class NameAddr:
    """name-addr / addr-spec with header parameters (From, To, Contact, Route, ...)."""

    display: str | None  # display-name as sent (quoted-string keeps its quotes), None if absent
    uri: Uri
    params: dict[str, str | None]
    raw_uri: str  # the URI text exactly as received
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def display_text(self) -> str | None:
        """The display name with quoting removed."""
        if self.display is None:
            return None
        return unquote(self.display) if self.display.startswith('"') else self.display

    def __str__(self) -> str:
        text = self._text
        if text is None:
            head = f"{self.display} <{self.raw_uri}>" if self.display else f"<{self.raw_uri}>"
            params = self.params
            if params:
                head += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
            text = self._text = head
        return text


def parse_name_addr(value: str, *, require_brackets: bool = False) -> NameAddr:
    """( name-addr / addr-spec ) *( SEMI param )

    name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
    display-name = *(token LWS) / quoted-string
    A bare addr-spec may not contain ",", "?" or ";" (§20.10): its ";" starts header params.
    LAQUOT/RAQUOT allow whitespace outside the brackets, never inside (RFC 4475 §3.1.2.13).
    """
    v = value.strip(" \t")
    display: str | None = None
    if v.startswith('"'):
        end = find_quote_end(v, 0)
        display = v[:end]
        v = v[end:].lstrip(" \t")
        if not v.startswith("<"):
            raise _bad("quoted display name without <addr-spec>")
    lt = v.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            words = v[:lt].split()
            if not all(TOKEN_CHARS.issuperset(w) for w in words):
                raise _bad("unquoted display name with non-token characters")
            display = " ".join(words)
        gt = v.find(">", lt)
        if gt < 0:
            raise _bad("missing '>'")
        raw_uri = v[lt + 1 : gt]
        if not raw_uri or not _WS.isdisjoint(raw_uri):
            raise _bad("whitespace inside <addr-spec>")
        rest = v[gt + 1 :].lstrip(" \t")
    else:
        if require_brackets:
            raise _bad("name-addr required")
        semi = v.find(";")
        raw_uri, rest = (v, "") if semi < 0 else (v[:semi].rstrip(" \t"), v[semi:])
        if not raw_uri or not _WS.isdisjoint(raw_uri) or "," in raw_uri or "?" in raw_uri:
            raise _bad("addr-spec with ',', '?' or whitespace must be in <>")
    uri = parse_uri(raw_uri)
    params = NO_PARAMS
    if rest:
        if rest[0] != ";":
            raise _bad("junk after address")
        params = parse_params(rest[1:])
        if len(params) == 1 and "tag" in params:  # a tagged From or To: kept by dialogs
            params = tag_params(params["tag"])
    return NameAddr(display, uri, params, raw_uri)


NO_PARAMS: dict[str, str | None] = {}  # every address without parameters: never written


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value (§7.3.1), ignoring commas inside quoted strings
    and <...>. Empty elements are an error: "a,,b" is not a list of header values."""
    if "," not in value:
        return [value]
    out = []
    depth = 0
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i = find_quote_end(value, i)
            continue
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            out.append(value[start:i])
            start = i + 1
        i += 1
    out.append(value[start:])
    for part in out:
        if not part.strip(" \t"):
            raise _bad("empty element in header list")
    return out


@dataclass(slots=True)
class Via:
    """One via-parm (RFC 3261 §20.42): sent-protocol, sent-by and via-params."""

    transport: str  # upper-case: UDP, TCP, TLS, SCTP, or an extension token
    host: str
    port: int | None
    params: dict[str, str | None]
    raw: str  # the via-parm exactly as received, for copying into responses (§8.2.6.2)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


# One shared string per usual transport rather than a fresh upper-cased copy per Via.
_TRANSPORTS = {t: t.upper() for t in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS")}
_TRANSPORTS.update({t.lower(): u for t, u in _TRANSPORTS.items()})


def parse_via(value: str) -> Via:
    """via-parm = sent-protocol LWS sent-by *( SEMI via-params )

    sent-protocol = protocol-name SLASH protocol-version SLASH transport ; SLASH = SWS "/" SWS
    sent-by       = host [ COLON port ]
    """
    raw = value.strip(" \t")
    if raw.startswith("SIP/2.0/"):  # the common spelling, without LWS around the slashes
        rest = raw[8:]
    else:
        parts = raw.split("/", 2)
        if len(parts) != 3 or parts[0].strip(" \t").upper() != "SIP":
            raise _bad("bad Via protocol")
        if parts[1].strip(" \t") != "2.0":
            raise SipError(505, "Via protocol version is not 2.0")
        rest = parts[2].lstrip(" \t")
    sp = rest.find(" ")
    if sp < 0:
        sp = len(rest)
    tab = rest.find("\t", 0, sp)
    if tab >= 0:
        sp = tab
    transport = rest[:sp]
    if not is_token(transport):
        raise _bad("bad Via transport")
    rest = rest[sp:].lstrip(" \t")
    if not rest:
        raise _bad("Via without sent-by")
    semi = rest.find(";")
    sent_by, ptext = (rest, "") if semi < 0 else (rest[:semi], rest[semi + 1 :])
    sent_by = sent_by.strip(" \t")
    if sent_by.startswith("["):
        host, port = split_hostport(sent_by.replace(" ", "").replace("\t", ""))
    else:
        h, sep, p = sent_by.partition(":")
        host = h.rstrip(" \t")
        check_host(host)
        port = parse_port(p.strip(" \t")) if sep else None
    params = parse_params(ptext) if semi >= 0 else {}
    return Via(_TRANSPORTS.get(transport) or transport.upper(), host, port, params, raw)
