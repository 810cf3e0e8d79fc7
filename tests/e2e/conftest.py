from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "lab"))

import harness  # noqa: E402


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    proc = harness.start_sbc(tmp_path_factory.mktemp("sbc"))
    yield proc
    assert proc.alive(), "sbc died during the tests"
    assert proc.stop() == 0
