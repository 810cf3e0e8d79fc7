"""Asserted identity and privacy between the legs (RFC 3325, RFC 3323, RFC 8224). Pure.

A trunk group is inside our trust domain when it says ``trusted: true`` (RFC 3325 §1: the
operator's configuration is Spec(T) item 4). What crosses, per message, sender -> receiver:

- P-Asserted-Identity and Remote-Party-ID (treated like PAI) cross when both are trusted,
  their host rewritten to ours (we assert them now), user, display name and parameters
  kept; a sip/sips URI without a user asserts nothing of the caller's and goes; tel: and
  other URIs cross unchanged. From an untrusted sender they never cross: we authenticate
  no one, so we assert nothing they say (§5). Toward an untrusted receiver they cross only
  under ``Privacy: none`` (§7: the proxy MUST NOT remove them then); ``id`` (and ``header``,
  RFC 5379 §5.1.8) MUST remove them (§7); with no Privacy the choice is Spec(T)'s (§7), and
  ours is to remove them: identity leaves the trust domain only when the user said so.
- P-Preferred-Identity never crosses (§6: the proxy MUST remove it). From a trusted sender
  that sent no PAI it is the identity we assert: it crosses as P-Asserted-Identity, under
  the rules above. From an untrusted one it is dropped (a hint, and we authenticate no one).
- Privacy crosses unaltered between trusted trunk groups: the hop that leaves the trust
  domain applies it. Anywhere else we are that privacy service (RFC 3323 §5): we apply
  ``id`` (no PAI), ``header`` (Via, Contact, Record-Route, Call-ID are our own: §5.1's
  B2BUA) and ``user`` (an anonymous From, §4.1.1.3 / RFC 5379 §5.1.4, and no Subject, §5.3),
  and remove the values we applied, and ``critical`` with them when nothing else is left;
  ``session`` and unknown tokens cross. ``Privacy: none`` crosses unaltered (§4.2:
  intermediaries MUST NOT remove or alter it).
- Identity (RFC 8224, a STIR/SHAKEN PASSporT) crosses as received, with the Date its
  verifier checks freshness against (§6): it signs numbers and a time, not hops.
  Identity-Info (RFC 4474, obsoleted by RFC 8224) does not: its signature covers Call-ID,
  CSeq and Contact, which a B2BUA rewrites, so it could never verify past us. Identity and
  Date are in headers.CROSSING; nothing here touches them, nor does sbc.manipulate unless
  a rule names them.

With ``ani_from_pai`` on a trusted ingress the call's ANI (routing, filters, CDR) is the
user part of its PAI (or of the PPI we would assert); a From that would then carry an
identity the caller asked to keep private (``id``, ``header``, ``user``) goes anonymous.
"""

from __future__ import annotations

from sbc.call.model import Call, Leg
from sbc.config.schema import TrunkGroup
from sbc.sip.errors import SipError
from sbc.sip.grammar import NameAddr, Uri, parse_name_addr, split_list
from sbc.sip.message import Request

Headers = list[tuple[str, str]]

PAI = "P-Asserted-Identity"
PPI = "P-Preferred-Identity"
RPID = "Remote-Party-ID"
PRIVACY = "Privacy"
# The names this module may change; a message with none of them passes untouched.
_TOUCHED = frozenset((PAI, PPI, RPID, PRIVACY))
# What we apply as the privacy service at the trust boundary (RFC 3325 §7, RFC 3323 §5.1,
# §5.3); each also keeps an asserted identity out of From.
_APPLIED = frozenset(("id", "header", "user"))
# RFC 3323 §4.1.1.3 (and RFC 5379 §5.1.4): the anonymous From
_ANONYMOUS = Uri("sip", "anonymous", None, "anonymous.invalid")


def cross(headers: Headers, sender: bool, receiver: bool, host: str) -> Headers:
    """``headers`` (already the allow-list's) as they leave a leg whose trunk group is
    ``sender``-trusted toward one that is ``receiver``-trusted; ``host`` is ours."""
    for n, _ in headers:
        if n in _TOUCHED:
            break
    else:
        return headers  # the usual case: nothing about identity
    tokens = privacy([v for n, v in headers if n == PRIVACY])
    values = {t.lower() for t in tokens}
    inside = sender and receiver
    none = values == {"none"}
    # §7: PAI leaves the trust domain only under "none"; from outside it never enters (§5)
    assert_ = sender and (receiver or none)
    has_pai = any(n == PAI for n, _ in headers)
    user_applied = not inside and "user" in values
    out: Headers = []
    for n, v in headers:
        if n in (PAI, RPID, PPI):
            if not assert_ or (n == PPI and has_pai):
                continue
            asserted = _asserted(v, host)
            if asserted:
                out.append((PAI if n == PPI else n, asserted))
        elif n == PRIVACY:
            if inside or "none" in values:
                out.append((n, v))
            elif (rest := _unapplied(tokens)) and not any(m == PRIVACY for m, _ in out):
                out.append((n, ";".join(rest)))  # what is left of all of them, once
        elif n == "Subject" and user_applied:
            continue  # RFC 3323 §5.3
        else:
            out.append((n, v))
    return out


def privacy(values: list[str]) -> list[str]:
    """The priv-values of Privacy header ``values``, in order, as spelt (RFC 3323 §4.2:
    priv-value *(";" priv-value); a "," between them is tolerated)."""
    out: list[str] = []
    for value in values:
        out += [t.strip(" \t") for t in value.replace(",", ";").split(";") if t.strip(" \t")]
    return out


def _unapplied(tokens: list[str]) -> list[str]:
    """The priv-values left once we applied ours; "critical" only guards what is left."""
    rest = [t for t in tokens if t.lower() not in _APPLIED]
    return [] if all(t.lower() == "critical" for t in rest) else rest


def _asserted(value: str, host: str) -> str:
    """A PAI/RPID value as we assert it: each sip/sips address on ``host``, with its user,
    display name and parameters; other schemes (tel:) as they came; what does not parse,
    or names no user, goes. "" when nothing is left."""
    out = []
    for part, addr in _addresses(value):
        uri = addr.uri
        if not uri.is_sip:
            out.append(part.strip(" \t"))
            continue
        if not uri.user:
            continue
        ours = Uri(uri.scheme, uri.user, None, _uri_host(host), None, uri.params)
        out.append(str(NameAddr(addr.display, ours, addr.params, str(ours))))
    return ", ".join(out)


def _addresses(value: str) -> list[tuple[str, NameAddr]]:
    """Each address of a PAI-like value with its text; those that do not parse are left out
    (RFC 3325 §9.1: name-addr / addr-spec, comma-separated)."""
    out = []
    try:
        parts = split_list(value) if "," in value else [value]
    except SipError:
        return []
    for part in parts:
        try:
            out.append((part, parse_name_addr(part)))
        except SipError:
            continue
    return out


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --- the hooks: which trunk group sends, which receives ---------------------------------------


def outbound(call: Call, etg: TrunkGroup, headers: Headers, host: str) -> Headers:
    """The caller's headers on the B-leg INVITE to ``etg``."""
    return cross(headers, call.ingress.trusted, etg.trusted, host)


def to_caller(call: Call, headers: Headers) -> Headers:
    """A vendor's provisional or answer on its way to the caller (connected identity)."""
    attempt = call.answered or call.current
    vendor = attempt is not None and attempt.trunk_group.trusted
    return cross(headers, vendor, call.ingress.trusted, _ours(call, call.source.host))


def in_dialog(call: Call, to_leg: Leg, headers: Headers) -> Headers:
    """An in-dialog request or response relayed onto ``to_leg`` of an answered call."""
    answered = call.answered
    if answered is None:
        return headers
    a, b = call.ingress.trusted, answered.trunk_group.trusted
    sender, receiver = (b, a) if to_leg == "a" else (a, b)
    peer = call.source.host if to_leg == "a" else answered.target.host
    return cross(headers, sender, receiver, _ours(call, peer))


def _ours(call: Call, peer: str) -> str:
    """Our address as ``peer``'s family knows it (dual stack, sbc.config.families)."""
    node = call.snap.config.node
    return call.snap.addresses.get(6 if ":" in peer else 4) or node.switch_ip


# --- ANI and From --------------------------------------------------------------------------------


def ani(tg: TrunkGroup, req: Request) -> str:
    """The caller's number: the asserted one with ``ani_from_pai`` on a trusted trunk group
    (PAI, else the PPI we would assert), otherwise From's user (a tel: URI's number)."""
    if tg.ani_from_pai and tg.trusted:
        number = asserted_number(req)
        if number:
            return number
    uri = req.from_.uri
    return uri.user if uri.is_sip else uri.opaque


def asserted_number(req: Request) -> str:
    """The user part of the first PAI (else PPI) address that has one; "" when none."""
    for name in (PAI, PPI):
        for value in req.get_all(name):
            for _, addr in _addresses(value):
                uri = addr.uri
                number = uri.user if uri.is_sip else uri.opaque
                if number:
                    return number
    return ""


def hides_from(call: Call, etg: TrunkGroup) -> bool:
    """Must the B-leg From to ``etg`` be anonymous? When we apply the caller's ``user``
    privacy (it leaves or never entered the trust domain: RFC 3323 §5.3), or when From
    would carry the asserted identity (ani_from_pai) that the caller asked to withhold."""
    a = call.a_invite
    values = a.get_all(PRIVACY)
    if not values:
        return False
    tokens = {t.lower() for t in privacy(values)}
    if "none" in tokens:
        return False
    if "user" in tokens and not (call.ingress.trusted and etg.trusted):
        return True
    tg = call.ingress
    return bool(tokens & _APPLIED) and tg.ani_from_pai and tg.trusted and bool(asserted_number(a))


def anonymous(from_: NameAddr) -> NameAddr:
    """``from_`` as RFC 3323 §4.1.1.3 writes an anonymous one, its tag kept (RFC 3261
    §12: dialogs match on tags, not on URIs)."""
    return NameAddr('"Anonymous"', _ANONYMOUS, from_.params, str(_ANONYMOUS))
