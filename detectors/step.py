"""The monitor's check as a pure step: window, profile and tracker state in; insights, gauges and state out.

No I/O, no Kafka, no Prometheus, no store: the caller loads the window and the profile, persists the tracker
state and the insight, writes reports and publishes. The same inputs always give the same outcome (pass
``at`` to fix the clock), which is what makes the check testable with planted windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from insightloop.detectors.base import Detector
from insightloop.detectors.calibration import AlarmBudget
from insightloop.detectors.cost import DEFAULT_SEVERITY_RULE, SeverityRule
from insightloop.detectors.insight import Insight, Severity, severity_rank
from insightloop.detectors.merge import merge_insights
from insightloop.detectors.profile import ReferenceProfile
from insightloop.detectors.registry import CheckResult, all_detectors, check_all
from insightloop.detectors.tracker import ConditionTracker, TrackerState, Transition
from insightloop.detectors.window import Window


def detector_key(model_version: str, detector: str) -> str:
    """The tracker key of one detector's condition on ``model_version`` (drives its drifted flag)."""
    return f"{model_version}:{detector}"


def traffic_key(model_version: str) -> str:
    """The tracker key of the one condition per version: "its traffic has moved away from what it knew"."""
    return f"{model_version}:traffic"


class DetectorGauge(BaseModel):
    """One detector's latest statistic, whether its condition is raised (with hysteresis), and whether that
    counts as drift worth paging for (``drifted``: raised, and the version's change costs at least
    ``min_accuracy_cost``, i.e. its insight is at warning or above)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: str
    statistic: float
    drifted: bool
    raised: bool = False


class StepOutcome(BaseModel):
    """What one check decided.

    ``insight`` is the merged insight of the check under the id of the condition it belongs to (``None``
    when no detector fired), ``transition`` what the check did to the version's traffic condition,
    ``publish`` whether ``insight`` is to be sent (a ``NEW`` condition at or above ``min_severity``, or an
    ongoing one whose severity rose past what was published for it), ``cleared`` the id of the insight whose
    condition this check cleared, ``false_alarm_rate`` each detector's false-alarm probability at this
    check (None: the profile's own), and ``tracker`` the state to keep.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    result: CheckResult
    insight: Insight | None
    transition: Transition
    publish: bool
    cleared: str | None
    gauges: list[DetectorGauge]
    labeled_accuracy: float | None
    estimated_accuracy: float | None
    false_alarm_rate: float | None = None
    tracker: TrackerState


def check_step(
    profile: ReferenceProfile,
    window: Window,
    model_version: str,
    tracker: TrackerState,
    *,
    min_severity: Severity = "info",
    at: datetime | None = None,
    detectors: Sequence[Detector] | None = None,
    budget: AlarmBudget | None = None,
    rule: SeverityRule = DEFAULT_SEVERITY_RULE,
) -> StepOutcome:
    """Run every detector on ``window`` against ``profile`` and follow the conditions they raise or clear.

    Each detector keeps a condition of its own (its drifted gauge); the version keeps one more, fed by the
    merged insight of the check (see :func:`merge_insights`) or, when nothing fired, by the strongest
    applicable statistic, so one shift is one insight that lives until the traffic settles.

    Parameters
    ----------
    profile, window : ReferenceProfile, Window
        The version's reference and the newest window it scored (with the same class order).
    model_version : str
        The version that scored ``window``; it names the conditions.
    tracker : TrackerState
        The tracker state after the previous check; it is not changed (the new one is returned).
    min_severity : {"info", "warning", "critical"}, default "info"
        The least severity worth publishing.
    at : datetime, optional
        When the check happens: the conditions' times and the insights' ``created_at`` (default: now).
    detectors : sequence of Detector, optional
        Default: every registered detector.
    budget : AlarmBudget, optional
        The monitor's false-alarm budget; each detector's threshold is set for its Bonferroni share of it
        (``budget.per_check_rate / len(detectors)``). None: the thresholds the profile was calibrated at.
    rule : SeverityRule
        Accuracy costs that make an insight ``warning`` and ``critical`` (below: ``info``).

    Raises
    ------
    ValueError
        When the window's classes differ from the profile's (another model scored it), as ``check_all``.
    """
    chosen = list(detectors) if detectors is not None else all_detectors()
    rate = budget.per_check_rate / len(chosen) if budget is not None and chosen else None
    result = check_all(profile, window, model_version, chosen, false_alarm_rate=rate, rule=rule)
    if at is not None:  # the detectors stamp their insights with the clock; a given time replaces it
        stamped = [i.model_copy(update={"created_at": at}) for i in result.insights]
        result = result.model_copy(update={"insights": stamped})
    return follow_conditions(result, model_version, tracker, min_severity=min_severity, at=at, false_alarm_rate=rate)


def follow_conditions(
    result: CheckResult,
    model_version: str,
    tracker: TrackerState,
    *,
    min_severity: Severity = "info",
    at: datetime | None = None,
    false_alarm_rate: float | None = None,
    labeled_metric: str = "accuracy",
    estimated_metric: str = "estimated_accuracy",
) -> StepOutcome:
    """The conditions' part of a check: one per detector, one per version fed by the merged insight.

    Shared by the classifiers' :func:`check_step` and the token classifiers' check; ``labeled_metric`` and
    ``estimated_metric`` name the detector metrics reported as the labeled and estimated quality.
    """
    conditions = ConditionTracker.from_state(tracker)
    key = traffic_key(model_version)
    insight: Insight | None = None
    cleared: str | None = None
    publish = False
    if result.insights:
        transition, insight = conditions.follow(merge_insights(result.insights), key=key, at=at)
        if transition in (Transition.NEW, Transition.ONGOING) and conditions.escalates(
            key, insight.severity, min_severity
        ):
            publish = True
            conditions.mark_published(key, insight.severity)
    else:
        previous = conditions.active.get(key)
        strongest = max((r for r in result.results if r.applicable), key=lambda r: r.ratio, default=None)
        transition = conditions.observe(
            key, strongest.statistic if strongest else 0.0, strongest.threshold if strongest else 1.0, at=at
        )
        if transition is Transition.CLEARED and previous is not None:
            cleared = previous.insight_id
    # A detector's gauge says "drifted" only while the change it sees costs at least min_accuracy_cost (the
    # version's condition stands at warning or above): an info change is visible in the store, not paged.
    traffic = conditions.active.get(key)
    costly = traffic is not None and traffic.severity is not None and severity_rank(traffic.severity) >= 1
    gauges: list[DetectorGauge] = []
    labeled: float | None = None
    estimated: float | None = None
    for outcome in result.results:
        detector = detector_key(model_version, outcome.detector)
        conditions.observe(detector, outcome.statistic, outcome.threshold, at=at)
        gauges.append(
            DetectorGauge(
                detector=outcome.detector,
                statistic=outcome.statistic,
                drifted=costly and detector in conditions.active,
                raised=detector in conditions.active,
            )
        )
        labeled = outcome.metrics.get(labeled_metric, labeled)
        estimated = outcome.metrics.get(estimated_metric, estimated)
    return StepOutcome(
        result=result,
        insight=insight,
        transition=transition,
        publish=publish,
        cleared=cleared,
        gauges=gauges,
        labeled_accuracy=labeled,
        estimated_accuracy=estimated,
        false_alarm_rate=false_alarm_rate,
        tracker=conditions.state(),
    )
