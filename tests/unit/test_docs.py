"""docs/ is part of the product: the config contract's main example loads with the real
loader, and the architecture names only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

from sbc.config.loader import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_config_contracts_example_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sbc.yaml").write_text(example)
    config = load_config(tmp_path)
    assert [tg.name for tg in config.trunk_groups] == ["carrier-a-in", "vendor-pool"]


def test_the_architecture_names_real_modules() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:sbc|routing|media)/[a-z_/]+\.py)`", text))
    assert named and {n for n in named if not (ROOT / n).exists()} == set()
