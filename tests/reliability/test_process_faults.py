"""Processes die at the worst moment: `kill -9` of the daemon mid-batch, of a retraining job mid-way."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.broker import free_port
from insightloop.daemon.kafka import ensure_topics
from insightloop.daemon.replay import replay
from insightloop.daemon.state import DB_FILE, LabelRow, PredictionRow, StateStore, TextRow
from insightloop.deploy import Registry
from insightloop.deploy.events import utc_now
from insightloop.detectors import Adjustments, Insight, Recommendation, WindowSpan
from tests.integration.daemon_process import DaemonProcess, InProcessDaemon, http_get
from tests.integration.test_scoring import metric_values
from tests.kafka_helpers import produce_raw, read_topic
from tests.synthetic import KITCHEN_NEGATIVE, KITCHEN_POSITIVE, domain_rows, sentiment_rows, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 16
TEXTS = 600


def consistency_problems(db: Path) -> list[str]:
    """What is wrong with the state store: SQLite's own check, then rows that only part of a write reached."""
    problems: list[str] = []
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"integrity_check: {integrity[:5]}")
        half_scored = conn.execute(
            """SELECT COUNT(*) FROM records WHERE (scored_at IS NULL) != (model_version IS NULL)
               OR (scored_at IS NOT NULL AND (predicted IS NULL OR scores IS NULL OR embedding IS NULL
                   OR n_tokens IS NULL))"""
        ).fetchone()[0]
        if half_scored:
            problems.append(f"{half_scored} records with half a prediction")
        half_labeled = conn.execute(
            "SELECT COUNT(*) FROM records WHERE (label IS NULL) != (label_at IS NULL)"
        ).fetchone()[0]
        if half_labeled:
            problems.append(f"{half_labeled} records with half a label")
        for table in ("insights", "jobs"):
            for row_id, payload in conn.execute(f"SELECT id, payload FROM {table}"):
                try:
                    parsed = json.loads(payload)
                except json.JSONDecodeError:
                    problems.append(f"{table} {row_id}: payload is not JSON")
                    continue
                if table == "insights" and parsed.get("id") != row_id:
                    problems.append(f"insight {row_id}: payload names {parsed.get('id')}")
    return problems


def joined_records(db: Path) -> int:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM records WHERE text IS NOT NULL AND scored_at IS NOT NULL AND label IS NOT NULL"
            ).fetchone()[0]
        )


def test_kill_9_mid_batch_then_restart_loses_nothing(make_config, tmp_path: Path, unique: str) -> None:
    config = make_config(
        scorer={"max_batch_size": BATCH, "max_wait_ms": 20},
        # Checks would only slow this test down: it is about what lands, not what is found.
        monitor={"group_id": f"monitor-{unique}", "check_every_records": 100_000, "check_interval_s": 3600},
        controller={"group_id": f"controller-{unique}"},
    )
    ensure_topics(config.kafka, config.topics.all())
    rows = sentiment_rows(TEXTS, seed=11, prefix="k9")
    source = write_jsonl(tmp_path / "stream.jsonl", rows)
    db = config.state.dir / DB_FILE
    first = DaemonProcess(config, tmp_path, "first", free_port()).start()
    try:
        first.wait_ready()
        replay(config, source, labels_delay=20, progress=False)
        partial = read_topic(config, config.topics.predictions, until=lambda got: len(got) >= 150, timeout_s=90)
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)  # no drain, no flush, no commit, no closing of SQLite
        assert first.process.wait(30) == -signal.SIGKILL
    finally:
        first.kill()
    assert len(partial) < TEXTS, "the daemon should be mid-stream when it is killed"
    assert consistency_problems(db) == []

    second = DaemonProcess(config, tmp_path, "second", free_port()).start()
    try:
        second.wait_ready()
        predictions = read_topic(
            config,
            config.topics.predictions,
            until=lambda got: len({p["id"] for p in got}) >= TEXTS,
            timeout_s=180,
            settle_s=2,
        )
        deadline = time.monotonic() + 60
        while joined_records(db) < TEXTS and time.monotonic() < deadline:
            time.sleep(0.5)
        joined = joined_records(db)
        assert second.terminate() == 0, second.log_text()[-3000:]
    finally:
        second.kill()
    counts = Counter(p["id"] for p in predictions)
    assert set(counts) == {row["id"] for row in rows}, "an id was lost across the kill"
    rescored = sum(n - 1 for n in counts.values())
    assert rescored <= BATCH, f"the kill cost {rescored} re-scored texts, more than the batch in flight ({BATCH})"
    assert joined == TEXTS, f"the monitor joined {joined} of {TEXTS} texts with their prediction and label"
    assert consistency_problems(db) == []


# -- retraining jobs ----------------------------------------------------------------------------


def drift_insight() -> Insight:
    return Insight(
        id="ins-kitchen",
        detector="test",
        kind="text_drift",
        severity="warning",  # type: ignore[arg-type]
        window=WindowSpan(count=300),
        statistic=3.0,
        threshold=1.0,
        summary="kitchen reviews use words the model never saw",
        recommendation=Recommendation(action="retrain", adjust=Adjustments(), because="new vocabulary"),  # type: ignore[arg-type]
        created_at=utc_now(),
        model_version="v0001",
    )


def store_production(state_dir: Path, n: int, labels: bool) -> None:
    """Scored production records in the state store as the monitor leaves them; then (later) their labels."""
    rows = domain_rows(n, 5, "p", KITCHEN_POSITIVE, KITCHEN_NEGATIVE)
    store = StateStore(state_dir)
    try:
        now = time.time()
        if labels:
            store.add_labels([LabelRow(r["id"], r["label"]) for r in rows], now)
        else:
            store.add_texts([TextRow(r["id"], r["text"], None, {}) for r in rows], now)
            scores = {"positive": 0.6, "negative": 0.4}
            store.add_predictions(
                [PredictionRow(r["id"], "v0001", "positive", scores, [0.0] * 8, 12) for r in rows], now
            )
    finally:
        store.close()


def pending_insights(url: str) -> int:
    _, body = http_get(url + "/readyz")
    return int(json.loads(body)["workers"]["controller"]["pending_insights"])


def jobs(url: str) -> list[dict[str, Any]]:
    status, body = http_get(url + "/api/jobs")
    assert status == 200
    return sorted(json.loads(body)["jobs"], key=lambda j: j.get("attempt", 0))


def wait_for(condition: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def job_pid(spec_path: str) -> int | None:
    """The process running `insightloop retrain --spec <spec_path>`, found the way an operator would."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"retrain" in argv and spec_path.encode() in argv:
            return int(entry.name)
    return None


def test_killed_jobs_leave_no_version_are_failed_and_retried_by_policy(
    make_config, registry_copy: Path, tmp_path: Path, unique: str
) -> None:
    config = make_config(
        registry={"path": str(registry_copy)},
        controller={
            "group_id": f"controller-{unique}",
            "poll_s": 0.3,
            "cooldown_s": 0,
            "min_new_labels": 30,
            "max_retries": 1,
            "epochs": 1,
            "batch_size": 16,
            "profile_rounds": 10,
            "projection_dims": 8,
            "device": "cpu",
            # A small reference set keeps each job short; what matters is where it is killed.
            "reference_data": str(write_jsonl(tmp_path / "reference.jsonl", sentiment_rows(240, seed=2))),
        },
    )
    registry = Registry(registry_copy)
    before = registry.names()
    with InProcessDaemon(config, role="controller") as daemon:
        produce_raw(config, config.topics.insights, [drift_insight().model_dump_json().encode()], key=b"ins-kitchen")
        wait_for(lambda: pending_insights(daemon.url) == 1, 60, "the controller to take the insight")
        # The texts a job needs are scored after the insight began, and their labels arrive later still.
        store_production(config.state.dir, 80, labels=False)
        store_production(config.state.dir, 80, labels=True)

        # Attempt 1: killed while it trains.
        first = wait_for(lambda: [j for j in jobs(daemon.url) if j["state"] == "running"], 60, "the first job")[0]
        log_path = registry_copy / "jobs" / "logs" / f"{first['id']}.log"
        wait_for(lambda: log_path.is_file() and "data:" in log_path.read_text(), 120, "the job to load its data")
        os.kill(wait_for(lambda: job_pid(first["spec_path"]), 10, "the job's process"), signal.SIGKILL)

        # The controller reports it failed and, by policy (max_retries 1), launches attempt 2 at once.
        listed = wait_for(lambda: len(jobs(daemon.url)) == 2 and jobs(daemon.url), 60, "a retry")
        assert listed[0]["state"] == "failed" and "exit code -9" in listed[0]["error"], listed[0]
        second = listed[1]
        assert second["attempt"] == 2 and second["insight_id"] == "ins-kitchen"

        # Attempt 2: killed while it writes the candidate version into the registry.
        def staging() -> list[Path]:
            found = list(registry_copy.glob(".incoming-*"))
            if not found and job_pid(second["spec_path"]) is None:
                raise AssertionError(f"the job ended before it wrote a version: {jobs(daemon.url)[-1]}")
            return found

        staged = wait_for(staging, 300, "the job to write its version", interval_s=0.01)
        os.kill(wait_for(lambda: job_pid(second["spec_path"]), 10, "the job's process"), signal.SIGKILL)
        wait_for(lambda: all(j["state"] == "failed" for j in jobs(daemon.url)), 60, "the second failure")
        time.sleep(2.0)  # several controller polls: a third attempt would be launched by now
        final = jobs(daemon.url)
        _, metrics_text = http_get(daemon.url + "/metrics")
    assert daemon.exit_code == 0
    assert [j["attempt"] for j in final] == [1, 2], "max_retries 1 allows exactly one retry"
    assert all("exit code -9" in j["error"] for j in final), final
    assert metric_values(metrics_text)[("insightloop_retrain_jobs_total", (("state", "failed"),))] == 2
    assert registry.names() == before, "a killed job left a version behind"
    assert registry.production() == before[-1]
    left = sorted(p.name for p in registry_copy.glob(".incoming-*"))
    assert left and left == sorted(p.name for p in staged), "the killed writer's staging directory"
    assert sorted(registry.remove_incomplete()) == left
    assert not list(registry_copy.glob(".incoming-*"))
