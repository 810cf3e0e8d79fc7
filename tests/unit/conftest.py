"""Checks every unit test shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sbc.call.model import SHARED_EMPTY


@pytest.fixture(autouse=True)
def _shared_empty_stays_empty() -> Iterator[None]:
    """Calls start with one shared empty dict for their rarely written maps: a write in
    place would leak into every call (sbc.call.model.SHARED_EMPTY)."""
    yield
    assert not SHARED_EMPTY, f"a call's map was written in place: {SHARED_EMPTY}"
