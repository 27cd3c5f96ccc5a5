"""A real PostgreSQL server for the state-store tests: ``initdb`` in a temporary folder, started on 127.0.0.1.

One server per test session (initdb and start take about two seconds); each test gets a fresh database of its
own. The server runs with ``fsync=off``: the tests check what the store does, not what the disk survives.
initdb refuses to run as root, so when the tests run as root the cluster belongs to an unprivileged system user
(``postgres`` when Debian's package made it, else ``nobody``) and its folder is created outside pytest's
root-only temporary tree.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from insightloop.daemon.broker import free_port

if TYPE_CHECKING:
    import psycopg

#: The superuser the fixture creates, with a password so that authentication is real (scram-sha-256).
SUPERUSER = "insightloop_test"
START_TIMEOUT_S = 60


def find_server_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (Debian's versioned folder first), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if all((Path(candidate) / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        folder = Path(on_path).resolve().parent
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _version_key(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def missing_server(reason: str) -> None:
    """Skip locally, fail in CI: CI installs Debian's postgresql (``.ci/run``), so the suite must run there."""
    message = f"PostgreSQL server binaries not usable ({reason}); install Debian's postgresql package"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PostgresServer:
    """A running throwaway cluster: its address and the superuser's credentials."""

    bindir: Path
    folder: Path
    port: int
    password: str
    owner: str | None  # the system user the server runs as (None: the current user)

    host = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres", with_password: bool = False) -> str:
        """A ``postgresql://`` URL of ``database`` (the password left out unless asked for)."""
        secret = f":{self.password}" if with_password else ""
        return f"postgresql://{SUPERUSER}{secret}@{self.host}:{self.port}/{database}"

    def _run(self, argv: list[str], timeout_s: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=self.folder, user=self.owner
        )

    def start(self, fsync: bool = False) -> None:
        """Start the server; ``fsync=False`` (the tests) trades durability for speed, True keeps it (benchmarks)."""
        unsafe = [] if fsync else ["-c fsync=off", "-c full_page_writes=off"]
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.folder}",
                "-c synchronous_commit=off",
                "-c max_connections=200",
                *unsafe,
            ]
        )
        log = self.folder / "server.log"
        done = self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-o", options, "start"]
        )
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def stop(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit superuser connection to the ``postgres`` database."""
        import psycopg

        return psycopg.connect(self.url(), password=self.password, autocommit=True, connect_timeout=10)

    @contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A new empty database for one test (dropped afterwards, its connections closed by force)."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with self.admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _unprivileged_owner() -> str | None:
    """The system user to run the cluster as: None when we are not root, else ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


@contextmanager
def running_server(fsync: bool = False) -> Iterator[PostgresServer]:
    """initdb a temporary cluster, start it on a free port of 127.0.0.1, stop and delete it afterwards."""
    bindir = find_server_binaries()
    if bindir is None:
        missing_server("initdb/pg_ctl/postgres not found under /usr/lib/postgresql/*/bin or on PATH")
    assert bindir is not None
    owner = _unprivileged_owner()
    if os.geteuid() == 0 and owner is None:
        missing_server("running as root and no unprivileged user (postgres, nobody) to run initdb as")
    # The cluster's owner must reach its folder: when we are root, not under a root-only TMPDIR.
    folder = Path(tempfile.mkdtemp(prefix="insightloop-pg-", dir="/tmp" if owner is not None else None))
    password = uuid.uuid4().hex
    server = PostgresServer(bindir, folder, free_port(), password, owner)
    try:
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n", encoding="utf-8")
        if owner is not None:
            entry = pwd.getpwnam(owner)
            for path in (folder, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        init = server._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(server.data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if init.returncode != 0:
            missing_server(f"initdb failed: {init.stderr.strip()[-500:]}")
        pwfile.unlink()
        server.start(fsync)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # pg_ctl -w waited for the socket; the first connection proves the password works
            try:
                server.admin().close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        if server.data.exists():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
