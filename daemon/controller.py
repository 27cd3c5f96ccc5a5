"""The controller role: insights in, retraining jobs out, candidates registered and (optionally) approved.

A thin shell around the pure policy of daemon/policy.py: it takes insights from Kafka into the state store
(before it commits their offsets), asks :func:`~insightloop.daemon.policy.decide` whether to launch, writes
the job's files (daemon/jobs.py), submits them to the runner, and turns each job's status and result file into
the store's job rows through :func:`~insightloop.daemon.policy.follow_up`.

Everything a decision needs lives in the store, so a restart loses nothing: the insights acted on (with when
each began and its attempts), today's GPU-seconds and the last launch (epoch seconds), and the jobs. At start
the controller follows again every job the store has as pending or running; one that ended while the daemon
was down is judged by its result file on the registry volume, exactly as if it had just finished.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from insightloop.daemon.config import Config
from insightloop.daemon.errors import ConfigError
from insightloop.daemon.jobs import new_job_id, result_path, write_spec
from insightloop.daemon.kafka import make_consumer
from insightloop.daemon.metrics import Metrics, observers_of
from insightloop.daemon.policy import (
    Follow,
    Launch,
    RecordCandidate,
    RunningJob,
    Wait,
    admits,
    decide,
    follow_up,
    priority,
)
from insightloop.daemon.promotion import ModelRefusedError, ModelService
from insightloop.daemon.state import JobRecord, StateStore
from insightloop.deploy import Registry, RegistryError
from insightloop.detectors import Insight
from insightloop.retrain import (
    JobStatus,
    KubernetesRunner,
    LocalRunner,
    RetrainError,
    Runner,
    read_result,
)

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")

__all__ = ["ACTIVE", "Controller", "TrackedJob", "make_runner", "priority"]


@dataclass(frozen=True)
class TrackedJob:
    """A job the controller launched and follows (``started``: epoch seconds of its launch)."""

    job_id: str
    insight_id: str
    handle: str
    spec_path: Path | None
    started: float
    attempt: int


def make_runner(config: Config) -> Runner:
    """The configured runner; with ``gpus_per_job`` above 1 its jobs train in that many processes (torchrun)."""
    gpus = config.controller.gpus_per_job
    if config.controller.runner == "kubernetes":
        if config.controller.job_template is None:
            raise ConfigError("controller.job_template is required for the kubernetes runner")
        return KubernetesRunner.from_template_file(
            config.controller.job_template,
            namespace=config.controller.namespace,
            gpus_per_job=gpus or None,  # 0 (no GPU counted in the budget): the template's own GPUs
        )
    return LocalRunner(config.registry.path / "jobs" / "logs", processes=max(1, gpus))


def _today(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


class Controller:
    """A named worker deciding when to retrain."""

    name = "controller"

    def __init__(
        self, config: Config, store: StateStore, models: ModelService, metrics: Metrics, runner: Runner | None = None
    ) -> None:
        self.config = config
        self.policy = config.controller
        self.store = store
        self.models = models
        self.registry: Registry = models.registry
        self.metrics = metrics
        self.observer = observers_of(metrics)  # a failing exporter is logged, never fatal
        self.runner = runner or make_runner(config)
        # On the registry volume: a Kubernetes Job's pod mounts it, not the daemon's state directory.
        self.jobs_dir = config.registry.path.resolve() / "jobs"
        self._running: dict[str, TrackedJob] = {}
        self._last_wait = ""
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        """True once subscribed to insights."""
        return self._ready.is_set()

    def status(self) -> dict[str, Any]:
        """What /readyz shows: the insights the store keeps for the controller, and the jobs it follows."""
        return {"pending_insights": len(self.store.pending_insights()), "running_jobs": sorted(self._running)}

    def run(self, stop: threading.Event) -> None:
        """Consume insights, launch and follow jobs until ``stop``."""
        self._recover()
        consumer = make_consumer(self.config.kafka, [self.config.topics.insights], self.policy.group_id)
        self._ready.set()
        next_poll = 0.0
        try:
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=500)
                for batch in polled.values():
                    for record in batch:
                        self._receive(record.value)
                if polled:
                    consumer.commit()  # the insights are in the store by now
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.policy.poll_s
                    self._follow_jobs()
                    self._maybe_launch()
                    self._export_candidate_metrics()
        finally:
            self._ready.clear()
            consumer.close(autocommit=False)
            if isinstance(self.runner, LocalRunner):
                # Local jobs are children of this process: stop them rather than orphan them. Kubernetes
                # Jobs keep running and are followed again after a restart.
                for job in list(self._running.values()):
                    self.runner.cleanup(job.handle)
                    # Not the job's fault: its attempt is given back, so a rolling restart never uses up retries.
                    self.store.count_attempt(job.insight_id, delta=-1)
                    self._failed(job, "stopped with the daemon", retry=True)

    # -- insights in ----------------------------------------------------------------------
    def _receive(self, value: bytes | None) -> None:
        try:
            insight = Insight.model_validate_json(value or b"")
        except ValidationError as exc:
            log.warning("ignoring a malformed insight: %s", str(exc)[:300])
            return
        taken, why = admits(insight, self.policy)
        if not taken:
            log.debug("insight %s is not a reason for a job: %s", insight.id, why)
            return
        # An update of an ongoing insight replaces the stored copy and keeps when it began and its attempts.
        # It began with the rows no earlier check had seen (the monitor says when they were scored).
        began = insight.window.unchecked_since or insight.created_at
        self.store.save_pending_insight(insight, began.timestamp())

    # -- launching ------------------------------------------------------------------------
    def _maybe_launch(self) -> None:
        now = time.time()
        pending = self.store.pending_insights()
        champion = self.registry.production() if pending else None
        decision = decide(
            pending,
            [RunningJob(j.job_id, j.insight_id) for j in self._running.values()],
            self.store.controller_state(_today(now)),
            lambda began: self.store.count_scored_since(began, labeled_only=True),
            self.policy,
            champion,
            now,
        )
        if isinstance(decision, Launch) and champion is not None:
            self._last_wait = ""
            self._launch(decision, champion, now)
        elif isinstance(decision, Wait) and decision.reason != self._last_wait:
            self._last_wait = decision.reason  # said once, not every poll
            log.info("not launching: %s", decision.reason)

    def _launch(self, decision: Launch, champion: str, now: float) -> None:
        chosen = decision.insight.insight
        labeled = self.store.recent_records(
            self.policy.production_labeled_max, since=decision.insight.began_at, labeled_only=True
        )
        job_id = new_job_id()
        try:
            spec, spec_path = write_spec(
                self.jobs_dir, job_id, self.registry, self.policy, decision.insights, champion, labeled
            )
        except RegistryError as exc:
            log.error("cannot plan a job for %s: %s; dropping the insight", chosen.id, exc)
            self.store.drop_pending_insight(chosen.id)
            return
        attempt = self.store.count_attempt(chosen.id)
        state = self.store.controller_state(_today(now))
        self.store.save_controller_state(replace(state, last_launch=now))
        try:
            handle = self.runner.submit(job_id, spec_path)
        except (RetrainError, OSError) as exc:  # a runner error must not kill the controller
            log.error("could not submit %s: %s", job_id, exc)
            self._record(job_id, "failed", chosen, error=f"submit failed: {exc}", attempt=attempt)
            self.observer.on_job("failed")
            if attempt > self.policy.max_retries:
                self.store.drop_pending_insight(chosen.id)
            return
        self._running[job_id] = TrackedJob(job_id, chosen.id, handle, spec_path, now, attempt)
        self._record(
            job_id,
            "running",
            chosen,
            plan_action=spec.plan.action,
            attempt=attempt,
            labeled=len(labeled),
            champion=champion,
            handle=handle,
            spec_path=str(spec_path),
            runner=self.policy.runner,
            started_at=now,
        )
        self.observer.on_job("running")
        log.info("launched %s (%s) for %s: %s", job_id, spec.plan.action, decision.reason, chosen.summary)

    def _record(self, job_id: str, state: str, insight: Insight | None, **changes: object) -> None:
        previous = self.store.job(job_id) or JobRecord(id=job_id, state=state)
        if insight is not None:
            changes.update(insight_id=insight.id, insight_summary=insight.summary)
        self.store.save_job(previous.changed(state, **changes))

    # -- following ------------------------------------------------------------------------
    def _follow_jobs(self) -> None:
        now = time.time()
        oldest = 0.0
        for job in list(self._running.values()):
            try:
                status = self.runner.status(job.handle)
            except (RetrainError, OSError) as exc:
                log.error("cannot read the status of %s: %s", job.job_id, exc)
                continue
            age = max(now - job.started, 0.0)
            result = read_result(result_path(job.spec_path)) if status.finished and job.spec_path else None
            outcome = follow_up(status, result, job.attempt, age, self.policy)
            if isinstance(outcome, Follow):
                oldest = max(oldest, age)
                continue
            if outcome.gpu_seconds > 0:
                spent = self.store.controller_state(_today(now))
                self.store.save_controller_state(replace(spent, gpu_seconds=spent.gpu_seconds + outcome.gpu_seconds))
            if isinstance(outcome, RecordCandidate):
                self._candidate(job, outcome)
            else:
                self._failed(job, outcome.error, outcome.retry, status)
            self.runner.cleanup(job.handle)  # stops a job that timed out; releases what a finished one left
        self.observer.on_jobs_running(len(self._running), oldest)

    def _candidate(self, job: TrackedJob, outcome: RecordCandidate) -> None:
        self._running.pop(job.job_id, None)
        self.store.drop_pending_insight(job.insight_id)
        self._record(
            job.job_id,
            "succeeded",
            None,
            version=outcome.version,
            gate_passed=outcome.gate_passed,
            gate_reasons=list(outcome.gate_reasons),
        )
        self.observer.on_job("succeeded")
        log.info("job %s registered %s", job.job_id, outcome.reason)
        if outcome.gate_passed and self.policy.auto_approve:
            try:
                self.models.approve(outcome.version, by="auto-approve", note=f"gate passed ({job.job_id})")
            except (RegistryError, ModelRefusedError) as exc:
                log.error("auto-approve of %s refused: %s", outcome.version, exc)

    def _failed(self, job: TrackedJob, error: str, retry: bool, status: JobStatus | None = None) -> None:
        self._running.pop(job.job_id, None)
        log_tail = status.log_tail[-2000:] if status is not None and status.log_tail else None
        self._record(job.job_id, "failed", None, error=error, log_tail=log_tail)
        self.observer.on_job("failed")
        log.error("job %s failed (%s)%s", job.job_id, error, "; will retry" if retry else "; giving up")
        if retry:
            now = time.time()
            state = self.store.controller_state(_today(now))
            self.store.save_controller_state(replace(state, last_launch=None))  # a retry skips the cooldown
        else:
            self.store.drop_pending_insight(job.insight_id)

    def _export_candidate_metrics(self) -> None:
        pending = self.registry.pending_candidates()
        now = datetime.now(UTC)
        oldest = max(((now - r.created_at).total_seconds() for r in pending), default=0.0)
        self.observer.on_candidates_pending(len(pending), oldest)
        # Also here, so a deployment whose controller runs apart from the scorers still exports the count.
        self.observer.on_registry_problems(self.registry.problem_counts())

    def _recover(self) -> None:
        """Follow again every job the store has as pending or running. One that ended while the daemon was down
        (the runner says so, or no longer knows it) is judged by its result file at once, as a normal finish."""
        for row in self.store.jobs(10_000, states=ACTIVE):
            started = row.started_at if row.started_at is not None else (_epoch(row.created_at) or time.time())
            self._running[row.id] = TrackedJob(
                row.id,
                row.insight_id or "",
                row.handle or row.id,
                Path(row.spec_path) if row.spec_path else None,
                started,
                row.attempt,
            )
        if self._running:
            log.info("following %d job(s) again after a restart: %s", len(self._running), sorted(self._running))
            self._follow_jobs()
