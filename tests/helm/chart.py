"""Render the chart and check what comes out: the functions the chart tests call.

Each ``*_problems`` function returns a list of human-readable problems (empty when all is well), so
a test can assert both that the real chart passes and that a deliberately broken one is caught.
The external tools (helm, promtool, kubernetes-validate) run as subprocesses with timeouts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "insightloop"
HERE = Path(__file__).resolve().parent
VALUES_ALL = HERE / "values-all.yaml"
PROMTOOL_TESTS = HERE / "alerts_test.yaml"
TOOLS_DIR = Path(os.environ.get("INSIGHTLOOP_TOOLS_DIR", "/opt/insightloop-tools"))

# What the promtool unit tests assume: `helm template insightloop … --namespace ml`.
RELEASE = "insightloop"
NAMESPACE = "ml"
# Oldest and newest Kubernetes the chart supports (Chart.yaml kubeVersion >=1.25) and the validator knows.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
TIMEOUT_S = 60


def missing(what: str) -> None:
    """Skip locally, fail in CI: CI must have every tool (``.ci/chart-tools.sh`` installs them)."""
    message = f"{what} is not installed: run .ci/chart-tools.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def find_tool(name: str) -> str:
    """The tool from ``$INSIGHTLOOP_TOOLS_DIR/bin`` (pinned versions) or else from PATH."""
    pinned = TOOLS_DIR / "bin" / name
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    found = shutil.which(name)
    if found is None:
        missing(name)
    assert found is not None
    return found


def run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; never raises on a non-zero exit (callers assert on it)."""
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@dataclass
class Rendered:
    """The output of one ``helm template``."""

    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def core(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] not in CRD_KINDS]

    def config_yaml(self) -> str:
        """The daemon's config file from the ConfigMap."""
        (cm,) = [d for d in self.of_kind("ConfigMap") if "config.yaml" in d.get("data", {})]
        return str(cm["data"]["config.yaml"])

    def job_template(self) -> dict[str, Any]:
        """The retraining Job manifest from its ConfigMap."""
        (cm,) = [d for d in self.of_kind("ConfigMap") if "job.yaml" in d.get("data", {})]
        job = yaml.safe_load(cm["data"]["job.yaml"])
        assert isinstance(job, dict)
        return job

    def rule_groups(self) -> list[dict[str, Any]]:
        """The ``groups`` of the PrometheusRule, as a Prometheus rule file has them."""
        return list(self.one("PrometheusRule")["spec"]["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return [rule for group in self.rule_groups() for rule in group["rules"] if "alert" in rule]


def helm_args(values: Iterable[Path] = (), sets: Mapping[str, str] | None = None) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["--values", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def template(
    chart: Path = CHART, values: Iterable[Path] = (), sets: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``helm template`` as a process result (for tests that expect it to fail)."""
    return run([find_tool("helm"), "template", RELEASE, str(chart), "--namespace", NAMESPACE, *helm_args(values, sets)])


def render(chart: Path = CHART, values: Iterable[Path] = (), sets: Mapping[str, str] | None = None) -> Rendered:
    """``helm template`` that must succeed, parsed into documents."""
    result = template(chart, values, sets)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(docs)


def lint(chart: Path = CHART, values: Iterable[Path] = (), sets: Mapping[str, str] | None = None) -> list[str]:
    """Problems ``helm lint --strict`` reports (empty when it passes)."""
    result = run(
        [find_tool("helm"), "lint", "--strict", str(chart), "--namespace", NAMESPACE, *helm_args(values, sets)]
    )
    if result.returncode == 0:
        return []
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


# --- Kubernetes objects -------------------------------------------------------------------------


def core_problems(docs: Sequence[Mapping[str, Any]], workdir: Path) -> list[str]:
    """``kubernetes-validate --strict`` on core kinds, against the oldest and newest supported version."""
    path = workdir / "core.yaml"
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False), encoding="utf-8")
    problems = []
    for version in KUBE_VERSIONS:
        result = run(
            [
                sys.executable,
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "--no-warn",
                "--kubernetes-version",
                version,
                str(path),
            ]
        )
        if result.returncode != 0:
            problems += [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
            problems.append(f"kubernetes-validate --strict against {version} exited {result.returncode}")
    return problems


def _dropped_keys(given: Any, kept: Any, path: str = "") -> list[str]:
    """Keys present in ``given`` but not in the model's dump: fields the model does not know."""
    if isinstance(given, Mapping):
        if not isinstance(kept, Mapping):
            return [path or "(top)"]
        out = []
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            out += [where] if key not in kept else _dropped_keys(value, kept[key], where)
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p for i, (g, k) in enumerate(zip(given, kept, strict=False)) for p in _dropped_keys(g, k, f"{path}[{i}]")
        ]
    return []


def crd_problems(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """ServiceMonitor/PrometheusRule objects through cloudcoil's prometheus-operator models.

    The models ignore unknown fields, so a key that does not survive the round trip is reported too.
    """
    try:
        from cloudcoil.models.prometheus_operator import v1
    except ImportError:
        missing("cloudcoil-models-prometheus-operator")
    from pydantic import BaseModel, ValidationError

    models: dict[str, type[BaseModel]] = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}
    problems = []
    for doc in docs:
        model = models.get(str(doc.get("kind")))
        if model is None:
            continue
        name = f"{doc['kind']}/{doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"{name}: apiVersion {doc.get('apiVersion')!r}, expected monitoring.coreos.com/v1")
        try:
            obj = model.model_validate(doc)
        except ValidationError as exc:
            problems += [f"{name}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            continue
        dumped = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
        problems += [f"{name}: unknown field {key}" for key in _dropped_keys(doc, dumped)]
    return problems


# --- the retraining Job -------------------------------------------------------------------------


def job_template_problems(job: Mapping[str, Any], registry_claim: str, registry_mount: str) -> list[str]:
    """What the Kubernetes runner relies on in the Job template."""
    problems = []
    if (job.get("apiVersion"), job.get("kind")) != ("batch/v1", "Job"):
        problems.append(f"not a batch/v1 Job: {job.get('apiVersion')} {job.get('kind')}")
    pod = job.get("spec", {}).get("template", {}).get("spec", {})
    containers = pod.get("containers") or []
    if len(containers) != 1:
        return [*problems, f"expected one container, found {len(containers)}"]
    (container,) = containers
    command = [*container.get("command", []), *container.get("args", [])]
    if "retrain" not in command or "--spec" not in command:
        problems.append(f"the container does not run `insightloop retrain --spec …`: {command}")
    gpus = (container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")
    try:
        gpu_count = int(gpus)
    except (TypeError, ValueError):
        gpu_count = 0
    if gpu_count < 1:
        problems.append(f"no nvidia.com/gpu limit on the training container (got {gpus!r})")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"restartPolicy {pod.get('restartPolicy')!r}: a Job needs Never or OnFailure")
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    if claims.get(mounts.get(registry_mount, "")) != registry_claim:
        problems.append(f"the registry PVC {registry_claim} is not mounted at {registry_mount}")
    return problems


# --- alert rules and the daemon's metrics --------------------------------------------------------

# Metric names an alert may use that are not the daemon's own.
PROMETHEUS_METRICS = {"up"}
# Labels Prometheus or the Prometheus Operator add to every scraped series.
TARGET_LABELS = {"job", "namespace", "instance", "pod", "service", "endpoint", "container", "role"}
# PromQL words that can look like metric names.
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "rate",
    "increase",
    "delta",
    "deriv",
    "absent",
    "humanizePercentage",
    "inf",
    "nan",
}


@dataclass
class Catalogue:
    """Series names and label names the daemon exports (from ``insightloop.daemon.metrics.Metrics``)."""

    series: dict[str, set[str]]  # exposed series name -> its label names


def daemon_catalogue() -> Catalogue:
    """Parse the daemon's /metrics text: every family, with the series names Prometheus will store."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from insightloop.daemon.metrics import Metrics

    metrics = Metrics()
    # Label names are not in the text output for families without children yet; take them from
    # the declarations (prometheus_client keeps them on each metric object).
    labels_of = {m._name: set(m._labelnames) for m in vars(metrics).values() if hasattr(m, "_labelnames")}
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    series: dict[str, set[str]] = {}
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        labels = labels_of.get(family.name, set())
        for suffix in suffixes.get(family.type, ("",)):
            series[family.name + suffix] = set(labels) | ({"le"} if suffix == "_bucket" else set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return Catalogue(series)


_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")


def metric_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for each metric selector in a PromQL expression."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    found = []
    for match in _SELECTOR.finditer(without_strings):
        name, braces = match.group(1), match.group(2)
        after = without_strings[match.end() :].lstrip()
        if name in PROMQL_WORDS or (after.startswith("(") and not braces):
            continue  # a function or keyword
        if re.fullmatch(r"[0-9.]+[smhdwy]?", name) or name.isdigit():
            continue
        # words inside "by (…)" / "without (…)" are label names, not metrics
        before = without_strings[: match.start()].rstrip()
        if re.search(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$", before):
            continue
        labels = {m.group(1) for m in _LABEL.finditer(braces or "")}
        found.append((name, labels))
    return found


def alert_metric_problems(alerts: Sequence[Mapping[str, Any]], catalogue: Catalogue) -> list[str]:
    """Metric or label names in alert expressions that the daemon does not export."""
    problems = []
    for rule in alerts:
        for name, labels in metric_selectors(str(rule["expr"])):
            if name in PROMETHEUS_METRICS:
                continue
            if name not in catalogue.series:
                problems.append(f"{rule['alert']}: metric {name} is not exported by the daemon")
                continue
            unknown = labels - catalogue.series[name] - TARGET_LABELS
            if unknown:
                problems.append(f"{rule['alert']}: {name} has no label {', '.join(sorted(unknown))}")
    return problems


def write_rules(
    alerts_doc_groups: Sequence[Mapping[str, Any]], workdir: Path, drop_annotations: Iterable[str] = ()
) -> Path:
    """Write a Prometheus rule file (``rules.yaml``) from PrometheusRule groups."""
    drop = set(drop_annotations)
    groups = []
    for group in alerts_doc_groups:
        rules = []
        for rule in group["rules"]:
            rule = dict(rule)
            if "annotations" in rule:
                rule["annotations"] = {k: v for k, v in rule["annotations"].items() if k not in drop}
            rules.append(rule)
        groups.append({**group, "rules": rules})
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run([find_tool("promtool"), *args], cwd=cwd)
