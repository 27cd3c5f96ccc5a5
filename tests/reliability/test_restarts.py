"""The loop survives restarts: the controller's waiting state and its jobs outlive the process.

Against the real broker, SQLite, real job processes and kmock's Kubernetes API: a controller stopped while it
waits for labels, a daemon killed with ``kill -9`` during a local job, a Kubernetes Job that completes or is
deleted while the daemon is down.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from insightloop.daemon.broker import free_port
from insightloop.daemon.config import Config
from insightloop.daemon.controller import Controller
from insightloop.daemon.kafka import ensure_topics
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.promotion import ModelService
from insightloop.daemon.state import JobRecord, StateStore
from insightloop.deploy import Registry
from insightloop.retrain import KubernetesRunner, LocalRunner, Runner
from tests.integration.daemon_process import wait_ready
from tests.kafka_helpers import produce_raw
from tests.reliability.test_process_faults import (
    drift_insight,
    job_pid,
    jobs,
    pending_insights,
    store_production,
    wait_for,
)
from tests.retrain.test_kubernetes_runner import NAMESPACE, TEMPLATE, Cluster, set_job_status
from tests.synthetic import sentiment_rows, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def controller_config(make_config: Any, registry: Path, tmp_path: Path, unique: str, **extra: Any) -> Config:
    config: Config = make_config(
        registry={"path": str(registry)},
        controller={
            "group_id": f"controller-{unique}",
            "poll_s": 0.3,
            "cooldown_s": 0,
            "min_new_labels": 30,
            "max_retries": 1,
            "epochs": 1,
            "batch_size": 16,
            "profile_rounds": 10,
            "projection_dims": 8,
            "device": "cpu",
            "reference_data": str(write_jsonl(tmp_path / "reference.jsonl", sentiment_rows(240, seed=2))),
            **extra,
        },
    )
    ensure_topics(config.kafka, config.topics.all())
    return config


@contextmanager
def running_controller(config: Config, runner: Runner) -> Iterator[Controller]:
    """A controller of a fresh process (its own store connection and metrics) running in a thread until the
    block ends; then its stop event is set, as SIGTERM does."""
    store = StateStore(config.state.dir)
    controller = Controller(config, store, ModelService(Registry(config.registry.path)), Metrics(), runner=runner)
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            controller.run(stop)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="controller")
    thread.start()
    try:
        wait_for(lambda: controller.ready or failed, 60, "the controller to subscribe")
        assert not failed, failed
        yield controller
    finally:
        stop.set()
        thread.join(60)
        store.close()
    assert not thread.is_alive()
    assert not failed, failed


def counting_job(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for `insightloop retrain` that notes each start in a file and keeps running."""
    launches = tmp_path / "launches.txt"
    command = tmp_path / "counting-job"
    command.write_text(f'#!/bin/sh\necho "$5" >> {launches}\nexec sleep 120\n')
    command.chmod(command.stat().st_mode | stat.S_IEXEC)
    return command, launches


def launched(launches: Path) -> list[str]:
    return launches.read_text().splitlines() if launches.is_file() else []


def stored_jobs(config: Config) -> list[JobRecord]:
    store = StateStore(config.state.dir)
    try:
        return sorted(store.jobs(100), key=lambda j: (j.attempt, j.created_at))
    finally:
        store.close()


def test_controller_stopped_while_waiting_for_labels_launches_once_they_arrive(
    make_config: Any, registry_copy: Path, tmp_path: Path, unique: str
) -> None:
    config = controller_config(make_config, registry_copy, tmp_path, unique)
    command, launches = counting_job(tmp_path)
    with running_controller(config, LocalRunner(tmp_path / "logs", python=str(command))) as first:
        produce_raw(config, config.topics.insights, [drift_insight().model_dump_json().encode()], key=b"ins-kitchen")
        wait_for(lambda: first.status()["pending_insights"] == 1, 60, "the controller to take the insight")
        wait_for(lambda: "waits for labels: 0 of 30" in first._last_wait, 10, "the controller to wait for labels")
    assert launched(launches) == [] and stored_jobs(config) == []

    runner = LocalRunner(tmp_path / "logs", python=str(command))
    with running_controller(config, runner) as second:
        assert second.status() == {"pending_insights": 1, "running_jobs": []}, "the insight outlived the restart"
        # The texts are scored after the insight began; their labels (80, above min_new_labels) arrive later.
        store_production(config.state.dir, 80, labels=False)
        store_production(config.state.dir, 80, labels=True)
        wait_for(lambda: launched(launches), 30, "the job to launch")
        wait_for(lambda: "max concurrent jobs" in second._last_wait, 10, "more controller polls")
        (job,) = stored_jobs(config)
        assert job.state == "running" and job.insight_id == "ins-kitchen" and job.attempt == 1
        assert job.labeled == 80
        assert launched(launches) == [job.spec_path], "launched exactly once"
    (job,) = stored_jobs(config)
    assert job.state == "failed" and job.error == "stopped with the daemon"


def controller_process(config: Config, workdir: Path, name: str, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """`insightloop run --role controller` as a real process."""
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())), encoding="utf-8")
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "insightloop.daemon",
                "run",
                "--role",
                "controller",
                "--config",
                str(config_path),
                "--http-port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


def test_kill_9_during_a_local_job_then_restart_retries_it(
    make_config: Any, registry_copy: Path, tmp_path: Path, unique: str
) -> None:
    config = controller_config(make_config, registry_copy, tmp_path, unique)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first, _ = controller_process(config, tmp_path, "first", port)
    try:
        wait_ready(url, 90, first)
        produce_raw(config, config.topics.insights, [drift_insight().model_dump_json().encode()], key=b"ins-kitchen")
        wait_for(lambda: pending_insights(url) == 1, 60, "the controller to take the insight")
        store_production(config.state.dir, 80, labels=False)
        store_production(config.state.dir, 80, labels=True)
        (job,) = wait_for(lambda: [j for j in jobs(url) if j["state"] == "running"], 60, "the job (a real process)")
        pid = wait_for(lambda: job_pid(job["spec_path"]), 20, "the job's process")
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        os.kill(pid, signal.SIGKILL)  # the node went down with both; the job's session outlived the daemon
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert [j.state for j in stored_jobs(config)] == ["running"], "the store still says running"

    second, second_log = controller_process(config, tmp_path, "second", port)
    try:
        wait_ready(url, 90, second)
        listed = wait_for(lambda: len(jobs(url)) == 2 and jobs(url), 60, "the retry")
        lost, retry = listed
        assert lost["id"] == job["id"] and lost["state"] == "failed", lost
        assert lost["error"].startswith("the runner does not know the job and it left no result"), lost
        assert retry["state"] == "running" and retry["attempt"] == 2 and retry["insight_id"] == "ins-kitchen"
        wait_for(lambda: job_pid(retry["spec_path"]), 20, "the retry's process")
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, second_log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    final = stored_jobs(config)
    assert [(j.attempt, j.state) for j in final] == [(1, "failed"), (2, "failed")], final
    assert final[1].error == "stopped with the daemon"
    assert job_pid(final[1].spec_path or "") is None, "the stopped daemon left its job running"


# -- Kubernetes ----------------------------------------------------------------------------------------


def kubernetes_runner(api: k8s.ApiClient) -> KubernetesRunner:
    # The test's registry is a local path, not the template's PVC mount.
    return KubernetesRunner(TEMPLATE, NAMESPACE, api, check_spec_mounted=False, request_timeout=5)


def launch_on_kubernetes(config: Config, api: k8s.ApiClient) -> dict[str, Any]:
    """A controller launches a Job for the kitchen insight, then stops (its Job keeps running)."""
    with running_controller(config, kubernetes_runner(api)) as controller:
        produce_raw(config, config.topics.insights, [drift_insight().model_dump_json().encode()], key=b"ins-kitchen")
        wait_for(lambda: controller.status()["pending_insights"] == 1, 60, "the controller to take the insight")
        store_production(config.state.dir, 80, labels=False)
        store_production(config.state.dir, 80, labels=True)
        wait_for(lambda: controller.status()["running_jobs"], 30, "the Job to be created")
    (job,) = stored_jobs(config)
    assert job.state == "running", "a Kubernetes Job is not stopped with the daemon"
    k8s.BatchV1Api(api).read_namespaced_job(job.handle, NAMESPACE)  # it exists
    return job


def test_kubernetes_job_completed_while_down_has_its_candidate_recorded_at_start(
    make_config: Any, registry_copy: Path, tmp_path: Path, unique: str
) -> None:
    config = controller_config(make_config, registry_copy, tmp_path, unique, runner="kubernetes")
    registry = Registry(registry_copy)
    before = registry.names()
    with Cluster() as cluster, cluster.api_client() as api:
        job = launch_on_kubernetes(config, api)
        # While the daemon is down the pod runs `insightloop retrain --spec` on the registry volume...
        done = subprocess.run(
            [sys.executable, "-m", "insightloop.daemon", "retrain", "--spec", job.spec_path],
            capture_output=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]
        # ...and the Job controller marks the Job complete.
        set_job_status(
            api,
            job.handle,
            active=0,
            succeeded=1,
            completionTime="2025-01-01T01:00:00Z",
            conditions=[{"type": "Complete", "status": "True"}],
        )
        (version,) = [v for v in Registry(registry_copy).names() if v not in before]

        with running_controller(config, kubernetes_runner(api)) as controller:
            # Recovery ran before the controller subscribed.
            (recorded,) = stored_jobs(config)
            assert controller.status() == {"pending_insights": 0, "running_jobs": []}
        with pytest.raises(k8s.ApiException) as gone:
            k8s.BatchV1Api(api).read_namespaced_job(job.handle, NAMESPACE)
        assert gone.value.status == 404, "the finished Job is cleaned up"
    assert recorded.id == job.id and recorded.state == "succeeded", recorded
    assert recorded.version == version
    assert isinstance(recorded.gate_passed, bool) and recorded.gate_reasons
    assert Registry(registry_copy).get(version).version == version
    assert registry.production() == before[-1], "no auto-approve configured"


def test_kubernetes_job_deleted_while_down_is_gone_failed_and_retried(
    make_config: Any, registry_copy: Path, tmp_path: Path, unique: str
) -> None:
    config = controller_config(make_config, registry_copy, tmp_path, unique, runner="kubernetes")
    with Cluster() as cluster, cluster.api_client() as api:
        job = launch_on_kubernetes(config, api)
        k8s.BatchV1Api(api).delete_namespaced_job(job.handle, NAMESPACE)  # a person, or the TTL controller
        with running_controller(config, kubernetes_runner(api)) as controller:
            wait_for(lambda: len(controller.status()["running_jobs"]) == 1, 30, "the retry")
            lost, retry = stored_jobs(config)
            assert controller.status()["pending_insights"] == 1
        names = [j.metadata.name for j in k8s.BatchV1Api(api).list_namespaced_job(NAMESPACE).items if j.metadata]
    assert lost.id == job.id and lost.state == "failed", lost
    assert lost.error.startswith("the job is gone and left no result: Job ml/"), lost.error
    assert retry.state == "running" and retry.attempt == 2 and retry.insight_id == "ins-kitchen"
    assert names == [retry.handle], "the retry is a new Job; the deleted one is not recreated"
