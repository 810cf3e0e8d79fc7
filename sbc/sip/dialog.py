"""Dialog state (RFC 3261 §12) and in-dialog request construction (§12.2.1.1)."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from sbc.sip.grammar import NameAddr, Uri, Via
from sbc.sip.message import Request, Response, make_request
from sbc.sip.tagdict import tag_params
from sbc.sip.transaction import Target

# Methods whose requests carry our Contact (a target refresh or a dialog-forming request).
_WITH_CONTACT = frozenset(("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"))


@functools.lru_cache(maxsize=4096)  # few hosts (trunks, peers), asked for each in-dialog request
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(slots=True, eq=False)
class Dialog:
    """One side of a call as a SIP dialog, from our point of view."""

    call_id: str
    local: NameAddr  # our From in requests we send (carries our tag)
    remote: NameAddr  # our To in requests we send (carries the peer's tag)
    local_cseq: int
    remote_target: Uri  # the peer's Contact
    route_set: tuple[NameAddr, ...]  # Route values for our requests, in order (often ())
    peer: Target  # the address the peer's signaling uses (used with nat, or for names)
    nat: bool = False
    remote_cseq: int | None = None  # the peer's last CSeq (§12.2.2); None until it sends one
    own: bool = False  # our requests in it leave from the worker's own port (sbc.listeners)

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, source: Target, nat: bool) -> Dialog:
        """The dialog a UAS forms with a request's sender (§12.1.1)."""
        to = invite.to
        params = {**to.params, "tag": local_tag} if to.params else tag_params(local_tag)
        local = NameAddr(to.display, to.uri, params, to.raw_uri)
        target = invite.contacts[0].uri if invite.contacts else invite.from_.uri
        routes = tuple(invite.record_routes)  # no Record-Route: the shared ()
        return cls(invite.call_id, local, invite.from_, 0, target, routes, source, nat, invite.cseq)

    @classmethod
    def as_uac(
        cls, invite: Request, response: Response, target: Target, nat: bool, own: bool = False
    ) -> Dialog:
        """The dialog a UAC forms from a 1xx/2xx with a To tag (§12.1.2): the peer's tag from
        To, its Contact as remote target, the Record-Route set reversed."""
        remote_target = (
            response.contacts[0].uri if response.contacts else invite.ruri or response.to.uri
        )
        routes = tuple(reversed(response.record_routes))
        return cls(
            invite.call_id,
            invite.from_,
            response.to,
            invite.cseq,
            remote_target,
            routes,
            target,
            nat,
            own=own,
        )

    @property
    def target_host(self) -> str:
        """The host our in-dialog requests are addressed to (first route, else the remote
        target), as written: what a peer's host is compared with, without resolving or
        validating it (that is ``destination``'s job, when we send)."""
        uri = self.route_set[0].uri if self.route_set else self.remote_target
        return uri.host.strip("[]")

    def destination(self) -> Target:
        """Where in-dialog requests go: the first route, else the remote target, else (for
        names we do not resolve, or with NAT handling on) the peer's signaling address."""
        if self.nat:
            return self.peer
        uri = self.route_set[0].uri if self.route_set else self.remote_target
        if uri.is_sip and _is_ip(uri.host):
            transport = (uri.param("transport") or self.peer.transport).lower()
            return Target(transport, uri.host.strip("[]"), uri.port or 5060)
        return self.peer

    def request(
        self,
        method: str,
        via: Via,
        contact: NameAddr | None,
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> Request:
        """A request inside this dialog; the CSeq advances unless given (ACK reuses it)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        return make_request(
            method,
            self.remote_target,
            via=via,
            from_=self.local,
            to=self.remote,
            call_id=self.call_id,
            cseq=cseq,
            contact=contact if method in _WITH_CONTACT else None,
            routes=self.route_set,
            headers=headers,
            body=body,
        )
