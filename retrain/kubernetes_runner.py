"""Runs retraining jobs as Kubernetes ``batch/v1`` Jobs built from a template.

The Helm chart renders the template into a ConfigMap that the controller mounts at
``/etc/insightloop/retrain/job.yaml`` (``retrain.job`` in the chart's values: image, the command
``insightloop retrain --spec $(RETRAIN_SPEC)``, the ``nvidia.com/gpu`` limit, node selector, tolerations,
the registry volume). For each job the runner names the Job after the job id, labels it, points
``RETRAIN_SPEC`` at the spec file, creates it with the official ``kubernetes`` client, polls its status and,
when it fails, reads the failed container's log tail. Given ``gpus_per_job`` (``controller.gpus_per_job``),
the training container asks for that many GPUs and, above one, its command runs under
``torchrun --standalone --nnodes=1 --nproc_per_node=<gpus_per_job> --no-python``: one training process per GPU.

Errors: a transient API failure (5xx, 429, connection refused or reset, timeout) never escapes ``status``,
which answers the last known state with a note; ``submit`` raises :class:`KubernetesUnavailableError`
(submitting again is safe: the Job name is derived from the job id, and an existing Job of the same id
is adopted); ``cleanup`` logs it (``ttlSecondsAfterFinished`` removes finished Jobs anyway). Missing
permissions on Jobs (401/403) raise :class:`KubernetesPermissionError` naming the verb and the resource.
Pods and their logs only add detail to a status: when they cannot be read, the status says so instead.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, TypeVar

import pydantic
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from insightloop.retrain.errors import RetrainError, RetrainPermanentError, RetrainTemporaryError
from insightloop.retrain.runners import LOG_TAIL_BYTES, JobState, JobStatus, torchrun_arguments

log = logging.getLogger(__name__)

SPEC_ENV = "RETRAIN_SPEC"
GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "insightloop"
JOB_ID_LABEL = "insightloop.io/job-id"
JOB_ID_ANNOTATION = "insightloop.io/job-id"
SPEC_ANNOTATION = "insightloop.io/spec-path"
DEFAULT_NAME_PREFIX = "insightloop-retrain-"
DEFAULT_TEMPLATE_PATH = Path("/etc/insightloop/retrain/job.yaml")
# Pods carry the Job's name as a label value, which is at most 63 characters.
MAX_NAME_LENGTH = 63
# Pod labels the Job controller sets (the second since Kubernetes 1.27).
JOB_NAME_LABELS = ("job-name", "batch.kubernetes.io/job-name")
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_QUANTITY_SECTIONS = ("limits", "requests")
# Volumes a pod makes for itself: the daemon cannot have written a spec into them.
_POD_LOCAL_VOLUMES = frozenset({"emptyDir", "configMap", "secret", "downwardAPI", "projected", "ephemeral"})
_T = TypeVar("_T")


class KubernetesRunnerError(RetrainError):
    """The Kubernetes API refused or failed a request of the runner."""


class KubernetesPermissionError(KubernetesRunnerError, RetrainPermanentError):
    """401/403: the daemon's credentials or RBAC do not allow what the runner needs."""


class KubernetesUnavailableError(KubernetesRunnerError, RetrainTemporaryError):
    """A transient failure (5xx, 429, connection error, timeout): trying again later may succeed."""


class KubernetesTemplateError(RetrainPermanentError):
    """The Job template, a job id or a spec path cannot make a valid Job; the message says what to change."""


# -- the Job manifest -------------------------------------------------------------------------------


def job_name(job_id: str, prefix: str = DEFAULT_NAME_PREFIX) -> str:
    """A DNS-1123 label (at most 63 characters) for the Job of ``job_id``, stable across calls.

    ``prefix`` (the template's ``generateName``) comes first. Ids that had to be changed (upper case,
    other characters) or shortened get a hash of the original, so two ids never share a name.
    """
    if not job_id:
        raise KubernetesTemplateError("job_id must not be empty")
    prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).lstrip("-")
    slug = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    name = f"{prefix}{slug}".strip("-")
    if slug == job_id and len(name) <= MAX_NAME_LENGTH and _DNS_LABEL.match(name):
        return name
    digest = hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:8]
    head = name[: MAX_NAME_LENGTH - len(digest) - 1].strip("-")
    return f"{head}-{digest}" if head else f"job-{digest}"


def _label_value(job_id: str, name: str) -> str:
    """``job_id`` itself when it is a valid label value, else the Job name (unique per id, also valid)."""
    if len(job_id) <= MAX_NAME_LENGTH and _LABEL_VALUE.match(job_id):
        return job_id
    return name


def _str_quantities(resources: Any) -> None:
    """YAML reads ``nvidia.com/gpu: 1`` as a number; the API (and the client's models) want strings."""
    if not isinstance(resources, dict):
        return
    for section in _QUANTITY_SECTIONS:
        values = resources.get(section)
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values[key] = str(value)


def _normalise_quantities(pod_spec: dict[str, Any]) -> None:
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for container in pod_spec.get(field) or []:
            if isinstance(container, dict):
                _str_quantities(container.get("resources"))
    _str_quantities(pod_spec.get("resources"))
    overhead = pod_spec.get("overhead")
    if isinstance(overhead, dict):
        _str_quantities({"limits": overhead})
    for volume in pod_spec.get("volumes") or []:
        empty_dir = volume.get("emptyDir") if isinstance(volume, dict) else None
        if isinstance(empty_dir, dict) and isinstance(empty_dir.get("sizeLimit"), int | float):
            empty_dir["sizeLimit"] = str(empty_dir["sizeLimit"])


def _mentions_spec(container: Mapping[str, Any]) -> bool:
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    return any(f"$({SPEC_ENV})" in str(word) for word in words)


def _training_container(pod_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The container that runs the job: the one with a ``RETRAIN_SPEC`` env entry or using it, else the only one."""
    containers = [c for c in pod_spec.get("containers") or [] if isinstance(c, dict)]
    if not containers:
        raise KubernetesTemplateError("the Job template has no containers (spec.template.spec.containers)")
    with_env = [
        c for c in containers if any(isinstance(e, Mapping) and e.get("name") == SPEC_ENV for e in c.get("env") or [])
    ]
    using = [c for c in containers if _mentions_spec(c)]
    for found in (with_env, using):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(str(c.get("name")) for c in found)
            raise KubernetesTemplateError(
                f"several containers of the Job template use {SPEC_ENV} ({names}); keep it in one"
            )
    if len(containers) == 1:
        return containers[0]
    raise KubernetesTemplateError(
        f"the Job template has {len(containers)} containers and none uses {SPEC_ENV}: "
        f"give the training container an env entry {SPEC_ENV} and the command '--spec $({SPEC_ENV})'"
    )


def _gpu_limit(container: Mapping[str, Any]) -> int:
    limits = (container.get("resources") or {}).get("limits") or {}
    value = limits.get(GPU_RESOURCE)
    if value is None:
        return 0
    try:
        return int(str(value))
    except ValueError as exc:
        raise KubernetesTemplateError(
            f"the {GPU_RESOURCE} limit must be a whole number of GPUs, not {value!r}"
        ) from exc


def _launches_torchrun(words: list[Any]) -> bool:
    return any(PurePosixPath(str(word)).name == "torchrun" or str(word) == "torch.distributed.run" for word in words)


def _use_gpus(container: dict[str, Any], gpus: int) -> None:
    """Give the training container ``gpus`` GPUs and, above one, one torchrun process per GPU."""
    if gpus < 1:
        raise KubernetesTemplateError(f"gpus_per_job must be at least 1 for a Kubernetes Job, not {gpus}")
    resources = container.get("resources") or {}
    container["resources"] = resources
    for section in _QUANTITY_SECTIONS:  # an extended resource's request, where given, must equal its limit
        values = resources.get(section) or {}
        resources[section] = values
        values[GPU_RESOURCE] = str(gpus)
    if gpus == 1:
        return
    command = [str(word) for word in container.get("command") or []]
    name = container.get("name")
    if not command:
        raise KubernetesTemplateError(
            f"container {name!r} of the Job template has no command: with gpus_per_job {gpus} the runner starts it "
            f"under torchrun, which needs it, e.g. command: [insightloop, retrain, --spec, $({SPEC_ENV})]"
        )
    if _launches_torchrun([*command, *(container.get("args") or [])]):
        raise KubernetesTemplateError(
            f"container {name!r} of the Job template launches torchrun itself: the runner does, with one process "
            f"per GPU of gpus_per_job; give the template the plain command (insightloop retrain --spec $({SPEC_ENV}))"
        )
    # --no-python: the command is an executable (insightloop, or python -m ...), not a script for torchrun's python.
    container["command"] = ["torchrun", *torchrun_arguments(gpus), "--no-python", *command]


def _dropped_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Keys of ``given`` that the client's models did not keep (misspelt or unknown fields)."""
    dropped: list[str] = []
    if isinstance(given, Mapping) and isinstance(kept, Mapping):
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if value is None:
                continue
            if key not in kept:
                dropped.append(where)
            else:
                dropped.extend(_dropped_fields(value, kept[key], where))
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (value, kept_value) in enumerate(zip(given, kept, strict=False)):
            dropped.extend(_dropped_fields(value, kept_value, f"{path}[{index}]"))
    return dropped


def _checked_body(
    template: Mapping[str, Any], allow_cpu: bool, gpus_per_job: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A deep copy of ``template`` checked as a GPU training Job, and its training container.

    With ``gpus_per_job``, the container's GPUs (and, above one, its torchrun launch) come from it.
    """
    if not isinstance(template, Mapping):
        raise KubernetesTemplateError(f"the Job template must be a mapping, not {type(template).__name__}")
    body: dict[str, Any] = copy.deepcopy(dict(template))
    if body.setdefault("apiVersion", "batch/v1") != "batch/v1" or body.setdefault("kind", "Job") != "Job":
        raise KubernetesTemplateError(
            f"the Job template must be a batch/v1 Job, not {body['apiVersion']} {body['kind']}"
        )
    spec = body.get("spec")
    pod_template = spec.get("template") if isinstance(spec, dict) else None
    pod_spec = pod_template.get("spec") if isinstance(pod_template, dict) else None
    if not isinstance(pod_spec, dict):
        raise KubernetesTemplateError("the Job template has no pod spec (spec.template.spec)")
    _normalise_quantities(pod_spec)
    container = _training_container(pod_spec)
    if gpus_per_job is not None:
        _use_gpus(container, gpus_per_job)
    gpus = _gpu_limit(container)
    if gpus < 1 and not allow_cpu:
        raise KubernetesTemplateError(
            f"the Job template's container {container.get('name')!r} has no {GPU_RESOURCE} limit: retraining "
            f"Jobs are meant for GPU nodes (set retrain.job.gpus in the Helm chart, or pass allow_cpu=True to "
            f"run them on CPU)"
        )
    if (container.get("command") or container.get("args")) and not _mentions_spec(container):
        raise KubernetesTemplateError(
            f"container {container.get('name')!r} of the Job template does not pass the spec: its command or args "
            f"must contain $({SPEC_ENV}), e.g. insightloop retrain --spec $({SPEC_ENV})"
        )
    restart = pod_spec.setdefault("restartPolicy", "Never")
    if restart not in ("Never", "OnFailure"):
        raise KubernetesTemplateError(f"a Job's restartPolicy must be Never or OnFailure, not {restart!r}")
    return body, container


def _to_model(body: dict[str, Any]) -> k8s.V1Job:
    try:
        job = k8s.V1Job.from_dict(body)
    except pydantic.ValidationError as exc:
        raise KubernetesTemplateError(f"the Job template is not a valid batch/v1 Job: {exc}") from exc
    if job is None:  # pragma: no cover - from_dict returns None only for None
        raise KubernetesTemplateError("the Job template is empty")
    with k8s.ApiClient() as serializer:
        kept = serializer.sanitize_for_serialization(job)  # type: ignore[no-untyped-call]
    dropped = _dropped_fields(body, kept)
    if dropped:
        raise KubernetesTemplateError(f"unknown fields in the Job template (misspelt?): {', '.join(dropped)}")
    return job


def _check_spec_mounted(pod_spec: Mapping[str, Any], container: Mapping[str, Any], spec_path: PurePosixPath) -> None:
    """``spec_path`` must lie on a volume the daemon can have written: not one the pod makes for itself."""
    kinds = {
        str(volume.get("name")): next((key for key in volume if key != "name"), "")
        for volume in pod_spec.get("volumes") or []
        if isinstance(volume, Mapping)
    }
    shared = [
        str(mount["mountPath"])
        for mount in container.get("volumeMounts") or []
        if isinstance(mount, Mapping) and mount.get("mountPath")
        if kinds.get(str(mount.get("name")), "") not in _POD_LOCAL_VOLUMES
    ]
    if any(spec_path.is_relative_to(PurePosixPath(path)) for path in shared):
        return
    raise KubernetesTemplateError(
        f"the spec {spec_path} is not on a shared volume of container {container.get('name')!r} (shared mounts: "
        f"{', '.join(shared) or 'none'}): write it where the Job's pod can read it, e.g. on the registry volume"
    )


def build_job(
    template: Mapping[str, Any],
    job_id: str,
    spec_path: Path | str,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    ttl_seconds_after_finished: int | None = None,
    active_deadline_seconds: int | None = None,
    backoff_limit: int | None = None,
    allow_cpu: bool = False,
    check_spec_mounted: bool = True,
    gpus_per_job: int | None = None,
) -> k8s.V1Job:
    """The Job that runs ``job_id`` with the spec at ``spec_path``, as the official client's model.

    The template (a ``batch/v1`` Job as a dict, e.g. the chart's ``job.yaml``) is not modified. The Job is
    named by :func:`job_name` (``generateName`` is the prefix), labelled ``app.kubernetes.io/managed-by=
    insightloop`` and ``insightloop.io/job-id`` (Job and pod; ``labels`` too), and its training container
    gets ``RETRAIN_SPEC=<spec_path>``. ``ttl_seconds_after_finished``, ``active_deadline_seconds`` and
    ``backoff_limit`` apply where the template sets none. ``gpus_per_job`` (None: the template's) sets the
    container's ``nvidia.com/gpu`` limit and request and, above 1, wraps its command in ``torchrun
    --nproc_per_node=<gpus_per_job>`` (data-parallel training, one process per GPU; the job's
    ``batch_size`` must be a multiple of it). ``spec_path`` must be absolute and, with
    ``check_spec_mounted``, on a volume the container mounts that is not pod-local (not an emptyDir,
    ConfigMap, Secret…): the pod reads there what the daemon wrote, e.g. on the registry volume.

    Raises :class:`KubernetesTemplateError` for a template that is not a Job, has unknown fields or wrong types, no
    ``nvidia.com/gpu`` limit (unless ``allow_cpu``), or no container that takes the spec, and for such a
    spec path.
    """
    body, container = _checked_body(template, allow_cpu, gpus_per_job)
    spec_file = PurePosixPath(str(spec_path))
    if not spec_file.is_absolute():
        raise KubernetesTemplateError(
            f"the spec path must be absolute (the pod reads it from a volume), not {spec_path}"
        )
    if check_spec_mounted:
        _check_spec_mounted(body["spec"]["template"]["spec"], container, spec_file)

    metadata: dict[str, Any] = body.setdefault("metadata", {}) or {}
    body["metadata"] = metadata
    prefix = metadata.pop("generateName", None) or (
        f"{metadata['name']}-" if metadata.get("name") else DEFAULT_NAME_PREFIX
    )
    name = job_name(job_id, prefix)
    ours = {**(labels or {}), MANAGED_BY_LABEL: MANAGED_BY, JOB_ID_LABEL: _label_value(job_id, name)}
    metadata["name"] = name
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {**(metadata.get("labels") or {}), **ours}
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        JOB_ID_ANNOTATION: job_id,
        SPEC_ANNOTATION: str(spec_file),
    }

    spec = body["spec"]
    for key, value in (
        ("ttlSecondsAfterFinished", ttl_seconds_after_finished),
        ("activeDeadlineSeconds", active_deadline_seconds),
        ("backoffLimit", backoff_limit),
    ):
        if spec.get(key) is None and value is not None:
            spec[key] = value
    pod_metadata: dict[str, Any] = spec["template"].get("metadata") or {}
    spec["template"]["metadata"] = pod_metadata
    pod_metadata["labels"] = {**(pod_metadata.get("labels") or {}), **ours}

    env = [e for e in container.get("env") or [] if not (isinstance(e, Mapping) and e.get("name") == SPEC_ENV)]
    # First, so later entries (and the command) can refer to it with $(RETRAIN_SPEC).
    container["env"] = [{"name": SPEC_ENV, "value": str(spec_file)}, *env]
    return _to_model(body)


def load_template(path: Path | str) -> dict[str, Any]:
    """The Job template in a YAML file (the chart mounts it at ``/etc/insightloop/retrain/job.yaml``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KubernetesTemplateError(f"cannot read the Job template {path}: {exc}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubernetesTemplateError(f"the Job template {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise KubernetesTemplateError(f"the Job template {path} must hold one mapping (a batch/v1 Job)")
    return loaded


def default_namespace() -> str:
    """``$POD_NAMESPACE`` (the chart sets it), else the service account's namespace, else ``default``."""
    from_env = os.environ.get("POD_NAMESPACE", "").strip()
    if from_env:
        return from_env
    try:
        return SERVICE_ACCOUNT_NAMESPACE_FILE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def default_api_client() -> k8s.ApiClient:
    """An ``ApiClient`` for the cluster this runs in (in-cluster service account), else ``~/.kube/config``."""
    configuration = k8s.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError) as exc:
        raise KubernetesRunnerError(
            f"no Kubernetes API to talk to (neither in-cluster credentials nor a kubeconfig): {exc}"
        ) from exc
    return k8s.ApiClient(configuration)


# -- the runner -------------------------------------------------------------------------------------


def _server_message(exc: ApiException) -> str:
    """The ``message`` of the API's Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or "")


def _is_transient(exc: ApiException) -> bool:
    return exc.status is not None and (exc.status == 429 or 500 <= int(exc.status) <= 599)


class KubernetesRunner:
    """Runs each retraining job as a Kubernetes Job built from ``template``; handles are Job names.

    ``namespace`` defaults to :func:`default_namespace` (``$POD_NAMESPACE``), ``api_client`` to
    :func:`default_api_client` (closed by :meth:`close`; a given one stays the caller's). ``labels`` are
    added to every Job and its pods. ``ttl_seconds_after_finished``, ``active_deadline_seconds`` and
    ``backoff_limit`` apply where the template sets none. ``allow_cpu`` accepts a template without an
    ``nvidia.com/gpu`` limit. ``gpus_per_job`` (None: the template's GPUs) is what each Job gets, launched
    with torchrun above one (see :func:`build_job`). ``log_tail_lines`` lines of a failed container's log end up in
    ``JobStatus.log_tail``; ``request_timeout`` bounds every API call (seconds).

    The template is checked here, so a broken one fails at start-up rather than at the first job.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        namespace: str | None = None,
        api_client: k8s.ApiClient | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        ttl_seconds_after_finished: int | None = 86_400,
        active_deadline_seconds: int | None = 12 * 3600,
        backoff_limit: int | None = 0,
        allow_cpu: bool = False,
        check_spec_mounted: bool = True,
        log_tail_lines: int = 200,
        request_timeout: float = 30.0,
        gpus_per_job: int | None = None,
    ) -> None:
        body, container = _checked_body(template, allow_cpu, gpus_per_job)
        _to_model(body)  # unknown fields, wrong types
        self.template: dict[str, Any] = copy.deepcopy(dict(template))
        self.container_name = str(container.get("name") or "")
        self.namespace = namespace or default_namespace()
        self.labels = dict(labels or {})
        self.ttl_seconds_after_finished = ttl_seconds_after_finished
        self.active_deadline_seconds = active_deadline_seconds
        self.backoff_limit = backoff_limit
        self.allow_cpu = allow_cpu
        self.check_spec_mounted = check_spec_mounted
        self.gpus_per_job = gpus_per_job
        self.log_tail_lines = log_tail_lines
        self.request_timeout = request_timeout
        self._owns_client = api_client is None
        self.api_client = api_client if api_client is not None else default_api_client()
        self._batch = k8s.BatchV1Api(self.api_client)
        self._core = k8s.CoreV1Api(self.api_client)
        self._lock = threading.Lock()
        self._last: dict[str, JobStatus] = {}  # last status seen, answered while the API is unreachable
        self._final: dict[str, JobStatus] = {}  # finished jobs, read once

    @classmethod
    def from_template_file(
        cls,
        path: Path | str = DEFAULT_TEMPLATE_PATH,
        namespace: str | None = None,
        api_client: k8s.ApiClient | None = None,
        **options: Any,
    ) -> KubernetesRunner:
        """A runner for the Job template in a YAML file (other options as for the constructor)."""
        return cls(load_template(path), namespace, api_client, **options)

    def close(self) -> None:
        """Close the API client if this runner created it."""
        if self._owns_client:
            self.api_client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> KubernetesRunner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the Runner protocol ---------------------------------------------------------------------

    def build(self, job_id: str, spec_path: Path | str) -> k8s.V1Job:
        """The Job :meth:`submit` would create."""
        return build_job(
            self.template,
            job_id,
            spec_path,
            namespace=self.namespace,
            labels=self.labels,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            active_deadline_seconds=self.active_deadline_seconds,
            backoff_limit=self.backoff_limit,
            allow_cpu=self.allow_cpu,
            check_spec_mounted=self.check_spec_mounted,
            gpus_per_job=self.gpus_per_job,
        )

    def submit(self, job_id: str, spec_path: Path) -> str:
        """Create the Job; return its name. A Job of the same id that already exists is adopted.

        Raises :class:`KubernetesTemplateError` for a spec path the pod cannot read (see :func:`build_job`),
        :class:`KubernetesUnavailableError` when the API cannot be reached (submitting again is safe),
        :class:`KubernetesPermissionError` without RBAC to create Jobs.
        """
        job = self.build(job_id, spec_path)
        name = str(job.metadata.name) if job.metadata and job.metadata.name else ""
        try:
            created = self._call(
                "create",
                "jobs.batch",
                lambda: self._batch.create_namespaced_job(self.namespace, job, _request_timeout=self.request_timeout),
            )
        except ApiException as exc:
            if exc.status != 409:
                raise self._failed("create", "jobs.batch", name, exc) from exc
            existing = self._call(
                "get",
                "jobs.batch",
                lambda: self._batch.read_namespaced_job(name, self.namespace, _request_timeout=self.request_timeout),
            )
            annotations = (existing.metadata.annotations if existing.metadata else None) or {}
            if annotations.get(JOB_ID_ANNOTATION) != job_id:
                raise KubernetesRunnerError(
                    f"Job {self.namespace}/{name} already exists and is not job {job_id} "
                    f"(its {JOB_ID_ANNOTATION} is {annotations.get(JOB_ID_ANNOTATION)!r})"
                ) from exc
            log.info("Job %s/%s for %s exists already; following it", self.namespace, name, job_id)
            return name
        created_name = created.metadata.name if created.metadata else None
        log.info("created Job %s/%s for %s (spec %s)", self.namespace, created_name or name, job_id, spec_path)
        return str(created_name or name)

    def status(self, handle: str) -> JobStatus:
        """Pending, running, succeeded, failed with the reason and the failed container's log tail, or GONE
        for a Job that no longer exists (deleted, or removed by its TTL before its outcome was read).

        While the API is unreachable this answers the last known state, saying so in the message.
        """
        with self._lock:
            final = self._final.get(handle)
            last = self._last.get(handle)
        if final is not None:
            return final
        try:
            job = self._call(
                "get",
                "jobs.batch",
                lambda: self._batch.read_namespaced_job_status(
                    handle, self.namespace, _request_timeout=self.request_timeout
                ),
            )
        except KubernetesUnavailableError as exc:
            log.warning("status of Job %s unknown for now: %s", handle, exc)
            known = last or JobStatus(JobState.PENDING, "submitted")
            return JobStatus(known.state, f"{exc}; last known: {known.message}".strip(), known.log_tail)
        except ApiException as exc:
            if exc.status == 404:
                status = JobStatus(
                    JobState.GONE,
                    f"Job {self.namespace}/{handle} no longer exists (deleted, or removed after it finished by "
                    f"ttlSecondsAfterFinished before its outcome was read)",
                )
                self._remember(handle, status, final=True)
                return status
            raise self._failed("get", "jobs.batch", handle, exc) from exc
        status, complete = self._interpret(handle, job)
        self._remember(handle, status, final=status.finished and complete)
        return status

    def cleanup(self, handle: str) -> None:
        """Delete the Job and (in the background) its pods; a Job already gone is fine."""
        with self._lock:
            self._last.pop(handle, None)
            self._final.pop(handle, None)
        try:
            self._call(
                "delete",
                "jobs.batch",
                lambda: self._batch.delete_namespaced_job(
                    handle, self.namespace, propagation_policy="Background", _request_timeout=self.request_timeout
                ),
            )
        except KubernetesUnavailableError as exc:
            log.warning(
                "could not delete Job %s/%s now (%s); ttlSecondsAfterFinished removes it once it finished",
                self.namespace,
                handle,
                exc,
            )
            return
        except ApiException as exc:
            if exc.status == 404:
                return
            raise self._failed("delete", "jobs.batch", handle, exc) from exc
        log.info("deleted Job %s/%s", self.namespace, handle)

    # -- internals -------------------------------------------------------------------------------

    def _remember(self, handle: str, status: JobStatus, final: bool) -> None:
        with self._lock:
            self._last[handle] = status
            if final:
                self._final[handle] = status

    def _call(self, verb: str, resource: str, request: Callable[[], _T]) -> _T:
        """Run one API request, turning permission and transient failures into the runner's errors.

        Other ``ApiException`` (404, 409, 422…) reach the caller unchanged.
        """
        try:
            return request()
        except ApiException as exc:
            if exc.status in (401, 403):
                raise KubernetesPermissionError(self._permission_message(verb, resource, exc)) from exc
            if _is_transient(exc):
                raise KubernetesUnavailableError(
                    f"Kubernetes API unavailable ({verb} {resource}: {exc.status} {_server_message(exc)})"
                ) from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesUnavailableError(f"Kubernetes API unreachable ({verb} {resource}: {exc})") from exc

    def _permission_message(self, verb: str, resource: str, exc: ApiException) -> str:
        if exc.status == 401:
            return (
                f"Kubernetes rejected the runner's credentials (401 Unauthorized) to {verb} {resource} in namespace "
                f"{self.namespace!r}: {_server_message(exc)}"
            )
        return (
            f"Kubernetes forbids the runner to {verb} {resource} in namespace {self.namespace!r} (403 Forbidden: "
            f"{_server_message(exc)}). Grant the daemon's ServiceAccount '{verb}' on '{resource}' (the Helm "
            f"chart's Role does, with retrain.rbac.create=true)"
        )

    def _failed(self, verb: str, resource: str, name: str, exc: ApiException) -> KubernetesRunnerError:
        return KubernetesRunnerError(
            f"cannot {verb} {resource} {self.namespace}/{name}: {exc.status} {exc.reason}: {_server_message(exc)}"
        )

    def _interpret(self, handle: str, job: k8s.V1Job) -> tuple[JobStatus, bool]:
        """The Job's state, and whether everything about it could be read (else: read again later)."""
        status = job.status or k8s.V1JobStatus()
        true = {c.type: c for c in status.conditions or [] if c.status == "True"}
        # FailureTarget / SuccessCriteriaMet (Kubernetes 1.31+) come first, while the pods terminate.
        failed = true.get("Failed") or true.get("FailureTarget")
        if failed is not None:
            reason = ": ".join(part for part in (failed.reason, failed.message) if part) or "Job failed"
            return self._failure(handle, reason)
        succeeded = true.get("Complete") or true.get("SuccessCriteriaMet")
        completions = (job.spec.completions if job.spec else None) or 1
        if succeeded is not None or (status.succeeded or 0) >= completions:
            when = status.completion_time.isoformat() if status.completion_time else ""
            return JobStatus(JobState.SUCCEEDED, f"succeeded {when}".strip()), True
        if "Suspended" in true:
            return JobStatus(JobState.PENDING, "suspended"), True
        active = status.active or 0
        if active and status.ready is not None and status.ready == 0:
            return self._not_ready(handle, active), True
        if active:
            return JobStatus(JobState.RUNNING, f"{active} pod(s) running"), True
        return JobStatus(JobState.PENDING, "waiting for a pod"), True

    def _pods(self, handle: str) -> list[k8s.V1Pod]:
        """The Job's pods, newest first."""
        listed = self._call(
            "list",
            "pods",
            lambda: self._core.list_namespaced_pod(
                self.namespace, label_selector=f"job-name={handle}", _request_timeout=self.request_timeout
            ),
        )
        pods = [
            pod
            for pod in listed.items or []
            if pod.metadata and any((pod.metadata.labels or {}).get(label) == handle for label in JOB_NAME_LABELS)
        ]
        return sorted(
            pods,
            key=lambda pod: (
                pod.metadata.creation_timestamp.timestamp() if pod.metadata and pod.metadata.creation_timestamp else 0.0
            ),
            reverse=True,
        )

    def _not_ready(self, handle: str, active: int) -> JobStatus:
        """An active Job without a ready pod: still pending (unschedulable, pulling…) or running."""
        try:
            pods = self._pods(handle)
        except (KubernetesRunnerError, ApiException) as exc:
            return JobStatus(JobState.RUNNING, f"{active} pod(s) active; pods unreadable: {exc}")
        for pod in pods:
            phase = pod.status.phase if pod.status else None
            if phase == "Running":
                return JobStatus(JobState.RUNNING, f"pod {_pod_name(pod)} running")
        for pod in pods:
            if pod.status and pod.status.phase == "Pending":
                return JobStatus(JobState.PENDING, f"pod {_pod_name(pod)} pending{_pending_reason(pod)}")
        return JobStatus(JobState.PENDING, f"{active} pod(s) starting")

    def _failure(self, handle: str, reason: str) -> tuple[JobStatus, bool]:
        """FAILED with the Job's reason, the failed container's exit and its log tail."""
        try:
            pods = self._pods(handle)
        except KubernetesUnavailableError as exc:
            return JobStatus(JobState.FAILED, f"{reason}; logs not read yet: {exc}"), False
        except (KubernetesRunnerError, ApiException) as exc:
            log.warning("cannot list the pods of Job %s: %s", handle, exc)
            return JobStatus(JobState.FAILED, f"{reason}; pods unreadable: {exc}"), True
        if not pods:
            return JobStatus(JobState.FAILED, f"{reason}; no pod left to read a log from"), True
        pod, container, terminated = _failed_container(pods, self.container_name)
        detail = f"pod {_pod_name(pod)}"
        if terminated is not None:
            exit_text = f"{terminated.reason or 'terminated'}, exit code {terminated.exit_code}"
            detail += f" container {container}: {exit_text}"
            if terminated.message:
                detail += f" ({terminated.message.strip()[-500:]})"
        try:
            text = self._call(
                "get",
                "pods/log",
                lambda: self._core.read_namespaced_pod_log(
                    _pod_name(pod),
                    self.namespace,
                    container=container or None,
                    tail_lines=self.log_tail_lines,
                    _request_timeout=self.request_timeout,
                ),
            )
        except KubernetesUnavailableError as exc:
            return JobStatus(JobState.FAILED, f"{reason}; {detail}; log not read yet: {exc}"), False
        except (KubernetesRunnerError, ApiException) as exc:
            log.warning("cannot read the log of pod %s: %s", _pod_name(pod), exc)
            unreadable = _server_message(exc) if isinstance(exc, ApiException) else str(exc)
            return JobStatus(JobState.FAILED, f"{reason}; {detail}; log unreadable: {unreadable}"), True
        return JobStatus(JobState.FAILED, f"{reason}; {detail}", str(text or "")[-LOG_TAIL_BYTES:]), True


def _pod_name(pod: k8s.V1Pod) -> str:
    return str(pod.metadata.name) if pod.metadata and pod.metadata.name else ""


def _pending_reason(pod: k8s.V1Pod) -> str:
    """Why a pod is pending: unschedulable (no GPU node?), image pull errors…"""
    status = pod.status
    if status is None:
        return ""
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f": {condition.reason or 'unscheduled'}: {condition.message or ''}".rstrip(": ")
    for container_status in status.container_statuses or []:
        waiting = container_status.state.waiting if container_status.state else None
        if waiting is not None and waiting.reason:
            return f": {waiting.reason}: {waiting.message or ''}".rstrip(": ")
    return ""


def _failed_container(
    pods: list[k8s.V1Pod], preferred: str
) -> tuple[k8s.V1Pod, str, k8s.V1ContainerStateTerminated | None]:
    """The newest pod with a container that exited non-zero, that container, and how it ended."""
    for pod in pods:
        statuses = (pod.status.container_statuses if pod.status else None) or []
        for container_status in sorted(statuses, key=lambda s: s.name != preferred):
            for state in (container_status.state, container_status.last_state):
                terminated = state.terminated if state else None
                if terminated is not None and terminated.exit_code != 0:
                    return pod, container_status.name, terminated
    return pods[0], preferred, None
