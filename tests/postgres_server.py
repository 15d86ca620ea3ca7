"""A throwaway PostgreSQL server on loopback for the tests (Debian's `postgresql` binaries)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _binary(name: str) -> str | None:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    def __init__(self):
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError("PostgreSQL is not installed: run `bash setup.sh` as root (apt-get install postgresql)")
        self.folder = Path(tempfile.mkdtemp(prefix="flux-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.pg_ctl = pg_ctl
        subprocess.run(
            _as_postgres([initdb, "-D", str(self.data), "-U", "flux", "--auth=trust"]), check=True, capture_output=True
        )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"]),
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql://flux@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh empty database on the server, for one test."""
        import psycopg

        name = f"t{time.monotonic_ns()}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=flux dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://flux@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(_as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
