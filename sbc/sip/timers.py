"""RFC 3261 §17 timer values, in one frozen object passed to whoever needs them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2 and T4 of RFC 3261 §17.1.1.1 / Table 4; every other timer derives from them."""

    t1: float = 0.5
    """RTT estimate: first retransmit interval (Timers A, E, G) and base of 64*T1."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum time a message stays in the network (Timers I and K)."""

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L and M."""
        return 64 * self.t1
