"""The state store: one SQLite file (WAL) in the state directory, with versioned migrations.

Everything the daemon must remember across a restart that is not in Kafka or the registry lives
here: insights, retraining jobs, monitor windows and detector conditions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DB_FILE = "insightloop.sqlite3"

# Each migration runs once, in order, inside a transaction; never edit one that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE insights (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        detector TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX insights_by_time ON insights (created_at);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        state TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs (state);
    """,
]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StateStore:
    """Thread-safe access to the SQLite state file."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / DB_FILE
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it or none of it lands."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                with self.transaction() as conn:
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={number}")

    @property
    def schema_version(self) -> int:
        """The number of migrations applied."""
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # -- insights -------------------------------------------------------------------------
    def upsert_insight(
        self, insight_id: str, detector: str, kind: str, severity: str, state: str, payload: dict[str, Any]
    ) -> None:
        """Insert an insight or update the ongoing one with the same id."""
        now = _now()
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO insights (id, created_at, updated_at, detector, kind, severity, state, payload)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET updated_at=excluded.updated_at, severity=excluded.severity,
                       state=excluded.state, payload=excluded.payload""",
                (insight_id, now, now, detector, kind, severity, state, json.dumps(payload)),
            )

    def insights(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest insights first, each with its stored state."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT payload, state, updated_at FROM insights ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{**json.loads(r["payload"]), "state": r["state"], "updated_at": r["updated_at"]} for r in rows]

    # -- jobs -----------------------------------------------------------------------------
    def upsert_job(self, job_id: str, state: str, payload: dict[str, Any]) -> None:
        """Insert a job or record its new state."""
        now = _now()
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO jobs (id, created_at, updated_at, state, payload) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET updated_at=excluded.updated_at, state=excluded.state,
                       payload=excluded.payload""",
                (job_id, now, now, state, json.dumps(payload)),
            )

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest jobs first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, state, created_at, updated_at, payload FROM jobs ORDER BY created_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {
                **json.loads(r["payload"]),
                "id": r["id"],
                "state": r["state"],
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
            }
            for r in rows
        ]
