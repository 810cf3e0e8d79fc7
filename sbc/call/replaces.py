"""An INVITE that replaces one of our dialogs (RFC 3891). Pure.

The Replaces header names one of our dialogs as we see it (§3: to-tag ours, from-tag the
peer's); the party on the far side of that call never saw it. The new call goes to that
far party instead, with Replaces naming our dialog with it as it sees it (to-tag its,
from-tag ours), so topology hiding holds both ways; the far party then ends the replaced
dialog with BYE, which crosses to the replaced party as any BYE does.

    PBX phone 2        sbc                          vendor
      |  (call 1: PBX phone 1 <-> sbc, Call-ID a1 / sbc <-> vendor, Call-ID b1)
      |--INVITE------->|  Replaces: a1;to-tag=<ours>;from-tag=<phone 1's>
      |                |--INVITE--------------------->|  Replaces: b1;to-tag=<vendor's>;
      |                |                              |    from-tag=<ours on b1>
      |<---------200---|<--------------------------200|
      |                |<------------------BYE (b1)---|  -> BYE to phone 1 (a1)

Three forms reach us:

- naming an A-leg (call pickup, or a PBX's own attended transfer): only from the replaced
  call's own trunk group; the new call goes to the vendor of its answered attempt;
- naming a B-leg: a vendor's attended transfer whose REFER we relayed to the caller side
  (sbc.call.refer passes its Replaces on: our B-leg's ids are ours to show); the new call
  goes back to the caller side, to the replaced call's caller;
- a REFER's token, ``<our A tag>;to-tag=<our A tag>;from-tag=<caller's tag>``: a caller's
  attended transfer whose REFER we relayed to the vendor side. The caller's Replaces names
  its dialog with us, whose Call-ID is the caller's own (often ``id@10.0.0.5``) and must
  not cross; our A-leg tag is the call's id (sbc.call.ingress), so it finds the call
  without that Call-ID, in whichever worker minted it (sbc.sip.steer). The new call goes to
  the replaced call's vendor, as for the first form.

Only an answered call may be replaced: anything else is 481 (no such dialog), as is a
dialog we are the UAS of while still early (§3); a call ending is 603, a confirmed dialog
with ``early-only`` 486, more than one Replaces or one without both tags 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbc.call.model import Attempt, Call, Leg
from sbc.call.redirect import Redirect
from sbc.config.schema import TrunkGroup
from sbc.sip.message import Request

Dialogs = dict[tuple[str, str], tuple[Call, Leg, Attempt | None]]


@dataclass(frozen=True, slots=True)
class Replacing:
    """Where a replacing INVITE goes, and what it says there."""

    replaced: Call
    header: str  # the Replaces header toward the vendor
    to: Redirect  # the replaced call's vendor: its trunk, the dialog's remote target


@dataclass(frozen=True, slots=True)
class Refused:
    status: int
    reason: str


NO_DIALOG = Refused(481, "Call/Transaction Does Not Exist")


def parse(value: str) -> tuple[str, str, str, bool] | None:
    """replaces = callid *(SEMI replaces-param); replaces-param = to-tag / from-tag /
    early-flag / generic-param (§6.1): (Call-ID, to-tag, from-tag, early-only), or None
    without both tags."""
    call_id, *params = (p.strip(" \t") for p in value.split(";"))
    found: dict[str, str] = {}
    for p in params:
        name, _, v = p.partition("=")
        found[name.strip(" \t").lower()] = v.strip(" \t")
    to_tag, from_tag = found.get("to-tag"), found.get("from-tag")
    if not call_id or not to_tag or not from_tag:
        return None
    return call_id, to_tag, from_tag, "early-only" in found


def find(
    dialogs: Dialogs, calls: dict[str, Call], req: Request, ingress: TrunkGroup
) -> Replacing | Refused | None:
    """What an INVITE's Replaces header (if any) means for a call from ``ingress``."""
    values = req.get_all("Replaces")
    if not values:
        return None
    named = parse(values[0]) if len(values) == 1 else None
    if named is None:
        return Refused(400, "Bad Replaces")
    call_id, to_tag, from_tag, early_only = named
    entry = dialogs.get((call_id, to_tag))
    leg: Leg = "a"
    if entry is not None:
        call, leg, _ = entry
        dialog = call.a_dialog if leg == "a" else call.b_dialog
        if dialog is None or dialog.call_id != call_id:
            return NO_DIALOG  # a failed attempt's dialog
        if leg == "a" and call.ingress.name != ingress.name:
            return NO_DIALOG
    else:  # a REFER's token: our A tag as its Call-ID (sbc.call.refer)
        found = calls.get(call_id) if call_id == to_tag else None
        if found is None:
            return NO_DIALOG
        call, dialog = found, found.a_dialog
    if dialog.local_tag != to_tag or dialog.remote.tag != from_tag:
        return NO_DIALOG
    if call.state in ("ending", "ended"):
        return Refused(603, "Declined")
    attempt = call.answered
    far = call.b_dialog if leg == "a" else call.a_dialog
    if call.state != "answered" or attempt is None or far is None:
        return NO_DIALOG  # early, and we are its UAS
    if early_only:
        return Refused(486, "Busy Here")
    header = f"{far.call_id};to-tag={far.remote.tag or ''};from-tag={far.local_tag}"
    if leg == "a":  # to the vendor, as its trunk and the dialog's remote target say
        to = Redirect(attempt.trunk_group, attempt.trunk, far.destination(), far.remote_target)
    else:  # back to the caller: its trunk group's trunk it came from
        to = Redirect(call.ingress, _trunk_of(call), far.destination(), far.remote_target)
    return Replacing(call, header, to)


def _trunk_of(call: Call) -> int:
    """The caller's trunk in its trunk group (its credentials and media profile): the one
    at its source address, else the first (a registration account's)."""
    for i, trunk in enumerate(call.ingress.trunks):
        if trunk.ip == call.source.host and trunk.port in (0, call.source.port):
            return i
    return 0
