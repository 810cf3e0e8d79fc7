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

from typing import Literal

from sbc.call.model import Attempt, Call, Leg
from sbc.config.snapshot import Snapshot
from sbc.sip.dialog import Dialog
from sbc.sip.message import Request
from sbc.sip.transaction import Target

Verdict = Literal["ok", "stranger", "out_of_order"]


def caller_peer(
    snap: Snapshot, trunk_group: str, origin: Target, dialog: Dialog, source: Target
) -> bool:
    """May ``source`` speak for the caller of a call that came from ``origin`` on
    ``trunk_group``? The host it came from, the host of the caller's Contact (where our
    requests go), or a host of the trunk group's IP trunks; any port and transport (a PBX
    may open a new TCP connection). Another account's PBX in the same registration trunk
    group is none of these."""
    host = source.host
    return (
        host == origin.host or host == dialog.target_host or host in snap.hosts.get(trunk_group, ())
    )


def trunk_peer(
    snap: Snapshot, trunk_group: str, trunk: Target, dialog: Dialog | None, source: Target
) -> bool:
    """May ``source`` speak for the vendor of an attempt to ``trunk``? That trunk's host, a
    host of its trunk group's other IP trunks (a vendor's cluster), or the host of the
    vendor's Contact once it answered."""
    host = source.host
    if host == trunk.host or host in snap.hosts.get(trunk_group, ()):
        return True
    return dialog is not None and host == dialog.target_host


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


Dialogs = dict[tuple[str, str], tuple[Call, Leg, Attempt | None]]  # (Call-ID, our tag) -> leg


def leg_of(dialogs: Dialogs, req: Request, source: Target) -> tuple[Call, Leg] | Verdict:
    """The call and leg an in-dialog request names, if it may act on it; else why not."""
    entry = dialogs.get((req.call_id, req.to.tag or ""))
    if entry is None:
        return "stranger"
    call, leg, attempt = entry
    dialog: Dialog | None
    if attempt is None:
        dialog = call.a_dialog
        peer = caller_peer(call.snap, call.ingress.name, call.source, dialog, source)
    else:
        dialog = attempt.dialog
        etg = attempt.trunk_group.name
        peer = trunk_peer(call.snap, etg, attempt.target, dialog, source)
    verdict = check(peer, dialog, req)
    return (call, leg) if verdict == "ok" else verdict
