"""Wire the daemon for a role: which workers run, sharing one metrics registry and one lifecycle."""

from __future__ import annotations

from dataclasses import dataclass

from insightloop.daemon.config import Config
from insightloop.daemon.http import ApiServer
from insightloop.daemon.kafka import ensure_topics
from insightloop.daemon.lifecycle import Daemon, Worker
from insightloop.daemon.metrics import Metrics, PrometheusScorerMetrics
from insightloop.daemon.scorer import Scorer

ROLES = ("all", "scorer")


@dataclass
class App:
    """A wired daemon: its lifecycle, HTTP server and metrics."""

    daemon: Daemon
    api: ApiServer
    metrics: Metrics


def build_app(config: Config, role: str = "all") -> App:
    """Create the workers for ``role`` (the HTTP endpoints always run) and their shared lifecycle."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if config.kafka.create_topics:
        ensure_topics(config.kafka, config.topics.all())
    metrics = Metrics()
    workers: list[Worker] = []
    if role in ("all", "scorer"):
        workers.append(Scorer(config, PrometheusScorerMetrics(metrics)))
    holder: list[Daemon] = []
    api = ApiServer(
        config.api.host,
        config.api.http_port,
        metrics.registry,
        health=lambda: holder[0].health(),
        readiness=lambda: holder[0].readiness(),
    )

    def worker_up(name: str, up: bool) -> None:
        metrics.worker_up.labels(worker=name).set(1 if up else 0)

    daemon = Daemon([*workers, api], drain_timeout_s=config.scorer.drain_timeout_s, on_worker_up=worker_up)
    holder.append(daemon)
    return App(daemon, api, metrics)
