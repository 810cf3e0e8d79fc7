"""Just enough SDP (RFC 4566) for routing and codec decisions: read by slicing, no regex.
rtpengine rewrites the bodies; we only look at them."""

from __future__ import annotations


def connection_ip(sdp: bytes) -> str:
    """The session's connection address (the first c= line), for media_ip filters."""
    at = sdp.find(b"\nc=IN IP")
    if at < 0:
        return ""
    line = sdp[at + 10 : sdp.find(b"\n", at + 1)]
    return line.split(b" ", 1)[-1].strip().decode("ascii", "replace")


def codecs(sdp: bytes) -> list[str]:
    """Encoding names of every a=rtpmap line, in order (static payload types without an rtpmap
    line are named from RFC 3551's table)."""
    names: list[str] = []
    seen_pt: set[str] = set()
    for line in sdp.split(b"\n"):
        if line.startswith(b"a=rtpmap:"):
            pt, _, rest = line[9:].strip().partition(b" ")
            seen_pt.add(pt.decode("ascii", "replace"))
            names.append(rest.split(b"/", 1)[0].decode("ascii", "replace"))
    for line in sdp.split(b"\n"):
        if line.startswith(b"m="):
            for pt in line.strip().split(b" ")[3:]:
                p = pt.decode("ascii", "replace")
                if p not in seen_pt and p in STATIC:
                    names.append(STATIC[p])
    return names


STATIC = {"0": "PCMU", "3": "GSM", "4": "G723", "8": "PCMA", "9": "G722", "18": "G729"}
