"""Webhooks: a bounded JSON POST for routing and metric triggers (I/O)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


async def post_json(url: str, payload: dict[str, object], log: Any, timeout: float = 5.0) -> None:
    """POST a JSON body to an http:// webhook with a bounded wait; failures are logged, never
    raised (a trigger must not disturb calls)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        log.warning("trigger.webhook_failed", url=url, error="only http:// URLs are supported")
        return
    body = json.dumps(payload).encode()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
    except (OSError, TimeoutError, ValueError) as e:
        log.warning("trigger.webhook_failed", url=url, error=f"{type(e).__name__}: {e}")
        return
    if not 200 <= status < 300:
        log.warning("trigger.webhook_failed", url=url, error=f"HTTP {status}")
