"""Compile the pure SIP and call core with mypyc, in place (called by lab/install).

Every module listed in sbc/native.py (already mypy --strict) becomes a C extension next
to its source; Python loads the extension first. sbc/native.py also records each source's
SHA-256, so a source edited since (or SBC_PURE=1) runs as plain Python, never stale C.

    .venv/bin/python lab/compile.py          # compile (about 1.5 minutes on 2 cores)
    .venv/bin/python lab/compile.py --if-needed   # only when a source changed
    .venv/bin/python lab/compile.py --clean  # remove the extensions: pure Python again
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbc import native  # noqa: E402


def clean() -> None:
    # every extension under our packages is ours (the project has no other C), so one left
    # by a module since dropped from native.MODULES goes too: Python would load it first
    for package in ("sbc", "routing", "media"):
        for path in (ROOT / package).rglob("*.so"):
            path.unlink()
    (ROOT / native.MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(ROOT / "build" / "mypyc", ignore_errors=True)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    # setuptools reads our pyproject.toml too and warns about its license table: not ours
    warnings.filterwarnings("ignore", module="setuptools")

    sources = [str(ROOT / m) for m in native.MODULES]
    build_dir = ROOT / "build" / "mypyc"
    os.chdir(ROOT)
    setup(
        name="sbc-native",
        ext_modules=mypycify(
            sources, opt_level="3", group_name=native.GROUP, target_dir=str(build_dir)
        ),
        script_args=["-q", "build_ext", "--inplace", "--build-temp", str(build_dir / "temp")],
    )
    (ROOT / native.MANIFEST).write_text(json.dumps(native.digests(ROOT), indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clean", action="store_true")
    parser.add_argument("--if-needed", action="store_true", help="only if the C is not current")
    args = parser.parse_args()
    if args.if_needed and native.current(ROOT):
        print(f"lab/compile: {len(native.MODULES)} modules compiled with mypyc are current")
        return 0
    clean()
    if not args.clean:
        build()
        print(f"lab/compile: {len(native.MODULES)} modules compiled with mypyc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
