"""Routeplans, hunting and trunk health: pure decisions over a config snapshot."""

import sbc  # noqa: F401  (sbc.native decides whether routing's compiled modules are current)
