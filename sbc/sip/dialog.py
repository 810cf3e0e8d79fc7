"""Dialog state (RFC 3261 §12) and in-dialog request construction (§12.2.1.1)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sbc.sip.grammar import NameAddr, Uri, Via, parse_name_addr
from sbc.sip.message import Request, make_request
from sbc.sip.transaction import Target


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
    route_set: list[str]  # Route values for our requests, in order
    peer: Target  # the address the peer's signaling uses (used with nat, or for names)
    nat: bool = False

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, source: Target, nat: bool) -> Dialog:
        """The dialog a UAS forms with a request's sender (§12.1.1)."""
        to = invite.to
        local = NameAddr(to.display, to.uri, {**to.params, "tag": local_tag}, to.raw_uri)
        target = invite.contacts[0].uri if invite.contacts else invite.from_.uri
        routes = [str(rr) for rr in invite.record_routes]
        return cls(invite.call_id, local, invite.from_, 0, target, routes, source, nat)

    @classmethod
    def as_uac(
        cls,
        invite: Request,
        response_to: NameAddr,
        contact: Uri | None,
        record_routes: list[NameAddr],
        target: Target,
        nat: bool,
    ) -> Dialog:
        """The dialog a UAC forms from a 1xx/2xx with a To tag (§12.1.2)."""
        routes = [str(rr) for rr in reversed(record_routes)]
        return cls(
            invite.call_id,
            invite.from_,
            response_to,
            invite.cseq,
            contact or invite.ruri or response_to.uri,
            routes,
            target,
            nat,
        )

    def destination(self) -> Target:
        """Where in-dialog requests go: the first route, else the remote target, else (for
        names we do not resolve, or with NAT handling on) the peer's signaling address."""
        if self.nat:
            return self.peer
        uri = parse_name_addr(self.route_set[0]).uri if self.route_set else self.remote_target
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
            contact=contact
            if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER")
            else None,
            routes=[parse_name_addr(r) for r in self.route_set],
            headers=headers,
            body=body,
        )
