"""Which modules lab/compile.py compiles with mypyc, and whether their C is to be used.

Python imports a C extension before the source beside it. So that an edited source never
runs as stale C, lab/compile.py records every compiled source's SHA-256 in ``MANIFEST``;
at import of ``sbc`` (``guard``), if any differs, or the manifest is missing, or
``SBC_PURE=1`` is set, a finder sends those module names to their sources: the node runs
as plain Python, the same code mypy checks. ``mode()`` says which it is (in the log at
startup and in the benchmark's header).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
GROUP = "sbc.core"  # the shared library: sbc/core__mypyc.*.so
MANIFEST = "sbc/native.json"
MODULES = (
    *(f"sbc/sip/{m}.py" for m in ("errors", "grammar", "parser", "message", "timers")),
    *(f"sbc/sip/{m}.py" for m in ("transaction", "dialog", "steer", "ids", "stateless")),
    *(f"sbc/call/{m}.py" for m in ("model", "outbox", "headers", "gate", "indialog")),
    *(f"sbc/call/{m}.py" for m in ("ingress", "intake", "hunt", "attempt", "blegs", "media")),
    *(f"sbc/call/{m}.py" for m in ("relay", "ending", "registration", "host", "controller")),
    *(f"sbc/call/{m}.py" for m in ("identity", "redirect", "refer", "sessiontimer", "reliable")),
    *(f"sbc/call/{m}.py" for m in ("mediawatch", "forking", "replaces")),
    # helpers the call path calls on every call (cProfile of a compiled node listed them
    # as its only Python frames): compiled, their calls are C calls
    *(f"sbc/{m}.py" for m in ("listeners", "config/families")),
    *(f"media/{m}.py" for m in ("sdp", "ng")),
    *(f"routing/{m}.py" for m in ("plan", "select", "hunting", "health", "monitor")),
    *(f"sbc/{m}.py" for m in ("edge", "lockout", "stats", "admission", "manipulate")),
    *(f"sbc/{m}.py" for m in ("cdr", "executor", "transport", "runtime", "worker")),
    # what every message passes through besides the call path: the trace ring and HEP tap,
    # the flood counter
    *(f"sbc/{m}.py" for m in ("trace", "hep", "flood")),
)

_mode = "pure"


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def digests(root: Path = ROOT) -> dict[str, str]:
    return {m: hashlib.sha256((root / m).read_bytes()).hexdigest() for m in MODULES}


def extensions(root: Path = ROOT) -> list[Path]:
    """The compiled files lab/compile.py leaves: one per module and the shared group."""
    found = [p for m in MODULES for p in (root / m).parent.glob(Path(m).stem + ".*.so")]
    group = GROUP.replace(".", "/")
    return found + list(root.glob(f"{group}__mypyc.*.so"))


class _Sources(importlib.abc.MetaPathFinder):
    """Loads the compiled modules from their .py files."""

    def __init__(self, root: Path) -> None:
        self.paths = {module_name(m): root / m for m in MODULES}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.paths.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def current(root: Path = ROOT) -> bool:
    """The extensions exist and were compiled from exactly these sources."""
    try:
        recorded = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return bool(extensions(root)) and recorded == digests(root)


def guard(root: Path = ROOT) -> str:
    """Use the C only if it was compiled from exactly these sources; return the mode."""
    global _mode
    if not extensions(root):
        _mode = "pure"
        return _mode
    why = ""
    if os.environ.get("SBC_PURE") == "1":
        why = "SBC_PURE=1"
    elif not current(root):
        why = "sources changed since lab/compile.py: run it again"
    if why:
        sys.meta_path.insert(0, _Sources(root))
        _mode = f"pure ({why})"
    else:
        _mode = "mypyc"
    return _mode


def mode() -> str:
    return _mode
