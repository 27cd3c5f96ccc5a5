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

    def on_dead_letter(self, reason: str) -> None:
        """A message went to the dead-letter topic for ``reason``."""

    def on_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Messages not yet consumed, per (topic, partition)."""

    def on_retry(self, operation: str) -> None:
        """A produce or commit failed and will be retried."""


class ObserverSet(ScorerObserver):
    """Fans each hook out to several observers; one failing observer never stops the others."""

    def __init__(self, observers: Sequence[ScorerObserver]) -> None:
        self._observers = list(observers)

    def _each(self, hook: str, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:  # an observer must never break scoring
                log.exception("observer %s failed in %s", type(observer).__name__, hook)

    def on_assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        self._each("on_assigned", partitions)

    def on_model_loaded(self, version: str) -> None:
        self._each("on_model_loaded", version)

    def on_batch(self, size: int, seconds: float) -> None:
        self._each("on_batch", size, seconds)

    def on_dead_letter(self, reason: str) -> None:
        self._each("on_dead_letter", reason)

    def on_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        self._each("on_lag", lag)

    def on_retry(self, operation: str) -> None:
        self._each("on_retry", operation)


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PrometheusScorerMetrics(ScorerObserver):
    """Exports the scorer's activity as ``insightloop_*`` metrics into one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.texts_scored = Counter("insightloop_texts_scored", "Texts scored.", registry=registry)
        self.batches = Counter("insightloop_batches_scored", "Micro-batches scored.", registry=registry)
        self.latency = Histogram(
            "insightloop_scoring_latency_seconds", "Time to score one micro-batch.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "insightloop_batch_size", "Valid texts per scored micro-batch.", buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "insightloop_dead_letters", "Messages sent to the dead-letter topic.", ["reason"], registry=registry
        )
        self.lag = Gauge(
            "insightloop_consumer_lag", "Messages not yet consumed.", ["topic", "partition"], registry=registry
        )
        self.model_info = Gauge(
            "insightloop_model_version_info", "1 for the model version serving in this process.", ["version"],
            registry=registry,
        )
        self.assigned = Gauge(
            "insightloop_assigned_partitions", "Partitions of the texts topic assigned to this scorer.",
            registry=registry,
        )
        self.retries = Counter(
            "insightloop_kafka_retries", "Produce or commit attempts retried.", ["operation"], registry=registry
        )
        self._versions: set[str] = set()
        self._lag_keys: set[tuple[str, str]] = set()

    def on_assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        self.assigned.set(len(partitions))

    def on_model_loaded(self, version: str) -> None:
        for old in self._versions - {version}:
            self.model_info.labels(version=old).set(0)
        self._versions.add(version)
        self.model_info.labels(version=version).set(1)

    def on_batch(self, size: int, seconds: float) -> None:
        self.texts_scored.inc(size)
        self.batches.inc()
        self.batch_size.observe(size)
        self.latency.observe(seconds)

    def on_dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason=reason).inc()

    def on_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        keys = {(topic, str(partition)) for topic, partition in lag}
        for topic, partition in self._lag_keys - keys:
            self.lag.remove(topic, partition)
        for (topic, partition), value in lag.items():
            self.lag.labels(topic=topic, partition=str(partition)).set(value)
        self._lag_keys = keys

    def on_retry(self, operation: str) -> None:
        self.retries.labels(operation=operation).inc()
