"""One relationship's account in a node's book of balances (sbc.balance): pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sbc.hold import ZERO, Hold


@dataclass(slots=True)
class Account:
    paid: Decimal = ZERO
    charged: Decimal = ZERO
    vendor_costs: Decimal = ZERO  # what the calls we sent it as a vendor cost us
    offsets: bool = True  # vendor costs count in its balance (not balance.disable_offsets)
    holds: dict[str, Hold] = field(default_factory=dict)  # call id -> what it holds
    warned: bool = False  # balance.warning said, until a payment lifts it over warn_at
    suspended: bool = False
    cut: bool = False  # its calls were ended at this suspension (on_suspend: hangup)

    @property
    def balance(self) -> Decimal:
        """Payments less charges, plus what we owe it as a vendor (the guide's balance
        offsets) unless they are disabled."""
        if self.offsets:
            return self.paid - self.charged + self.vendor_costs
        return self.paid - self.charged
