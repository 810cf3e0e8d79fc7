"""Who may speak inside a call's dialogs (RFC 3261 §12.2.2). Pure.

A request with a To tag names one of our dialogs by its Call-ID and our tag. That is not
proof: a stranger who sniffed or guessed them could hang up the call, or re-INVITE its media
to himself. So a request is taken as the dialog's only when

- it comes from the dialog's peer: for the A-leg an address of the ingress trunk group's IP
  trunks, the address the call came from, or a live registration of that trunk group; for a
  B-leg the address of that attempt's trunk (any source port over a reliable transport,
  where a peer may open its own connection);
- its From tag is the peer's own tag (the one our requests carry in To);
- its CSeq is not lower than the peer's last one: lower is out of order, answered 500
  (§12.2.2).

Anything else is answered as if there were no such dialog: 481 to an address we know, and
to anyone else nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from sbc.config.snapshot import Snapshot
from sbc.sip.dialog import Dialog
from sbc.sip.message import Request
from sbc.sip.transaction import Target

Verdict = Literal["ok", "stranger", "out_of_order"]
Bound = Callable[[Target], str | None]  # the trunk group of a live registration at an address


def caller_peer(
    snap: Snapshot, trunk_group: str, origin: Target, source: Target, bound: Bound
) -> bool:
    """May ``source`` speak for the caller of a call that came from ``origin`` on
    ``trunk_group``?"""
    if source == origin:
        return True
    claims = snap.peers.get((source.transport, source.host), ())
    if any(c.trunk_group.name == trunk_group and c.port in (0, source.port) for c in claims):
        return True
    return bound(source) == trunk_group


def trunk_peer(trunk: Target, source: Target) -> bool:
    """May ``source`` speak for the vendor trunk an attempt went to?"""
    return (
        source.transport == trunk.transport
        and source.host == trunk.host
        and (source.reliable or source.port == trunk.port)
    )


def check(peer: bool, dialog: Dialog | None, req: Request) -> Verdict:
    """May ``req`` (whose Call-ID and To tag found a leg) act on it? ``peer``: it came from
    the leg's peer; ``dialog``: the leg's dialog once confirmed (a B-leg has none before
    its answer). An accepted request's CSeq becomes the dialog's remote sequence number."""
    if not peer:
        return "stranger"
    if dialog is None:
        return "ok"
    if req.from_.tag != dialog.remote.tag:
        return "stranger"
    if req.method in ("ACK", "CANCEL"):  # they reuse the CSeq of the INVITE they belong to
        return "ok"
    last = dialog.remote_cseq
    if last is not None and req.cseq < last:
        return "out_of_order"
    dialog.remote_cseq = req.cseq
    return "ok"
