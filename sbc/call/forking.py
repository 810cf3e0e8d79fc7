"""Calls to a registered PBX's account: its contacts one after another. Pure.

An account may hold several contacts (sbc.registrar, RFC 3261 §10.3). A call to it tries
them in turn, highest q first (equal q: the most recently refreshed first), as a proxy's
sequential search does (RFC 3261 §16.6, §16.7): the first contact is the attempt, the others
wait in the call's redirections, each an attempt of its own (and a CDR attempt entry). A
contact that fails, or never answers (B-timer, Timer B: 408), hands the call to the next
whatever the caller's route_advance codes say, since it is the same destination reached at
another address; a 6xx (a global failure, §21.6) or the caller's CANCEL ends the search.
After the last contact the ordinary route advance rules apply.

    carrier              sbc                  desk :5070 (q=1)       soft :5072 (q=0.5)
     |--INVITE DID------->|--INVITE-------------->|                       |
     |                    |<-------------------486|                       |
     |                    |--ACK----------------->|                       |
     |                    |--INVITE------------------------------------->|  attempt 2
     |<---------------200-|<------------------------------------------200-|
"""

from __future__ import annotations

from sbc.call.model import Call
from sbc.call.redirect import Redirect, registered
from sbc.config.schema import TrunkGroup
from sbc.state.memory import MemoryStore


def contacts(tg: TrunkGroup, index: int, store: MemoryStore, wall: float) -> list[Redirect]:
    """Where a call to account ``index`` of ``tg`` goes: each usable live contact, in the
    order they are tried."""
    username = tg.trunks[index].username
    found = (registered(tg, index, b) for b in store.contacts_of(tg.name, username, wall))
    return [r for r in found if r is not None]


def forks_on(call: Call, status: int) -> bool:
    """The current attempt went to one contact of an account and failed with ``status``:
    is another contact of the same account next?"""
    a = call.current
    if a is None or a.trunk_group.direction != "origination" or status >= 600:
        return False
    if not call.redirects:
        return False
    nxt = call.redirects[0]
    return nxt.by is None and nxt.trunk_group.name == a.trunk_group.name and nxt.index == a.trunk
