"""Who may send us what: the edge screen, the registrar's answers and its lockout. Pure.

The first look at every message (``screen``, before the parser; sbc.edge has the rules),
the answer to a REGISTER, and the digest check of an INVITE that claims a registration
account (sbc.registrar), with the lockout that shuts out a guesser (sbc.lockout). Strangers
get nothing; a known address that names no dialog of its own gets 481 (``not_ours``).
Everything goes out through the Outbox: answers, notices, and Bind commands for the state
store.
"""

from __future__ import annotations

from collections import Counter

from sbc import edge
from sbc.call.headers import ALLOW
from sbc.call.outbox import Outbox
from sbc.config.schema import TrunkGroup
from sbc.config.snapshot import Snapshot
from sbc.flood import Ban, Flood
from sbc.lockout import FAILURES, Lockout
from sbc.registrar import Answer, Registrar
from sbc.sip.message import Request
from sbc.sip.parser import KNOWN_METHODS
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import ServerTransaction, Target
from sbc.state import Bind

# RFC 3262 and RFC 4028, both per leg, and RFC 3891 (sbc.call.reliable, sessiontimer, replaces)
SUPPORTED = "100rel, timer, replaces"


class Gate:
    def __init__(
        self, out: Outbox, registrar: Registrar, dialog_hosts: Counter[str], timers: TimerHeap
    ) -> None:
        self.out = out
        self.registrar = registrar
        self.dialog_hosts = dialog_hosts  # the controller's: hosts of live calls' legs
        self.timers = timers  # the controller's heap: ban ends
        self.drops = edge.Drops()  # messages dropped unanswered, by reason
        self.lockout = Lockout()  # digest failures and the sources/accounts they blocked
        self.flood = Flood()  # per source IP request windows and bans (node.flood)
        # True in a worker of several: its steering step (sbc.worker) checks every message
        # (UDP and TCP/TLS) against the flood bans as it comes off the socket, before
        # handing it on, so the screen does not check again.
        self.flood_checked = False
        # REGISTERs whose 200 waits for their binding to be shared (Bind.token)
        self.held: dict[int, tuple[ServerTransaction, Answer]] = {}
        self._tokens = 0

    def screen(self, data: bytes, source: Target, now: float) -> bool:
        """The verdict on a message before it is parsed (``TransactionLayer.accept``; see
        sbc.edge): False drops it unanswered. Host-level: an address is known by its IP."""
        if not self.flood_checked and self.flooded(data, source.host, now):
            return False
        method = edge.method_of(data)
        host = source.host
        if method == b"SIP/2.0":  # a response: from a host we asked, or at least know
            if self.out.layer.awaits(host) or self.trusted(host, now):
                return True  # (the layer matches it to its request, or drops it as stray)
            return self.dropped("unknown_source", source, now, method)
        blocked = method in (b"REGISTER", b"INVITE") and self.lockout.blocked("source", host, now)
        trusted = self.trusted(host, now)
        # A locked-out address loses its REGISTERs; its INVITEs only if it is no trunk's and
        # holds no registration, so a spoofed guesser cannot shut a carrier out.
        if blocked and (method == b"REGISTER" or not trusted):
            return self.dropped("auth_blocked", source, now, method)
        snap = self.out.snapshot
        if trusted or host in self.dialog_hosts or snap.config.node.unknown_source == "reject":
            return True
        if method == b"REGISTER" and snap.accounts:
            return True
        return self.dropped("unknown_source", source, now, method)

    def flooded(self, data: bytes, host: str, now: float) -> bool:
        """True drops the message: its source is banned (sbc.flood), or this request is one
        too many and bans it. One dict lookup while no source is banned and flood
        protection is off; a lookup and a counter when it is on."""
        flood = self.flood
        if flood.bans and flood.banned(host, now):
            self.drops.counts["flood"] += 1
            return True
        cfg = self.out.snapshot.config.node.flood
        if cfg.requests and not data.startswith(b"SIP/2.0"):
            ban = flood.count(cfg, host, now)
            if ban is not None:
                self.drops.counts["flood"] += 1
                self._banned(ban, now)
                return True
        return False

    def _banned(self, ban: Ban, now: float) -> None:
        """One line when a ban starts, the address first among its fields, for fail2ban
        (contrib/fail2ban); another when it ends (``_timer_unban``)."""
        cfg = self.out.snapshot.config.node.flood
        self.timers.arm(ban.until, ban.host, "unban", self)
        self.out.notice(
            "flood.banned",
            None,
            ip=ban.host,
            requests=ban.requests,
            window=cfg.window,
            block_for=cfg.block_for,
        )

    def share_ban(self, host: str, block_for: float, now: float) -> None:
        """A ban another worker of the node started (sbc.worker): held here too, silently
        (the supervisor logs it once for the node)."""
        if self.flood.share(host, now + block_for):
            self.timers.arm(now + block_for, host, "unban", self)

    def _timer_unban(self, host: str, now: float) -> None:
        ended = self.flood.expire(host, now)
        if ended is not None:
            self.out.notice("flood.unbanned", None, ip=host, dropped=int(ended[1]))

    def trusted(self, host: str, now: float) -> bool:
        """A host of any trunk group (or vendor registrar), or of a live registration."""
        return host in self.out.snapshot.peer_hosts or self.registrar.store.host_bound(
            host, now + self.out.wall_offset
        )

    def known(self, source: Target, now: float) -> bool:
        """A host we would answer: a trunk's, a registration's, or a live call's."""
        return self.trusted(source.host, now) or source.host in self.dialog_hosts

    def dropped(
        self, reason: edge.DropReason, source: Target, now: float, method: bytes | str = b""
    ) -> bool:
        """Count a message dropped unanswered; log the first from its address in a while,
        with how many this line stands for."""
        n = self.drops.drop(reason, source.host, now)
        if n:
            if isinstance(method, bytes):
                method = method.decode("ascii", "replace")
            self.out.notice(
                "edge.dropped",
                None,
                reason=reason,
                source=str(source),
                method=method,
                dropped=n,
                note=f"drops from {source.host} since the last line; the next is due in "
                f"{edge.LOG_EVERY:.0f} s at the earliest",
            )
        return False

    def not_ours(self, tx: ServerTransaction, source: Target, now: float) -> None:
        """An in-dialog request that names no dialog of its sender's: 481 to an address we
        know (RFC 3261 §12.2.2), nothing to a stranger."""
        if self.known(source, now):
            self.out.respond(tx, 481, now)
        else:
            self.out.discard(tx)
            self.dropped("in_dialog", source, now, tx.request.method)

    def outside_call(
        self, tx: ServerTransaction, req: Request, src: Target, now: float, draining: bool
    ) -> None:
        """A request outside any dialog that is neither INVITE nor REGISTER."""
        if not self.known(src, now):
            self.unknown_source(tx, req, src, now)
        elif req.method == "OPTIONS" and draining:
            # Going away: a peer's monitoring should take us out of its hunting now.
            retry = str(self.out.snapshot.config.node.drain_retry_after)
            self.out.respond(tx, 503, now, headers=[("Retry-After", retry)])
        elif req.method == "OPTIONS":
            # Peers ping us with OPTIONS as a keep-alive (RFC 3261 §11.2).
            # RFC 3261 §11.2; what we support, never an empty Supported (a fingerprint)
            headers = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", SUPPORTED)]
            self.out.respond(tx, 200, now, headers=headers)
        elif req.method in KNOWN_METHODS:
            self.out.respond(tx, 405, now, headers=[("Allow", ALLOW)])
        else:
            self.out.respond(tx, 501, now, headers=[("Allow", ALLOW)])

    def unknown_source(self, tx: ServerTransaction, req: Request, src: Target, now: float) -> None:
        policy = self.out.snapshot.config.node.unknown_source
        self.out.notice(
            "call.refused",
            None,
            reason="unknown_source",
            method=req.method,
            source=str(src),
            action=policy,
        )
        if policy == "reject":
            self.out.respond(tx, 403, now)
        else:
            self.out.discard(tx)

    def registered_caller(
        self, tx: ServerTransaction, req: Request, src: Target, now: float, user: str
    ) -> tuple[TrunkGroup, str] | None:
        """An INVITE no IP trunk claims: from a registered PBX's address, or claiming a
        registration account (then 407 until its Proxy-Authorization checks). None: answered."""
        snap = self.out.snapshot
        wall = now + self.out.wall_offset
        tg = self.registrar.registered(snap, src, wall)
        if tg is None and self.registrar.claimed(snap, req) is not None:
            if self._account_locked(req, "Proxy-Authorization", src, now):
                self.out.discard(tx)
                self.dropped("auth_blocked", src, now, "INVITE")
                return None
            result = self.registrar.authenticate_invite(snap, req, src, wall)
            if isinstance(result, Answer):
                if result.why != "challenge":
                    self._refused(req, src, result, snap)
                    if self._auth_failed(result, src, now):
                        self.out.discard(tx)
                        return None
                self.out.respond(tx, result.status, now, result.reason, headers=result.headers)
                return None
            tg = result
        if tg is None:
            self.unknown_source(tx, req, src, now)
            return None
        prefix = tg.tech_prefix
        return tg, user[len(prefix) :] if prefix and user.startswith(prefix) else user

    def _refused(self, req: Request, src: Target, answer: Answer, snap: Snapshot) -> None:
        account = snap.accounts.get(answer.username)
        self.out.notice(
            "auth.refused",
            None,
            method=req.method,
            status=answer.status,
            reason=answer.why,
            username=answer.username,
            trunk_group=account[0].name if account else "",
            source=str(src),
        )

    def _auth_failed(self, answer: Answer, src: Target, now: float) -> bool:
        """Count a failed authentication toward the lockout (sbc.lockout); True when it
        started a block, so it gets no answer either."""
        if answer.why not in FAILURES:
            return False
        cfg = self.out.snapshot.config.node.registrar.lockout
        blocks = self.lockout.failed(cfg, src.host, answer.username, now)
        for block in blocks:
            # One line per block, the address first among its fields, for fail2ban
            # (README, Security at the edge, has the failregex).
            self.out.notice(
                "auth.blocked",
                None,
                ip=src.host,
                scope=block.scope,
                username=answer.username,
                failures=block.failures,
                window=cfg.window,
                block_for=cfg.block_for,
                source=str(src),
            )
        return bool(blocks)

    def _account_locked(self, req: Request, header: str, src: Target, now: float) -> bool:
        """The account these credentials name is locked out (sbc.lockout), and ``src`` is
        not the address of its live registration."""
        user = Registrar.username(req, header)
        if not user or not self.lockout.blocked("account", user, now):
            return False
        account = self.out.snapshot.accounts.get(user)
        if account is not None:
            wall = now + self.out.wall_offset
            live = self.registrar.store.contacts_of(account[0].name, user, wall)
            if any(b.host == src.host for b in live):
                return False
        return True

    def register(self, tx: ServerTransaction, req: Request, src: Target, now: float) -> None:
        snap = self.out.snapshot
        if self._account_locked(req, "Authorization", src, now):
            self.out.discard(tx)
            self.dropped("auth_blocked", src, now, "REGISTER")
            return
        answer = self.registrar.register(snap, req, src, now + self.out.wall_offset)
        if answer.pruned and not answer.changes:  # shared, but nothing to wait for
            self.out.commands.append(Bind(answer.pruned))
        if answer.changes:
            self._tokens += 1
            self.held[self._tokens] = (tx, answer)
            self.out.commands.append(Bind(answer.changes + answer.pruned, self._tokens))
            wall = now + self.out.wall_offset
            for b in answer.changes:
                self.out.notice(
                    "registrar." + ("registered" if b.expires_at else "unregistered"),
                    None,
                    username=answer.username,
                    trunk_group=b.trunk_group,
                    contact=b.contact,
                    source=str(src),
                    expires=max(0, round(b.expires_at - wall)),
                    q=b.q,
                )
            return  # answered when bound
        elif answer.status >= 300 and answer.why != "challenge":
            self._refused(req, src, answer, snap)
            if self._auth_failed(answer, src, now):
                self.out.discard(tx)
                return
        self.out.respond(tx, answer.status, now, answer.reason, headers=answer.headers)

    def bound(self, token: int, now: float) -> None:
        """The binding of a held REGISTER is known to every worker: answer it now."""
        held = self.held.pop(token, None)
        if held is not None:
            tx, answer = held
            self.out.respond(tx, answer.status, now, answer.reason, headers=answer.headers)
