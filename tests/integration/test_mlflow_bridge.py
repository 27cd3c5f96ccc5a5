"""The MLflow bridge against a real `mlflow server` (SQLite backend, on 127.0.0.1), read back with MLflow's client.

Train (the session's trained registry), register a retrained candidate, approve, roll back; then stop MLflow
mid-loop: promotion still succeeds, the failure is counted, and the aliases catch up once MLflow is back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.broker import free_port
from insightloop.daemon.config import MlflowConfig
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.promotion import ModelService
from insightloop.deploy import (
    Evaluation,
    EvaluationSection,
    GateVerdict,
    InsightRef,
    Lineage,
    MetricComparison,
    PlanStep,
    Registry,
    VersionRecord,
    VersionStatus,
)

pytest.importorskip("mlflow")

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "insightloop-test"
STARTUP_S = 180.0


class MlflowServer:
    """`mlflow server` as a child process in its own process group; stop() kills the group."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        argv = [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = (self.workdir / "server.log").open("ab")
        env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1"}
        self.process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, env=env)
        log.close()
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {(self.workdir / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"mlflow server did not answer in {STARTUP_S:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    workdir = tmp_path / "mlflow"
    workdir.mkdir()
    server = MlflowServer(workdir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def retrained(registry: Registry, parent: str, accuracy: float) -> VersionRecord:
    """A candidate as a retraining job registers one: the parent's weights, an insight, plan, gate, evaluation."""
    base = registry.get(parent)
    record = base.model_copy(
        update={
            "version": "pending",
            "status": VersionStatus.CANDIDATE,
            "parent": parent,
            "metrics": {"holdout_accuracy": accuracy},
            "lineage": Lineage(
                action="fine_tune",
                plan_id=f"plan-{parent}",
                job_id=f"job-{parent}",
                adjustments=[
                    PlanStep(kind="oversample", target="domain=kitchen", value=3.0, insight_id=f"ins-{parent}")
                ],
            ),
            "insights": [InsightRef(id=f"ins-{parent}", kind="text_drift", severity="warning", summary="moved")],
            "gate": GateVerdict(passed=True, reasons=["accuracy on recent traffic +0.15 (CI above 0.02)"]),
            "evaluation": Evaluation(
                champion_version=parent,
                sections=[
                    EvaluationSection(
                        name="recent traffic",
                        rows=[
                            MetricComparison(metric="accuracy", champion=0.7, candidate=accuracy, delta=accuracy - 0.7)
                        ],
                    )
                ],
            ),
        }
    )

    def write(path: Path) -> None:
        source = registry.path_of(parent)
        for item in source.iterdir():
            if item.is_dir():
                shutil.copytree(item, path / item.name)
            elif item.name not in ("version.json", "status"):
                shutil.copy2(item, path / item.name)

    return registry.create_version(write, record, by="retrain-job", reason="test candidate")


def eventually(what: Callable[[], Any], timeout: float = 90.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
        except Exception as exc:  # MLflow not answering yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"not true within {timeout:.0f} s: last {last!r}")


def aliases(client: Any) -> dict[str, str]:
    return {k: str(v) for k, v in (client.get_registered_model(MODEL).aliases or {}).items()}


def number_of(client: Any, version: str) -> str | None:
    for mv in client.search_model_versions(f"name='{MODEL}'"):
        if mv.tags.get("insightloop.version") == version:
            return str(mv.version)
    return None


def test_registry_versions_tags_and_aliases_are_mirrored_and_survive_mlflow_going_away(
    mlflow_server: MlflowServer, trained_registry: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from insightloop.daemon.mlflow_bridge import MlflowBridge

    shutil.copytree(trained_registry, tmp_path / "registry")
    registry = Registry(tmp_path / "registry")
    models = ModelService(registry)
    metrics = Metrics()
    settings = MlflowConfig(
        tracking_uri=mlflow_server.url, model_name=MODEL, sync_interval_s=0.5, retry_max_s=2, request_timeout_s=5
    )
    bridge = MlflowBridge(settings, registry, metrics, api_url="https://insightloop.example")
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), name="mlflow-bridge-under-test")
    thread.start()
    try:
        # the first model: one version, @champion, no challenger
        v1 = registry.production()
        assert v1 == "v0001"
        eventually(lambda: aliases(client).get("champion") == number_of(client, v1))
        assert "challenger" not in aliases(client)

        # a retrained candidate: @challenger, tags for its insight, plan, gate and evaluation, files attached
        v2 = retrained(registry, v1, 0.85).version
        eventually(lambda: number_of(client, v2) and aliases(client).get("challenger") == number_of(client, v2))
        n2 = number_of(client, v2)
        assert n2 is not None
        mv2 = client.get_model_version(MODEL, n2)
        assert mv2.tags["insightloop.status"] == "candidate"
        assert mv2.tags["insightloop.parent"] == v1
        assert mv2.tags["insightloop.registry_path"] == str(registry.path_of(v2))
        assert mv2.tags["insightloop.api_url"] == f"https://insightloop.example/api/models/{v2}"
        assert json.loads(mv2.tags["insightloop.insights"])[0]["kind"] == "text_drift"
        plan = json.loads(mv2.tags["insightloop.plan"])
        assert plan["plan_id"] == f"plan-{v1}" and plan["action"] == "fine_tune"
        assert plan["adjustments"] == [
            {"kind": "oversample", "target": "domain=kitchen", "value": 3.0, "insight_id": f"ins-{v1}"}
        ]
        assert mv2.tags["insightloop.gate"] == "passed"
        assert float(mv2.tags["metric.eval.recent traffic.accuracy.candidate"]) == pytest.approx(0.85)
        assert float(mv2.tags["metric.holdout_accuracy"]) == pytest.approx(0.85)
        run = client.get_run(mv2.run_id)
        assert run.data.metrics["holdout_accuracy"] == pytest.approx(0.85)
        files = {f.path for f in client.list_artifacts(mv2.run_id, "model")}
        local_files = {f"model/{p.name}" for p in (registry.path_of(v2) / "model").iterdir()}
        assert files == local_files
        assert aliases(client)["champion"] == number_of(client, v1)

        # approval is insightloop's: @champion follows it, @challenger goes
        models.approve(v2, by="alice", note="looks good")
        eventually(lambda: aliases(client).get("champion") == n2 and "challenger" not in aliases(client))
        eventually(lambda: client.get_model_version(MODEL, n2).tags["insightloop.status"] == "production")

        # rollback: @champion back on the first version
        models.rollback(by="bob", note="regression")
        eventually(lambda: aliases(client).get("champion") == number_of(client, v1))
        assert registry.production() == v1

        # MLflow goes away mid-loop: promotion still succeeds, failures are counted and shown
        mlflow_server.stop()
        v3 = retrained(registry, v1, 0.9).version
        before = metrics.registry.get_sample_value("insightloop_mlflow_sync_failures_total") or 0.0
        models.approve(v3, by="alice", note="while MLflow is down")
        assert registry.production() == v3
        eventually(
            lambda: (metrics.registry.get_sample_value("insightloop_mlflow_sync_failures_total") or 0) > before,
            timeout=60,
        )
        status = bridge.status()
        assert status["in_sync"] is False and status["failures"] > 0 and status["last_error"]
        assert bridge.ready  # MLflow being away never makes the daemon unready

        # MLflow is back: the new version is mirrored and the aliases catch up
        mlflow_server.start()
        eventually(lambda: number_of(client, v3) and aliases(client).get("champion") == number_of(client, v3))
        assert "challenger" not in aliases(client)
        eventually(lambda: bridge.status()["in_sync"])
        # idempotent: one MLflow version per insightloop version, however many passes ran
        mirrored = [mv.tags.get("insightloop.version") for mv in client.search_model_versions(f"name='{MODEL}'")]
        assert sorted(mirrored) == [v1, v2, v3]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    # nothing in MLflow changed insightloop's registry
    assert [r.status for r in registry.records()] == [
        VersionStatus.ARCHIVED,
        VersionStatus.ARCHIVED,
        VersionStatus.PRODUCTION,
    ]
