"""Registration trunks: the registrar for customer PBXs, and the digest checks. Pure.

A PBX on an origination trunk group of type registration REGISTERs with its account
(RFC 3261 §10.3, digest per §22 and RFC 8760). Its binding remembers the address the REGISTER
came from, and every INVITE from that address belongs to the account's trunk group. An INVITE
that names a registration account (in Proxy-Authorization or its From user) from an address
with no binding is challenged with 407 and admitted once its credentials check.

    pbx                       sbc
     |--REGISTER-------------->|
     |<-----401 (SHA-256, MD5)-|   WWW-Authenticate, one per algorithm, preferred first
     |--REGISTER + Authorization>|
     |<--------------------200-|   Contact;expires=N   binding: source address -> trunk group
     |--INVITE---------------->|   from the bound address: the account's trunk group
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
    binding: Binding | None = None  # what changed, for the shared store


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
        cfg = snap.config.node.registrar
        current = self.store.binding_of(tg.name, username, wall)
        if not req.contacts and req.get("Contact") is None:  # a query (§10.2.3)
            return Answer(200, "query", _contact_headers(current, wall), username=username)
        expires_header = req.get("Expires")
        if req.get("Contact") == "*":  # remove every binding (§10.2.2)
            if expires_header is None or expires_header.strip() != "0":
                return Answer(400, "bad_wildcard", username=username)
            return self._unbind(tg, username, wall)
        contact = req.contacts[0]
        raw = contact.params.get("expires") or expires_header
        try:
            expires = int(raw) if raw is not None else cfg.default_expires
        except ValueError:
            return Answer(400, "bad_expires", username=username)
        if expires == 0:
            return self._unbind(tg, username, wall)
        if expires < cfg.min_expires:
            return Answer(
                423, "too_brief", (("Min-Expires", str(cfg.min_expires)),), username=username
            )
        expires = min(expires, cfg.max_expires)
        binding = Binding(
            tg.name, username, src.transport, src.host, src.port, contact.raw_uri, wall + expires
        )
        self.store.bind(binding)
        return Answer(
            200, "registered", _contact_headers(binding, wall), username=username, binding=binding
        )

    def _unbind(self, tg: TrunkGroup, username: str, wall: float) -> Answer:
        self.store.unbind(tg.name, username)
        gone = Binding(tg.name, username, "", "", 0, "", 0.0)  # expired: removed when shared
        return Answer(200, "unregistered", username=username, binding=gone)

    # --- INVITE -------------------------------------------------------------------------------

    def registered(self, snap: Snapshot, src: Target, wall: float) -> TrunkGroup | None:
        """The trunk group of a live binding registered from this address."""
        b = self.store.binding_from(src.transport, src.host, src.port, wall)
        return snap.trunk_groups.get(b.trunk_group) if b is not None else None

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


def _contact_headers(binding: Binding | None, wall: float) -> tuple[tuple[str, str], ...]:
    if binding is None:
        return ()
    left = max(0, int(binding.expires_at - wall))
    return (("Contact", f"<{binding.contact}>;expires={left}"),)
