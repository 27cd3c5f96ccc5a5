"""The Kubernetes runner: the Job manifest against the official client's models, the chart's template as
input, and the real ``kubernetes`` client against kmock, an in-memory Kubernetes API on 127.0.0.1.

kmock stores and serves objects (create, get, list, patch, delete, 404, 409) but runs no controllers:
the tests play the Job controller by patching the Job's status and creating its pods. It neither
filters lists by label selector (the runner also filters pods itself) nor serves pod logs on its own,
so the tests add a ``pods/log`` reaction that answers like the API server (text/plain, ``tailLines``).
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kmock
import pytest
import yaml
from kubernetes import client as k8s

from insightloop.retrain.kubernetes_runner import (
    JOB_ID_LABEL,
    MANAGED_BY_LABEL,
    SPEC_ENV,
    KubernetesPermissionError,
    KubernetesRunner,
    KubernetesRunnerError,
    KubernetesTemplateError,
    KubernetesUnavailableError,
    build_job,
    job_name,
)
from insightloop.retrain.runners import LOG_TAIL_BYTES, JobState, Runner

NAMESPACE = "ml"
REGISTRY = "/var/lib/insightloop/registry"
SPEC = Path(f"{REGISTRY}/jobs/retrain-1/spec.json")
T = TypeVar("T")

# What the chart renders, in short: GPU limit, node selector, toleration, the registry PVC, an emptyDir.
TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "generateName": "insightloop-retrain-",
        "labels": {"app.kubernetes.io/name": "insightloop", MANAGED_BY_LABEL: "Helm"},
    },
    "spec": {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "insightloop"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "retrain",
                        "image": "insightloop:0.1.0",
                        "command": ["insightloop", "retrain", "--spec", "$(RETRAIN_SPEC)"],
                        "env": [{"name": "HOME", "value": "/home/insightloop"}, {"name": SPEC_ENV, "value": ""}],
                        "resources": {"limits": {"memory": "32Gi", "nvidia.com/gpu": 1}, "requests": {"cpu": "4"}},
                        "volumeMounts": [
                            {"name": "registry", "mountPath": REGISTRY},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "registry", "persistentVolumeClaim": {"claimName": "insightloop-registry"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                ],
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    },
}


def serialise(job: k8s.V1Job) -> dict[str, Any]:
    with k8s.ApiClient() as api:
        body = api.sanitize_for_serialization(job)
    assert isinstance(body, dict)
    return body


def container_of(body: dict[str, Any]) -> dict[str, Any]:
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def edited(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    template = copy.deepcopy(TEMPLATE)
    edit(template)
    return template


def pod_spec(template: dict[str, Any]) -> dict[str, Any]:
    spec = template["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def without_spec(containers: list[dict[str, Any]]) -> None:
    """Two containers, neither taking the spec."""
    containers[0]["env"] = [e for e in containers[0]["env"] if e["name"] != SPEC_ENV]
    del containers[0]["command"]
    containers.append({"name": "sidecar", "image": "x"})


# --- the manifest ---------------------------------------------------------------------------------


def test_build_job_is_a_valid_gpu_job_for_the_spec() -> None:
    original = copy.deepcopy(TEMPLATE)
    job = build_job(
        TEMPLATE,
        "retrain-20250101-abc123",
        SPEC,
        namespace=NAMESPACE,
        labels={"team": "ml"},
        ttl_seconds_after_finished=600,
        active_deadline_seconds=3600,
        backoff_limit=3,
    )
    assert isinstance(job, k8s.V1Job)
    assert original == TEMPLATE, "the template must not be modified"
    body = serialise(job)
    assert k8s.V1Job.from_dict(body) == job  # what the client sends reads back into the same model

    meta = body["metadata"]
    assert meta["name"] == "insightloop-retrain-retrain-20250101-abc123"
    assert "generateName" not in meta
    assert meta["namespace"] == NAMESPACE
    ours = {MANAGED_BY_LABEL: "insightloop", JOB_ID_LABEL: "retrain-20250101-abc123", "team": "ml"}
    assert ours.items() <= meta["labels"].items()
    assert meta["labels"]["app.kubernetes.io/name"] == "insightloop"
    assert ours.items() <= body["spec"]["template"]["metadata"]["labels"].items()
    assert meta["annotations"]["insightloop.io/spec-path"] == str(SPEC)

    spec = body["spec"]
    assert spec["backoffLimit"] == 0, "the template's own value wins over the runner's default"
    assert (spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"]) == (600, 3600)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "insightloop-registry"}
    container = container_of(body)
    assert container["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "1"}
    assert container["command"] == ["insightloop", "retrain", "--spec", "$(RETRAIN_SPEC)"]
    assert container["env"][0] == {"name": SPEC_ENV, "value": str(SPEC)}, "first, so later entries can use it"
    assert [e["name"] for e in container["env"]].count(SPEC_ENV) == 1


@pytest.mark.parametrize(
    "job_id",
    ["retrain-1", "Retrain_A", "retrain-a", "x" * 120, "ïnsight:drift/2025-01-01T00:00", "-7-", "UPPER"],
)
def test_job_names_are_stable_dns_labels(job_id: str) -> None:
    name = job_name(job_id, "insightloop-retrain-")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
    assert job_name(job_id, "insightloop-retrain-") == name
    body = serialise(build_job(TEMPLATE, job_id, SPEC))
    label = body["metadata"]["labels"][JOB_ID_LABEL]
    assert re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", label) and len(label) <= 63
    assert body["metadata"]["annotations"][JOB_ID_LABEL] == job_id, "the exact id is kept as an annotation"


def test_different_ids_get_different_names() -> None:
    ids = ["Retrain_A", "retrain-a", "retrain_a", "x" * 120, "x" * 121]
    assert len({job_name(i) for i in ids}) == len(ids)


def test_a_template_without_gpu_limit_is_refused_unless_cpu_is_allowed() -> None:
    no_gpu = edited(lambda t: pod_spec(t)["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu"))
    with pytest.raises(
        KubernetesTemplateError, match=r"container 'retrain' has no nvidia.com/gpu limit.*allow_cpu=True"
    ):
        build_job(no_gpu, "retrain-1", SPEC)
    with pytest.raises(KubernetesTemplateError, match=r"nvidia\.com/gpu limit"):
        KubernetesRunner(no_gpu, NAMESPACE, k8s.ApiClient())
    body = serialise(build_job(no_gpu, "retrain-1", SPEC, allow_cpu=True))
    assert "nvidia.com/gpu" not in container_of(body)["resources"]["limits"]
    zero = edited(lambda t: pod_spec(t)["containers"][0]["resources"]["limits"].update({"nvidia.com/gpu": "0"}))
    with pytest.raises(KubernetesTemplateError, match=r"no nvidia\.com/gpu limit"):
        build_job(zero, "retrain-1", SPEC)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda t: t.update(kind="Pod"), r"must be a batch/v1 Job, not batch/v1 Pod"),
        (lambda t: pod_spec(t).update(nodeSelectr={"a": "b"}), r"unknown fields.*spec\.template\.spec\.nodeSelectr"),
        (lambda t: pod_spec(t)["containers"][0].update(imagePullPolicie="Always"), r"containers\[0\]\.imagePullPol"),
        (lambda t: pod_spec(t).update(containers=[]), r"has no containers"),
        (lambda t: t["spec"].pop("template"), r"has no pod spec"),
        (lambda t: pod_spec(t).update(restartPolicy="Always"), r"restartPolicy must be Never or OnFailure"),
        (lambda t: t["spec"].update(backoffLimit="zero"), r"(?s)not a valid batch/v1 Job.*backoffLimit"),
        (
            lambda t: pod_spec(t)["containers"][0].update(command=["insightloop", "retrain", "--spec", "/x.json"]),
            r"must contain \$\(RETRAIN_SPEC\)",
        ),
        (
            lambda t: pod_spec(t)["containers"][0]["resources"]["limits"].update({"nvidia.com/gpu": "one"}),
            r"whole number of GPUs",
        ),
        (
            lambda t: without_spec(pod_spec(t)["containers"]),
            r"2 containers and none uses RETRAIN_SPEC",
        ),
    ],
    ids=[
        "not-a-job",
        "misspelt-field",
        "misspelt-container-field",
        "no-containers",
        "no-pod-spec",
        "restart-always",
        "wrong-type",
        "spec-not-passed",
        "gpu-not-a-number",
        "no-training-container",
    ],
)
def test_broken_templates_are_refused(edit: Callable[[dict[str, Any]], object], error: str) -> None:
    with pytest.raises(KubernetesTemplateError, match=error):
        build_job(edited(edit), "retrain-1", SPEC)


def test_the_spec_must_be_where_the_pod_can_read_it() -> None:
    with pytest.raises(KubernetesTemplateError, match="must be absolute"):
        build_job(TEMPLATE, "retrain-1", "jobs/spec.json")
    # /tmp is mounted, but from an emptyDir of the pod itself: the daemon cannot have written there.
    with pytest.raises(
        KubernetesTemplateError, match=r"not on a shared volume.*shared mounts: /var/lib/insightloop/registry"
    ):
        build_job(TEMPLATE, "retrain-1", "/tmp/spec.json")
    with pytest.raises(KubernetesTemplateError, match="not on a shared volume"):
        build_job(TEMPLATE, "retrain-1", "/var/lib/insightloop/state/jobs/retrain-1/spec.json")
    body = serialise(build_job(TEMPLATE, "retrain-1", "/tmp/spec.json", check_spec_mounted=False))
    assert container_of(body)["env"][0]["value"] == "/tmp/spec.json"


def test_the_rendered_chart_template_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helm.chart import VALUES_ALL, render  # skips without helm (fails in CI)

    for values in ([], [VALUES_ALL]):
        rendered = render(values=values)
        template = rendered.job_template()
        assert any("POD_NAMESPACE" in str(d) for d in rendered.of_kind("Deployment")), "the runner's namespace"
        mount = next(
            m["mountPath"]
            for m in container_of(template)["volumeMounts"]
            if m["name"] == "registry"  # the registry volume is where specs are shared
        )
        body = serialise(build_job(template, "retrain-20250101-abc123", f"{mount}/jobs/retrain-1/spec.json"))
        container = container_of(body)
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert container["env"][0] == {"name": SPEC_ENV, "value": f"{mount}/jobs/retrain-1/spec.json"}
        name = body["metadata"]["name"]
        assert name.startswith(template["metadata"]["generateName"][:20]) and len(name) <= 63, name
        assert body["spec"]["template"]["spec"]["tolerations"] == template["spec"]["template"]["spec"]["tolerations"]
        assert body["spec"]["template"]["spec"].get("nodeSelector") == template["spec"]["template"]["spec"].get(
            "nodeSelector"
        )

        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(template))
        monkeypatch.setenv("POD_NAMESPACE", "ml-prod")
        with k8s.ApiClient() as api:
            runner = KubernetesRunner.from_template_file(path, api_client=api)
            assert runner.namespace == "ml-prod"
            assert runner.container_name == "retrain"


# --- against kmock --------------------------------------------------------------------------------


class Cluster:
    """kmock's Kubernetes emulator served on 127.0.0.1 from its own thread (the client is synchronous)."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kmock", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.emulator = kmock.KubernetesEmulator()
        self.url = ""
        self.logs: dict[tuple[str, str], str] = {}  # (pod, container) -> log text served on pods/log

    def __enter__(self) -> Cluster:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            self.close()
            raise RuntimeError(f"kmock did not start: {self._error!r}")
        self.do(self._serve_logs)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "kmock did not stop"

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, host="127.0.0.1") as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def do(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (kmock's DSL and state are not thread-safe)."""
        assert self._loop is not None

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def react(self, *criteria: Any, payload: Any) -> None:
        """Answer matching requests with ``payload`` (e.g. a ``kmock.KubernetesError``) from now on."""

        def add() -> None:
            (self.emulator[criteria] ** 1) << payload  # above the log reaction and the emulator's own

        self.do(add)

    def requests(self) -> list[kmock.Request]:
        return self.do(lambda: list(self.emulator))

    def _serve_logs(self) -> None:
        def log(request: kmock.Request) -> bytes:
            text = self.logs.get((str(request.name), str(request.params.get("container"))), "")
            lines = text.splitlines(keepends=True)
            if "tailLines" in request.params:
                lines = lines[-int(request.params["tailLines"]) :]
            return "".join(lines).encode()

        logs = self.emulator["get", kmock.resource("v1/pods"), kmock.subresource("log")]
        logs << kmock.headers({"Content-Type": "text/plain; charset=utf-8"}) << log

    def api_client(self) -> k8s.ApiClient:
        configuration = k8s.Configuration()
        configuration.host = self.url
        return k8s.ApiClient(configuration)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


@pytest.fixture
def api(cluster: Cluster) -> Iterator[k8s.ApiClient]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def runner(api: k8s.ApiClient) -> KubernetesRunner:
    return KubernetesRunner(TEMPLATE, NAMESPACE, api, log_tail_lines=5, request_timeout=5)


def set_job_status(api: k8s.ApiClient, name: str, **status: Any) -> None:
    """What the Job controller would write (kmock merges the patch into the stored object)."""
    k8s.BatchV1Api(api).patch_namespaced_job_status(name, NAMESPACE, {"status": status})


def add_pod(api: k8s.ApiClient, job: str, pod: str, **status: Any) -> None:
    """A pod of ``job`` as the Job controller creates it, with the status the kubelet would report."""
    core = k8s.CoreV1Api(api)
    labels = {"job-name": job, "batch.kubernetes.io/job-name": job}
    body = {
        "metadata": {"name": pod, "namespace": NAMESPACE, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "retrain", "image": "insightloop:0.1.0"}]},
    }
    pod_model = k8s.V1Pod.from_dict(body)
    assert pod_model is not None
    core.create_namespaced_pod(NAMESPACE, pod_model)
    core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": status})


def failed_container(exit_code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
    if message:
        terminated["message"] = message
    return {
        "name": "retrain",
        "ready": False,
        "restartCount": 0,
        "image": "i",
        "imageID": "",
        "state": {"terminated": terminated},
    }


def test_a_job_is_created_followed_and_cleaned_up(runner: KubernetesRunner, api: k8s.ApiClient) -> None:
    as_runner: Runner = runner  # the controller's interface
    batch = k8s.BatchV1Api(api)
    handle = as_runner.submit("retrain-1", SPEC)
    assert handle == "insightloop-retrain-retrain-1"

    listed = batch.list_namespaced_job(NAMESPACE, label_selector=f"{MANAGED_BY_LABEL}=insightloop")
    (job,) = [j for j in listed.items if j.metadata and j.metadata.name == handle]
    assert job.metadata and job.metadata.labels and job.metadata.labels[JOB_ID_LABEL] == "retrain-1"
    assert job.spec and job.spec.template.spec
    (container,) = job.spec.template.spec.containers
    assert container.env and container.env[0].value == str(SPEC)
    assert container.resources and container.resources.limits == {"memory": "32Gi", "nvidia.com/gpu": "1"}
    assert job.spec.ttl_seconds_after_finished == 86_400 and job.spec.active_deadline_seconds == 12 * 3600

    assert runner.status(handle).state is JobState.PENDING
    set_job_status(api, handle, active=1, ready=1, startTime="2025-01-01T00:00:00Z")
    running = runner.status(handle)
    assert running.state is JobState.RUNNING and not running.finished
    set_job_status(
        api,
        handle,
        active=0,
        ready=0,
        succeeded=1,
        completionTime="2025-01-01T01:00:00Z",
        conditions=[{"type": "Complete", "status": "True"}],
    )
    done = runner.status(handle)
    assert done.state is JobState.SUCCEEDED and done.finished
    assert "2025-01-01T01:00:00" in done.message

    runner.cleanup(handle)
    with pytest.raises(k8s.ApiException) as gone:
        batch.read_namespaced_job(handle, NAMESPACE)
    assert gone.value.status == 404
    assert not [j for j in batch.list_namespaced_job(NAMESPACE).items if j.metadata and j.metadata.name == handle]
    runner.cleanup(handle)  # a second cleanup is a no-op
    gone_status = runner.status(handle)
    assert gone_status.state is JobState.GONE and gone_status.finished  # a Job that is gone is not followed forever
    assert gone_status.lost


def test_cleanup_deletes_pods_in_the_background(runner: KubernetesRunner, cluster: Cluster) -> None:
    handle = runner.submit("retrain-1", SPEC)
    runner.cleanup(handle)
    deletes = [r for r in cluster.requests() if r.method == kmock.method.DELETE]
    assert len(deletes) == 1
    # The client sends the policy as a query parameter or in DeleteOptions, depending on its version.
    sent = {**deletes[0].params, **(deletes[0].data or {})}
    assert sent.get("propagationPolicy") == "Background", sent


def test_a_failed_job_reports_its_reason_exit_and_log_tail(
    runner: KubernetesRunner, api: k8s.ApiClient, cluster: Cluster
) -> None:
    handle = runner.submit("retrain-1", SPEC)
    other = runner.submit("retrain-2", SPEC)
    add_pod(api, other, f"{other}-zzzzz", phase="Failed", containerStatuses=[failed_container(2)])
    add_pod(
        api,
        handle,
        f"{handle}-abcde",
        phase="Failed",
        containerStatuses=[failed_container(1, message="CUDA out of memory")],
    )
    cluster.logs[(f"{handle}-abcde", "retrain")] = "".join(f"step {i}\n" for i in range(100)) + "Traceback: boom\n"
    cluster.logs[(f"{other}-zzzzz", "retrain")] = "the other job's log\n"
    set_job_status(
        api,
        handle,
        active=0,
        failed=1,
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ],
    )

    status = runner.status(handle)
    assert status.state is JobState.FAILED and status.finished
    assert status.message.startswith("BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert f"pod {handle}-abcde container retrain: Error, exit code 1 (CUDA out of memory)" in status.message
    assert status.log_tail == "step 96\nstep 97\nstep 98\nstep 99\nTraceback: boom\n"  # log_tail_lines=5
    (log_request,) = [r for r in cluster.requests() if r.subresource == "log"]
    assert log_request.name == f"{handle}-abcde"
    assert log_request.params["container"] == "retrain" and log_request.params["tailLines"] == "5"

    assert runner.status(handle) == status
    assert len([r for r in cluster.requests() if r.subresource == "log"]) == 1, "a finished job is read once"


def test_a_long_log_is_cut_to_the_tail(api: k8s.ApiClient, cluster: Cluster) -> None:
    runner = KubernetesRunner(TEMPLATE, NAMESPACE, api, log_tail_lines=1000)
    handle = runner.submit("retrain-1", SPEC)
    add_pod(api, handle, f"{handle}-abcde", phase="Failed", containerStatuses=[failed_container(137, "OOMKilled")])
    cluster.logs[(f"{handle}-abcde", "retrain")] = "x" * 10_000 + "\nlast line\n"
    set_job_status(api, handle, failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "Deadline"}])
    status = runner.status(handle)
    assert "OOMKilled, exit code 137" in status.message
    assert len(status.log_tail) == LOG_TAIL_BYTES and status.log_tail.endswith("last line\n")


def test_unreadable_logs_do_not_hide_the_failure(
    runner: KubernetesRunner, api: k8s.ApiClient, cluster: Cluster
) -> None:
    handle = runner.submit("retrain-1", SPEC)
    add_pod(api, handle, f"{handle}-abcde", phase="Failed", containerStatuses=[failed_container(1)])
    forbidden = kmock.KubernetesError(status=403, reason="Forbidden", message='cannot get resource "pods/log"')
    cluster.react("get", kmock.resource("v1/pods"), kmock.subresource("log"), payload=forbidden)
    set_job_status(api, handle, failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "Backoff"}])
    status = runner.status(handle)
    assert status.state is JobState.FAILED and status.log_tail == ""
    assert "exit code 1" in status.message and "log unreadable" in status.message
    assert "forbids the runner to get pods/log" in status.message


def test_a_pod_waiting_for_a_gpu_node_is_pending_with_the_reason(runner: KubernetesRunner, api: k8s.ApiClient) -> None:
    handle = runner.submit("retrain-1", SPEC)
    unschedulable = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    add_pod(
        api,
        handle,
        f"{handle}-abcde",
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}],
    )
    set_job_status(api, handle, active=1, ready=0)
    status = runner.status(handle)
    assert status.state is JobState.PENDING
    assert status.message == f"pod {handle}-abcde pending: Unschedulable: {unschedulable}"
    k8s.CoreV1Api(api).patch_namespaced_pod_status(f"{handle}-abcde", NAMESPACE, {"status": {"phase": "Running"}})
    assert runner.status(handle).state is JobState.RUNNING


def test_submitting_twice_follows_the_same_job(runner: KubernetesRunner, api: k8s.ApiClient) -> None:
    first = runner.submit("retrain-1", SPEC)
    assert runner.submit("retrain-1", SPEC) == first  # e.g. the daemon restarted between create and record
    jobs = k8s.BatchV1Api(api).list_namespaced_job(NAMESPACE).items
    assert [j.metadata.name for j in jobs if j.metadata] == [first]

    # A Job of that name made for another id is not silently taken over.
    foreign = serialise(build_job(TEMPLATE, "retrain-9", SPEC, namespace=NAMESPACE))
    foreign["metadata"]["name"] = job_name("retrain-3", "insightloop-retrain-")
    foreign_job = k8s.V1Job.from_dict(foreign)
    assert foreign_job is not None
    k8s.BatchV1Api(api).create_namespaced_job(NAMESPACE, foreign_job)
    with pytest.raises(KubernetesRunnerError, match="already exists and is not job retrain-3"):
        runner.submit("retrain-3", SPEC)


def test_forbidden_is_a_clear_error(runner: KubernetesRunner, cluster: Cluster) -> None:
    message = 'jobs.batch is forbidden: User "system:serviceaccount:ml:insightloop" cannot create resource "jobs"'
    cluster.react(
        "post",
        kmock.resource("batch/v1/jobs"),
        payload=kmock.KubernetesError(status=403, reason="Forbidden", message=message),
    )
    with pytest.raises(KubernetesPermissionError) as denied:
        runner.submit("retrain-1", SPEC)
    text = str(denied.value)
    assert "forbids the runner to create jobs.batch in namespace 'ml'" in text
    assert message in text and "retrain.rbac.create" in text

    cluster.react(
        "get",
        kmock.resource("batch/v1/jobs"),
        payload=kmock.KubernetesError(status=403, reason="Forbidden", message="no get"),
    )
    with pytest.raises(KubernetesPermissionError, match=r"forbids the runner to get jobs\.batch"):
        runner.status("insightloop-retrain-retrain-1")


def test_transient_errors_answer_the_last_known_state(
    runner: KubernetesRunner, api: k8s.ApiClient, cluster: Cluster
) -> None:
    handle = runner.submit("retrain-1", SPEC)
    set_job_status(api, handle, active=1, ready=1)
    assert runner.status(handle).state is JobState.RUNNING

    unavailable = kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd leader changed")
    cluster.react("get", kmock.resource("batch/v1/jobs"), payload=unavailable)
    cluster.react("post", kmock.resource("batch/v1/jobs"), payload=unavailable)
    cluster.react("delete", kmock.resource("batch/v1/jobs"), payload=unavailable)
    status = runner.status(handle)
    assert status.state is JobState.RUNNING
    assert "Kubernetes API unavailable (get jobs.batch: 503 etcd leader changed)" in status.message
    with pytest.raises(KubernetesUnavailableError, match="503"):
        runner.submit("retrain-2", SPEC)
    runner.cleanup("insightloop-retrain-retrain-2")  # logged, not raised: the TTL removes finished Jobs

    cluster.close()  # connection refused from now on
    status = runner.status(handle)
    assert status.state is JobState.RUNNING and "Kubernetes API unreachable" in status.message
    with pytest.raises(KubernetesUnavailableError, match="unreachable"):
        runner.submit("retrain-2", SPEC)
    runner.cleanup(handle)
    # A job never seen before is pending (just submitted) rather than failed while the API is away.
    assert runner.status("insightloop-retrain-retrain-7").state is JobState.PENDING


def test_without_a_client_the_kubeconfig_is_used(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import kube_config

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "missing"))
    with pytest.raises(KubernetesRunnerError, match="no Kubernetes API to talk to"):
        KubernetesRunner(TEMPLATE, NAMESPACE)

    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
        "users": [{"name": "daemon", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "daemon"}}],
        "current-context": "kmock",
    }
    (tmp_path / "config").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "config"))
    with KubernetesRunner(TEMPLATE, NAMESPACE) as runner:
        handle = runner.submit("retrain-1", SPEC)
        assert runner.status(handle).state is JobState.PENDING
    assert {r.headers.get("Authorization") for r in cluster.requests()} == {"Bearer s3cret"}
