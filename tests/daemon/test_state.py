"""The SQLite state store: insights and jobs are found and changed by id, and survive a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from insightloop.daemon.state import StateStore


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
        store.upsert_job(f"job-{n}", "running", {"insight_id": f"ins-{n}", "attempt": 1})
    store.upsert_job("job-3", "succeeded", {"insight_id": "ins-3", "attempt": 1, "version": "v0002"})

    job = store.job("job-3")
    assert job is not None
    assert (job["state"], job["version"], job["insight_id"]) == ("succeeded", "v0002", "ins-3")
    assert store.job("job-600") is None
    store.close()
