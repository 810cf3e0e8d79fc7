"""Routeplans, hunting and trunk health: pure decisions over a config snapshot."""
