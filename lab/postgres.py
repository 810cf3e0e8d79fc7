"""A private PostgreSQL cluster for tests and the lab: Debian's binaries, initdb into a
fresh directory, a UNIX socket only (no TCP: ``listen_addresses=''``), trust auth, no
system service touched. initdb refuses to run as root, so as root the cluster belongs to
the ``postgres`` user the package created; sbc (root in CI) connects through the socket."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run ./lab/install")
    return found[-1].parent


class Postgres:
    def __init__(self) -> None:
        self.bin = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="sbc-pg-"))
        self.data = self.root / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/sbc?host={self.root}"

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def start(self) -> Postgres:
        if not self.data.exists():
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            self._start()
            self._run(str(self.bin / "createdb"), "-h", str(self.root), "-U", "postgres", "sbc")
        else:
            self._start()
        return self

    def _start(self) -> None:
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.root / "postgres.log"), "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def query(self, sql: str) -> str:
        """``psql -At``: one line per row, columns split by '|'."""
        return self._run(
            "psql", "-h", str(self.root), "-U", "postgres", "-d", "sbc", "-At", "-c", sql
        ).strip()

    def remove(self) -> None:
        """Stop the cluster (if it runs) and delete it."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                 "stop"], capture_output=True, timeout=30, check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
