"""The Grafana dashboard in the chart: its PromQL names only exported metrics, passes promtool, ships in a ConfigMap."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import CHART, Catalogue, daemon_catalogue, metric_selectors, promtool, render

DASHBOARD = CHART / "dashboards" / "insightloop.json"
# What Grafana substitutes before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*"}
# What the issue asks the dashboard to show, as the metrics that show it.
REQUIRED = {
    "throughput": "insightloop_texts_scored_total",
    "latency": "insightloop_scoring_latency_seconds_bucket",
    "consumer lag": "insightloop_consumer_lag",
    "dead letters": "insightloop_dead_letters_total",
    "drift statistic": "insightloop_drift_statistic",
    "drift threshold": "insightloop_drift_threshold",
    "labeled accuracy": "insightloop_labeled_accuracy",
    "estimated accuracy": "insightloop_estimated_accuracy",
    "insights": "insightloop_insights_total",
    "retraining jobs": "insightloop_retrain_jobs_total",
    "candidates waiting": "insightloop_candidates_pending_approval",
    "serving version": "insightloop_model_version_info",
}


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables substituted) for every query target."""
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = str(target["expr"])
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((str(panel["title"]), expr))
    return found


def metric_problems(exprs: list[tuple[str, str]], catalogue: Catalogue) -> list[str]:
    problems = []
    for title, expr in exprs:
        for name, labels in metric_selectors(expr):
            if name not in catalogue.series:
                problems.append(f"{title}: metric {name} is not exported by the daemon")
                continue
            unknown = labels - catalogue.series[name] - {"namespace", "job", "pod", "instance"}
            if unknown:
                problems.append(f"{title}: {name} has no label {', '.join(sorted(unknown))}")
    return problems


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return daemon_catalogue()


def test_every_expression_names_only_metrics_the_daemon_exports(catalogue: Catalogue) -> None:
    exprs = expressions(dashboard())
    assert len(exprs) >= len(REQUIRED)
    assert metric_problems(exprs, catalogue) == []


def test_the_check_catches_a_metric_that_does_not_exist(catalogue: Catalogue) -> None:
    wrong = [("typo", 'sum(rate(insightloop_text_scored_total{namespace=~".*"}[5m]))')]
    assert metric_problems(wrong, catalogue) == [
        "typo: metric insightloop_text_scored_total is not exported by the daemon"
    ]
    wrong_label = [("label", 'max by (detector) (insightloop_drift_statistic{kind="x"})')]
    assert metric_problems(wrong_label, catalogue) == ["label: insightloop_drift_statistic has no label kind"]


def test_the_namespace_variable_queries_an_exported_metric(catalogue: Catalogue) -> None:
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "namespace"]
    match = re.fullmatch(r"label_values\((\w+), namespace\)", variable["definition"])
    assert match and match.group(1) in catalogue.series


def test_every_panel_the_issue_asks_for_is_there() -> None:
    used = {name for _, expr in expressions(dashboard()) for name, _ in metric_selectors(expr)}
    assert {what: metric for what, metric in REQUIRED.items() if metric not in used} == {}


def test_panels_have_unique_ids_and_sit_on_the_grid() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_expression_passes_promtool(tmp_path: Path) -> None:
    exprs = expressions(dashboard())
    rules = [{"record": f"insightloop:dashboard:{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    rules = [{"record": "insightloop:dashboard:broken", "expr": "sum(rate(insightloop_texts_scored_total[5m])"}]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode != 0


def test_no_configmap_unless_enabled() -> None:
    rendered = render()
    assert [d for d in rendered.of_kind("ConfigMap") if "insightloop.json" in d.get("data", {})] == []


def test_enabled_renders_the_dashboard_with_the_sidecar_label() -> None:
    rendered = render(sets={"grafanaDashboard.enabled": "true"})
    (cm,) = [d for d in rendered.of_kind("ConfigMap") if "insightloop.json" in d.get("data", {})]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "ml"
    assert json.loads(cm["data"]["insightloop.json"]) == dashboard()


def test_label_namespace_and_annotations_are_configurable() -> None:
    rendered = render(
        sets={
            "grafanaDashboard.enabled": "true",
            "grafanaDashboard.label": "dashboards",
            "grafanaDashboard.labelValue": "insightloop",
            "grafanaDashboard.namespace": "monitoring",
            "grafanaDashboard.annotations.grafana_folder": "ML",
        }
    )
    (cm,) = [d for d in rendered.of_kind("ConfigMap") if "insightloop.json" in d.get("data", {})]
    assert cm["metadata"]["labels"]["dashboards"] == "insightloop"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
