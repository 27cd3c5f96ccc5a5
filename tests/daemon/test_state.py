"""The state store, on both backends (SQLite and a real PostgreSQL): every test taking ``store_opener`` or
``state_store`` runs once on each (tests/conftest.py). What is written is found by id, joined in any arrival
order, bounded, pruned, and survives a reopen; migrations bring an older store up to date."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from insightloop.daemon.state import (
    MIGRATIONS,
    CheckPoint,
    ControllerState,
    DetectorPoint,
    JobRecord,
    LabelRow,
    PredictionRow,
    StateStore,
    TextRow,
)
from insightloop.daemon.state_backend import postgres_ddl, split_statements
from tests.conftest import StoreOpener
from tests.synthetic import make_insight

SCORES = {"positive": 0.75, "negative": 0.25}


def scored(store: StateStore, ids: list[str], at: float, version: str = "v0001") -> None:
    store.add_texts([TextRow(i, f"text of {i}", None, {"domain": "books"}) for i in ids], at)
    store.add_predictions([PredictionRow(i, version, "positive", SCORES, [0.5, -0.25], 4) for i in ids], at)


def test_an_insight_state_changes_in_place_and_survives_a_reopen(store_opener: StoreOpener) -> None:
    store = store_opener()
    for n in range(600):  # more than any "newest N" page: the change must find it by id
        store.upsert_insight(f"ins-{n}", "embeddings", "embedding_drift", "warning", "open", {"id": f"ins-{n}"})
    assert store.set_insight_state("ins-0", "cleared")
    assert not store.set_insight_state("no-such-insight", "cleared")
    # An update of an ongoing insight replaces its payload and severity, keeps one row.
    store.upsert_insight("ins-1", "embeddings", "embedding_drift", "critical", "open", {"id": "ins-1", "n": 2})
    store.close()

    store = store_opener()
    stored = {i["id"]: i for i in store.insights(limit=1000)}
    assert len(stored) == 600
    assert (stored["ins-0"]["state"], stored["ins-1"]["state"], stored["ins-1"]["n"]) == ("cleared", "open", 2)
    assert [i["id"] for i in store.insights(limit=2)] == ["ins-599", "ins-598"]  # newest first
    store.close()


def test_a_job_is_read_by_id_among_many(state_store: StateStore) -> None:
    store = state_store
    for n in range(600):
        store.save_job(JobRecord(id=f"job-{n}", state="running", insight_id=f"ins-{n}", attempt=1))
    store.save_job(JobRecord(id="job-3", state="succeeded", insight_id="ins-3", attempt=1, version="v0002"))
    store.save_job(
        JobRecord(id="job-4", state="failed", insight_id="ins-4", gate_reasons=["worse on recent"], started_at=1.5)
    )

    job = store.job("job-3")
    assert job is not None
    assert (job.state, job.version, job.insight_id) == ("succeeded", "v0002", "ins-3")
    assert store.job("job-600") is None
    assert [j.id for j in store.jobs(states=("succeeded", "failed"))] == ["job-4", "job-3"]
    failed = store.job("job-4")
    assert failed is not None and failed.gate_reasons == ["worse on recent"] and failed.started_at == 1.5
    assert len(store.jobs(limit=1000, states=("running",))) == 598


def test_records_join_texts_predictions_and_labels_in_any_order(state_store: StateStore) -> None:
    store = state_store
    now = 1_764_633_600.123456  # epoch seconds with microseconds: kept exactly (8-byte floats on both)
    # a: text, prediction, label. b: label first (waits), then prediction, then text. c: text only.
    store.add_texts([TextRow("a", "first text", "2026-12-01T00:00:00Z", {"domain": "books", "n": 3})], now)
    store.add_predictions([PredictionRow("a", "v0001", "positive", SCORES, [0.1, 0.2, 0.3], 5, "cpu/float32")], now)
    assert store.add_labels([LabelRow("a", "negative"), LabelRow("b", "positive")], now + 1) == 1
    assert store.count_waiting_labels() == 1
    store.add_predictions([PredictionRow("b", "v0002", "negative", SCORES, [1.0, -1.0, 0.0], 7)], now + 2)
    assert store.count_waiting_labels() == 0  # it joined b's prediction
    store.add_texts([TextRow("b", "second text", None, {})], now + 3)
    store.add_texts([TextRow("c", "never scored", None, {})], now + 4)

    records = store.recent_records(10)
    assert [r.id for r in records] == ["a", "b"]  # complete ones only, oldest first
    a, b = records
    assert (a.text, a.ts, a.meta, a.predicted, a.scores, a.label, a.precision) == (
        "first text",
        "2026-12-01T00:00:00Z",
        {"domain": "books", "n": 3},
        "positive",
        SCORES,
        "negative",
        "cpu/float32",
    )
    assert a.scored_at == now and a.n_tokens == 5
    assert a.embedding.dtype == np.float32 and a.embedding.tolist() == pytest.approx([0.1, 0.2, 0.3], rel=1e-7)
    assert (b.model_version, b.label, b.precision, b.embedding.tolist()) == ("v0002", "positive", None, [1, -1, 0])
    assert [r.id for r in store.recent_records(10, model_version="v0002")] == ["b"]
    assert [r.id for r in store.recent_records(10, since=now + 1)] == ["b"]
    assert [r.id for r in store.recent_records(1)] == ["b"]  # the newest
    assert store.count_records() == 3
    assert store.count_scored_since(now) == 2
    assert store.count_scored_since(now, labeled_only=True) == 2
    store.add_labels([LabelRow("a", "positive")], now + 5)  # a corrected label replaces the first
    assert [r.label for r in store.recent_records(10, labeled_only=True)] == ["positive", "positive"]


def test_waiting_labels_are_bounded_by_count_and_age(state_store: StateStore) -> None:
    store = state_store
    now = time.time()
    assert store.add_labels([LabelRow(f"old-{n}", "positive") for n in range(3)], now - 100) == 3
    waiting = store.add_labels(
        [LabelRow(f"new-{n}", "negative") for n in range(5)], now, wait_max_rows=4, wait_max_age_s=50
    )
    assert waiting == 5
    assert store.count_waiting_labels() == 4  # the old ones aged out, and one new one beyond the newest 4
    scored(store, [f"new-{n}" for n in range(5)], now + 1)
    assert sorted(r.id for r in store.recent_records(10, labeled_only=True)) == ["new-1", "new-2", "new-3", "new-4"]


def test_retention_drops_old_and_surplus_records_and_blanks_unlabeled_texts(state_store: StateStore) -> None:
    store = state_store
    now = time.time()
    scored(store, ["ancient"], now - 1000)
    scored(store, [f"r{n}" for n in range(6)], now - 300)
    scored(store, ["fresh"], now)
    store.add_labels([LabelRow("r0", "positive"), LabelRow("orphan", "negative")], now - 700)
    assert store.count_waiting_labels() == 1
    removed = store.apply_retention(max_age_s=500, max_rows=5, now=now, keep_text="labeled_only")
    # ancient (age), two of r0..r5 beyond the newest five (ties broken by the store), the orphan label (age)
    assert removed == 4
    assert store.count_records() == 5 and store.count_waiting_labels() == 0
    kept = {r.id: r for r in store.recent_records(10)}
    assert "fresh" in kept and "ancient" not in kept
    # Unlabeled texts older than half the age horizon were blanked, so those records no longer count as complete.
    assert set(kept) <= {"fresh", "r0"}
    assert store.apply_retention(max_age_s=500, max_rows=5, now=now) == 0


def test_check_history_keeps_the_newest_points_per_version_and_prunes_by_age(state_store: StateStore) -> None:
    store = state_store
    for n in range(10):
        point = CheckPoint(
            at=1000.0 + n,
            model_version="v0001" if n % 2 else "v0002",
            labeled_accuracy=0.5 + n / 100,
            detectors=[DetectorPoint(detector="embeddings", statistic=n / 10, threshold=0.5, drifted=n > 5)],
            texts_scored=n,
        )
        store.add_check_history(point, max_age_s=8 if n == 9 else None)
    assert [p.at for p in store.check_history()] == [1001.0 + n for n in range(9)]  # 1000 dropped (older than 8 s)
    assert [p.at for p in store.check_history(version="v0001", limit=2)] == [1007.0, 1009.0]
    assert [p.at for p in store.check_history(since=1008.0)] == [1008.0, 1009.0]
    assert store.check_history(since=1009.0)[0].detectors[0].drifted is True
    assert store.prune_check_history(older_than=1005.0) == 4
    assert len(store.check_history()) == 5


def test_a_condition_and_its_insights_land_together_or_not_at_all(store_opener: StoreOpener) -> None:
    store = store_opener()
    store.save_condition("quality", {"raised": False, "since": None})
    store.save_condition_and_outbox("quality", {"raised": True, "since": 5.0}, [make_insight("ins-q")])
    with pytest.raises(RuntimeError), store.transaction() as conn:  # a crash halfway through a transaction
        conn.execute("DELETE FROM outbox")
        conn.execute("UPDATE conditions SET payload = '{}'")
        raise RuntimeError("crashed")
    store.close()

    store = store_opener()
    assert store.conditions() == {"quality": {"raised": True, "since": 5.0}}
    assert [i.id for i in store.outbox()] == ["ins-q"]
    store.close()


def test_the_loops_waiting_state_survives_a_reopen(store_opener: StoreOpener) -> None:
    store = store_opener()
    store.save_pending_insight(make_insight("ins-a"), began_at=100.0)
    store.save_pending_insight(make_insight("ins-b", severity="critical"), began_at=50.0)
    # An update of an ongoing insight replaces its copy but keeps when it began and its attempts.
    assert store.count_attempt("ins-a") == 1
    store.save_pending_insight(make_insight("ins-a", severity="critical"), began_at=300.0)
    assert store.count_attempt("no-such") == 0
    assert store.count_attempt("ins-b", delta=-1) == 0  # never below zero
    store.save_controller_state(ControllerState("2026-12-01", 1800.0, 123.5))
    store.add_to_outbox(make_insight("ins-c"))
    store.add_to_outbox(make_insight("ins-d"))
    store.remove_from_outbox("ins-c")
    store.close()

    store = store_opener()
    pending = store.pending_insights()
    assert [(p.insight.id, p.began_at, p.attempts, p.insight.severity) for p in pending] == [
        ("ins-b", 50.0, 0, "critical"),
        ("ins-a", 100.0, 1, "critical"),
    ]
    store.save_pending_insight(make_insight("ins-a", severity="critical"), began_at=20.0)  # an earlier beginning
    assert store.pending_insights()[0].began_at == 20.0
    assert store.controller_state("2026-12-01") == ControllerState("2026-12-01", 1800.0, 123.5)
    assert store.controller_state("2026-12-02") == ControllerState("2026-12-02", 0.0, 123.5)  # a new day's budget
    assert [i.id for i in store.outbox()] == ["ins-d"]
    store.drop_pending_insight("ins-b")
    assert [p.insight.id for p in store.pending_insights()] == ["ins-a"]
    store.close()


def test_threads_share_one_store(state_store: StateStore) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(40):
                state_store.save_job(JobRecord(id=f"job-{worker}-{n}", state="running"))
                state_store.count_attempt(f"ins-{worker}")
                assert state_store.job(f"job-{worker}-{n}") is not None
        except BaseException as exc:  # reported below: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,), name=f"writer-{w}") for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(state_store.jobs(limit=1000)) == 160


def test_a_new_store_is_at_the_latest_schema_and_says_where_it_is(store_opener: StoreOpener) -> None:
    store = store_opener()
    assert store.schema_version == len(MIGRATIONS)
    assert store.backend == store_opener.backend
    if store_opener.backend == "sqlite":
        assert store.location == str(store_opener.directory / "insightloop.sqlite3")
    else:
        assert store.location == store_opener.url and store_opener.password not in store.location
    store.close()
    reopened = store_opener()  # opening again applies nothing
    assert reopened.schema_version == len(MIGRATIONS)
    reopened.close()


def _leave_store_at_version_two(opener: StoreOpener) -> None:
    """A store as the release before precisions left it: two migrations, one scored record."""
    insert = (
        "INSERT INTO records (id, received_at, text, model_version, predicted, scores, embedding, n_tokens, "
        "scored_at) VALUES ('old', 1.0, 'kept text', 'v0001', 'positive', '{\"positive\": 1.0}', {blob}, 3, 1.0)"
    )
    if opener.backend == "sqlite":
        opener.directory.mkdir(parents=True)
        with sqlite3.connect(opener.directory / "insightloop.sqlite3") as conn:
            for script in MIGRATIONS[:2]:
                conn.executescript(script)
            conn.execute("PRAGMA user_version=2")
            conn.execute(insert.replace("{blob}", "?"), (bytes(8),))
        return
    import psycopg

    assert opener.url is not None
    with psycopg.connect(opener.url, password=opener.password, autocommit=True) as conn:
        for script in MIGRATIONS[:2]:
            for statement in split_statements(script):
                conn.execute(postgres_ddl(statement))  # type: ignore[arg-type]
        conn.execute("CREATE TABLE insightloop_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER)")
        conn.execute("INSERT INTO insightloop_schema VALUES (1, 2)")
        conn.execute(insert.replace("{blob}", "%s"), (bytes(8),))  # type: ignore[arg-type]


def test_a_store_from_before_precisions_migrates_and_keeps_its_records(store_opener: StoreOpener) -> None:
    _leave_store_at_version_two(store_opener)
    store = store_opener()
    assert store.schema_version == len(MIGRATIONS)
    store.add_texts([TextRow("new", "fresh text", None, {})], 2.0)
    store.add_predictions(
        [PredictionRow("new", "v0001", "positive", {"positive": 1.0}, [0.0, 0.0], 3, "cpu/bfloat16")], 2.0
    )
    records = {r.id: r for r in store.recent_records(10)}
    assert records["old"].text == "kept text" and records["old"].precision is None
    assert records["old"].embedding.tolist() == [0.0, 0.0]
    assert records["new"].precision == "cpu/bfloat16"
    store.add_check_history(CheckPoint(at=3.0, model_version="v0001"))  # a table of a later migration
    assert len(store.check_history()) == 1
    store.close()


def test_the_sqlite_file_is_where_it_always_was(tmp_path: Path) -> None:
    """An existing deployment's state file keeps its name and place, and other tools can still read it."""
    store = StateStore(tmp_path)
    store.upsert_insight("ins-0", "embeddings", "embedding_drift", "warning", "open", {"id": "ins-0"})
    store.close()
    with sqlite3.connect(tmp_path / "insightloop.sqlite3") as conn:
        assert conn.execute("SELECT id, state FROM insights").fetchall() == [("ins-0", "open")]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def open_at_once(directory: Path, openers: int) -> tuple[list[StateStore], list[BaseException]]:
    """``openers`` threads open a store on ``directory`` at one moment: the stores opened and the errors raised."""
    opened: list[StateStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(openers)

    def open_store() -> None:
        start.wait()
        try:
            opened.append(StateStore(directory))
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=open_store, name=f"opener-{n}") for n in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return opened, errors


def test_processes_opening_one_new_sqlite_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Replicas sharing a state directory start together: each must see the other's migrations, not redo them
    ("table insights already exists" once stopped one of two scorers started side by side), and wait for the
    file's switch to WAL ("database is locked" stopped one in CI)."""
    for attempt in range(30):  # the races need several openers at one moment; one in ten lost one before
        opened, errors = open_at_once(tmp_path / f"attempt-{attempt}", 8)
        assert not errors, errors
        assert [s.schema_version for s in opened] == [len(MIGRATIONS)] * 8
        for store in opened:
            store.close()


def test_one_polled_batch_lands_as_the_three_calls_would(store_opener: StoreOpener, tmp_path: Path) -> None:
    """The monitor's batched ingest (add_polled) and the per-kind calls leave the same records and waiting labels."""
    now = 1_764_633_600.5
    texts = [TextRow(f"t{n}", f"text {n}", None, {"n": n}) for n in range(6)]
    predictions = [PredictionRow(f"t{n}", "v0001", "positive", SCORES, [float(n)], n) for n in range(2, 8)]
    labels = [LabelRow(f"t{n}", "negative") for n in (0, 3, 7, 9)]
    early = [LabelRow("t1", "positive"), LabelRow("t5", "negative")]  # waited before this poll

    batched = store_opener()
    batched.add_labels(early, now - 1)
    waiting = batched.add_polled(texts, predictions, labels, now)
    one_by_one = StateStore(tmp_path / "one-by-one")
    one_by_one.add_labels(early, now - 1)
    one_by_one.add_texts(texts, now)
    one_by_one.add_predictions(predictions, now)
    expected_waiting = one_by_one.add_labels(labels, now)

    def seen(store: StateStore) -> list[tuple[object, ...]]:
        return [(r.id, r.text, r.meta, r.predicted, r.label, r.embedding.tolist()) for r in store.recent_records(20)]

    assert (waiting, batched.count_waiting_labels()) == (expected_waiting, one_by_one.count_waiting_labels()) == (1, 1)
    assert seen(batched) == seen(one_by_one)
    assert [r.id for r in batched.recent_records(20, labeled_only=True)] == ["t3", "t5"]
    assert batched.count_records() == one_by_one.count_records() == 8
    batched.close()
    one_by_one.close()
