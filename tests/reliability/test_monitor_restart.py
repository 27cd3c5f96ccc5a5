"""An insight raised while Kafka is away survives a restart of the monitor: it waits in the persisted outbox.

The condition tracker is persisted and counts the insight as raised, so it will never be new again; kept in
memory only, the insight would be lost with the process and the controller would never hear of it.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.broker import EmbeddedBroker
from insightloop.daemon.config import Config
from insightloop.daemon.kafka import ensure_topics, is_transient
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.monitor import Monitor
from insightloop.daemon.state import StateStore
from insightloop.deploy import ModelArtifact, Registry
from insightloop.detectors import traffic_key
from tests.daemon.test_monitor_precision import store_scored
from tests.kafka_helpers import read_topic
from tests.reliability.conftest import config_for
from tests.synthetic import KITCHEN_NEGATIVE, KITCHEN_POSITIVE, domain_rows


class Running:
    """A monitor's ``run`` on a thread of its own, stopped and joined on exit; keeps what it raised."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="monitor-under-test")

    def _run(self) -> None:
        try:
            self.monitor.run(self.stop)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        for _ in range(600):
            if self.monitor.ready or not self.thread.is_alive():
                break
            self.thread.join(0.1)
        assert self.monitor.ready, f"the monitor did not start: {self.error!r}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(90)
        assert not self.thread.is_alive(), "the monitor did not stop"


def topics_of(config: Config) -> list[str]:
    t = config.topics
    return [t.texts, t.predictions, t.labels, t.insights, t.models, t.deadletter]


# kafka-python can drop a client socket without closing it when the broker under it vanishes (this test stops
# its broker on purpose); it is collected at the end of this test, not reported against a later one.
@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_insight_raised_while_kafka_is_away_is_published_after_a_restart(
    own_broker: EmbeddedBroker, registry_copy: Path, tmp_path: Path, unique: str
) -> None:
    config = config_for(
        own_broker.bootstrap_servers,
        registry_copy,
        tmp_path / "state",
        unique,
        # A broker that is away costs one request timeout per send, not the default 30 s.
        kafka={"request_timeout_ms": 4000, "bootstrap_timeout_ms": 3000},
        monitor={
            "window_size": 300,
            "min_window": 100,
            "min_severity": "info",
            "check_every_records": 1_000_000,  # the test decides when to check
            "check_interval_s": 3600,
        },
    )
    ensure_topics(config.kafka, topics_of(config))
    registry = Registry(registry_copy)
    version = registry.production()
    assert version is not None
    store = StateStore(config.state.dir)
    # Traffic of another domain, scored by the serving model with the profile's own numerics.
    artifact = ModelArtifact.load(registry.path_of(version), device="cpu", bf16=False)
    store_scored(store, artifact, version, domain_rows(300, 23, "k", KITCHEN_POSITIVE, KITCHEN_NEGATIVE))

    first = Monitor(config, store, Metrics())
    with Running(first) as running:
        own_broker.stop()  # Kafka goes away while the monitor runs
        assert first.check() == [], "nothing can be acknowledged while the broker is away"
        assert traffic_key(version) in first.tracker.active, "the shift was raised (and the tracker persisted)"
        (kept,) = store.outbox()
    assert running.error is None or is_transient(running.error), running.error
    store.close()

    restarted = EmbeddedBroker(port=own_broker.port)  # the same address, back (empty: topics are recreated)
    restarted.start()
    try:
        ensure_topics(config.kafka, topics_of(config))
        store = StateStore(config.state.dir)  # a new process: only what the store kept
        try:
            second = Monitor(config, store, Metrics())
            assert traffic_key(version) in second.tracker.active, "the tracker counts the insight as raised"
            with Running(second):
                insights = read_topic(config, config.topics.insights, until=lambda got: len(got) >= 1, timeout_s=60)
                assert [i["id"] for i in insights] == [kept.id]
                assert insights[0]["model_version"] == version
            assert store.outbox() == [], "acknowledged insights leave the outbox"
            assert second.status()["unpublished_insights"] == 0
        finally:
            store.close()
    finally:
        restarted.stop()
        gc.collect()
