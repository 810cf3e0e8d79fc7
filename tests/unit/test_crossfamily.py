"""`sbc check` warns of unanchored routes across address families (sbc.config.crossfamily)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbc.cli import main
from sbc.config import crossfamily
from sbc.config.loader import load_config_with_origins
from sbc.reloads import Reloads

BASE = """\
node:
  listen:
    - {address: 127.0.0.1, port: 5060, transport: udp}
    - {address: "::1", port: 5060, transport: udp}
  rtpengine: [{address: "127.0.0.1:2223"}]
relationships: [{name: c}, {name: v}]
media_profiles: [{name: anchored, anchoring: true}, {name: passthrough, anchoring: false}]
trunk_groups:
  - {name: carrier-v4, relationship: c, direction: origination, routeplan: r, CALLER
     trunks: [{ip: 127.0.0.1}, {ip: 127.0.0.2}]}
  - {name: vendor-v6, relationship: v, direction: termination, VENDOR
     trunks: [{ip: "::1", port: 5081}, TRUNK]}
  - {name: vendor-v4, relationship: v, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
routeplans:
  - name: r
    routes:
      - {prefix: "4", trunk_groups: [vendor-v4]}
      - {prefix: "6", trunk_groups: [vendor-v4,
                                     vendor-v6]}
"""
LINE = BASE.splitlines().index("                                     vendor-v6]}") + 1  # 20


def warned(tmp_path: Path, caller: str = "", vendor: str = "", trunk: str = "") -> list[str]:
    text = BASE.replace("CALLER", caller).replace("VENDOR", vendor)
    text = text.replace(", TRUNK", f", {trunk}" if trunk else "")
    (tmp_path / "sbc.yaml").write_text(text)
    config, located = load_config_with_origins(tmp_path)
    return [str(w) for w in crossfamily.warnings(config, located)]


def test_an_unanchored_route_from_ipv4_callers_to_an_ipv6_only_vendor_warns_where_written(
    tmp_path: Path,
) -> None:
    (w,) = warned(tmp_path)
    # file:line of the route's entry naming vendor-v6 (its own line), its field path
    where = f"{tmp_path / 'sbc.yaml'}:{LINE}: routeplans[0].routes[1].trunk_groups[1]: "
    assert w.startswith(where), w
    assert "'vendor-v6' has only IPv6 trunks and carrier-v4 (routeplan 'r') only IPv4" in w
    assert "c=IN IP4" in w and "anchoring: true" in w


@pytest.mark.parametrize(
    ("caller", "vendor", "trunk"),
    [
        ("media_profile: anchored,", "", ""),  # the caller's side anchors
        ("", "media_profile: anchored,", ""),  # the vendor's side anchors
        ("", "", "{ip: 127.0.0.3}"),  # a dual-stack vendor: each family has a trunk
        ("", "", "{host: vendor.example}"),  # a host trunk: A or AAAA, not known here
    ],
)
def test_anchoring_either_side_or_a_vendor_of_both_families_does_not_warn(
    tmp_path: Path, caller: str, vendor: str, trunk: str
) -> None:
    assert warned(tmp_path, caller, vendor, trunk) == []


def test_an_explicitly_unanchored_profile_still_warns(tmp_path: Path) -> None:
    assert len(warned(tmp_path, "media_profile: passthrough,")) == 1


def test_sbc_check_prints_the_warning_and_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warned(tmp_path)  # writes the config
    assert main(["check", "--config", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"sbc check: warning: {tmp_path / 'sbc.yaml'}:{LINE}: "), err
    assert out.strip().endswith("3 trunk groups, 1 routeplans, 1 warning"), out


def test_a_node_logs_the_warning_at_start_and_at_each_reload(tmp_path: Path) -> None:
    class Log:
        def __init__(self) -> None:
            self.lines: list[tuple[str, dict[str, object]]] = []

        def warning(self, event: str, **fields: object) -> None:
            self.lines.append((event, fields))

        def info(self, event: str, **fields: object) -> None:
            pass

        error = info

    warned(tmp_path)
    config, _ = load_config_with_origins(tmp_path)
    log = Log()
    reloads = Reloads(tmp_path, log, "")
    reloads.loaded(config)
    assert reloads.load(config) is not None
    assert [e for e, _ in log.lines] == ["config.warning"] * 2
    assert str(log.lines[0][1]["warning"]).startswith(f"{tmp_path / 'sbc.yaml'}:{LINE}: ")
