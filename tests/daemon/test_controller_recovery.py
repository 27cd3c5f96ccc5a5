"""After a restart the controller picks up the jobs its store says were active, however old they are, and
judges the ones its runner no longer knows by their result file. Each runs on both state-store backends."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

from insightloop.daemon.config import Config, load_config
from insightloop.daemon.controller import Controller
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.promotion import ModelService
from insightloop.daemon.state import JobRecord
from insightloop.deploy import GateVerdict, Registry
from insightloop.detectors import Adjustments, Insight, Recommendation, WindowSpan
from insightloop.retrain import JobResult, LocalRunner
from tests.conftest import StoreOpener


def an_insight(insight_id: str) -> Insight:
    return Insight(
        id=insight_id,
        detector="test",
        kind="text_drift",
        severity="warning",
        window=WindowSpan(count=300),
        statistic=3.0,
        threshold=1.0,
        summary=f"insight {insight_id}",
        recommendation=Recommendation(action="retrain", adjust=Adjustments(), because="test"),
        created_at=datetime.now(UTC),
        model_version="v0001",
    )


def config_in(tmp_path: Path) -> Config:
    return load_config(
        None, {"registry": {"path": str(tmp_path / "registry")}, "state": {"dir": str(tmp_path / "state")}}, environ={}
    )


def test_active_jobs_are_followed_or_failed_after_a_restart(tmp_path: Path, store_opener: StoreOpener) -> None:
    config = config_in(tmp_path)
    store = store_opener()  # SQLite and PostgreSQL
    # A stand-in for `insightloop retrain` that just keeps running: the runner starts it as a real process.
    job_command = tmp_path / "long-job"
    job_command.write_text("#!/bin/sh\nsleep 60\n")
    job_command.chmod(job_command.stat().st_mode | stat.S_IEXEC)
    runner = LocalRunner(tmp_path / "logs", python=str(job_command))
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    lost_spec = tmp_path / "lost" / "spec.json"
    lost_spec.parent.mkdir()
    lost_spec.write_text("{}")
    try:
        alive = runner.submit("job-alive", spec)
        store.save_pending_insight(an_insight("i-1"), 1.0)
        store.save_pending_insight(an_insight("i-2"), 2.0)
        store.count_attempt("i-2")
        # The oldest rows: one job whose process this runner still has, one it never heard of (lost in the restart).
        store.save_job(
            JobRecord(id="job-alive", state="running", handle=alive, spec_path=str(spec), insight_id="i-1", attempt=1)
        )
        store.save_job(
            JobRecord(
                id="job-lost", state="running", handle="job-lost", spec_path=str(lost_spec), insight_id="i-2", attempt=1
            )
        )
        # Then more finished jobs than one page of the job list holds.
        for n in range(600):
            store.save_job(JobRecord(id=f"done-{n}", state="succeeded", insight_id=f"d-{n}"))

        metrics = Metrics()
        controller = Controller(config, store, ModelService(Registry(config.registry.path)), metrics, runner=runner)
        controller._recover()

        assert controller.status() == {"pending_insights": 2, "running_jobs": ["job-alive"]}
        lost = store.job("job-lost")
        assert lost is not None and lost.state == "failed"
        assert lost.error.startswith("the runner does not know the job and it left no result"), lost.error
        assert lost.insight_id == "i-2", "what the job was for is kept"
        assert [(p.insight.id, p.attempts) for p in store.pending_insights()] == [("i-1", 0), ("i-2", 1)], (
            "max_retries 1: the lost job's insight stays for a second attempt"
        )
        assert store.controller_state("2000-01-01").last_launch is None, "a retry does not wait for the cooldown"
        assert metrics.registry.get_sample_value("insightloop_retrain_jobs_total", {"state": "failed"}) == 1.0
        assert {j.state for j in store.jobs(1000) if j.id.startswith("done-")} == {"succeeded"}
    finally:
        runner.cleanup(alive)
        store.close()


def test_a_lost_job_whose_result_records_a_version_is_a_candidate(tmp_path: Path, store_opener: StoreOpener) -> None:
    config = config_in(tmp_path)
    store = store_opener()  # SQLite and PostgreSQL
    spec = tmp_path / "jobs" / "job-done" / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_text("{}")
    # What `insightloop retrain` writes when it finishes (here: while the daemon was down).
    finished = JobResult(
        job_id="job-done", state="succeeded", version="v0002", gate=GateVerdict(passed=True, reasons=["better"])
    )
    spec.with_suffix(".result.json").write_text(finished.model_dump_json())
    try:
        store.save_pending_insight(an_insight("i-1"), 1.0)
        store.count_attempt("i-1")
        store.save_job(
            JobRecord(id="job-done", state="running", handle="job-done", spec_path=str(spec), insight_id="i-1")
        )
        metrics = Metrics()
        runner = LocalRunner(tmp_path / "logs")  # a fresh process: it never heard of job-done
        controller = Controller(config, store, ModelService(Registry(config.registry.path)), metrics, runner=runner)
        controller._recover()

        done = store.job("job-done")
        assert done is not None and done.state == "succeeded"
        assert done.version == "v0002" and done.gate_passed is True and done.gate_reasons == ["better"]
        assert store.pending_insights() == [], "the insight got its candidate"
        assert controller.status() == {"pending_insights": 0, "running_jobs": []}
        assert metrics.registry.get_sample_value("insightloop_retrain_jobs_total", {"state": "succeeded"}) == 1.0
    finally:
        store.close()


def test_a_lost_job_on_its_last_attempt_gives_its_insight_up(tmp_path: Path, store_opener: StoreOpener) -> None:
    config = config_in(tmp_path)
    store = store_opener()  # SQLite and PostgreSQL
    try:
        store.save_pending_insight(an_insight("i-1"), 1.0)
        store.count_attempt("i-1")
        store.count_attempt("i-1")
        store.save_job(JobRecord(id="job-2", state="running", handle="job-2", insight_id="i-1", attempt=2))
        controller = Controller(
            config, store, ModelService(Registry(config.registry.path)), Metrics(), runner=LocalRunner(tmp_path)
        )
        controller._recover()
        job = store.job("job-2")
        assert job is not None and job.state == "failed"
        assert store.pending_insights() == [], "max_retries 1: two attempts, then the insight is given up"
    finally:
        store.close()


def test_a_controller_on_its_own_exports_the_unreadable_registry_entries(
    tmp_path: Path, store_opener: StoreOpener
) -> None:
    config = config_in(tmp_path)
    broken = config.registry.path / "v0099"
    broken.mkdir(parents=True)
    (broken / "version.json").write_text("")
    (config.registry.path / "audit.jsonl").write_text('{"torn": ')
    store = store_opener()  # SQLite and PostgreSQL
    try:
        metrics = Metrics()
        controller = Controller(
            config, store, ModelService(Registry(config.registry.path)), metrics, runner=LocalRunner(tmp_path)
        )
        controller._export_candidate_metrics()
        for kind in ("version", "audit"):
            sample = metrics.registry.get_sample_value("insightloop_registry_unreadable_entries", {"kind": kind})
            assert sample == 1.0, kind
    finally:
        store.close()
