"""rtpengine ng commands (pure): what to ask, built from a call's identifiers and its media
profiles. The protocol is bencode dictionaries over UDP; see media/client.py for the wire.

Identifiers: the ng ``call-id`` is our call id (one per A-leg, not any leg's SIP Call-ID, which
a B2BUA has two of); ``from-tag`` / ``to-tag`` name the two monologues (the caller's From tag
for the A side, the vendor's To tag for the B side); ``via-branch`` names one hunting attempt,
so deleting a failed attempt frees only that attempt's ports (rtpengine: "Deleting call branch").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sbc.config.schema import MediaProfile

# Kept through codec filtering whatever the allow list says: DTMF (RFC 4733) and comfort noise
# are not voice codecs; stripping them breaks IVRs and silence suppression.
ALWAYS = ("telephone-event", "CN")
# SDES suites offered toward an SRTP side: the two every SRTP endpoint implements (RFC 4568).
SDES_ONLY = ("only-AES_CM_128_HMAC_SHA1_80", "only-AES_CM_128_HMAC_SHA1_32")


@dataclass(frozen=True, slots=True)
class MediaCommand:
    """An ng command the call controller wants sent; the runtime answers it with
    ``CallController.on_media(token, reply or None)``. ``call`` pins it to a node."""

    token: int
    call: str
    cmd: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a call as rtpengine sees it: its profile, and the SIP source address when
    the trunk group is behind NAT (then that address replaces the SDP's)."""

    profile: MediaProfile | None
    nat_source: str = ""  # IP, set only when nat: true
    family: str = ""  # "IP4" | "IP6": the side's signaling address family ("" = as offered)

    @property
    def anchored(self) -> bool:
        return self.profile is not None and self.profile.anchoring


def ip_family(host: str) -> str:
    """The SDP address type (RFC 4566 §5.7) of a signaling peer's IP."""
    return "IP6" if ":" in host else "IP4"


UNMANAGED = Side(None)  # a trunk group without a media profile

# Sides without NAT, by (profile, family): one object for every call of a trunk group, not
# one each (Side is frozen). Keyed by the profile's id and checked by identity, as a reload
# brings new profiles; cleared when it grows past a reload's worth.
_SIDES: dict[tuple[int, str], Side] = {}


def side(profile: MediaProfile | None, nat_source: str, family: str) -> Side:
    """``Side(profile, nat_source, family)``, shared when there is no NAT source."""
    if nat_source:
        return Side(profile, nat_source, family)
    key = (id(profile), family)
    found = _SIDES.get(key)
    if found is None or found.profile is not profile:
        if len(_SIDES) > 256:
            _SIDES.clear()
        found = _SIDES[key] = Side(profile, "", family)
    return found


def anchored(a: Side, b: Side) -> bool:
    """Media is relayed when either side's profile asks for it."""
    return a.anchored or b.anchored


def _common(sender: Side, receiver: Side) -> dict[str, Any]:
    out: dict[str, Any] = {
        "replace": ["origin", "session-connection"],
        "ICE": "remove",
    }
    if sender.nat_source:
        # Behind NAT the SDP names a private address; send media where the SIP came from and
        # learn the real port from the first packet (symmetric RTP, RFC 4961).
        out["flags"] = ["SIP-source-address"]
        out["received-from"] = ["IP6" if ":" in sender.nat_source else "IP4", sender.nat_source]
    if receiver.family:
        # The SDP toward a side carries an address of that side's family (dual stack:
        # an IPv4 caller's c=IN IP4 becomes c=IN IP6 for an IPv6 vendor, and back).
        out["address family"] = receiver.family
    protocol = "RTP/SAVP" if receiver.profile is not None and receiver.profile.srtp else "RTP/AVP"
    out["transport-protocol"] = protocol
    if protocol == "RTP/SAVP":
        out["SDES"] = list(SDES_ONLY)
        out["DTLS"] = "off"
    return out


def offer_flags(sender: Side, receiver: Side, offered: list[str]) -> dict[str, Any]:
    """Flags for an offer going from ``sender`` to ``receiver``: codecs outside either side's
    allow list are stripped; with transcoding, allowed codecs the offer lacks are added and
    rtpengine transcodes between them."""
    out = _common(sender, receiver)
    allow = _allowed(sender.profile, receiver.profile)
    if allow is not None:
        codec: dict[str, Any] = {"strip": ["all"], "except": [*allow, *ALWAYS]}
        transcoding = any(
            p is not None and p.transcoding for p in (sender.profile, receiver.profile)
        )
        if transcoding:
            have = {c.lower() for c in offered}
            missing = [c for c in allow if c.lower() not in have]
            if missing:
                codec["transcode"] = missing
        out["codec"] = codec
    return out


def answer_flags(sender: Side, receiver: Side) -> dict[str, Any]:
    """Flags for the answer going from ``sender`` back to the offerer ``receiver``."""
    return _common(sender, receiver)


def _allowed(*profiles: MediaProfile | None) -> list[str] | None:
    """The codecs every profile allows, in the first restricting profile's order; None when
    no profile restricts."""
    lists = [p.codecs.allow for p in profiles if p is not None and p.codecs.allow]
    if not lists:
        return None
    out = list(lists[0])
    for other in lists[1:]:
        keep = {c.lower() for c in other}
        out = [c for c in out if c.lower() in keep]
    return out


def offer(
    call_id: str,
    from_tag: str,
    sdp: bytes,
    flags: dict[str, Any],
    *,
    to_tag: str = "",
    branch: str = "",
) -> dict[str, Any]:
    cmd: dict[str, Any] = {"command": "offer", "call-id": call_id, "from-tag": from_tag}
    if to_tag:
        cmd["to-tag"] = to_tag
    if branch:
        cmd["via-branch"] = branch
    cmd["sdp"] = sdp
    cmd.update(flags)
    return cmd


def answer(
    call_id: str,
    from_tag: str,
    to_tag: str,
    sdp: bytes,
    flags: dict[str, Any],
    *,
    branch: str = "",
) -> dict[str, Any]:
    cmd: dict[str, Any] = {
        "command": "answer",
        "call-id": call_id,
        "from-tag": from_tag,
        "to-tag": to_tag,
    }
    if branch:
        cmd["via-branch"] = branch
    cmd["sdp"] = sdp
    cmd.update(flags)
    return cmd


def delete(call_id: str, from_tag: str, *, branch: str = "") -> dict[str, Any]:
    """Delete the whole call, or with ``branch`` only that hunting attempt's media. No delay:
    rtpengine's default keeps a deleted call 30 s, holding its ports."""
    cmd: dict[str, Any] = {
        "command": "delete",
        "call-id": call_id,
        "from-tag": from_tag,
        "delete-delay": 0,
    }
    if branch:
        cmd["via-branch"] = branch
    return cmd


def query(call_id: str, from_tag: str) -> dict[str, Any]:
    """The call's state at rtpengine: its streams' counters and last packet times."""
    return {"command": "query", "call-id": call_id, "from-tag": from_tag}


def last_packet(reply: dict[bytes, Any]) -> int:
    """The latest ``last packet`` (unix seconds) of any stream in a query reply; 0: none."""
    latest = 0
    tags = reply.get(b"tags")
    for mono in tags.values() if isinstance(tags, dict) else ():
        for m in (mono.get(b"medias", []) if isinstance(mono, dict) else []) or []:
            for s in (m.get(b"streams", []) if isinstance(m, dict) else []) or []:
                if isinstance(s, dict):
                    latest = max(latest, _int(s.get(b"last packet")))
    return latest


@dataclass(frozen=True, slots=True)
class MediaStats:
    """What rtpengine counted for a call: RTP totals, and packets/bytes relayed from each
    side (by monologue tag), with loss when RTCP reported any."""

    packets: int = 0
    bytes: int = 0
    errors: int = 0
    by_tag: tuple[tuple[str, int, int], ...] = ()  # (tag, packets, bytes) received from it
    lost: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "errors": self.errors,
            "lost": self.lost,
            "legs": {t: {"packets": p, "bytes": b} for t, p, b in self.by_tag},
        }


def stats(reply: dict[bytes, Any]) -> MediaStats:
    """Read a delete or query reply's counters; missing pieces read as zero."""
    totals = reply.get(b"totals")
    rtp = totals.get(b"RTP", {}) if isinstance(totals, dict) else {}
    by_tag: list[tuple[str, int, int]] = []
    tags = reply.get(b"tags")
    if isinstance(tags, dict):
        for key, mono in tags.items():
            if not isinstance(mono, dict):
                continue
            packets = octets = 0
            for m in mono.get(b"medias", []) or []:
                for s in (m.get(b"streams", []) if isinstance(m, dict) else []) or []:
                    if isinstance(s, dict) and b"RTP" in (s.get(b"flags") or []):
                        st = s.get(b"stats") or {}
                        packets += _int(st.get(b"packets"))
                        octets += _int(st.get(b"bytes"))
            tag = mono.get(b"tag") or key
            by_tag.append((tag.decode("utf-8", "replace"), packets, octets))
    lost = 0
    ssrcs = reply.get(b"SSRC")
    if isinstance(ssrcs, dict):
        for entry in ssrcs.values():
            if isinstance(entry, dict):
                lost += _int(entry.get(b"packets lost"))
    return MediaStats(
        packets=_int(rtp.get(b"packets")),
        bytes=_int(rtp.get(b"bytes")),
        errors=_int(rtp.get(b"errors")),
        by_tag=tuple(by_tag),
        lost=lost,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
