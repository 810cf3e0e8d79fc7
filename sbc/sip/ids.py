"""The identifiers we put on the wire: Call-IDs, tags and Via branches.

Each is 64 bits from the operating system's CSPRNG (``secrets``), hex: nothing in one tells
another, or how many calls came before. A guessable Call-ID or tag would let a stranger aim
a BYE or re-INVITE at a live call (RFC 3261 §8.1.1.4 and §19.3 ask for global uniqueness and
cryptographic randomness; the dialog checks in sbc.call.indialog do the rest).
"""

from __future__ import annotations

import secrets


def new_id() -> str:
    """16 hex digits, 64 random bits."""
    return secrets.token_hex(8)
