"""The identifiers we put on the wire: Call-IDs, tags and Via branches.

Each is 64 bits from the operating system's CSPRNG (``secrets``), hex: nothing in one tells
another, or how many calls came before. A guessable Call-ID or tag would let a stranger aim
a BYE or re-INVITE at a live call (RFC 3261 §8.1.1.4 and §19.3 ask for global uniqueness and
cryptographic randomness; the dialog checks in sbc.call.indialog do the rest).

In a node of several workers, each worker draws until the id steers to itself
(sbc.sip.steer.owns): a B-leg's Call-ID then brings the vendor's messages home. That costs
log2(workers) of the 64 bits and, on average, ``workers`` draws.
"""

from __future__ import annotations

import secrets

from sbc.sip.steer import owns

_worker, _workers = 0, 1


def configure(worker: int, workers: int) -> None:
    """This process is worker ``worker`` of ``workers`` (sbc.worker, at start)."""
    global _worker, _workers
    _worker, _workers = worker, workers


def new_id() -> str:
    """16 hex digits, 64 random bits (less log2(workers)), owned by this worker."""
    token = secrets.token_hex(8)
    while _workers > 1 and not owns(token, _worker, _workers):
        token = secrets.token_hex(8)
    return token
