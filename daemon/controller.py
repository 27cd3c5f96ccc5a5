"""The controller role: insights in, retraining jobs out, candidates registered and (optionally) approved.

Policy (config ``controller``): which kinds and severities act, a cooldown between launches, a minimum of
new labeled production texts, a cap on concurrent jobs, a daily GPU-hour budget, and retries. When
several insights compete, the one with the largest estimated accuracy loss × traffic share goes first.
One ongoing insight (the monitor keeps its id while the condition lasts) never gets two jobs at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from insightloop.daemon.config import Config
from insightloop.daemon.kafka import make_consumer
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.promotion import ModelRefusedError, ModelService
from insightloop.daemon.state import StateStore
from insightloop.deploy import Registry, RegistryError
from insightloop.detectors import Insight
from insightloop.retrain.evaluate import GateSettings
from insightloop.retrain.job import JobSpec, read_result
from insightloop.retrain.plan import HyperParameters, plan_from_insights
from insightloop.retrain.profile import TRAINING_DATA
from insightloop.retrain.runners import JobState, LocalRunner, Runner

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")


def priority(insight: Insight) -> float:
    """Estimated accuracy loss × share of traffic affected (larger goes first)."""
    metrics = insight.evidence.metrics
    loss = next(
        (
            abs(metrics[k])
            for k in ("accuracy_drop", "estimated_drop", "estimated_accuracy_drop", "macro_f1_drop")
            if k in metrics
        ),
        None,
    )
    if loss is None:
        loss = 0.01 * min(insight.ratio, 100.0)  # drift without a measured loss: rank by how far past the alarm
    share = max((s.share_current for s in insight.evidence.slices), default=1.0)
    return float(loss * share + insight.severity_rank * 1e-6)


@dataclass
class TrackedJob:
    """A job the controller launched and follows."""

    job_id: str
    insight_id: str
    handle: str
    spec_path: Path
    started: float
    attempt: int


def make_runner(config: Config) -> Runner:
    """The configured runner."""
    if config.controller.runner == "kubernetes":
        from insightloop.retrain.kubernetes_runner import KubernetesRunner

        if config.controller.job_template is None:
            raise ValueError("controller.job_template is required for the kubernetes runner")
        return KubernetesRunner.from_template_file(
            config.controller.job_template,  # type: ignore[no-any-return]
            namespace=config.controller.namespace,
        )
    return LocalRunner(config.registry.path / "jobs" / "logs")


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
        self.runner = runner or make_runner(config)
        # On the registry volume: a Kubernetes Job's pod mounts it, not the daemon's state directory.
        self.jobs_dir = config.registry.path.resolve() / "jobs"
        self._pending: dict[str, Insight] = {}
        # When each insight began (its first copy; updates of an ongoing insight carry newer times).
        self._began: dict[str, float] = {}
        self._running: dict[str, TrackedJob] = {}
        self._attempts: dict[str, int] = {}
        self._last_launch = 0.0
        self._gpu_seconds_today: tuple[str, float] = (self._today(), 0.0)
        self._ready = threading.Event()
        for state in ("pending", "running", "succeeded", "failed"):
            metrics.retrain_jobs.labels(state=state)  # start every series at 0 so alerts see the first failure

    @property
    def ready(self) -> bool:
        """True once subscribed to insights."""
        return self._ready.is_set()

    def status(self) -> dict[str, Any]:
        """What /readyz shows."""
        return {"pending_insights": len(self._pending), "running_jobs": sorted(self._running)}

    @staticmethod
    def _today() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%d")

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
                    consumer.commit()  # insights are kept in memory and in the store before this
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
                for job_id, job in list(self._running.items()):
                    self.runner.cleanup(job.handle)
                    self._record(job_id, "failed", None, error="stopped with the daemon; retried after restart")
                    self.metrics.retrain_jobs.labels(state="failed").inc()

    # -- insights in ----------------------------------------------------------------------
    def _receive(self, value: bytes | None) -> None:
        try:
            insight = Insight.model_validate_json(value or b"")
        except ValidationError as exc:
            log.warning("ignoring a malformed insight: %s", str(exc)[:300])
            return
        if insight.recommendation.action == "none":
            return
        if not insight.at_least(self.policy.min_severity):
            return
        if insight.kind not in self.policy.kinds:
            return
        self._pending[insight.id] = insight  # an update of an ongoing insight replaces the older copy
        self._began.setdefault(insight.id, insight.created_at.timestamp())

    # -- launching ------------------------------------------------------------------------
    def _busy_with(self, insight_id: str) -> bool:
        return any(job.insight_id == insight_id for job in self._running.values())

    def _maybe_launch(self) -> None:
        if not self._pending or len(self._running) >= self.policy.max_concurrent_jobs:
            return
        if time.monotonic() - self._last_launch < self.policy.cooldown_s and self._last_launch > 0:
            return
        day, used = self._gpu_seconds_today
        if day != self._today():
            self._gpu_seconds_today = (self._today(), 0.0)
            used = 0.0
        if used / 3600.0 >= self.policy.gpu_hours_per_day:
            log.warning("GPU-hour budget for today spent (%.2f h); not launching", used / 3600.0)
            return
        candidates = [i for i in self._pending.values() if not self._busy_with(i.id)]
        candidates = [i for i in candidates if self._attempts.get(i.id, 0) <= self.policy.max_retries]
        if not candidates:
            return
        chosen = max(candidates, key=priority)
        champion = self.registry.production()
        if champion is None:
            return
        # New labeled data: texts scored since the insight began whose labels have arrived. Labels from before
        # the change would teach the candidate the old traffic again (and fill the time-based holdout with it).
        began = self._began.get(chosen.id, chosen.created_at.timestamp())
        fresh = self.store.count_scored_since(began, labeled_only=True)  # a count each poll; rows only to launch
        if fresh < self.policy.min_new_labels:
            log.info("insight %s waits for labels: %d of %d", chosen.id, fresh, self.policy.min_new_labels)
            return
        labeled = self.store.recent_records(self.policy.production_labeled_max, since=began, labeled_only=True)
        others = [i for i in self._pending.values() if i.id != chosen.id and i.model_version == chosen.model_version]
        self._launch(chosen, [chosen, *others], champion, labeled)

    def _reference_data(self, champion: str) -> str:
        if self.policy.reference_data is not None:
            return str(self.policy.reference_data)
        stored = self.registry.path_of(champion) / TRAINING_DATA
        if stored.is_file():
            return str(stored)
        record = self.registry.get(champion)
        for key in ("reference_file", "train_file"):
            if key in record.data:
                return str(record.data[key])
        raise RegistryError(f"{champion} records no training file; set controller.reference_data")

    def _launch(self, chosen: Insight, insights: list[Insight], champion: str, labeled: list[Any]) -> None:
        job_id = f"retrain-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        production = job_dir / "production.jsonl"
        with open(production, "w", encoding="utf-8") as out:
            for record in labeled:
                out.write(
                    json.dumps(
                        {
                            "id": record.id,
                            "text": record.text,
                            "label": record.label,
                            **{k: v for k, v in record.meta.items() if k not in ("id", "text", "label")},
                        }
                    )
                    + "\n"
                )
        champion_dir = self.registry.path_of(champion)
        max_length = int(json.loads((champion_dir / "artifact.json").read_text())["max_length"])
        hyper = HyperParameters(
            epochs=self.policy.epochs,
            learning_rate=self.policy.learning_rate,
            batch_size=self.policy.batch_size,
            max_length=max_length,
        )
        try:
            plan = plan_from_insights(
                insights,
                champion,
                str(champion_dir),
                max_length,
                self._reference_data(champion),
                str(production),
                hyper=hyper,
                production_weight=self.policy.production_weight,
            )
        except RegistryError as exc:
            log.error("cannot plan a job for %s: %s", chosen.id, exc)
            self._pending.pop(chosen.id, None)
            return
        plan = plan.model_copy(update={"production_holdout_share": self.policy.production_holdout_share})
        spec = JobSpec(
            job_id=job_id,
            registry=str(self.registry.root),
            plan=plan,
            device=self.policy.device,
            progress=False,
            projection_dims=self.policy.projection_dims,
            profile_rounds=self.policy.profile_rounds,
            gate=GateSettings(
                min_improvement=self.policy.gate_min_improvement, max_regression=self.policy.gate_max_regression
            ),
        )
        spec_path = job_dir / "spec.json"
        spec_path.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        attempt = self._attempts.get(chosen.id, 0) + 1
        self._attempts[chosen.id] = attempt
        try:
            handle = self.runner.submit(job_id, spec_path)
        except Exception as exc:  # a runner error must not kill the controller; the insight stays pending
            log.error("could not submit %s: %s", job_id, exc)
            self._record(job_id, "failed", chosen, error=f"submit failed: {exc}", attempt=attempt)
            self.metrics.retrain_jobs.labels(state="failed").inc()
            return
        self._running[job_id] = TrackedJob(job_id, chosen.id, handle, spec_path, time.monotonic(), attempt)
        self._last_launch = time.monotonic()
        self._record(
            job_id,
            "running",
            chosen,
            plan_action=plan.action,
            attempt=attempt,
            labeled=len(labeled),
            champion=champion,
            handle=handle,
            spec_path=str(spec_path),
            runner=self.policy.runner,
        )
        self.metrics.retrain_jobs.labels(state="running").inc()
        log.info(
            "launched %s (%s, attempt %d) for insight %s: %s", job_id, plan.action, attempt, chosen.id, chosen.summary
        )

    def _record(self, job_id: str, state: str, insight: Insight | None, **extra: Any) -> None:
        payload = {
            "insight_id": insight.id if insight else extra.pop("insight_id", None),
            "insight_summary": insight.summary if insight else extra.pop("insight_summary", None),
            **extra,
        }
        previous = self.store.job(job_id) or {}
        merged = {k: v for k, v in previous.items() if k not in ("id", "state", "created_at", "updated_at")}
        merged.update({k: v for k, v in payload.items() if v is not None})
        self.store.upsert_job(job_id, state, merged)

    # -- following ------------------------------------------------------------------------
    def _follow_jobs(self) -> None:
        now = time.monotonic()
        oldest = 0.0
        for job_id, job in list(self._running.items()):
            try:
                status = self.runner.status(job.handle)
            except Exception as exc:
                log.error("cannot read the status of %s: %s", job_id, exc)
                continue
            age = now - job.started
            if not status.finished and age > self.policy.job_timeout_s:
                self.runner.cleanup(job.handle)
                status = type(status)(JobState.FAILED, f"stopped after {age:.0f} s (controller.job_timeout_s)")
            if not status.finished:
                oldest = max(oldest, age)
                continue
            del self._running[job_id]
            day, used = self._gpu_seconds_today
            self._gpu_seconds_today = (day, used + age * max(self.policy.gpus_per_job, 0))
            result = read_result(job.spec_path.with_suffix(".result.json"))
            if status.state is JobState.SUCCEEDED and result is not None and result.version:
                self._finished(
                    job,
                    result.version,
                    result.gate.passed if result.gate else False,
                    result.gate.reasons if result.gate else [],
                )
            else:
                error = (result.error if result and result.error else status.message) or "failed"
                self._record(job_id, "failed", None, error=error, log_tail=status.log_tail[-2000:])
                self.metrics.retrain_jobs.labels(state="failed").inc()
                retry = self._attempts.get(job.insight_id, 0) <= self.policy.max_retries
                log.error("job %s failed (%s)%s", job_id, error, "; will retry" if retry else "")
                if not retry:
                    self._pending.pop(job.insight_id, None)
                else:
                    self._last_launch = 0.0  # a retry does not wait for the cooldown
            self.runner.cleanup(job.handle)
        self.metrics.retrain_jobs_running.set(len(self._running))
        self.metrics.retrain_oldest_running_seconds.set(oldest)

    def _finished(self, job: TrackedJob, version: str, passed: bool, reasons: list[str]) -> None:
        self._pending.pop(job.insight_id, None)
        self._record(job.job_id, "succeeded", None, version=version, gate_passed=passed, gate_reasons=reasons)
        self.metrics.retrain_jobs.labels(state="succeeded").inc()
        log.info("job %s registered candidate %s; gate %s", job.job_id, version, "passed" if passed else "failed")
        if passed and self.policy.auto_approve:
            try:
                self.models.approve(version, by="auto-approve", note=f"gate passed ({job.job_id})")
            except (RegistryError, ModelRefusedError) as exc:
                log.error("auto-approve of %s refused: %s", version, exc)

    def _export_candidate_metrics(self) -> None:
        pending = self.registry.pending_candidates()
        self.metrics.candidates_pending.set(len(pending))
        now = datetime.now(UTC)
        oldest = max(((now - r.created_at).total_seconds() for r in pending), default=0.0)
        self.metrics.candidate_oldest_pending_seconds.set(oldest)

    def _recover(self) -> None:
        """Jobs the store says were running when the daemon stopped: follow them if the runner still knows them,
        otherwise record them as failed (their insight is retried when it is published again)."""
        for job in self.store.jobs(10_000, states=ACTIVE):
            handle = job.get("handle", job["id"])
            status = self.runner.status(handle)
            if status.finished and "unknown job" in status.message:
                self._record(job["id"], "failed", None, error="the daemon restarted while the job ran")
                self.metrics.retrain_jobs.labels(state="failed").inc()
            elif not status.finished and job.get("spec_path"):
                self._running[job["id"]] = TrackedJob(
                    job["id"],
                    job.get("insight_id") or "",
                    handle,
                    Path(job["spec_path"]),
                    time.monotonic(),
                    int(job.get("attempt", 1)),
                )
