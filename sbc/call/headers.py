"""What crosses between the legs, and the requests and headers sbc writes itself. Pure.

Only an allow-list of headers crosses from one leg to the other (shared/DESIGN.md, decision
2): Via, Contact, Record-Route, Call-ID, tags and CSeq are each leg's own, so topology hiding
follows by construction. The B-leg INVITE is built here from the call and one trunk, with
the trunk group's outbound manipulations (sbc.manipulate) applied.
"""

from __future__ import annotations

from collections.abc import Callable

from sbc import manipulate
from sbc.call import identity
from sbc.call.model import Call
from sbc.call.redirect import Redirect
from sbc.config.families import family
from sbc.config.schema import SessionTimer, Trunk, TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.sip.grammar import NO_PARAMS, NameAddr, Uri, Via
from sbc.sip.message import Request, Response, make_request
from sbc.sip.tagdict import tag_params
from sbc.sip.transaction import Target

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, NOTIFY, MESSAGE"
# Headers that may cross from one leg to the other. Everything else stays on its side.
CROSSING = frozenset(
    (
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Remote-Party-ID",
        "Privacy",
        "Identity",  # RFC 8224: end to end, as received; Date is what it is checked against
        "Date",
        "Diversion",
        "History-Info",
        "CC-Diversion",
        "Reason",
        "Content-Type",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Accept",
        "Accept-Language",
        "Info-Package",
        "Recv-Info",
        "Event",
        "Subscription-State",
        "Subject",
        "Priority",
        "Alert-Info",
        "Retry-After",
    )
)


REDIRECTION = ("Diversion", "History-Info", "CC-Diversion")
# RFC 5806 §4 reasons for forwarding on failure, by the last attempt's status
DIVERSION_REASON = {486: "user-busy", 600: "user-busy", 408: "no-answer", 480: "no-answer"}


def trunk_target(trunk: Trunk) -> Target:
    """Where a trunk is reached: its address, port 5060 (TLS: 5061, RFC 3261 §19.1.2) when
    it names none. A trunk named by host is reached at what its host resolves to
    (routing.srv); this names it, for labels."""
    default = 5061 if trunk.protocol == "tls" else 5060
    return Target(trunk.protocol, trunk.ip or trunk.host, trunk.port or default)


UDP_MAX = 1300  # RFC 3261 §18.1.1: larger, with the path MTU unknown, goes congestion-controlled


def tcp_twin(etg: TrunkGroup, index: int, snap: Snapshot) -> int | None:
    """The trunk of ``etg`` that reaches trunk ``index`` (a UDP one) over TCP: same IP and
    port, protocol tcp; None when there is none or we do not listen on TCP (the vendor's
    requests in the dialog would then have nowhere to come)."""
    trunk = etg.trunks[index]
    if trunk.protocol != "udp" or "tcp" not in snap.listen_ports:
        return None
    port = trunk.port or 5060
    for i, t in enumerate(etg.trunks):
        if t.protocol == "tcp" and t.type == "ip" and t.ip == trunk.ip and (t.port or 5060) == port:
            return i
    return None


def crossing(msg: Request | Response) -> list[tuple[str, str]]:
    return [(n, v) for n, v in msg.headers if n in CROSSING]


def local(snap: Snapshot, transport: str, peer: str = "") -> tuple[str, int]:
    """Our address as ``peer`` (an IP; "" = one of switch_ip's family) reaches it over
    ``transport``: the address we advertise to its family (dual stack, sbc.config.families)
    and our listening port there, bare (an IPv6 one unbracketed)."""
    node = snap.config.node
    fam = family(peer or node.switch_ip)
    host = snap.addresses.get(fam) or node.switch_ip
    port = snap.family_ports.get((transport, fam)) or snap.listen_ports.get(transport)
    return host, port or (5061 if transport == "tls" else 5060)


def uri_host(host: str) -> str:
    """An IP as a URI or a Via sent-by writes it: IPv6 as an IPv6reference (RFC 3261 §25.1)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def via(snap: Snapshot, transport: str, branch_id: str, peer: str = "", port: int = 0) -> Via:
    """Our Via for a new request to ``peer`` (RFC 3261 §8.1.1.7), with rport (RFC 3581);
    an IPv6 sent-by bracketed (RFC 5118 §4.1); ``port``: a worker's own (sbc.listeners),
    else the listening port."""
    host, listening = local(snap, transport, peer)
    port = port or listening
    host = uri_host(host)
    branch = "z9hG4bK" + branch_id
    raw = f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport"
    return Via(transport.upper(), host, port, {"branch": branch, "rport": None}, raw)


def sips_uri(uri: str) -> bool:
    """Is this (unparsed) URI a sips: one? Schemes are case-insensitive (RFC 3261 §19.1.4)."""
    return uri[:5].lower() == "sips:"


def contact(
    snap: Snapshot, transport: str, user: str = "sbc", peer: str = "", sips: bool = False
) -> NameAddr:
    """Our Contact; ``sips``: a sips: URI (the dialog's request was sips, RFC 3261 §12.1.1),
    TLS by its scheme, with no transport parameter (RFC 5630 §3.1.3)."""
    host, port = local(snap, transport, peer)
    params = "" if sips else Target(transport, host, port).uri_params
    uri = Uri("sips" if sips else "sip", user, None, uri_host(host), port, params)
    return NameAddr(None, uri, NO_PARAMS, str(uri))


def b_leg_invite(
    call: Call,
    etg: TrunkGroup,
    trunk: Trunk,
    snap: Snapshot,
    new_id: Callable[[], str],
    our_contact: NameAddr | None = None,
    dest: Redirect | None = None,
    our_via: Via | None = None,
) -> Request:
    """The INVITE of one attempt to ``trunk``: a new Call-ID, From tag and branch; ANI and
    DNIS as the call routes them, then the egress trunk group's manipulations; the caller's
    allowed headers (redirection history only with diversion_routing, our own forwarding
    on top as RFC 5806 §3 asks); Max-Forwards one less than the caller's, at most 70.
    ``dest``: a 3xx's Contact or a registered contact, the Request-URI instead."""
    target = dest.target if dest is not None else trunk_target(trunk)
    a = call.a_invite
    host, params = target.uri_host, target.uri_params
    port: int | None = target.port
    if trunk.host and dest is not None and dest.ruri is None:  # RFC 3263 §4: the name stays
        host, port = trunk.host, trunk.port or None
    local_host, _ = local(snap, target.transport, target.host)
    carried = identity.outbound(call, etg, crossing(a), local_host)  # RFC 3325, RFC 3323
    if call.replacing is not None:  # RFC 3891, mapped to our dialog with the vendor
        carried.append(("Replaces", call.replacing[1]))
    local_host = uri_host(local_host)
    if not call.ingress.diversion_routing:  # redirection history only where enabled
        carried = [(n, v) for n, v in carried if n not in REDIRECTION]
    elif call.diversion is not None:
        # We redirected the call ourselves (forwarding): say so above any earlier
        # diversions, the most recent first (RFC 5806 §3), as the PSTN expects.
        number, reason = call.diversion
        here = f"<sip:{number}@{local_host}>;reason={reason};counter=1"
        carried = [("Diversion", here), *carried]
    out = manipulate.outbound(
        etg,
        call.snap.rules[etg.name],
        call.ani,
        call.dnis,
        host,
        [*carried, ("Allow", ALLOW), *session_offer(etg.session_timer, _reliable_ok(call))],
    )
    host = out.host or host
    ruri = dest.ruri if dest and dest.ruri else Uri("sip", out.ruri_user, None, host, port, params)
    from_uri = Uri("sip", out.ani, None, local_host)
    display = a.from_.display if call.ingress.preserve_caller_id else None
    from_ = NameAddr(display, from_uri, tag_params(new_id()), str(from_uri))
    from_ = identity.anonymous(from_) if identity.hides_from(call, etg) else from_
    to_uri = Uri("sip", out.dnis, None, host)
    to = NameAddr(None, to_uri, NO_PARAMS, str(to_uri))
    mf = min(a.max_forwards - 1, 70) if a.max_forwards is not None else 70
    return make_request(
        "INVITE",
        ruri,
        via=our_via or via(snap, target.transport, new_id(), target.host),
        from_=from_,
        to=to,
        call_id=new_id(),
        cseq=1,
        max_forwards=mf,
        contact=our_contact or contact(snap, target.transport, peer=target.host),
        headers=out.headers,
        body=a.body,
    )


def _reliable_ok(call: Call) -> bool:
    """May our INVITE offer 100rel? With the caller's offer in it, always: a reliable 18x
    brings only an answer. Without (late offer), only when the caller supports 100rel: a
    reliable 18x may then bring an offer, whose answer the caller's PRACK brings for ours
    (RFC 3262 §5, sbc.call.reliable)."""
    reliable = call.reliable
    return bool(call.a_invite.body) or (reliable is not None and reliable.supports)


def session_offer(cfg: SessionTimer, rel: bool) -> list[tuple[str, str]]:
    """What our INVITE to a vendor says it supports: session timers (RFC 4028 §7.1),
    asking for one when the trunk group sets ``session_timer.expires``; and reliable
    provisionals (RFC 3262) when ``rel`` (``_reliable_ok``)."""
    supported = ("Supported", "100rel, timer" if rel else "timer")
    if not cfg.expires:
        return [supported]
    interval = max(cfg.expires, cfg.min_se)
    return [
        supported,
        ("Session-Expires", str(interval)),
        ("Min-SE", str(cfg.min_se)),
    ]


def options(snap: Snapshot, target: Target, new_id: Callable[[], str], port: int = 0) -> Request:
    """An OPTIONS ping to a monitored trunk (RFC 3261 §11): any answer but 503 is alive."""
    uri = Uri("sip", "", None, target.uri_host, target.port, target.uri_params)
    local_host, _ = local(snap, target.transport, target.host)
    me = Uri("sip", "sbc", None, uri_host(local_host))
    return make_request(
        "OPTIONS",
        uri,
        via=via(snap, target.transport, new_id(), target.host, port),
        from_=NameAddr(None, me, {"tag": new_id()}, str(me)),
        to=NameAddr(None, uri, {}, str(uri)),
        call_id=new_id(),
        cseq=1,
        headers=[("Accept", "application/sdp")],
    )
