"""Checks every unit test shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sbc.call.model import SHARED_EMPTY
from sbc.sip.grammar import NO_PARAMS


@pytest.fixture(autouse=True)
def _shared_empties_stay_empty() -> Iterator[None]:
    """Calls start with one shared empty dict for their rarely written maps, and addresses
    without parameters share one: a write in place would leak into every call."""
    yield
    assert not SHARED_EMPTY, f"a call's map was written in place: {SHARED_EMPTY}"
    assert not NO_PARAMS, f"an address's parameters were written in place: {NO_PARAMS}"
