"""Mirror the registry into an MLflow model registry: versions with their files and tags, @champion, @challenger.

The bridge only reads insightloop's registry (through ``Registry``'s public methods) and writes MLflow;
nothing it sees in MLflow changes insightloop's registry, so approval stays insightloop's. Each pass is a
reconciliation: a version already mirrored (its ``insightloop.version`` tag says which) is only updated, so
a pass that failed half-way is finished by the next one. MLflow being away never blocks promotion: the
pass fails, is counted (``insightloop_mlflow_sync_failures_total``), logged and shown in ``/readyz``, and
is retried with a doubling backoff; the aliases catch up at the first pass that gets through.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Any

from insightloop.daemon.config import MlflowConfig
from insightloop.daemon.errors import PermanentError
from insightloop.daemon.metrics import Metrics
from insightloop.deploy import MODEL_DIR, Registry, VersionRecord, VersionStatus

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
VERSION_TAG = "insightloop.version"
TAG_LIMIT = 5000  # MLflow's longest tag value
_NAME = re.compile(r"[^A-Za-z0-9_.\-/ ]")


class MlflowUnavailableError(PermanentError):
    """registry.mlflow.tracking_uri is set but the [mlflow] extra is not installed."""


def version_tags(record: VersionRecord, registry: Registry, api_url: str | None) -> dict[str, str]:
    """The tags an MLflow model version carries for ``record``: the link back, insights, plan, gate, metrics."""
    tags = {
        VERSION_TAG: record.version,
        "insightloop.status": record.status.value,
        "insightloop.registry_path": str(registry.path_of(record.version)),
        "insightloop.base_model": record.base_model,
        "insightloop.created_at": record.created_at.isoformat(),
        "insightloop.labels": ",".join(record.labels),
        "insightloop.parent": record.parent or "",
        "insightloop.plan": _json(
            {
                "action": record.lineage.action,
                "plan_id": record.lineage.plan_id,
                "job_id": record.lineage.job_id,
                "adjustments": [a.model_dump(mode="json") for a in record.lineage.adjustments],
            }
        ),
        "insightloop.insights": _json([i.model_dump(mode="json", exclude={"report"}) for i in record.insights]),
    }
    if api_url:
        tags["insightloop.api_url"] = f"{api_url.rstrip('/')}/api/models/{record.version}"
    if record.gate is not None:
        tags["insightloop.gate"] = "passed" if record.gate.passed else "failed"
        tags["insightloop.gate_reasons"] = _json(record.gate.reasons)
    for name, value in _metrics(record).items():
        tags[f"metric.{name}"] = repr(value)
    return {key: value[:TAG_LIMIT] for key, value in tags.items()}


def _metrics(record: VersionRecord) -> dict[str, float]:
    """The version's own metrics and its evaluation against the champion, as flat MLflow names."""
    found = {_safe(k): float(v) for k, v in record.metrics.items()}
    for section in record.evaluation.sections if record.evaluation else []:
        for row in section.rows:
            for side in ("champion", "candidate", "delta"):
                value = getattr(row, side)
                if value is not None:
                    found[_safe(f"eval.{section.name}.{row.metric}.{side}")] = float(value)
    return found


def _safe(name: str) -> str:
    return _NAME.sub("_", name)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class MlflowBridge:
    """A daemon worker that reconciles the registry into MLflow every ``sync_interval_s`` seconds."""

    name = "mlflow"

    def __init__(
        self, settings: MlflowConfig, registry: Registry, metrics: Metrics, api_url: str | None = None
    ) -> None:
        if not settings.tracking_uri:
            raise ValueError("the MLflow bridge needs registry.mlflow.tracking_uri")
        try:
            import mlflow  # noqa: F401 - an optional extra: fail at start, not at the first pass
        except ImportError as exc:
            raise MlflowUnavailableError(
                "registry.mlflow.tracking_uri is set but mlflow is not installed: pip install 'insightloop[mlflow]'"
            ) from exc
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.api_url = api_url
        self.failures = 0
        self.last_error: str | None = None
        self.last_sync: float | None = None
        self._lock = threading.Lock()
        # The bridge retries whole passes itself; MLflow's own retries would hold a pass for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.request_timeout_s)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    @property
    def ready(self) -> bool:
        return True  # MLflow being away must not make the daemon unready; status() says so instead

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "tracking_uri": self.settings.tracking_uri,
                "model_name": self.settings.model_name,
                "in_sync": self.last_error is None and self.last_sync is not None,
                "last_sync_age_s": None if self.last_sync is None else round(time.time() - self.last_sync, 1),
                "failures": self.failures,
                "last_error": self.last_error,
            }

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # MLflow away or refusing: counted, shown, retried; never fatal
                with self._lock:
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                self.metrics.mlflow_sync_failures.inc()
                log.warning("could not sync the registry into MLflow (%s); retrying in %.0f s", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_s)
                continue
            backoff = 1.0
            stop.wait(self.settings.sync_interval_s)

    def sync_once(self) -> dict[str, str]:
        """One reconciliation; returns insightloop version → MLflow version number of every mirrored version."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.tracking_uri)
        name = self.settings.model_name
        self._ensure_model(client, name)
        mirrored = {
            mv.tags.get(VERSION_TAG): mv
            for mv in client.search_model_versions(f"name='{name}'")
            if mv.tags.get(VERSION_TAG)
        }
        numbers: dict[str, str] = {}
        for record in self.registry.records():
            tags = version_tags(record, self.registry, self.api_url)
            existing = mirrored.get(record.version)
            if existing is None:
                numbers[record.version] = self._create_version(client, name, record, tags)
                continue
            numbers[record.version] = str(existing.version)
            for key, value in tags.items():
                if existing.tags.get(key) != value:
                    client.set_model_version_tag(name, existing.version, key, value)
        self._aliases(client, name, numbers)
        with self._lock:
            self.last_sync = time.time()
            self.last_error = None
        return numbers

    @staticmethod
    def _ensure_model(client: Any, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_registered_model(
                name, description="Mirrored from insightloop's registry; approvals happen in insightloop."
            )

    def _create_version(self, client: Any, name: str, record: VersionRecord, tags: dict[str, str]) -> str:
        """A run holding the version's model files and metrics, then the model version registered from it."""
        run_id = self._run_for(client, name, record, tags)
        source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_DIR}"
        created = client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags=tags,
            description=f"insightloop {record.version} ({record.status.value}); registry "
            f"{self.registry.path_of(record.version)}",
        )
        log.info("mirrored %s into MLflow as %s version %s", record.version, name, created.version)
        return str(created.version)

    def _run_for(self, client: Any, name: str, record: VersionRecord, tags: dict[str, str]) -> str:
        """The run whose artifacts are ``record``'s model files; reused when an earlier pass got that far."""
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        done = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{VERSION_TAG}` = '{record.version}' and tags.`insightloop.files` = 'logged'",
            max_results=1,
        )
        if done:
            return str(done[0].info.run_id)
        run = client.create_run(experiment_id, tags={**tags, "mlflow.runName": f"insightloop-{record.version}"})
        run_id = str(run.info.run_id)
        for metric, value in _metrics(record).items():
            client.log_metric(run_id, metric, value)
        client.log_artifacts(run_id, str(self.registry.path_of(record.version) / MODEL_DIR), MODEL_DIR)
        client.set_tag(run_id, "insightloop.files", "logged")
        client.set_terminated(run_id)
        return run_id

    def _aliases(self, client: Any, name: str, numbers: dict[str, str]) -> None:
        """@champion on the production version, @challenger on the newest waiting candidate (none: removed)."""
        current = dict(client.get_registered_model(name).aliases or {})
        production = self.registry.production()
        waiting = [
            r.version
            for r in self.registry.pending_candidates()
            if r.status == VersionStatus.CANDIDATE and (r.gate is None or r.gate.passed) and r.version in numbers
        ]
        wanted = {
            CHAMPION: numbers.get(production) if production else None,
            CHALLENGER: numbers[waiting[-1]] if waiting else None,
        }
        for alias, number in wanted.items():
            if number is None:
                if alias in current:
                    client.delete_registered_model_alias(name, alias)
            elif str(current.get(alias)) != number:
                client.set_registered_model_alias(name, alias, number)
                log.info("MLflow %s@%s → version %s", name, alias, number)
