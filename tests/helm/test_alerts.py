"""The PrometheusRule: promtool checks and unit tests, and metric names the daemon really exports."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import (
    CHART,
    NAMESPACE,
    PROMTOOL_TESTS,
    Rendered,
    alert_metric_problems,
    daemon_catalogue,
    metric_selectors,
    promtool,
    render,
    write_rules,
)

ALERTS = {
    "InsightloopDriftDetected",
    "InsightloopLabeledAccuracyLow",
    "InsightloopEstimatedAccuracyLow",
    "InsightloopRetrainJobFailed",
    "InsightloopRetrainJobStuck",
    "InsightloopCandidatePendingApproval",
    "InsightloopScoringLagGrowing",
    "InsightloopDeadLetterRateHigh",
    "InsightloopModelLoadFailed",
    "InsightloopDaemonDown",
    "InsightloopDaemonAbsent",
    "InsightloopWorkerDown",
}
# Long static annotations, checked here rather than repeated in alerts_test.yaml.
UNTESTED_ANNOTATIONS = ("description", "runbook")


def unit_test(rendered: Rendered, workdir: Path) -> tuple[int, str]:
    """`promtool test rules` of tests/helm/alerts_test.yaml against the rendered rules."""
    write_rules(rendered.rule_groups(), workdir, drop_annotations=UNTESTED_ANNOTATIONS)
    shutil.copy(PROMTOOL_TESTS, workdir / "alerts_test.yaml")
    result = promtool("test", "rules", "alerts_test.yaml", cwd=workdir)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("which", ["monitored", "everything"])
def test_promtool_check_rules_passes(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    write_rules(rendered.rule_groups(), tmp_path)
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass(monitored: Rendered, tmp_path: Path) -> None:
    code, output = unit_test(monitored, tmp_path)
    assert code == 0, output
    assert "SUCCESS" in output


def test_every_alert_fires_in_a_unit_test_and_stays_silent_on_healthy_series(monitored: Rendered) -> None:
    assert {a["alert"] for a in monitored.alerts()} == ALERTS
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c.get("exp_alerts")}
    assert fired == ALERTS
    (healthy,) = [t for t in tests if t["name"] == "healthy series raise nothing"]
    silent = {c["alertname"] for c in healthy["alert_rule_test"] if c["exp_alerts"] == []}
    assert silent == ALERTS


def test_unit_tests_notice_a_changed_threshold(tmp_path: Path) -> None:
    rendered = render(
        sets={"prometheusRule.enabled": "true", "prometheusRule.alerts.labeledAccuracyLow.threshold": "0.5"}
    )
    code, output = unit_test(rendered, tmp_path)
    assert code != 0
    assert "InsightloopLabeledAccuracyLow" in output


def test_every_alert_has_a_severity_summary_and_runbook(everything: Rendered) -> None:
    for alert in everything.alerts():
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, alert["alert"]
        assert alert["labels"]["team"] == "ml-platform"
        for key in ("summary", "description", "runbook"):
            assert len(alert["annotations"].get(key, "")) > 20, (alert["alert"], key)


def test_alerts_select_this_release_and_take_thresholds_from_values(everything: Rendered) -> None:
    exprs = {a["alert"]: a["expr"] for a in everything.alerts()}
    for expr in exprs.values():
        assert f'job="il-metrics", namespace="{NAMESPACE}"' in expr
    assert exprs["InsightloopLabeledAccuracyLow"].endswith("< 0.9")
    assert exprs["InsightloopEstimatedAccuracyLow"].endswith("< 0.88")
    assert exprs["InsightloopRetrainJobStuck"].endswith("> 14400")
    assert exprs["InsightloopCandidatePendingApproval"].endswith("> 43200")
    assert "> 5000" in exprs["InsightloopScoringLagGrowing"] and "[15m]" in exprs["InsightloopScoringLagGrowing"]
    assert exprs["InsightloopDeadLetterRateHigh"].endswith("> 0.01")
    assert "[2h]" in exprs["InsightloopRetrainJobFailed"]
    fors = {a["alert"]: a.get("for") for a in everything.alerts()}
    assert fors["InsightloopDriftDetected"] == "30m" and fors["InsightloopDaemonDown"] == "10m"


def test_alerts_can_be_switched_off_one_by_one() -> None:
    rendered = render(
        sets={
            "prometheusRule.enabled": "true",
            "prometheusRule.alerts.driftDetected.enabled": "false",
            "prometheusRule.alerts.daemonDown.enabled": "false",
        }
    )
    names = {a["alert"] for a in rendered.alerts()}
    assert names == ALERTS - {"InsightloopDriftDetected", "InsightloopDaemonDown", "InsightloopDaemonAbsent"}


def test_a_group_without_alerts_is_left_out_and_no_alerts_means_no_prometheusrule(tmp_path: Path) -> None:
    off = {"prometheusRule.enabled": "true"}
    off |= {f"prometheusRule.alerts.{a}.enabled": "false" for a in ("daemonDown", "workerDown")}
    rendered = render(sets=off)
    assert [g["name"] for g in rendered.rule_groups()] == ["insightloop.model", "insightloop.retraining"]
    write_rules(rendered.rule_groups(), tmp_path)
    assert promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode == 0
    every = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["prometheusRule"]["alerts"]
    off |= {f"prometheusRule.alerts.{a}.enabled": "false" for a in every}
    assert not render(sets=off).of_kind("PrometheusRule")


# --- metric names ------------------------------------------------------------------------------


def test_the_catalogue_is_what_prometheus_stores() -> None:
    catalogue = daemon_catalogue().series
    assert "insightloop_texts_scored_total" in catalogue  # counters: stored with _total
    assert "insightloop_texts_scored" not in catalogue
    assert "insightloop_scoring_latency_seconds_bucket" in catalogue
    assert catalogue["insightloop_retrain_jobs_total"] == {"state"}
    assert catalogue["insightloop_consumer_lag"] == {"topic", "partition"}


def test_every_metric_in_an_alert_is_exported_by_the_daemon(everything: Rendered) -> None:
    used = {name for a in everything.alerts() for name, _ in metric_selectors(a["expr"])}
    assert used >= {
        "up",
        "insightloop_drift_detected",
        "insightloop_dead_letters_total",
        "insightloop_texts_scored_total",
        "insightloop_retrain_jobs_total",
    }
    assert alert_metric_problems(everything.alerts(), daemon_catalogue()) == []


def test_metric_selectors_skip_functions_keywords_and_grouping_labels() -> None:
    expr = (
        'sum by (namespace, topic) (rate(insightloop_x_total{job="a", state=~"f.*"}[5m] offset 1h)) '
        "> 0 and on (namespace) absent(up) or insightloop_y unless insightloop_z > bool 3"
    )
    assert metric_selectors(expr) == [
        ("insightloop_x_total", {"job", "state"}),
        ("up", set()),
        ("insightloop_y", set()),
        ("insightloop_z", set()),
    ]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("insightloop_consumer_lag{", "insightloop_consumer_lags{", "metric insightloop_consumer_lags is not exported"),
        (
            "insightloop_dead_letters_total{",
            "insightloop_dead_letters{",
            "metric insightloop_dead_letters is not exported",
        ),  # a counter without its _total
        ('state="failed"', 'phase="failed"', "insightloop_retrain_jobs_total has no label phase"),
    ],
)
def test_a_wrong_metric_or_label_name_in_an_alert_is_caught(
    everything: Rendered, old: str, new: str, problem: str
) -> None:
    alerts: list[dict[str, Any]] = copy.deepcopy(everything.alerts())
    for alert in alerts:
        alert["expr"] = alert["expr"].replace(old, new)
    problems = alert_metric_problems(alerts, daemon_catalogue())
    assert any(problem in p for p in problems), problems


def test_a_misspelt_metric_in_the_chart_template_is_caught(tmp_path: Path) -> None:
    chart = tmp_path / "insightloop"
    shutil.copytree(CHART, chart)
    template = chart / "templates" / "prometheusrule.yaml"
    text = template.read_text(encoding="utf-8")
    template.write_text(
        text.replace("insightloop_candidate_oldest_pending_seconds{", "insightloop_candidates_oldest_pending_seconds{"),
        encoding="utf-8",
    )
    rendered = render(chart, sets={"prometheusRule.enabled": "true"})
    problems = alert_metric_problems(rendered.alerts(), daemon_catalogue())
    assert problems == [
        "InsightloopCandidatePendingApproval: metric insightloop_candidates_oldest_pending_seconds "
        "is not exported by the daemon"
    ]
    # promtool cannot know the daemon's names, but the unit tests notice the alert no longer fires
    code, output = unit_test(rendered, tmp_path)
    assert code != 0 and "InsightloopCandidatePendingApproval" in output
