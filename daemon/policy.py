"""The controller's policy as pure functions: what it knows in, a decision with a human reason out.

:func:`decide` chooses whether to launch a retraining job now and for which insight; :func:`follow_up` says
what a job's status and result file mean (keep following, record its candidate, record it failed and retry or
give up). Neither reads a clock, a file, Kafka or the store: the controller (daemon/controller.py) gathers the
inputs, calls them and acts, so every rule here is covered by the table-driven tests in
tests/daemon/test_policy.py.

Policy (config ``controller``): a cap on concurrent jobs, a cooldown between launches, a daily GPU-hour
budget, retries per insight, a production model to start from, and a minimum of new labeled production texts.
When several insights compete, the one with the largest estimated accuracy loss × traffic share goes first.
One ongoing insight (the monitor keeps its id while the condition lasts) never gets two jobs at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from insightloop.daemon.config import ControllerConfig
from insightloop.daemon.state import ControllerState, PendingInsight
from insightloop.detectors import LOSS_METRICS, Insight
from insightloop.retrain import JobResult, JobState, JobStatus


def priority(insight: Insight) -> float:
    """Estimated accuracy loss × share of traffic affected (larger goes first)."""
    metrics = insight.evidence.metrics
    loss = next((abs(metrics[k]) for k in LOSS_METRICS if k in metrics), None)
    if loss is None:
        loss = 0.01 * min(insight.ratio, 100.0)  # drift without a measured loss: rank by how far past the alarm
    share = max((s.share_current for s in insight.evidence.slices), default=1.0)
    return float(loss * share + insight.severity_rank * 1e-6)


def admits(insight: Insight, policy: ControllerConfig) -> tuple[bool, str]:
    """Whether an insight from the insights topic may become a retraining job, and why (not).

    An ``info`` insight never does, whatever ``controller.min_severity`` says: ``info`` means the change is
    certain but costs less than ``monitor.min_accuracy_cost`` in accuracy, and a job for it would spend GPU
    hours to win nothing measurable.
    """
    if insight.severity == "info":
        return False, "info insight: its change costs less than monitor.min_accuracy_cost, never a job"
    if insight.recommendation.action == "none":
        return False, "its recommendation is no action"
    if not insight.at_least(policy.min_severity):
        return False, f"{insight.severity} is below controller.min_severity ({policy.min_severity})"
    if insight.kind not in policy.kinds:
        return False, f"kind {insight.kind} is not in controller.kinds"
    return True, f"{insight.severity} {insight.kind} insight recommending {insight.recommendation.action}"


# -- launching ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningJob:
    """A job the controller follows, as the policy sees it."""

    job_id: str
    insight_id: str


@dataclass(frozen=True)
class Launch:
    """Start a job for ``insight``; its plan also addresses ``joins`` (other insights on the same model)."""

    insight: PendingInsight
    joins: tuple[Insight, ...]
    labels: int
    reason: str

    @property
    def insights(self) -> list[Insight]:
        """The insights the job's plan addresses, the chosen one first."""
        return [self.insight.insight, *self.joins]


@dataclass(frozen=True)
class Wait:
    """Launch nothing now, because of ``reason``."""

    reason: str


Decision = Launch | Wait


def decide(
    pending: Sequence[PendingInsight],
    running: Sequence[RunningJob],
    budget: ControllerState,
    labels_since: Callable[[float], int],
    policy: ControllerConfig,
    champion: str | None,
    now: float,
) -> Decision:
    """Launch a job now, or wait, and why.

    ``labels_since(began_at)`` counts the labeled production texts scored since ``began_at``: the data a job
    would get. It is asked for the chosen insight only. ``budget`` is today's (the store starts a new day at
    zero); ``now`` and ``budget.last_launch`` are epoch seconds.
    """
    if not pending:
        return Wait("no pending insight")
    if len(running) >= policy.max_concurrent_jobs:
        return Wait(f"max concurrent jobs: {len(running)} of {policy.max_concurrent_jobs} running")
    if budget.last_launch is not None:
        left = policy.cooldown_s - (now - budget.last_launch)
        if left > 0:
            return Wait(f"cooldown: {math.ceil(left)} s left")
    used_h = budget.gpu_seconds / 3600.0
    if used_h >= policy.gpu_hours_per_day:
        return Wait(f"GPU-hour budget spent: {used_h:.2f} of {policy.gpu_hours_per_day:g} h today")
    busy = {job.insight_id for job in running}
    free = [p for p in pending if p.insight.id not in busy]
    if not free:
        return Wait("every pending insight has a job running")
    free = [p for p in free if admits(p.insight, policy)[0]]
    if not free:
        return Wait("no pending insight calls for a job (info, no action, or not a kind acted on)")
    candidates = [p for p in free if p.attempts <= policy.max_retries]
    if not candidates:
        return Wait(f"retries used up: {policy.max_retries + 1} attempt(s) each")
    if champion is None:
        return Wait("no production model")
    chosen = max(candidates, key=lambda p: (priority(p.insight), -p.began_at))
    # New labeled data: texts scored since the insight began whose labels have arrived. Labels from before the
    # change would teach the candidate the old traffic again (and fill the time-based holdout with it).
    fresh = labels_since(chosen.began_at)
    if fresh < policy.min_new_labels:
        return Wait(f"insight {chosen.insight.id} waits for labels: {fresh} of {policy.min_new_labels}")
    joins = tuple(
        p.insight
        for p in pending
        if p.insight.id != chosen.insight.id
        and p.insight.model_version == chosen.insight.model_version
        and admits(p.insight, policy)[0]
    )
    attempt = chosen.attempts + 1
    with_others = f", with {len(joins)} other insight(s)" if joins else ""
    return Launch(
        chosen,
        joins,
        fresh,
        f"insight {chosen.insight.id}: {fresh} new labels (of {policy.min_new_labels} needed), "
        f"attempt {attempt} of {policy.max_retries + 1}{with_others}",
    )


# -- following ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Follow:
    """The job still runs: keep following it."""

    reason: str


@dataclass(frozen=True)
class RecordCandidate:
    """The job registered a candidate: record it with the gate's verdict; the insight is done."""

    version: str
    gate_passed: bool
    gate_reasons: tuple[str, ...]
    gpu_seconds: float
    reason: str


@dataclass(frozen=True)
class RecordFailure:
    """The job failed (``stop``: stop it first). ``retry``: its insight gets another attempt; else it is dropped."""

    error: str
    retry: bool
    stop: bool
    gpu_seconds: float
    reason: str


FollowUp = Follow | RecordCandidate | RecordFailure


def follow_up(
    status: JobStatus,
    result: JobResult | None,
    attempt: int,
    age_s: float,
    policy: ControllerConfig,
    gpus: int | None = None,
) -> FollowUp:
    """What a job's status and result file mean for the controller.

    ``result`` is the job's result file on the registry volume (None when it was not written), ``attempt``
    the job's attempt number for its insight, ``age_s`` how long ago it was launched. A job the runner no
    longer knows (UNKNOWN, GONE) is judged by its result file alone: a version there is a candidate like any
    other. ``gpus`` defaults to ``policy.gpus_per_job``.
    """
    per_job = max(policy.gpus_per_job if gpus is None else gpus, 0)
    retry = attempt <= policy.max_retries
    then = "; will retry" if retry else "; retries used up, giving up on its insight"
    if not status.finished:
        if age_s > policy.job_timeout_s:
            error = f"stopped after {age_s:.0f} s (controller.job_timeout_s)"
            return RecordFailure(error, retry, True, age_s * per_job, error + then)
        return Follow(f"{status.state.value}: {status.message}".rstrip(": "))
    # A lost job ran for an unknown time; its result says how long it took, if it wrote one.
    seconds = result.seconds if result is not None and result.seconds > 0 else (0.0 if status.lost else age_s)
    used = seconds * per_job
    if result is not None and result.version and (status.state is JobState.SUCCEEDED or status.lost):
        passed = result.gate.passed if result.gate else False
        reasons = tuple(result.gate.reasons) if result.gate else ()
        verdict = "passed" if passed else "failed"
        how = "" if status.state is JobState.SUCCEEDED else f" (read from its result file; the job is {status.state})"
        return RecordCandidate(
            result.version, passed, reasons, used, f"candidate {result.version}, gate {verdict}{how}"
        )
    if result is not None and result.error:
        error = result.error
    elif status.state is JobState.UNKNOWN:
        error = f"the runner does not know the job and it left no result: {status.message}"
    elif status.state is JobState.GONE:
        error = f"the job is gone and left no result: {status.message}"
    elif status.state is JobState.SUCCEEDED:
        error = "the job succeeded but its result file records no version"
    else:
        error = status.message or "failed"
    return RecordFailure(error, retry, False, used, error + then)
