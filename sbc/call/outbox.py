"""Everything the call path emits, buffered: SIP through the (pure) transaction layer, log
notices, and commands for the state store and rtpengine. Pure: nothing here touches a
socket or a clock. The pieces of sbc.call write here instead of calling each other, and the
runtime drains it after each event (``pop_notices``, ``pop_commands``, the layer's
``datagrams_to_send``), the way aioquic's connection buffers what it has to send.
"""

from __future__ import annotations

from typing import Any

from media.ng import MediaCommand
from routing.monitor import Probe, Transition
from sbc.call import headers
from sbc.call.model import Bye, Call, Headers, Notice
from sbc.config.snapshot import Snapshot
from sbc.sip.dialog import Dialog
from sbc.sip.grammar import NameAddr, Via
from sbc.sip.ids import contact_user, new_id
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import ClientTransaction, ServerTransaction, Target, TransactionLayer
from sbc.state import Command


class Outbox:
    def __init__(self, layer: TransactionLayer, snapshot: Snapshot) -> None:
        self.layer = layer
        self.snapshot = snapshot  # the current one: our own address comes from it
        self.notices: list[Notice] = []
        self.commands: list[Command | MediaCommand] = []
        self.wall_offset = 0.0  # wall clock = now + wall_offset (time of day, records)
        # Our Contact by (transport, user, peer's family, sips), and its header value, for
        # the snapshot it was made from: the same for every call, so not rebuilt per message.
        self._contacts: dict[tuple[str, str, int, bool], tuple[NameAddr, str]] = {}
        self._contacts_of: Snapshot | None = None
        # family -> this worker's own UDP port (node.worker_port, sbc.listeners): the Via of
        # the requests we start toward vendors names it, so their answers come back here
        self.own_ports: dict[int, int] = {}

    def notice(self, event: str, call: Call | None, **fields: Any) -> None:
        """Something worth a log line; call lines carry the call's id."""
        self.notices.append(Notice(event, call.id if call else None, fields))

    def respond(
        self,
        tx: ServerTransaction,
        status: int,
        now: float,
        reason: str | None = None,
        headers: Headers = (),
        to_tag: str | None = None,
        body: bytes = b"",
        tag: bool = True,
    ) -> None:
        """Answer a request; final and dialog-creating answers carry a To tag (§8.2.6.2)."""
        resp = make_response(
            tx.request,
            status,
            reason,
            to_tag=(to_tag or new_id()) if tag else None,
            headers=headers,
            body=body,
        )
        self.layer.respond(tx, resp, now)

    def relay_response(self, tx: ServerTransaction, resp: Response, now: float) -> None:
        self.layer.respond(tx, resp, now)

    def send(self, request: Request, target: Target, now: float, ctx: Any) -> ClientTransaction:
        return self.layer.send_request(request, target, now, ctx=ctx)

    def probe(self, probe: Probe, now: float) -> None:
        """An OPTIONS ping of a monitored trunk (routing.monitor)."""
        target = Target(*probe.key)
        port = self._own_port(target.transport, target.host, True)
        options = headers.options(self.snapshot, target, new_id, port)
        probe.tx = self.send(options, target, now, ctx=probe)

    def transition(self, t: Transition | None) -> None:
        """A trunk went up or down: the node's log line (a follower's only its leader's)."""
        if t is not None:
            error = t.error if t.change == "down" else ""
            tg, trunk = t.trunk_group, str(Target(*t.key))
            self.notice("trunk." + t.change, None, trunk_group=tg, trunk=trunk, error=error)

    def discard(self, tx: ServerTransaction) -> None:
        """Forget a request we choose not to answer at all."""
        self.layer.discard(tx)

    def bye(
        self, call: Call, dialog: Dialog, transport: str, now: float, headers: Headers = ()
    ) -> None:
        """A BYE on one of the call's dialogs; its answer counts down ``call.byes``."""
        dest = dialog.destination()
        bye = dialog.request(
            "BYE", self.via(Target(transport, dest.host, 0), dialog), None, headers=headers
        )
        call.byes += 1
        self.send(bye, dest, now, ctx=Bye(call))

    def ack(
        self, ack: Request | bytes, target: Target, tx: ClientTransaction | None = None
    ) -> None:
        """An ACK for a 2xx: outside any transaction (§13.2.2.4); ``tx``, the INVITE's,
        keeps it for the 2xx's retransmissions."""
        self.layer.send_ack(ack, target, tx)

    def via(self, peer: Target | str, dialog: Dialog | None = None, own: bool = False) -> Via:
        """Our Via toward ``peer``: its transport and our address of its family; ``peer`` a
        bare transport: the family of ``dialog``'s destination, else switch_ip's. Our own
        port (``own_ports``) for a request to a vendor: ``own``, or ``dialog`` is a B-leg's
        that started so (``Dialog.own``)."""
        transport, host = _toward(peer, dialog)
        own = own or (dialog is not None and dialog.own)
        port = self._own_port(transport, host, own)
        return headers.via(self.snapshot, transport, new_id(), host, port)

    def _own_port(self, transport: str, host: str, own: bool) -> int:
        if not (own and self.own_ports) or transport != "udp":
            return 0
        return self.own_ports.get(6 if ":" in host else 4, 0)

    def contact(self, peer: Target | str, dialog: Dialog | None = None) -> NameAddr:
        """Our Contact (its user names this worker: sbc.sip.steer.contact_user)."""
        return self._contact(*_toward(peer, dialog), contact_user())[0]

    def contact_value(self, peer: Target | str, sips: bool = False) -> str:
        """Our Contact as a header value (a response's, RFC 3261 §12.1.1: a sips: URI when
        the dialog's request was, ``sips``)."""
        return self._contact(*_toward(peer, None), contact_user(), sips)[1]

    def _contact(
        self, transport: str, host: str, user: str, sips: bool = False
    ) -> tuple[NameAddr, str]:
        key = (transport, user, 6 if ":" in host else 4 if host else 0, sips)
        snap = self.snapshot
        if self._contacts_of is not snap:  # a reload may move our address
            self._contacts, self._contacts_of = {}, snap
        found = self._contacts.get(key)
        if found is None:
            na = headers.contact(snap, transport, user, host, sips)
            found = self._contacts[key] = (na, str(na))
        return found


def _toward(peer: Target | str, dialog: Dialog | None) -> tuple[str, str]:
    """(transport, the peer's IP or "") of whom a header we write is for (dual stack)."""
    if not isinstance(peer, str):
        return peer.transport, peer.host
    return peer, dialog.destination().host if dialog is not None else ""
