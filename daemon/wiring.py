"""Wire the daemon for a role: which workers run, sharing one metrics registry and one lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from insightloop.daemon.auth import TokenStore
from insightloop.daemon.config import Config
from insightloop.daemon.http import ApiContext, ApiServer
from insightloop.daemon.kafka import KafkaProbe, ensure_topics, is_transient, make_producer
from insightloop.daemon.lifecycle import Daemon, Worker
from insightloop.daemon.metrics import Metrics, observers_of
from insightloop.daemon.promotion import ModelService, kafka_publisher
from insightloop.daemon.scorer import Scorer
from insightloop.daemon.state import StateStore
from insightloop.deploy import Registry

ROLES = ("all", "scorer", "monitor", "controller", "api")


@dataclass
class App:
    """A wired daemon: its lifecycle, HTTP server, metrics and state."""

    daemon: Daemon
    api: ApiServer
    metrics: Metrics
    store: StateStore
    models: ModelService

    def run_until_stopped(self) -> int:
        """Start, wait for a stop request or a failed worker, drain, close the state store; return the exit code."""
        self.daemon.start()
        try:
            return self.daemon.wait()
        finally:
            self.store.close()

    def stop(self) -> int:
        """Ask every worker to stop, drain, close the state store; return the exit code."""
        self.daemon.request_stop()
        try:
            return self.daemon.wait()
        finally:
            self.store.close()


def build_app(config: Config, role: str = "all") -> App:
    """Create the workers for ``role`` (the HTTP endpoints always run) and their shared lifecycle."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if config.kafka.create_topics:
        ensure_topics(config.kafka, config.topics.all())
    tokens = TokenStore(config.api.approval_token, config.api.tokens_file)
    metrics = Metrics()
    store = StateStore.from_config(config.state)  # logs which backend, where (password masked)
    registry = Registry(config.registry.path)
    registry.clean_incoming()  # staging folders of version writes that died (a job killed mid-write)
    producer = make_producer(config.kafka)
    models = ModelService(registry, kafka_publisher(producer, config.topics.models), metrics=metrics)
    workers: list[Worker] = []
    if role in ("all", "scorer"):
        workers.append(Scorer(config, observers_of(metrics)))
    if role in ("all", "monitor"):
        from insightloop.daemon.monitor import Monitor

        workers.append(Monitor(config, store, metrics))
    if role in ("all", "controller"):
        from insightloop.daemon.controller import Controller

        workers.append(Controller(config, store, models, metrics))
    if config.registry.mlflow.tracking_uri and role in ("all", "controller"):
        from insightloop.daemon.mlflow_bridge import MlflowBridge

        workers.append(MlflowBridge(config.registry.mlflow, registry, metrics, config.api.url))
    holder: list[Daemon] = []

    def close() -> None:
        producer.close(timeout=10)

    probe = KafkaProbe(config.kafka) if workers else None

    def readiness() -> tuple[bool, dict[str, Any]]:
        ready, detail = holder[0].readiness()
        detail = {**detail, "state": {"backend": store.backend}}
        if probe is None:
            return ready, detail
        reachable = probe.reachable()
        return ready and reachable, {**detail, "kafka": {"reachable": reachable}}

    context = ApiContext(
        metrics=metrics.registry,
        health=lambda: holder[0].health(),
        readiness=readiness,
        registry=registry,
        models=models,
        tokens=tokens,
        store=store,
        reports_dir=config.state.dir / "reports",
        max_body_bytes=config.api.max_body_bytes,
        settings=config.api,
    )
    api = ApiServer(config.api.host, config.api.http_port, context, on_stop=close)

    def worker_up(name: str, up: bool) -> None:
        metrics.worker_up.labels(worker=name).set(1 if up else 0)

    daemon = Daemon(
        [*workers, api],
        drain_timeout_s=config.scorer.drain_timeout_s,
        on_worker_up=worker_up,
        # A worker whose Kafka client gave up (the broker went away) starts again with fresh clients.
        restart_when=is_transient,
    )
    holder.append(daemon)
    return App(daemon, api, metrics, store, models)
