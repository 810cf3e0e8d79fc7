"""Registration trunks: the registrar for customer PBXs, and the digest checks. Pure.

A PBX on an origination trunk group of type registration REGISTERs with its account
(RFC 3261 §10.3, digest per §22 and RFC 8760). An account holds up to ``max_contacts``
bindings, one per Contact URI, each with its own expires and q; each remembers the address
its REGISTER came from, and every INVITE from such an address belongs to the account's
trunk group. Calls to the account try its contacts highest q first (sbc.call.forking).
An INVITE that names a registration account (in Proxy-Authorization or its From user)
from an address with no binding is challenged with 407 and admitted once its credentials
check.

    pbx                       sbc
     |--REGISTER-------------->|
     |<-----401 (SHA-256, MD5)-|   WWW-Authenticate, one per algorithm, preferred first
     |--REGISTER + Authorization>|
     |<--------------------200-|   Contact;expires=N   binding: source address -> trunk group
     |--INVITE---------------->|   from the bound address: the account's trunk group

    desk phone :5070          sbc                  softphone :5072 (same account)
     |--REGISTER Contact;q=1-->|                      |
     |<-200 Contact: <desk>;expires=300 --------------|
     |                         |<--REGISTER Contact;q=0.5-|
     |                         |--200---------------->|  Contact: <desk>;expires=290,
     |                         |                      |           <soft>;expires=300;q=0.5
     |--REGISTER Contact: *, Expires: 0 -->|          |  removes both (§10.2.2)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from sbc.config.schema import RegistrarConfig, TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.sip.digest import NonceBook, Verdict, parse_params
from sbc.sip.message import Request
from sbc.sip.transaction import Target
from sbc.state import Binding
from sbc.state.memory import MemoryStore

# Verdicts that earn a fresh challenge rather than a refusal: the client may simply hold an
# old or foreign nonce (RFC 7616 §3.3); a wrong password or unknown account is refused.
RECHALLENGE = frozenset(("stale", "replay", "bad_nonce", "wrong_realm", "bad_algorithm"))


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer a REGISTER (or an INVITE that failed authentication) with."""

    status: int
    why: str  # log label: challenge, registered, unregistered, bad_response, ...
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None
    username: str = ""
    changes: tuple[Binding, ...] = ()  # what changed, for the shared store (removed: expires 0)
    pruned: tuple[Binding, ...] = ()  # expired contacts removed on the way (shared, not logged)


class Registrar:
    def __init__(self, store: MemoryStore, secret: bytes | None = None) -> None:
        self.store = store
        self._random_secret = secret or os.urandom(32)
        self._book: NonceBook | None = None
        self._book_key: tuple[str, int] | None = None

    def book(self, cfg: RegistrarConfig) -> NonceBook:
        key = (cfg.secret, cfg.nonce_lifetime)
        if self._book is None or key != self._book_key:
            secret = cfg.secret.encode() if cfg.secret else self._random_secret
            self._book = NonceBook(secret, cfg.nonce_lifetime)
            self._book_key = key
        return self._book

    @staticmethod
    def realm(snap: Snapshot) -> str:
        return snap.config.node.registrar.realm or snap.config.node.switch_ip

    def _check(self, snap: Snapshot, value: str, method: str, wall: float, src: Target) -> Verdict:
        cfg = snap.config.node.registrar

        def password_of(user: str) -> str | None:
            account = snap.accounts.get(user)
            return account[1] if account else None

        return self.book(cfg).check(
            value, method, self.realm(snap), password_of, wall, tuple(cfg.algorithms), src.host
        )

    def _challenge(
        self, snap: Snapshot, header: str, wall: float, why: str, src: Target, username: str = ""
    ) -> Answer:
        cfg = snap.config.node.registrar
        values = self.book(cfg).challenge(
            self.realm(snap), wall, tuple(cfg.algorithms), stale=why == "stale", bound=src.host
        )
        status = 401 if header == "WWW-Authenticate" else 407
        return Answer(status, why, tuple((header, v) for v in values), username=username)

    # --- REGISTER -----------------------------------------------------------------------------

    def register(self, snap: Snapshot, req: Request, src: Target, wall: float) -> Answer:
        credentials = req.get("Authorization")
        if credentials is None:
            return self._challenge(snap, "WWW-Authenticate", wall, "challenge", src)
        verdict = self._check(snap, credentials, "REGISTER", wall, src)
        if not verdict.ok:
            if verdict.why in RECHALLENGE:
                return self._challenge(
                    snap, "WWW-Authenticate", wall, verdict.why, src, verdict.username
                )
            return Answer(403, verdict.why, username=verdict.username)
        username = verdict.username
        aor_user = req.to.uri.user if req.to.uri.is_sip else ""
        if aor_user != username:
            return Answer(403, "aor_mismatch", username=username, reason="Forbidden")
        tg = snap.accounts[username][0]
        store = self.store
        # expired contacts go, on every store (shared as removals): the account's list, and
        # every worker's and the supervisor's copy of it, stays bounded
        pruned = tuple(
            replace(b, expires_at=0.0)
            for b in store.contacts_of(tg.name, username, float("-inf"))
            if b.expires_at <= wall
        )
        for b in pruned:
            store.apply(b)
        current = store.contacts_of(tg.name, username, wall)
        contacts = req.get_all("Contact")
        if not contacts:  # a query (§10.2.3)
            listed = listing(current, wall)
            return Answer(200, "query", listed, username=username, pruned=pruned)
        planned = plan(snap.config.node.registrar, req, src, current, username, tg.name, wall)
        if isinstance(planned, Answer):
            return replace(planned, pruned=pruned)
        for b in planned:
            store.apply(b)
        why = "registered" if any(b.expires_at for b in planned) else "unregistered"
        after = listing(store.contacts_of(tg.name, username, wall), wall)
        return Answer(200, why, after, username=username, changes=planned, pruned=pruned)

    # --- INVITE -------------------------------------------------------------------------------

    def registered(self, snap: Snapshot, src: Target, wall: float) -> TrunkGroup | None:
        """The trunk group of a live binding registered from this address."""
        b = self.store.binding_from(src.transport, src.host, src.port, wall)
        return snap.trunk_groups.get(b.trunk_group) if b is not None else None

    def holds(self, src: Target, wall: float) -> bool:
        """Does a live binding name this source address: a PBX's TCP/TLS flow, which we
        keep and ping (RFC 5626 §4.4.1; sbc.transport.TcpPool.registered)?"""
        return self.store.binding_from(src.transport, src.host, src.port, wall) is not None

    @staticmethod
    def username(req: Request, header: str) -> str:
        """The username the credentials in ``header`` claim ("" when there are none)."""
        credentials = req.get(header)
        return parse_params(credentials)[1].get("username", "") if credentials else ""

    def claimed(self, snap: Snapshot, req: Request) -> str | None:
        """The registration account an INVITE claims: its Proxy-Authorization username, or
        its From user."""
        credentials = req.get("Proxy-Authorization")
        if credentials is not None:
            user = parse_params(credentials)[1].get("username", "")
            if user in snap.accounts:
                return user
        user = req.from_.uri.user if req.from_.uri.is_sip else ""
        return user if user in snap.accounts else None

    def authenticate_invite(
        self, snap: Snapshot, req: Request, src: Target, wall: float
    ) -> TrunkGroup | Answer:
        """Admit an INVITE claiming an account with no binding by its Proxy-Authorization,
        or answer 407 (challenge) / 403 (wrong credentials)."""
        credentials = req.get("Proxy-Authorization")
        if credentials is None:
            return self._challenge(snap, "Proxy-Authenticate", wall, "challenge", src)
        verdict = self._check(snap, credentials, "INVITE", wall, src)
        if verdict.ok:
            return snap.accounts[verdict.username][0]
        if verdict.why in RECHALLENGE:
            return self._challenge(
                snap, "Proxy-Authenticate", wall, verdict.why, src, verdict.username
            )
        return Answer(403, verdict.why, username=verdict.username)


def plan(
    cfg: RegistrarConfig,
    req: Request,
    src: Target,
    current: list[Binding],
    username: str,
    trunk_group: str,
    wall: float,
) -> tuple[Binding, ...] | Answer:
    """What a REGISTER changes in the account's live bindings ``current`` (RFC 3261 §10.3
    steps 6-7): each Contact added or refreshed with its own expires (its parameter, else
    the Expires header, else the default) and q, or removed with expires 0; ``Contact: *``
    with ``Expires: 0`` removes them all. Removals are bindings with expires_at 0. An
    Answer refuses the whole request, and nothing changes."""
    by_contact = {b.contact: b for b in current}
    header = req.get("Expires")
    if "*" in (v.strip() for v in req.get_all("Contact")):  # §10.2.2: alone, Expires 0
        if req.contacts or len(req.get_all("Contact")) > 1 or (header or "").strip() != "0":
            return Answer(400, "bad_wildcard", username=username)
        if any(_reordered(b, req) for b in current):
            return Answer(400, "out_of_order", username=username, reason="Out Of Order")
        return tuple(replace(b, expires_at=0.0) for b in current)
    changes: dict[str, Binding] = {}
    for contact in req.contacts:
        raw = contact.params.get("expires") or header
        q = _qvalue(contact.params.get("q"))
        try:
            expires = int(raw) if raw is not None else cfg.default_expires
        except ValueError:
            expires = -1
        if expires < 0 or q is None:
            why = "bad_q" if q is None else "bad_expires"
            return Answer(400, why, username=username)
        if 0 < expires < cfg.min_expires:
            headers = (("Min-Expires", str(cfg.min_expires)),)
            return Answer(423, "too_brief", headers, username=username)
        uri = contact.raw_uri
        old = by_contact.get(uri)
        if old is not None and _reordered(old, req):
            return Answer(400, "out_of_order", username=username, reason="Out Of Order")
        if expires == 0:
            if old is not None:
                changes[uri] = replace(old, expires_at=0.0)
            continue
        at = wall + min(expires, cfg.max_expires)
        t = src.transport
        changes[uri] = Binding(
            trunk_group, username, t, src.host, src.port, uri, at, q, req.call_id, req.cseq
        )
    kept = {u for u in by_contact if u not in changes} | {
        u for u, b in changes.items() if b.expires_at
    }
    if len(kept) > cfg.max_contacts:
        return Answer(403, "too_many_contacts", username=username, reason="Too Many Contacts")
    return tuple(changes.values())


def _reordered(old: Binding, req: Request) -> bool:
    """An older REGISTER of the same Call-ID, arriving late: it must not undo a newer one."""
    return old.call_id == req.call_id and req.cseq <= old.cseq


def _qvalue(raw: str | None) -> float | None:
    """qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )  (RFC 3261 §25.1);
    None when unreadable."""
    if raw is None:
        return 1.0
    try:
        q = float(raw)
    except ValueError:
        return None
    return q if 0.0 <= q <= 1.0 else None


def listing(bindings: list[Binding], wall: float) -> tuple[tuple[str, str], ...]:
    """The Contact headers of a REGISTER's 200: every current binding with the seconds it
    has left (§10.3 step 8), and its q when it registered one below 1."""
    out = []
    for b in bindings:
        q = f";q={b.q:g}" if b.q != 1.0 else ""
        out.append(("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - wall))}{q}"))
    return tuple(out)
