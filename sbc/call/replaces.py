"""An INVITE from a caller that replaces one of its calls' dialogs (RFC 3891). Pure.

The Replaces header names the caller's dialog with us (our A-leg: its Call-ID, our tag as
``to-tag``, the caller's as ``from-tag``, §3); the vendor never saw that dialog. So the new
call goes to the vendor of the replaced call (its answered attempt's trunk group, the
remote target of its dialog), with Replaces naming our dialog with that vendor instead:
the B-leg's Call-ID, the vendor's tag as to-tag, ours as from-tag (topology hiding holds).
The vendor then ends the replaced dialog with BYE, which reaches the caller's old dialog
as any BYE does.

    PBX phone 2        sbc                          vendor
      |  (call 1: PBX phone 1 <-> sbc, Call-ID a1 / sbc <-> vendor, Call-ID b1)
      |--INVITE------->|  Replaces: a1;to-tag=<ours>;from-tag=<phone 1's>
      |                |--INVITE--------------------->|  Replaces: b1;to-tag=<vendor's>;
      |                |                              |    from-tag=<ours on b1>
      |<---------200---|<--------------------------200|
      |                |<------------------BYE (b1)---|  -> BYE to phone 1 (a1)

Only an answered call of the same trunk group may be replaced: anything else is 481 (no
such dialog), as is a dialog we are the UAS of while still early (§3); a call ending is
603, a confirmed dialog with ``early-only`` 486, more than one Replaces or one without
both tags 400.
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


def find(dialogs: Dialogs, req: Request, ingress: TrunkGroup) -> Replacing | Refused | None:
    """What an INVITE's Replaces header (if any) means for a call from ``ingress``."""
    values = req.get_all("Replaces")
    if not values:
        return None
    named = parse(values[0]) if len(values) == 1 else None
    if named is None:
        return Refused(400, "Bad Replaces")
    call_id, to_tag, from_tag, early_only = named
    entry = dialogs.get((call_id, to_tag))
    if entry is None or entry[1] != "a":
        return Refused(481, "Call/Transaction Does Not Exist")
    call = entry[0]
    if call.ingress.name != ingress.name or call.a_dialog.remote.tag != from_tag:
        return Refused(481, "Call/Transaction Does Not Exist")
    if call.state in ("ending", "ended"):
        return Refused(603, "Declined")
    attempt, dialog = call.answered, call.b_dialog
    if call.state != "answered" or attempt is None or dialog is None:
        return Refused(481, "Call/Transaction Does Not Exist")  # early, and we are its UAS
    if early_only:
        return Refused(486, "Busy Here")
    header = f"{dialog.call_id};to-tag={dialog.remote.tag or ''};from-tag={dialog.local_tag}"
    to = Redirect(attempt.trunk_group, attempt.trunk, dialog.destination(), dialog.remote_target)
    return Replacing(call, header, to)
