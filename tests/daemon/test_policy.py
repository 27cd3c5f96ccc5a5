"""The controller's policy, row by row: each row asserts the decision and the reason a person reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from insightloop.daemon.config import ControllerConfig
from insightloop.daemon.policy import (
    Follow,
    Launch,
    RecordCandidate,
    RecordFailure,
    RunningJob,
    Wait,
    admits,
    decide,
    follow_up,
    priority,
)
from insightloop.daemon.state import ControllerState, PendingInsight
from insightloop.deploy import GateVerdict
from insightloop.detectors import (
    Adjustments,
    Evidence,
    Insight,
    InsightKind,
    Recommendation,
    Severity,
    SliceFinding,
    WindowSpan,
)
from insightloop.detectors.insight import Action
from insightloop.retrain import JobResult, JobState, JobStatus

NOW = 1_750_000_000.0
DAY = "2025-06-15"
FRESH = ControllerState(DAY, 0.0, None)  # a new day: nothing spent, never launched
POLICY = ControllerConfig(
    cooldown_s=100,
    min_new_labels=200,
    max_concurrent_jobs=1,
    gpu_hours_per_day=2,
    max_retries=1,
    job_timeout_s=7200,
    gpus_per_job=1,
)


def insight(
    insight_id: str,
    drop: float | None = None,
    share: float | None = None,
    ratio: float = 2.0,
    model: str = "v0001",
    severity: Severity = "warning",
    kind: InsightKind = "text_drift",
    action: Action = "retrain",
) -> Insight:
    metrics = {"accuracy_drop": drop} if drop is not None else {}
    slices = (
        [
            SliceFinding(
                key="meta.domain=kitchen",
                field="meta.domain",
                value="kitchen",
                count=10,
                share_current=share,
                metric="error_rate",
            )
        ]
        if share is not None
        else []
    )
    return Insight(
        id=insight_id,
        detector="test",
        kind=kind,
        severity=severity,
        window=WindowSpan(count=300),
        statistic=ratio,
        threshold=1.0,
        evidence=Evidence(metrics=metrics, slices=slices),
        summary=f"insight {insight_id}",
        recommendation=Recommendation(action=action, adjust=Adjustments(), because="test"),
        created_at=datetime.fromtimestamp(NOW - 1000, UTC),
        model_version=model,
    )


def pending(insight_id: str, began: float = NOW - 1000, attempts: int = 0, **kw: Any) -> PendingInsight:
    return PendingInsight(insight(insight_id, **kw), began, attempts)


@dataclass
class Row:
    pending: list[PendingInsight]
    expect: str  # "wait" or the id of the insight launched
    reason: str
    running: list[RunningJob] = field(default_factory=list)
    budget: ControllerState = FRESH
    labels: dict[float, int] | int = 250
    champion: str | None = "v0001"
    policy: dict[str, Any] = field(default_factory=dict)
    joins: tuple[str, ...] = ()


ROWS: dict[str, Row] = {
    "nothing pending": Row([], "wait", "no pending insight"),
    "an info insight is never a job": Row(
        [pending("a", severity="info", drop=0.3)],
        "wait",
        "no pending insight calls for a job (info, no action, or not a kind acted on)",
        policy={"min_severity": "info"},
    ),
    "beside an info insight the warning goes": Row(
        [pending("a", severity="info", drop=0.3), pending("b", drop=0.05)],
        "b",
        "insight b: 250 new labels (of 200 needed), attempt 1 of 2",
        policy={"min_severity": "info"},
    ),
    "too few labels": Row([pending("a")], "wait", "insight a waits for labels: 12 of 200", labels=12),
    "no labels at all": Row([pending("a")], "wait", "insight a waits for labels: 0 of 200", labels=0),
    "exactly enough labels": Row(
        [pending("a")], "a", "insight a: 200 new labels (of 200 needed), attempt 1 of 2", labels=200
    ),
    "one label short": Row([pending("a")], "wait", "insight a waits for labels: 199 of 200", labels=199),
    "labels counted since the chosen insight began": Row(
        [pending("a", began=NOW - 50, drop=0.3), pending("b", began=NOW - 5000, drop=0.1)],
        "wait",
        "insight a waits for labels: 20 of 200",
        labels={NOW - 50: 20, NOW - 5000: 900},
    ),
    "max concurrent jobs": Row(
        [pending("a")], "wait", "max concurrent jobs: 1 of 1 running", running=[RunningJob("job-1", "other")]
    ),
    "more jobs allowed": Row(
        [pending("a")],
        "a",
        "insight a: 250 new labels (of 200 needed), attempt 1 of 2",
        running=[RunningJob("job-1", "other")],
        policy={"max_concurrent_jobs": 2},
    ),
    "cooldown": Row([pending("a")], "wait", "cooldown: 40 s left", budget=ControllerState(DAY, 0.0, NOW - 60)),
    "cooldown rounds seconds up": Row(
        [pending("a")], "wait", "cooldown: 1 s left", budget=ControllerState(DAY, 0.0, NOW - 99.5)
    ),
    "cooldown over": Row(
        [pending("a")],
        "a",
        "insight a: 250 new labels (of 200 needed), attempt 1 of 2",
        budget=ControllerState(DAY, 0.0, NOW - 100),
    ),
    "no cooldown configured": Row(
        [pending("a")],
        "a",
        "insight a: 250 new labels (of 200 needed), attempt 1 of 2",
        budget=ControllerState(DAY, 0.0, NOW - 1),
        policy={"cooldown_s": 0},
    ),
    "GPU-hour budget spent": Row(
        [pending("a")], "wait", "GPU-hour budget spent: 2.00 of 2 h today", budget=ControllerState(DAY, 7200.0, None)
    ),
    "GPU-hour budget overspent": Row(
        [pending("a")], "wait", "GPU-hour budget spent: 3.50 of 2 h today", budget=ControllerState(DAY, 12600.0, None)
    ),
    "GPU-hour budget nearly spent": Row(
        [pending("a")],
        "a",
        "insight a: 250 new labels (of 200 needed), attempt 1 of 2",
        budget=ControllerState(DAY, 7199.0, None),
    ),
    "no production model": Row([pending("a")], "wait", "no production model", champion=None),
    "every insight has a job": Row(
        [pending("a")],
        "wait",
        "every pending insight has a job running",
        running=[RunningJob("job-1", "a")],
        policy={"max_concurrent_jobs": 2},
    ),
    "a busy insight leaves the other": Row(
        [pending("a", drop=0.5), pending("b", drop=0.1)],
        "b",
        "insight b: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        running=[RunningJob("job-1", "a")],
        policy={"max_concurrent_jobs": 2},
        joins=("a",),
    ),
    "retries used up": Row([pending("a", attempts=2)], "wait", "retries used up: 2 attempt(s) each"),
    "no retries configured": Row(
        [pending("a", attempts=1)], "wait", "retries used up: 1 attempt(s) each", policy={"max_retries": 0}
    ),
    "a retry": Row([pending("a", attempts=1)], "a", "insight a: 250 new labels (of 200 needed), attempt 2 of 2"),
    "the larger loss goes first": Row(
        [pending("a", drop=0.05), pending("b", drop=0.2)],
        "b",
        "insight b: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        joins=("a",),
    ),
    "loss times traffic share": Row(
        [pending("a", drop=0.2, share=0.1), pending("b", drop=0.05)],
        "b",
        "insight b: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        joins=("a",),
    ),
    "drift without a loss ranks by ratio": Row(
        [pending("a", ratio=2.0), pending("b", ratio=3.0)],
        "b",
        "insight b: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        joins=("a",),
    ),
    "a measured loss beats a small drift": Row(
        [pending("a", ratio=3.0), pending("b", drop=0.1)],
        "b",
        "insight b: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        joins=("a",),
    ),
    "equal priority: the older first": Row(
        [pending("late", began=NOW - 10), pending("early", began=NOW - 900)],
        "early",
        "insight early: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        joins=("late",),
    ),
    "an exhausted insight does not block another": Row(
        [pending("a", attempts=2, drop=0.5), pending("b", drop=0.1)],
        "b",
        "insight b: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        joins=("a",),
    ),
    "only insights on the same model join": Row(
        [pending("a", drop=0.3), pending("b", drop=0.1), pending("c", drop=0.1, model="v0002")],
        "a",
        "insight a: 250 new labels (of 200 needed), attempt 1 of 2, with 1 other insight(s)",
        joins=("b",),
    ),
    "concurrency is checked before cooldown": Row(
        [pending("a")],
        "wait",
        "max concurrent jobs: 1 of 1 running",
        running=[RunningJob("job-1", "other")],
        budget=ControllerState(DAY, 9000.0, NOW - 10),
    ),
    "cooldown is checked before the budget": Row(
        [pending("a")], "wait", "cooldown: 90 s left", budget=ControllerState(DAY, 9000.0, NOW - 10)
    ),
    "the budget is checked before labels": Row(
        [pending("a")],
        "wait",
        "GPU-hour budget spent: 2.50 of 2 h today",
        budget=ControllerState(DAY, 9000.0, None),
        labels=0,
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_decide(row: Row) -> None:
    asked: list[float] = []

    def labels_since(began: float) -> int:
        asked.append(began)
        return row.labels[began] if isinstance(row.labels, dict) else row.labels

    policy = POLICY.model_copy(update=row.policy)
    decision = decide(row.pending, row.running, row.budget, labels_since, policy, row.champion, NOW)
    assert decision.reason == row.reason
    if row.expect == "wait":
        assert isinstance(decision, Wait)
    else:
        assert isinstance(decision, Launch)
        assert decision.insight.insight.id == row.expect
        assert tuple(i.id for i in decision.joins) == row.joins
        assert [i.id for i in decision.insights] == [row.expect, *row.joins]
        assert decision.labels == (row.labels if isinstance(row.labels, int) else row.labels[decision.insight.began_at])
        assert asked == [decision.insight.began_at], "labels are counted for the chosen insight only"


def test_decide_is_pure() -> None:
    rows = [pending("a", drop=0.1), pending("b", drop=0.2)]
    first = decide(rows, [], ControllerState(DAY, 0.0, None), lambda _: 300, POLICY, "v0001", NOW)
    again = decide(rows, [], ControllerState(DAY, 0.0, None), lambda _: 300, POLICY, "v0001", NOW)
    assert first == again
    assert [p.insight.id for p in rows] == ["a", "b"], "the inputs are not reordered"


def test_priority_of_a_merged_quality_insight_reads_its_loss() -> None:
    assert priority(insight("a", drop=0.2)) == pytest.approx(0.2, abs=1e-3)
    assert priority(insight("a", drop=-0.2, share=0.5)) == pytest.approx(0.1, abs=1e-3)
    assert priority(insight("a", ratio=4.0)) == pytest.approx(0.04, abs=1e-3)


# -- following ----------------------------------------------------------------------------------------


def result(
    version: str | None = None, passed: bool = True, error: str | None = None, seconds: float = 0.0
) -> JobResult:
    gate = GateVerdict(passed=passed, reasons=["recent accuracy +0.05"]) if version else None
    return JobResult(
        job_id="job-1",
        state="failed" if error else "succeeded",
        version=version,
        gate=gate,
        error=error,
        seconds=seconds,
    )


@dataclass
class FollowRow:
    status: JobStatus
    result: JobResult | None
    expect: type[Follow] | type[RecordCandidate] | type[RecordFailure]
    reason: str
    attempt: int = 1
    age_s: float = 60.0
    retry: bool | None = None
    stop: bool = False
    version: str | None = None
    gate_passed: bool | None = None
    gpu_seconds: float | None = None
    gpus: int | None = None


RUNNING = JobStatus(JobState.RUNNING, "pid 42")
SUCCEEDED = JobStatus(JobState.SUCCEEDED, "exit code 0")
FAILED = JobStatus(JobState.FAILED, "exit code 1", "Traceback ...")
UNKNOWN = JobStatus(JobState.UNKNOWN, "no job retrain-1 started by this process (it restarted?)")
GONE = JobStatus(JobState.GONE, "Job ml/insightloop-retrain-1 no longer exists")

FOLLOW_ROWS: dict[str, FollowRow] = {
    "running": FollowRow(RUNNING, None, Follow, "running: pid 42"),
    "pending": FollowRow(JobStatus(JobState.PENDING, "waiting for a pod"), None, Follow, "pending: waiting for a pod"),
    "running at the timeout": FollowRow(RUNNING, None, Follow, "running: pid 42", age_s=7200),
    "running past the timeout": FollowRow(
        RUNNING,
        None,
        RecordFailure,
        "stopped after 7201 s (controller.job_timeout_s); will retry",
        age_s=7201,
        retry=True,
        stop=True,
        gpu_seconds=7201,
    ),
    "past the timeout, last attempt": FollowRow(
        RUNNING,
        None,
        RecordFailure,
        "stopped after 7201 s (controller.job_timeout_s); retries used up, giving up on its insight",
        age_s=7201,
        attempt=2,
        retry=False,
        stop=True,
    ),
    "succeeded, gate passed": FollowRow(
        SUCCEEDED, result("v0002"), RecordCandidate, "candidate v0002, gate passed", version="v0002", gate_passed=True
    ),
    "succeeded, gate failed": FollowRow(
        SUCCEEDED,
        result("v0002", passed=False),
        RecordCandidate,
        "candidate v0002, gate failed",
        version="v0002",
        gate_passed=False,
    ),
    "succeeded without a result": FollowRow(
        SUCCEEDED,
        None,
        RecordFailure,
        "the job succeeded but its result file records no version; will retry",
        retry=True,
    ),
    "failed with the job's error": FollowRow(
        FAILED, result(error="CUDA out of memory"), RecordFailure, "CUDA out of memory; will retry", retry=True
    ),
    "failed without a result": FollowRow(FAILED, None, RecordFailure, "exit code 1; will retry", retry=True),
    "failed, last attempt": FollowRow(
        FAILED,
        None,
        RecordFailure,
        "exit code 1; retries used up, giving up on its insight",
        attempt=2,
        retry=False,
    ),
    "the runner says failed: a version left is not recorded": FollowRow(
        FAILED, result("v0002"), RecordFailure, "exit code 1; will retry", retry=True
    ),
    "unknown to the runner, the result records a version": FollowRow(
        UNKNOWN,
        result("v0002", seconds=300),
        RecordCandidate,
        "candidate v0002, gate passed (read from its result file; the job is unknown)",
        version="v0002",
        gate_passed=True,
        gpu_seconds=300,
    ),
    "unknown to the runner, no result": FollowRow(
        UNKNOWN,
        None,
        RecordFailure,
        "the runner does not know the job and it left no result: "
        "no job retrain-1 started by this process (it restarted?); will retry",
        retry=True,
        gpu_seconds=0.0,
    ),
    "unknown to the runner, the job's own error": FollowRow(
        UNKNOWN, result(error="no labeled rows"), RecordFailure, "no labeled rows; will retry", retry=True
    ),
    "gone, the result records a version": FollowRow(
        GONE,
        result("v0003", passed=False),
        RecordCandidate,
        "candidate v0003, gate failed (read from its result file; the job is gone)",
        version="v0003",
        gate_passed=False,
    ),
    "gone, no result": FollowRow(
        GONE,
        None,
        RecordFailure,
        "the job is gone and left no result: Job ml/insightloop-retrain-1 no longer exists; will retry",
        retry=True,
    ),
    "gone, no result, last attempt": FollowRow(
        GONE,
        None,
        RecordFailure,
        "the job is gone and left no result: Job ml/insightloop-retrain-1 no longer exists; "
        "retries used up, giving up on its insight",
        attempt=2,
        retry=False,
    ),
    "GPU time from the job's own seconds": FollowRow(
        SUCCEEDED,
        result("v0002", seconds=600),
        RecordCandidate,
        "candidate v0002, gate passed",
        version="v0002",
        gate_passed=True,
        gpus=2,
        gpu_seconds=1200,
    ),
    "GPU time from the age without a result": FollowRow(
        FAILED, None, RecordFailure, "exit code 1; will retry", age_s=90, retry=True, gpu_seconds=90
    ),
    "a CPU job spends no GPU time": FollowRow(
        SUCCEEDED,
        result("v0002", seconds=600),
        RecordCandidate,
        "candidate v0002, gate passed",
        version="v0002",
        gate_passed=True,
        gpus=0,
        gpu_seconds=0,
    ),
}


@pytest.mark.parametrize("row", FOLLOW_ROWS.values(), ids=FOLLOW_ROWS.keys())
def test_follow_up(row: FollowRow) -> None:
    outcome = follow_up(row.status, row.result, row.attempt, row.age_s, POLICY, gpus=row.gpus)
    assert type(outcome) is row.expect
    assert outcome.reason == row.reason
    if isinstance(outcome, RecordFailure):
        assert outcome.retry is row.retry
        assert outcome.stop is row.stop
        assert outcome.reason.startswith(outcome.error)
    if isinstance(outcome, RecordCandidate):
        assert outcome.version == row.version
        assert outcome.gate_passed is row.gate_passed
        assert outcome.gate_reasons == ("recent accuracy +0.05",)
    if row.gpu_seconds is not None:
        assert not isinstance(outcome, Follow)
        assert outcome.gpu_seconds == pytest.approx(row.gpu_seconds)


@pytest.mark.parametrize(
    ("made", "policy", "taken", "why"),
    [
        (insight("a", severity="info"), {}, False, "info insight"),
        (insight("a", severity="info"), {"min_severity": "info"}, False, "never a job"),
        (insight("a", severity="warning"), {}, True, "warning text_drift insight recommending retrain"),
        (insight("a", severity="critical"), {}, True, "critical"),
        (insight("a", severity="warning"), {"min_severity": "critical"}, False, "below controller.min_severity"),
        (insight("a", action="none"), {}, False, "no action"),
        (insight("a", kind="slice_degradation"), {"kinds": ["text_drift"]}, False, "not in controller.kinds"),
        (insight("a", action="recalibrate"), {}, True, "recommending recalibrate"),
    ],
)
def test_admits(made: Insight, policy: dict[str, Any], taken: bool, why: str) -> None:
    decision, reason = admits(made, ControllerConfig(**policy))
    assert decision is taken and why in reason
