"""Our registrations at vendors' registrars (termination trunks of type registration). Pure.

    sbc                         vendor registrar
     |--REGISTER (Expires N)---->|
     |<--------------401/407-----|   once per round: answered with the trunk's credentials
     |--REGISTER + Authorization>|   (CSeq + 1, RFC 3261 §22.2)
     |<--------------------200---|   registration.up; refresh at 80 % of what was granted
     |        ... failure ...    |   registration.failed; retry every REGISTER_RETRY s

A registration trunk is hunted only while its registration is up. Theory of operation:
``reconcile`` after each (re)load, ``on_response`` and ``on_failure`` for its transactions,
and ``take`` after the shared timer heap fired; each returns ``SendRegister`` (the caller
sends the request with the registration as its context) and ``RegistrationChanged`` (for
the log).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sbc.call import headers
from sbc.call.outbox import Outbox
from sbc.config.schema import Trunk, TrunkGroup
from sbc.sip.digest import authorization, pick_challenge
from sbc.sip.grammar import NameAddr, Uri
from sbc.sip.message import Request, Response, make_request
from sbc.sip.timers import TimerHeap
from sbc.sip.transaction import Target

REGISTER_RETRY = 30.0  # seconds between attempts while a vendor registration fails


@dataclass(slots=True, eq=False)
class Registration:
    """One registration at a vendor's registrar."""

    key: tuple[str, int]  # (trunk group, trunk index)
    trunk: Trunk
    target: Target
    call_id: str
    from_tag: str
    cseq: int = 0
    up: bool = False
    auth_sent: bool = False
    generation: int = 0  # bumps on each send: a stale refresh timer does nothing
    uri: str = ""  # the Request-URI sent: the digest-uri of our credentials


@dataclass(frozen=True, slots=True)
class SendRegister:
    registration: Registration
    request: Request


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """registration.up (with the granted ``expires``) or registration.failed (``error``)."""

    event: str
    registration: Registration
    fields: dict[str, Any] = field(default_factory=dict)


Action = SendRegister | RegistrationChanged


class Registrations:
    def __init__(self, out: Outbox, timers: TimerHeap, new_id: Callable[[], str]) -> None:
        self.out = out  # for the snapshot our address comes from; actions are returned
        self.new_id = new_id
        self.by_key: dict[tuple[str, int], Registration] = {}
        self._timers = timers  # shared with the rest of the layer
        self._out: list[Action] = []

    def is_up(self, trunk_group: str, index: int) -> bool:
        reg = self.by_key.get((trunk_group, index))
        return reg is not None and reg.up

    def reconcile(self, target_of: Callable[[Trunk], Target], now: float) -> list[Action]:
        """Register every registration trunk of the enabled termination trunk groups;
        forget those no longer configured (their timers and answers stop counting)."""
        snap = self.out.snapshot
        wanted: dict[tuple[str, int], Trunk] = {}
        for tg in snap.config.trunk_groups:
            if tg.direction == "termination" and tg.status == "enabled":
                wanted.update(_registration_trunks(tg))
        for key in list(self.by_key):
            reg = self.by_key[key]
            if wanted.get(key) != reg.trunk:
                reg.generation += 1
                del self.by_key[key]
        for key, trunk in wanted.items():
            if key not in self.by_key:
                reg = Registration(key, trunk, target_of(trunk), self.new_id(), self.new_id())
                self.by_key[key] = reg
                self._send(reg)
        return self._take()

    def take(self) -> list[Action]:
        """What the refresh and retry timers decided since the last call."""
        return self._take()

    def on_response(self, reg: Registration, resp: Response, now: float) -> list[Action]:
        if resp.status >= 200 and self.by_key.get(reg.key) is reg:
            self._answered(reg, resp, now)
        return self._take()

    def on_failure(self, reg: Registration, why: str, now: float) -> list[Action]:
        self._failed(reg, now, why)
        return self._take()

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _answered(self, reg: Registration, resp: Response, now: float) -> None:
        if resp.status in (401, 407) and not reg.auth_sent:
            asked = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            challenge = pick_challenge(resp.get_all(asked))
            if challenge is not None:
                trunk = reg.trunk
                value = authorization(
                    challenge, "REGISTER", reg.uri, trunk.username, trunk.password
                )
                reg.auth_sent = True
                name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                self._send(reg, (name, value))
                return
        reg.auth_sent = False
        if resp.status >= 300:
            self._failed(reg, now, f"{resp.status} {resp.reason}")
            return
        # The registrar may grant less than we asked (§10.2.4): our Contact's expires, else
        # the Expires header; anything unreadable leaves what we asked for.
        granted = reg.trunk.expires
        mine = [c for c in resp.contacts if c.uri.user == reg.trunk.username]
        raw = (mine[0].params.get("expires") if mine else None) or resp.get("Expires")
        if raw is not None and raw.strip().isdigit() and int(raw) > 0:
            granted = int(raw)
        if not reg.up:
            reg.up = True
            self._out.append(RegistrationChanged("registration.up", reg, {"expires": granted}))
        # Refresh well before expiry (RFC 3261 §10.2.4), at least 5 s ahead.
        refresh = max(1.0, min(granted * 0.8, granted - 5))
        self._timers.arm(now + refresh, (reg, reg.generation), "reregister", self)

    def _failed(self, reg: Registration, now: float, why: str) -> None:
        if self.by_key.get(reg.key) is not reg:
            return
        reg.auth_sent = False
        reg.up = False
        self._out.append(RegistrationChanged("registration.failed", reg, {"error": why}))
        self._timers.arm(now + REGISTER_RETRY, (reg, reg.generation), "reregister", self)

    def _timer_reregister(self, entry: tuple[Registration, int], now: float) -> None:
        reg, generation = entry
        if self.by_key.get(reg.key) is reg and reg.generation == generation:
            self._send(reg)

    def _send(self, reg: Registration, auth: tuple[str, str] | None = None) -> None:
        snap, trunk = self.out.snapshot, reg.trunk
        host = reg.target.uri_host
        aor = Uri("sip", trunk.username, None, host)
        registrar = Uri("sip", "", None, host, reg.target.port, reg.target.uri_params)
        reg.uri = str(registrar)
        reg.cseq += 1
        reg.generation += 1
        extra = [("Expires", str(trunk.expires))]
        if auth is not None:
            extra.append(auth)
        req = make_request(
            "REGISTER",
            registrar,
            via=headers.via(snap, trunk.protocol, self.new_id(), reg.target.host),
            from_=NameAddr(None, aor, {"tag": reg.from_tag}, str(aor)),
            to=NameAddr(None, aor, {}, str(aor)),
            call_id=reg.call_id,
            cseq=reg.cseq,
            contact=headers.contact(snap, trunk.protocol, trunk.username, reg.target.host),
            headers=extra,
        )
        self._out.append(SendRegister(reg, req))


def _registration_trunks(tg: TrunkGroup) -> dict[tuple[str, int], Trunk]:
    return {(tg.name, i): t for i, t in enumerate(tg.trunks) if t.type == "registration"}


def carry_out(out: Outbox, actions: list[Action], now: float) -> None:
    """Send the REGISTERs and log the changes the registrations decided."""
    for action in actions:
        reg = action.registration
        if isinstance(action, SendRegister):
            out.send(action.request, reg.target, now, ctx=reg)
        else:
            fields = {"trunk_group": reg.key[0], "username": reg.trunk.username}
            out.notice(action.event, None, **fields, registrar=str(reg.target), **action.fields)
