"""Prometheus metrics as observers of the workers: no-op hooks, failures logged, never fatal."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)


class ScorerObserver:
    """Hooks the scorer calls; subclasses override what they need."""

    def on_assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        """The consumer group gave this scorer ``partitions``."""

    def on_model_loaded(self, version: str) -> None:
        """``version`` now serves traffic in this scorer."""

    def on_batch(self, size: int, seconds: float) -> None:
        """A micro-batch of ``size`` valid texts was scored in ``seconds``."""

    def on_model_refused(self, version: str, error: str) -> None:
        """``version`` failed to load or to pass the smoke test; the old model keeps serving."""

    def on_dead_letter(self, reason: str) -> None:
        """A message went to the dead-letter topic for ``reason`` (the scorer's or the monitor's)."""

    def on_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Messages not yet consumed, per (topic, partition)."""

    def on_retry(self, operation: str) -> None:
        """A produce or commit failed and will be retried."""

    def on_registry_problems(self, counts: Mapping[str, int]) -> None:
        """Registry entries skipped because they cannot be read, per kind (version, audit); 0s included."""


class MonitorObserver:
    """Hooks the monitor calls; subclasses override what they need."""

    def on_check(self, seconds: float) -> None:
        """One check of the newest window took ``seconds``."""

    def on_ingested(self, kind: str, stored: int, sampled_out: int) -> None:
        """One poll stored ``stored`` records of ``kind`` (texts, predictions, labels) and sampled out the rest."""

    def on_detector(self, detector: str, statistic: float, drifted: bool, threshold: float | None = None) -> None:
        """``detector``'s latest statistic, whether its condition is raised (with hysteresis), and its threshold."""

    def on_accuracy(self, labeled: float | None, estimated: float | None) -> None:
        """Accuracy on the latest labeled window and the label-free estimate (None: not measured)."""

    def on_insight_published(self, kind: str, severity: str) -> None:
        """The broker acknowledged a new insight."""

    def on_dead_letter(self, reason: str) -> None:
        """A message went to the dead-letter topic for ``reason``."""


class ControllerObserver:
    """Hooks the controller calls; subclasses override what they need."""

    def on_job(self, state: str) -> None:
        """A retraining job entered ``state`` (running, succeeded, failed)."""

    def on_jobs_running(self, count: int, oldest_seconds: float) -> None:
        """Jobs running now and the age of the oldest."""

    def on_candidates_pending(self, count: int, oldest_seconds: float) -> None:
        """Candidates waiting for a person and how long the oldest has waited."""


class ObserverSet(ScorerObserver, MonitorObserver, ControllerObserver):
    """Fans each hook out to several observers; a failing observer is logged, never fatal.

    Every worker calls its metrics through one of these (as Dramatiq wraps each middleware call), so a
    broken exporter cannot stop scoring, checking or retraining.
    """

    def __init__(self, observers: Sequence[ScorerObserver | MonitorObserver | ControllerObserver]) -> None:
        self._observers = list(observers)

    def _each(self, hook: str, *args: object) -> None:
        for observer in self._observers:
            method = getattr(observer, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:  # an observer must never break the worker it watches
                log.exception("observer %s failed in %s", type(observer).__name__, hook)

    def on_assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        self._each("on_assigned", partitions)

    def on_model_loaded(self, version: str) -> None:
        self._each("on_model_loaded", version)

    def on_batch(self, size: int, seconds: float) -> None:
        self._each("on_batch", size, seconds)

    def on_model_refused(self, version: str, error: str) -> None:
        self._each("on_model_refused", version, error)

    def on_dead_letter(self, reason: str) -> None:
        self._each("on_dead_letter", reason)

    def on_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        self._each("on_lag", lag)

    def on_retry(self, operation: str) -> None:
        self._each("on_retry", operation)

    def on_registry_problems(self, counts: Mapping[str, int]) -> None:
        self._each("on_registry_problems", counts)

    def on_check(self, seconds: float) -> None:
        self._each("on_check", seconds)

    def on_ingested(self, kind: str, stored: int, sampled_out: int) -> None:
        self._each("on_ingested", kind, stored, sampled_out)

    def on_detector(self, detector: str, statistic: float, drifted: bool, threshold: float | None = None) -> None:
        self._each("on_detector", detector, statistic, drifted, threshold)

    def on_accuracy(self, labeled: float | None, estimated: float | None) -> None:
        self._each("on_accuracy", labeled, estimated)

    def on_insight_published(self, kind: str, severity: str) -> None:
        self._each("on_insight_published", kind, severity)

    def on_job(self, state: str) -> None:
        self._each("on_job", state)

    def on_jobs_running(self, count: int, oldest_seconds: float) -> None:
        self._each("on_jobs_running", count, oldest_seconds)

    def on_candidates_pending(self, count: int, oldest_seconds: float) -> None:
        self._each("on_candidates_pending", count, oldest_seconds)


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every ``insightloop_*`` metric of one process, declared once, in one registry.

    The chart's alert rules are tested against these names, so a metric is added here, never
    created ad hoc in a worker.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # scorer
        self.texts_scored = Counter("insightloop_texts_scored", "Texts scored.", registry=r)
        self.batches = Counter("insightloop_batches_scored", "Micro-batches scored.", registry=r)
        self.latency = Histogram(
            "insightloop_scoring_latency_seconds",
            "Time to score one micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "insightloop_batch_size", "Valid texts per scored micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.dead_letters = Counter(
            "insightloop_dead_letters", "Messages sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.lag = Gauge("insightloop_consumer_lag", "Messages not yet consumed.", ["topic", "partition"], registry=r)
        self.model_info = Gauge(
            "insightloop_model_version_info",
            "1 for the model version serving in this process.",
            ["version"],
            registry=r,
        )
        self.assigned = Gauge(
            "insightloop_assigned_partitions",
            "Partitions of the texts topic assigned to this scorer.",
            registry=r,
        )
        self.retries = Counter(
            "insightloop_kafka_retries", "Produce or commit attempts retried.", ["operation"], registry=r
        )
        self.registry_unreadable = Gauge(
            "insightloop_registry_unreadable_entries",
            "Registry entries skipped because they cannot be read (a version's record, an audit line), by kind.",
            ["kind"],
            registry=r,
        )
        self.model_load_failures = Counter(
            "insightloop_model_load_failures",
            "Model versions refused because they failed to load or smoke-test.",
            registry=r,
        )
        # monitor
        self.drift_statistic = Gauge(
            "insightloop_drift_statistic", "Latest statistic of each detector.", ["detector"], registry=r
        )
        self.drift_detected = Gauge(
            "insightloop_drift_detected",
            "1 while a detector's condition is raised (with hysteresis) and the change costs at least "
            "monitor.min_accuracy_cost (its insight is at warning or above; an info change never sets it).",
            ["detector"],
            registry=r,
        )
        self.drift_threshold = Gauge(
            "insightloop_drift_threshold",
            "The statistic above which each detector finds drift (compare with insightloop_drift_statistic).",
            ["detector"],
            registry=r,
        )
        self.insights = Counter("insightloop_insights", "Insights raised.", ["kind", "severity"], registry=r)
        self.labeled_accuracy = Gauge(
            "insightloop_labeled_accuracy",
            "Accuracy on the latest window of labeled production texts.",
            registry=r,
        )
        self.estimated_accuracy = Gauge(
            "insightloop_estimated_accuracy",
            "Accuracy estimated without labels (the shipped label-free estimator, difference of confidences).",
            registry=r,
        )
        self.checks = Counter("insightloop_monitor_checks", "Monitor checks run.", registry=r)
        self.records_stored = Counter(
            "insightloop_monitor_records_stored",
            "Records the monitor stored, by kind (texts, predictions, labels).",
            ["kind"],
            registry=r,
        )
        self.records_sampled_out = Counter(
            "insightloop_monitor_records_sampled_out",
            "Records the monitor read and dropped by monitor.sample_rate, by kind (texts, predictions, labels).",
            ["kind"],
            registry=r,
        )
        self.check_seconds = Histogram(
            "insightloop_monitor_check_seconds", "Duration of one monitor check.", registry=r
        )
        # controller
        self.retrain_jobs = Counter(
            "insightloop_retrain_jobs", "Retraining jobs by final or current state.", ["state"], registry=r
        )
        for state in ("pending", "running", "succeeded", "failed"):
            self.retrain_jobs.labels(state=state)  # every series starts at 0, so alerts see the first failure
        self.retrain_jobs_running = Gauge(
            "insightloop_retrain_jobs_running", "Retraining jobs running now.", registry=r
        )
        self.retrain_oldest_running_seconds = Gauge(
            "insightloop_retrain_job_oldest_running_seconds",
            "Age of the oldest running retraining job.",
            registry=r,
        )
        self.candidates_pending = Gauge(
            "insightloop_candidates_pending_approval",
            "Candidates that passed the gate and wait for a person.",
            registry=r,
        )
        self.candidate_oldest_pending_seconds = Gauge(
            "insightloop_candidate_oldest_pending_seconds",
            "How long the oldest pending candidate has waited.",
            registry=r,
        )
        self.promotions = Counter("insightloop_promotions", "Promotions of a model version.", registry=r)
        self.rollbacks = Counter("insightloop_rollbacks", "Rollbacks to an earlier version.", registry=r)
        # MLflow registry bridge
        self.mlflow_sync_failures = Counter(
            "insightloop_mlflow_sync_failures",
            "Reconciliations of the registry into MLflow that failed (retried with backoff).",
            registry=r,
        )
        # process
        self.worker_up = Gauge(
            "insightloop_worker_up", "1 while a named worker of the daemon runs.", ["worker"], registry=r
        )


class PrometheusObserver(ScorerObserver, MonitorObserver, ControllerObserver):
    """Exports every worker's activity into the process's :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self._versions: set[str] = set()
        self._lag_keys: set[tuple[str, str]] = set()

    def on_assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        self.m.assigned.set(len(partitions))

    def on_model_loaded(self, version: str) -> None:
        for old in self._versions - {version}:
            self.m.model_info.labels(version=old).set(0)
        self._versions.add(version)
        self.m.model_info.labels(version=version).set(1)

    def on_batch(self, size: int, seconds: float) -> None:
        self.m.texts_scored.inc(size)
        self.m.batches.inc()
        self.m.batch_size.observe(size)
        self.m.latency.observe(seconds)

    def on_model_refused(self, version: str, error: str) -> None:
        self.m.model_load_failures.inc()

    def on_dead_letter(self, reason: str) -> None:
        self.m.dead_letters.labels(reason=reason).inc()

    def on_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        keys = {(topic, str(partition)) for topic, partition in lag}
        for gone_topic, gone_partition in self._lag_keys - keys:
            self.m.lag.remove(gone_topic, gone_partition)
        for (topic, partition), value in lag.items():
            self.m.lag.labels(topic=topic, partition=str(partition)).set(value)
        self._lag_keys = keys

    def on_retry(self, operation: str) -> None:
        self.m.retries.labels(operation=operation).inc()

    def on_registry_problems(self, counts: Mapping[str, int]) -> None:
        for kind, count in counts.items():
            self.m.registry_unreadable.labels(kind=kind).set(count)

    def on_check(self, seconds: float) -> None:
        self.m.checks.inc()
        self.m.check_seconds.observe(seconds)

    def on_ingested(self, kind: str, stored: int, sampled_out: int) -> None:
        self.m.records_stored.labels(kind=kind).inc(stored)
        self.m.records_sampled_out.labels(kind=kind).inc(sampled_out)

    def on_detector(self, detector: str, statistic: float, drifted: bool, threshold: float | None = None) -> None:
        self.m.drift_statistic.labels(detector=detector).set(statistic)
        self.m.drift_detected.labels(detector=detector).set(1 if drifted else 0)
        if threshold is not None:
            self.m.drift_threshold.labels(detector=detector).set(threshold)

    def on_accuracy(self, labeled: float | None, estimated: float | None) -> None:
        if labeled is not None:
            self.m.labeled_accuracy.set(labeled)
        if estimated is not None:
            self.m.estimated_accuracy.set(estimated)

    def on_insight_published(self, kind: str, severity: str) -> None:
        self.m.insights.labels(kind=kind, severity=severity).inc()

    def on_job(self, state: str) -> None:
        self.m.retrain_jobs.labels(state=state).inc()

    def on_jobs_running(self, count: int, oldest_seconds: float) -> None:
        self.m.retrain_jobs_running.set(count)
        self.m.retrain_oldest_running_seconds.set(oldest_seconds)

    def on_candidates_pending(self, count: int, oldest_seconds: float) -> None:
        self.m.candidates_pending.set(count)
        self.m.candidate_oldest_pending_seconds.set(oldest_seconds)


def observers_of(metrics: Metrics) -> ObserverSet:
    """The observer set a worker reports through: Prometheus behind the safety net."""
    return ObserverSet([PrometheusObserver(metrics)])
