"""Errors that say whose fault it is.

``SipError`` is the only exception the parser and the request checks may raise: the peer sent
something we refuse, and ``status`` is the response to answer with (RFC 3261 §8.2, §16.3,
§21.4). Responses that fail to parse are dropped, never answered (§18.1.2). Anything else
escaping the parser is a bug in our code; the fuzz tests assert exactly that.
"""

from __future__ import annotations

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


def reason_phrase(status: int) -> str:
    """The default reason phrase for ``status`` (RFC 3261 §21)."""
    return REASONS.get(status) or REASONS.get(status // 100 * 100, "Unknown")


class SipError(Exception):
    """The peer sent a message we refuse; answer a request with ``status``.

    ``headers`` are extra header fields the answer must carry, such as ``Unsupported`` on a
    420 (RFC 3261 §8.2.2.3) or ``Accept`` on a 415 (§21.4.13).
    """

    def __init__(self, status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail
        self.headers = headers


class LocalProtocolError(Exception):
    """Our own code tried to build or send something invalid: a bug, never the peer's fault."""
