"""The SQLite state store: insights and jobs are found and changed by id, and survive a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from insightloop.daemon.state import ControllerState, JobRecord, PredictionRow, StateStore, TextRow
from tests.synthetic import make_insight


def test_an_insight_state_changes_in_place_and_survives_a_reopen(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for n in range(600):  # more than any "newest N" page: the change must find it by id
        store.upsert_insight(f"ins-{n}", "embeddings", "embedding_drift", "warning", "open", {"id": f"ins-{n}"})
    assert store.set_insight_state("ins-0", "cleared")
    assert not store.set_insight_state("no-such-insight", "cleared")
    store.close()

    with sqlite3.connect(tmp_path / "insightloop.sqlite3") as conn:
        states = dict(conn.execute("SELECT id, state FROM insights WHERE id IN ('ins-0', 'ins-1')").fetchall())
    assert states == {"ins-0": "cleared", "ins-1": "open"}


def test_a_job_is_read_by_id_among_many(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for n in range(600):
        store.save_job(JobRecord(id=f"job-{n}", state="running", insight_id=f"ins-{n}", attempt=1))
    store.save_job(JobRecord(id="job-3", state="succeeded", insight_id="ins-3", attempt=1, version="v0002"))

    job = store.job("job-3")
    assert job is not None
    assert (job.state, job.version, job.insight_id) == ("succeeded", "v0002", "ins-3")
    assert store.job("job-600") is None
    store.close()


def test_a_store_from_before_precisions_migrates_and_keeps_its_records(tmp_path: Path) -> None:
    from insightloop.daemon.state import MIGRATIONS

    # A state file as the previous release left it: two migrations, one scored record.
    with sqlite3.connect(tmp_path / "insightloop.sqlite3") as conn:
        for script in MIGRATIONS[:2]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version=2")
        conn.execute(
            "INSERT INTO records (id, received_at, text, model_version, predicted, scores, embedding, n_tokens, "
            "scored_at) VALUES ('old', 1.0, 'kept text', 'v0001', 'positive', '{\"positive\": 1.0}', ?, 3, 1.0)",
            (bytes(8),),
        )
    store = StateStore(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    store.add_texts([TextRow("new", "fresh text", None, {})], 2.0)
    store.add_predictions(
        [PredictionRow("new", "v0001", "positive", {"positive": 1.0}, [0.0, 0.0], 3, "cpu/bfloat16")], 2.0
    )
    records = {r.id: r for r in store.recent_records(10)}
    assert records["old"].text == "kept text" and records["old"].precision is None
    assert records["new"].precision == "cpu/bfloat16"
    store.close()


def test_the_loops_waiting_state_survives_a_reopen(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_pending_insight(make_insight("ins-a"), began_at=100.0)
    store.save_pending_insight(make_insight("ins-b", severity="critical"), began_at=50.0)
    # An update of an ongoing insight replaces its copy but keeps when it began and its attempts.
    assert store.count_attempt("ins-a") == 1
    store.save_pending_insight(make_insight("ins-a", severity="critical"), began_at=300.0)
    assert store.count_attempt("no-such") == 0
    store.save_controller_state(ControllerState("2026-12-01", 1800.0, 123.5))
    store.add_to_outbox(make_insight("ins-c"))
    store.add_to_outbox(make_insight("ins-d"))
    store.remove_from_outbox("ins-c")
    store.close()

    store = StateStore(tmp_path)
    pending = store.pending_insights()
    assert [(p.insight.id, p.began_at, p.attempts, p.insight.severity) for p in pending] == [
        ("ins-b", 50.0, 0, "critical"),
        ("ins-a", 100.0, 1, "critical"),
    ]
    assert store.controller_state("2026-12-01") == ControllerState("2026-12-01", 1800.0, 123.5)
    assert store.controller_state("2026-12-02") == ControllerState("2026-12-02", 0.0, 123.5)  # a new day's budget
    assert [i.id for i in store.outbox()] == ["ins-d"]
    store.drop_pending_insight("ins-b")
    assert [p.insight.id for p in store.pending_insights()] == ["ins-a"]
    store.close()
