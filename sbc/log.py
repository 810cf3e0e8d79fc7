"""structlog lines on stdout, one per event, with the call's id on every call line.

``json`` (the default) is one JSON object per line, encoded by msgspec. Under systemd, when
stdout is the journal's stream (``$JOURNAL_STREAM`` names its device and inode,
systemd.exec(5)), each line starts with its syslog priority, ``<3>`` error, ``<4>``
warning, ``<6>`` info, ``<7>`` debug (sd-daemon(3)), so ``journalctl -p warning`` shows what
needs a look and the JSON stays intact after the prefix. ``console`` is for people at a
terminal: aligned, key=value, coloured when stdout is a tty.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import msgspec
import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
PRIORITY = {"debug": b"<7>", "info": b"<6>", "warning": b"<4>", "error": b"<3>", "critical": b"<2>"}
FORMATS = ("json", "console")


def journal_stream(out: TextIO) -> bool:
    """Whether ``out`` is the stream systemd connected to the journal."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(out.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JsonLine:
    """The event as one JSON line (msgspec; a value it cannot encode is written as its
    str()), with the journal's priority prefix when ``journal``."""

    def __init__(self, journal: bool, text: bool = False) -> None:
        self.journal = journal
        self.text = text  # for a text stream without a binary buffer (a StringIO)
        self.encoder = msgspec.json.Encoder(enc_hook=str)

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> bytes | str:
        line = self.encoder.encode(event)
        if self.journal:
            line = PRIORITY.get(str(event.get("level", "")), b"<6>") + line
        return line.decode() if self.text else line


def setup(
    level: str = "info", fmt: str = "json", out: TextIO | None = None
) -> structlog.typing.FilteringBoundLogger:
    out = out if out is not None else sys.stdout
    head: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Any
    if fmt == "console":
        render: Any = structlog.dev.ConsoleRenderer(colors=out.isatty())
        factory = structlog.WriteLoggerFactory(file=out)
    elif hasattr(out, "buffer"):
        render = JsonLine(journal_stream(out))
        factory = structlog.BytesLoggerFactory(file=out.buffer)
    else:
        render = JsonLine(False, text=True)
        factory = structlog.WriteLoggerFactory(file=out)
    structlog.configure(
        processors=[*head, render],
        # Below the level, a log call is a no-op method: nothing is rendered.
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # The bound logger itself, not structlog's lazy proxy: every call on the proxy goes
    # through its __getattr__ and bind() again (a few per call, on the hot path).
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind()
    return logger
