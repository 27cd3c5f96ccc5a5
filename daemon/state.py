"""The state store: one SQLite file (WAL) in the state directory, or a PostgreSQL database (``state.url``),
with one schema and one list of versioned migrations for both.

Everything the daemon must remember across a restart that is not in Kafka or the registry lives
here: insights, retraining jobs, monitor windows and detector conditions, the insights the controller
acts on (with when each began and its attempts), the controller's budget and last launch, and the
monitor's outbox of insights not yet published.

The SQL below is written once, in the dialect SQLite and PostgreSQL share (``?`` placeholders,
``ON CONFLICT … DO UPDATE``, ``CASE`` rather than SQLite's two-argument ``MIN``/``MAX``, an alias on every
subquery in ``FROM``); :mod:`insightloop.daemon.state_backend` carries the few differences that remain.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from insightloop.daemon.config import StateConfig
from insightloop.daemon.state_backend import Connection, Row, open_backend
from insightloop.detectors import Insight

log = logging.getLogger(__name__)

DB_FILE = "insightloop.sqlite3"

# Each migration runs once, in order, inside a transaction; never edit one that has shipped. They are written
# with SQLite's type names; PostgreSQL gets its own names for the same types (state_backend.postgres_ddl).
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
    # 2: the monitor's joined records (text + prediction + late label by id) and detector conditions.
    """
    CREATE TABLE records (
        id TEXT PRIMARY KEY,
        received_at REAL NOT NULL,
        ts TEXT,
        text TEXT,
        meta TEXT,
        model_version TEXT,
        predicted TEXT,
        scores TEXT,
        embedding BLOB,
        n_tokens INTEGER,
        scored_at REAL,
        label TEXT,
        label_at REAL
    );
    CREATE INDEX records_by_scored ON records (scored_at);
    CREATE INDEX records_by_received ON records (received_at);
    CREATE INDEX records_by_label ON records (label_at);
    CREATE TABLE conditions (
        name TEXT PRIMARY KEY,
        updated_at TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    """,
    # 3: the numerics each prediction was scored with (checks compare like with like).
    """
    ALTER TABLE records ADD COLUMN precision TEXT;
    """,
    # 4: the loop's waiting state. The controller's insights (when each began, its attempts), its GPU budget
    # and last launch; the monitor's outbox of insights raised but not yet acknowledged by the broker.
    """
    CREATE TABLE controller_insights (
        id TEXT PRIMARY KEY,
        began_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE TABLE controller_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        budget_day TEXT NOT NULL,
        gpu_seconds REAL NOT NULL,
        last_launch REAL
    );
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    """,
    # 5: labels whose text has not arrived wait here, bounded, instead of as label-only rows in records
    # (which retention ranked as newest, so a flood of them could push scored records out).
    """
    CREATE TABLE waiting_labels (
        id TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        label_at REAL NOT NULL
    );
    CREATE INDEX waiting_labels_by_time ON waiting_labels (label_at);
    """,
    # 6: one row per monitor check (accuracy, each detector against its threshold, texts scored, dead letters),
    # for the console's trends; pruned with the records' retention age.
    """
    CREATE TABLE check_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        model_version TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX check_history_by_time ON check_history (at);
    """,
    # 7: a token classifier's entities and word confidences (PredictionEvent schema 2), as JSON.
    """
    ALTER TABLE records ADD COLUMN entities TEXT;
    """,
]
#: Default bounds of the waiting labels (the monitor passes its ``waiting_labels_*`` settings).
WAITING_LABELS_MAX_ROWS = 10_000
WAITING_LABELS_MAX_AGE_S = 86_400.0


@dataclass(frozen=True)
class TextRow:
    """A production text as the monitor stores it."""

    id: str
    text: str
    ts: str | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class PredictionRow:
    """A prediction as the monitor stores it, with the numerics that made it."""

    id: str
    model_version: str
    label: str
    scores: dict[str, float]
    embedding: list[float]
    n_tokens: int
    precision: str | None = None
    #: A token classifier's entities and word confidences: :class:`~insightloop.daemon.events.EntityDetail` JSON.
    entities: str | None = None


@dataclass(frozen=True)
class LabelRow:
    """A late label."""

    id: str
    label: str


class JobRecord(BaseModel):
    """A retraining job as the controller records it; one row of the ``jobs`` table.

    Rows written by an older release load too: unknown keys are ignored, missing ones take defaults.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    state: str
    created_at: str = ""
    updated_at: str = ""
    insight_id: str | None = None
    insight_summary: str | None = None
    attempt: int = 1
    plan_action: str | None = None
    labeled: int | None = None
    champion: str | None = None
    runner: str | None = None
    handle: str | None = None
    spec_path: str | None = None
    started_at: float | None = None
    version: str | None = None
    gate_passed: bool | None = None
    gate_reasons: list[str] = Field(default_factory=list)
    error: str | None = None
    log_tail: str | None = None

    def changed(self, state: str, **changes: object) -> JobRecord:
        """This job in ``state`` with ``changes`` (None values leave a field as it was), validated."""
        kept = {k: v for k, v in changes.items() if v is not None}
        return JobRecord.model_validate({**self.model_dump(), **kept, "state": state})


@dataclass(frozen=True)
class PendingInsight:
    """An insight the controller acts on: when its condition began and how often a job was tried for it."""

    insight: Insight
    began_at: float
    attempts: int


@dataclass(frozen=True)
class ControllerState:
    """The controller's budget of the day and its last launch (epoch seconds; None before the first)."""

    budget_day: str
    gpu_seconds: float
    last_launch: float | None


@dataclass(frozen=True)
class StoredRecord:
    """One production text joined with its prediction and (maybe) its late label."""

    id: str
    text: str
    ts: str | None
    meta: dict[str, Any]
    model_version: str
    predicted: str
    scores: dict[str, float]
    embedding: NDArray[np.float32]
    n_tokens: int
    scored_at: float
    label: str | None
    precision: str | None = None
    entities: str | None = None  # as PredictionRow.entities


class DetectorPoint(BaseModel):
    """One detector's statistic against its threshold at one check."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    detector: str
    statistic: float
    threshold: float | None = None
    drifted: bool = False


class CheckPoint(BaseModel):
    """One monitor check, as the console's trends draw it; one row of the ``check_history`` table.

    ``texts_scored`` and ``dead_letters`` count what happened since the previous check of this monitor.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    at: float  # epoch seconds
    model_version: str
    labeled_accuracy: float | None = None
    estimated_accuracy: float | None = None
    detectors: list[DetectorPoint] = Field(default_factory=list)
    texts_scored: int = 0
    dead_letters: int = 0


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StateStore:
    """Thread-safe access to the state database: SQLite in ``directory``, or PostgreSQL at ``url``.

    With ``url`` (``postgresql://USER@HOST:PORT/DB``) the password comes from ``password`` (or the URL, or
    libpq's own sources); it is passed to the driver only, never logged. Opening connects and migrates, so a
    wrong password (:class:`~insightloop.daemon.state_backend.StateStoreAccessError`) or an unreachable server
    (:class:`~insightloop.daemon.state_backend.StateStoreUnavailableError`) is seen at start-up.
    """

    def __init__(
        self,
        directory: Path | str,
        url: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.directory = Path(directory)
        self._lock = threading.RLock()
        self._db = open_backend(self.directory, DB_FILE, url, password, connect_timeout_s)
        #: ``sqlite`` or ``postgresql``.
        self.backend: str = self._db.name
        #: Where the state lives, safe to show (a file path, or the URL with its password masked).
        self.location: str = self._db.location
        #: The SQLite file (None with PostgreSQL).
        self.path: Path | None = None if url else self.directory / DB_FILE
        self._conn: Connection = self._db.conn
        self._migrate()

    @classmethod
    def from_config(cls, config: StateConfig) -> StateStore:
        """The store ``config`` names (``state.url`` or else SQLite in ``state.dir``), opened and migrated."""
        store = cls(config.dir, config.url, config.password, config.connect_timeout_s)
        log.info("state store: %s at %s (schema version %d)", store.backend, store.location, store.schema_version)
        return store

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: all of it or none of it lands."""
        with self._lock, self._db.transaction() as conn:
            yield conn

    def _migrate(self) -> None:
        with self._lock:
            self._db.migrate(MIGRATIONS)

    @property
    def schema_version(self) -> int:
        """The number of migrations applied."""
        with self._lock:
            return self._db.schema_version()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

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

    def set_insight_state(self, insight_id: str, state: str) -> bool:
        """Change the stored state of one insight (e.g. to ``cleared``); False when there is no such insight."""
        with self.transaction() as conn:
            changed = conn.execute(
                "UPDATE insights SET state = ?, updated_at = ? WHERE id = ?", (state, _now(), insight_id)
            ).rowcount
        return changed > 0

    # -- jobs -----------------------------------------------------------------------------
    def save_job(self, job: JobRecord) -> None:
        """Insert a job or record its new state and fields."""
        now = _now()
        payload = job.model_dump_json(exclude={"id", "state", "created_at", "updated_at"})
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO jobs (id, created_at, updated_at, state, payload) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET updated_at=excluded.updated_at, state=excluded.state,
                       payload=excluded.payload""",
                (job.id, now, now, job.state, payload),
            )

    def jobs(self, limit: int = 100, states: tuple[str, ...] | None = None) -> list[JobRecord]:
        """The newest jobs first; with ``states``, only jobs in one of them."""
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, state, created_at, updated_at, payload FROM jobs {where} ORDER BY created_at DESC LIMIT ?",
                (*(states or ()), limit),
            ).fetchall()
        return [_job(r) for r in rows]

    def job(self, job_id: str) -> JobRecord | None:
        """One job by id, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, state, created_at, updated_at, payload FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return _job(row) if row is not None else None

    # -- joined records (the monitor's windows) -------------------------------------------
    def add_texts(self, rows: list[TextRow], now: float) -> None:
        """Record texts (and join the labels that waited for them). Arrival order across topics does not matter."""
        with self.transaction() as conn:
            conn.executemany(
                """INSERT INTO records (id, received_at, ts, text, meta) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET text=excluded.text, ts=excluded.ts, meta=excluded.meta""",
                [(r.id, now, r.ts, r.text, json.dumps(r.meta)) for r in rows],
            )
            _join_waiting_labels(conn, [r.id for r in rows])

    def add_predictions(self, rows: list[PredictionRow], now: float) -> None:
        """Record predictions, each with the numerics that made it."""
        self.add_polled([], rows, [], now)

    def add_labels(
        self,
        rows: list[LabelRow],
        now: float,
        wait_max_rows: int = WAITING_LABELS_MAX_ROWS,
        wait_max_age_s: float = WAITING_LABELS_MAX_AGE_S,
    ) -> int:
        """Record late labels; return how many wait for their text.

        A label whose id has a record joins it. Any other waits in ``waiting_labels``, bounded by
        ``wait_max_rows`` (the oldest go first) and ``wait_max_age_s``, until its text or prediction
        arrives; it never becomes a row of ``records``, so it is never ranked against scored records.
        """
        waiting = 0
        with self.transaction() as conn:
            for r in rows:
                joined = conn.execute(
                    "UPDATE records SET label = ?, label_at = ? WHERE id = ?", (r.label, now, r.id)
                ).rowcount
                if joined:
                    conn.execute("DELETE FROM waiting_labels WHERE id = ?", (r.id,))
                    continue
                waiting += 1
                conn.execute(
                    """INSERT INTO waiting_labels (id, label, label_at) VALUES (?, ?, ?)
                       ON CONFLICT(id) DO UPDATE SET label=excluded.label, label_at=excluded.label_at""",
                    (r.id, r.label, now),
                )
            _bound_waiting_labels(conn, now, wait_max_rows, wait_max_age_s)
        return waiting

    def count_waiting_labels(self) -> int:
        """Labels waiting for their text."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM waiting_labels").fetchone()[0])

    def add_polled(
        self,
        texts: list[TextRow],
        predictions: list[PredictionRow],
        labels: list[LabelRow],
        now: float,
        wait_max_rows: int = WAITING_LABELS_MAX_ROWS,
        wait_max_age_s: float = WAITING_LABELS_MAX_AGE_S,
    ) -> int:
        """One poll of the monitor in one transaction; returns how many labels wait for their text.

        The same outcome as :meth:`add_texts`, :meth:`add_predictions` and :meth:`add_labels` in that order,
        at a fraction of the writes: a text and its prediction polled together become one row write, and the
        labels join in one statement per kind instead of two per label.
        """
        by_text = {r.id: r for r in texts}
        by_prediction = {r.id: r for r in predictions}

        def scored(r: PredictionRow) -> tuple[Any, ...]:
            embedding = np.asarray(r.embedding, dtype=np.float32).tobytes()
            return (r.model_version, r.label, json.dumps(r.scores), embedding, r.n_tokens, now, r.precision, r.entities)

        both = [i for i in by_text if i in by_prediction]
        waiting = 0
        with self.transaction() as conn:
            if both:
                conn.executemany(
                    """INSERT INTO records (id, received_at, ts, text, meta, model_version, predicted, scores,
                           embedding, n_tokens, scored_at, precision, entities)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT(id) DO UPDATE SET text=excluded.text, ts=excluded.ts, meta=excluded.meta,
                           model_version=excluded.model_version, predicted=excluded.predicted,
                           scores=excluded.scores, embedding=excluded.embedding, n_tokens=excluded.n_tokens,
                           scored_at=excluded.scored_at, precision=excluded.precision, entities=excluded.entities""",
                    [
                        (i, now, by_text[i].ts, by_text[i].text, json.dumps(by_text[i].meta), *scored(by_prediction[i]))
                        for i in both
                    ],
                )
            text_only = [r for i, r in by_text.items() if i not in by_prediction]
            if text_only:
                conn.executemany(
                    """INSERT INTO records (id, received_at, ts, text, meta) VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT(id) DO UPDATE SET text=excluded.text, ts=excluded.ts, meta=excluded.meta""",
                    [(r.id, now, r.ts, r.text, json.dumps(r.meta)) for r in text_only],
                )
            prediction_only = [r for i, r in by_prediction.items() if i not in by_text]
            if prediction_only:
                conn.executemany(
                    """INSERT INTO records (id, received_at, model_version, predicted, scores, embedding, n_tokens,
                           scored_at, precision, entities) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT(id) DO UPDATE SET model_version=excluded.model_version,
                           predicted=excluded.predicted, scores=excluded.scores, embedding=excluded.embedding,
                           n_tokens=excluded.n_tokens, scored_at=excluded.scored_at, precision=excluded.precision,
                           entities=excluded.entities""",
                    [(r.id, now, *scored(r)) for r in prediction_only],
                )
            _join_waiting_labels(conn, [*by_text, *(i for i in by_prediction if i not in by_text)])
            if labels:
                by_label = {r.id: r for r in labels}
                ids = list(by_label)
                present: set[str] = set()
                for start in range(0, len(ids), 500):  # within every database's limit on bound parameters
                    chunk = ids[start : start + 500]
                    marks = ", ".join("?" * len(chunk))
                    rows = conn.execute(f"SELECT id FROM records WHERE id IN ({marks})", chunk).fetchall()
                    present.update(row[0] for row in rows)
                joined = [r for r in by_label.values() if r.id in present]
                if joined:
                    conn.executemany(
                        "UPDATE records SET label = ?, label_at = ? WHERE id = ?",
                        [(r.label, now, r.id) for r in joined],
                    )
                    if conn.execute("SELECT 1 FROM waiting_labels LIMIT 1").fetchone() is not None:
                        conn.executemany("DELETE FROM waiting_labels WHERE id = ?", [(r.id,) for r in joined])
                unjoined = [r for r in by_label.values() if r.id not in present]
                waiting = len(unjoined)
                if unjoined:
                    conn.executemany(
                        """INSERT INTO waiting_labels (id, label, label_at) VALUES (?, ?, ?)
                           ON CONFLICT(id) DO UPDATE SET label=excluded.label, label_at=excluded.label_at""",
                        [(r.id, r.label, now) for r in unjoined],
                    )
                _bound_waiting_labels(conn, now, wait_max_rows, wait_max_age_s)
        return waiting

    def recent_records(
        self, limit: int, since: float | None = None, model_version: str | None = None, labeled_only: bool = False
    ) -> list[StoredRecord]:
        """The newest complete records (text and prediction), oldest first.

        A text blanked by retention (``keep_text="labeled_only"``) no longer makes a record complete.
        """
        clauses = ["text IS NOT NULL", "text != ''", "scored_at IS NOT NULL"]
        params: list[Any] = []
        if since is not None:
            clauses.append("scored_at >= ?")
            params.append(since)
        if model_version is not None:
            clauses.append("model_version = ?")
            params.append(model_version)
        if labeled_only:
            clauses.append("label IS NOT NULL")
        query = f"SELECT * FROM records WHERE {' AND '.join(clauses)} ORDER BY scored_at DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(query, (*params, limit)).fetchall()
        return [_record(row) for row in reversed(rows)]

    def count_scored_since(self, since: float, labeled_only: bool = False) -> int:
        """How many records were scored at or after ``since`` (with ``labeled_only``: complete and labeled)."""
        query = "SELECT COUNT(*) FROM records WHERE scored_at >= ?"
        if labeled_only:  # what recent_records(labeled_only=True) would return
            query += " AND label IS NOT NULL AND text IS NOT NULL AND text != ''"
        with self._lock:
            return int(self._conn.execute(query, (since,)).fetchone()[0])

    def count_records(self) -> int:
        """Rows in the records table."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def apply_retention(self, max_age_s: float, max_rows: int, now: float, keep_text: str = "all") -> int:
        """Delete records older than ``max_age_s`` and beyond the newest ``max_rows``, and labels that waited
        longer than ``max_age_s`` for their text; return how many rows were deleted.

        With ``keep_text="labeled_only"`` the texts of unlabeled records older than the current window's
        horizon are blanked instead of kept, so only what retraining needs stays on disk.
        """
        with self.transaction() as conn:
            removed = conn.execute("DELETE FROM records WHERE received_at < ?", (now - max_age_s,)).rowcount
            removed += conn.execute(
                """DELETE FROM records WHERE id IN (SELECT id FROM records
                   ORDER BY COALESCE(scored_at, received_at) DESC LIMIT -1 OFFSET ?)""",
                (max_rows,),
            ).rowcount
            # Labels that waited longer than records are kept are dropped too (and counted).
            removed += conn.execute("DELETE FROM waiting_labels WHERE label_at < ?", (now - max_age_s,)).rowcount
            if keep_text == "labeled_only":
                # A text whose prediction never arrived counts from when it was received.
                conn.execute(
                    "UPDATE records SET text = '' WHERE label IS NULL AND COALESCE(scored_at, received_at) < ?",
                    (now - max_age_s / 2,),
                )
        return int(removed)

    # -- per-check history (the console's trends) ------------------------------------------
    def add_check_history(self, point: CheckPoint, max_age_s: float | None = None) -> None:
        """Record one check; with ``max_age_s``, drop the points older than that (in the same transaction)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO check_history (at, model_version, payload) VALUES (?, ?, ?)",
                (point.at, point.model_version, point.model_dump_json()),
            )
            if max_age_s is not None:
                conn.execute("DELETE FROM check_history WHERE at < ?", (point.at - max_age_s,))

    def check_history(self, since: float = 0.0, version: str | None = None, limit: int = 5000) -> list[CheckPoint]:
        """The checks at or after ``since`` (of ``version`` only, if given), oldest first, at most the newest
        ``limit``."""
        where, args = "WHERE at >= ?", [since]
        if version is not None:
            where, args = where + " AND model_version = ?", [since, version]  # type: ignore[list-item]
        with self._lock:
            rows = self._conn.execute(
                f"SELECT payload FROM (SELECT seq, payload FROM check_history {where} ORDER BY seq DESC LIMIT ?) "
                "AS newest ORDER BY seq",
                (*args, limit),
            ).fetchall()
        return [CheckPoint.model_validate_json(r["payload"]) for r in rows]

    def prune_check_history(self, older_than: float) -> int:
        """Drop the checks before ``older_than`` (epoch seconds); return how many."""
        with self.transaction() as conn:
            return int(conn.execute("DELETE FROM check_history WHERE at < ?", (older_than,)).rowcount)

    # -- detector conditions (hysteresis state) -------------------------------------------
    def save_condition(self, name: str, payload: dict[str, Any]) -> None:
        """Persist a detector's condition state."""
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO conditions (name, updated_at, payload) VALUES (?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET updated_at=excluded.updated_at, payload=excluded.payload""",
                (name, _now(), json.dumps(payload)),
            )

    def conditions(self) -> dict[str, dict[str, Any]]:
        """Every persisted condition state by name."""
        with self._lock:
            rows = self._conn.execute("SELECT name, payload FROM conditions").fetchall()
        return {row["name"]: json.loads(row["payload"]) for row in rows}

    # -- the controller's waiting state ---------------------------------------------------
    def save_pending_insight(self, insight: Insight, began_at: float) -> None:
        """Keep an insight the controller acts on; an update of an ongoing one keeps when it began and its
        attempts."""
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO controller_insights (id, began_at, attempts, updated_at, payload)
                   VALUES (?, ?, 0, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET updated_at=excluded.updated_at, payload=excluded.payload,
                       began_at=CASE WHEN excluded.began_at < controller_insights.began_at
                           THEN excluded.began_at ELSE controller_insights.began_at END""",
                (insight.id, began_at, _now(), insight.model_dump_json()),
            )

    def pending_insights(self) -> list[PendingInsight]:
        """Every insight the controller still acts on, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT began_at, attempts, payload FROM controller_insights ORDER BY began_at, id"
            ).fetchall()
        return [
            PendingInsight(Insight.model_validate_json(r["payload"]), float(r["began_at"]), int(r["attempts"]))
            for r in rows
        ]

    def count_attempt(self, insight_id: str, delta: int = 1) -> int:
        """Count one more job attempt for an insight (``delta=-1`` gives one back); return the new count (0
        when it is not pending)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE controller_insights SET attempts = CASE WHEN attempts + ? > 0 THEN attempts + ? ELSE 0 END, "
                "updated_at = ? WHERE id = ?",
                (delta, delta, _now(), insight_id),
            )
            row = conn.execute("SELECT attempts FROM controller_insights WHERE id = ?", (insight_id,)).fetchone()
        return int(row["attempts"]) if row is not None else 0

    def drop_pending_insight(self, insight_id: str) -> None:
        """The controller is done with an insight (a candidate was registered, or it gave up)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM controller_insights WHERE id = ?", (insight_id,))

    def controller_state(self, today: str) -> ControllerState:
        """The stored budget and last launch; a new day starts the budget at zero."""
        with self._lock:
            row = self._conn.execute(
                "SELECT budget_day, gpu_seconds, last_launch FROM controller_state WHERE id = 1"
            ).fetchone()
        if row is None:
            return ControllerState(today, 0.0, None)
        last = float(row["last_launch"]) if row["last_launch"] is not None else None
        if row["budget_day"] != today:
            return ControllerState(today, 0.0, last)
        return ControllerState(row["budget_day"], float(row["gpu_seconds"]), last)

    def save_controller_state(self, state: ControllerState) -> None:
        """Persist the budget and the last launch."""
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO controller_state (id, budget_day, gpu_seconds, last_launch) VALUES (1, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET budget_day=excluded.budget_day,
                       gpu_seconds=excluded.gpu_seconds, last_launch=excluded.last_launch""",
                (state.budget_day, state.gpu_seconds, state.last_launch),
            )

    # -- the monitor's outbox -------------------------------------------------------------
    def add_to_outbox(self, insight: Insight) -> None:
        """Keep an insight until the broker acknowledges it (a newer copy of the same id replaces it)."""
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO outbox (id, created_at, payload) VALUES (?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET payload=excluded.payload""",
                (insight.id, _now(), insight.model_dump_json()),
            )

    def outbox(self) -> list[Insight]:
        """Insights raised but not yet published, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT payload FROM outbox ORDER BY created_at, id").fetchall()
        return [Insight.model_validate_json(r["payload"]) for r in rows]

    def remove_from_outbox(self, insight_id: str) -> None:
        """The broker acknowledged the insight."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (insight_id,))

    def save_condition_and_outbox(self, name: str, payload: dict[str, Any], to_send: list[Insight]) -> None:
        """Persist a condition state and the insights it counts as raised in one transaction: a crash can
        never leave a condition raised whose insight is in neither the outbox nor the topic."""
        now = _now()
        with self.transaction() as conn:
            for insight in to_send:
                conn.execute(
                    """INSERT INTO outbox (id, created_at, payload) VALUES (?, ?, ?)
                       ON CONFLICT(id) DO UPDATE SET payload=excluded.payload""",
                    (insight.id, now, insight.model_dump_json()),
                )
            conn.execute(
                """INSERT INTO conditions (name, updated_at, payload) VALUES (?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET updated_at=excluded.updated_at, payload=excluded.payload""",
                (name, now, json.dumps(payload)),
            )


def _job(row: Row) -> JobRecord:
    return JobRecord.model_validate(
        {
            **json.loads(row["payload"]),
            "id": row["id"],
            "state": row["state"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }
    )


def _join_waiting_labels(conn: Connection, ids: list[str]) -> None:
    """Give records of ``ids`` the labels that waited for them, and stop keeping those labels."""
    if not ids or conn.execute("SELECT 1 FROM waiting_labels LIMIT 1").fetchone() is None:
        return
    conn.executemany(
        """UPDATE records SET label = w.label, label_at = w.label_at FROM waiting_labels AS w
           WHERE records.id = w.id AND w.id = ?""",
        [(i,) for i in ids],
    )
    conn.executemany("DELETE FROM waiting_labels WHERE id = ?", [(i,) for i in ids])


def _bound_waiting_labels(conn: Connection, now: float, max_rows: int, max_age_s: float) -> None:
    """Drop waiting labels older than ``max_age_s`` and beyond the newest ``max_rows``."""
    conn.execute("DELETE FROM waiting_labels WHERE label_at < ?", (now - max_age_s,))
    conn.execute(
        """DELETE FROM waiting_labels WHERE id IN (SELECT id FROM waiting_labels
           ORDER BY label_at DESC, id DESC LIMIT -1 OFFSET ?)""",
        (max_rows,),
    )


def _record(row: Row) -> StoredRecord:
    return StoredRecord(
        id=row["id"],
        text=row["text"],
        ts=row["ts"],
        meta=json.loads(row["meta"]) if row["meta"] else {},
        model_version=row["model_version"],
        predicted=row["predicted"],
        scores=json.loads(row["scores"]),
        embedding=np.frombuffer(row["embedding"], dtype=np.float32),
        n_tokens=int(row["n_tokens"]),
        scored_at=float(row["scored_at"]),
        label=row["label"],
        precision=row["precision"],
        entities=row["entities"],
    )
