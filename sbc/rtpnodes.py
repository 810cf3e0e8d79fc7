"""The rtpengine client a node's snapshot asks for (node.rtpengine, node.media)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from media.client import NgClient
from sbc.config.loader import host_port
from sbc.config.snapshot import Snapshot


def media_client(
    snapshot: Snapshot, log: Any, on_rtt: Callable[[str, float], None] | None = None
) -> NgClient:
    m = snapshot.config.node.media
    return NgClient(
        rtpengine_nodes(snapshot),
        timeout=m.timeout,
        retries=m.retries,
        down_for=m.down_for,
        ping_interval=m.ping_interval,
        log=log,
        on_rtt=on_rtt,
    )


def rtpengine_nodes(snapshot: Snapshot) -> list[tuple[str, int, int]]:
    out = []
    for n in snapshot.config.node.rtpengine:
        hp = host_port(n.address)
        assert hp is not None  # the loader checked it
        out.append((hp[0], hp[1], n.weight))
    return out
