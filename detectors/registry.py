"""The registered detectors, and one call that runs them all on a window."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from insightloop.detectors.base import Detector, Measurement, require_same_classes
from insightloop.detectors.cost import DEFAULT_SEVERITY_RULE, SeverityRule
from insightloop.detectors.drift import DescriptorDrift, EmbeddingDrift, PredictionDrift
from insightloop.detectors.insight import Insight, Severity
from insightloop.detectors.profile import ReferenceProfile
from insightloop.detectors.quality import EstimatedQualityDrop, LabeledQualityDrop
from insightloop.detectors.slices import SliceDegradation
from insightloop.detectors.window import Window

#: Every detector class by its ``name``.
DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        DescriptorDrift,
        EmbeddingDrift,
        PredictionDrift,
        LabeledQualityDrop,
        EstimatedQualityDrop,
        SliceDegradation,
    )
}


def all_detectors() -> list[Detector]:
    """One instance of every registered detector, with default parameters."""
    return [cls() for cls in DETECTORS.values()]


class DetectorResult(BaseModel):
    """One detector's outcome on a window: what the monitor exports as gauges."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: str
    applicable: bool
    statistic: float
    threshold: float
    p_value: float | None = None
    ratio: float = Field(description="statistic / threshold; 1 at the alarm level")
    severity: Severity | None = None
    reason: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def of(cls, detector: str, measurement: Measurement, threshold: float, severity: Severity | None) -> DetectorResult:
        """The result of one measurement against its threshold (``severity``: its insight's, if it fired)."""
        return cls(
            detector=detector,
            applicable=measurement.applicable,
            statistic=measurement.statistic,
            threshold=threshold,
            p_value=measurement.p_value,
            ratio=measurement.statistic / threshold if threshold > 0 else 0.0,
            severity=severity,
            reason=measurement.reason,
            metrics=measurement.metrics,
        )


class CheckResult(BaseModel):
    """The insights of one check and every detector's statistic (fired or not)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    insights: list[Insight]
    results: list[DetectorResult]


def check_all(
    reference: ReferenceProfile,
    current: Window,
    model_version: str,
    detectors: Sequence[Detector] | None = None,
    *,
    false_alarm_rate: float | None = None,
    rule: SeverityRule = DEFAULT_SEVERITY_RULE,
) -> CheckResult:
    """Run ``detectors`` (default: all registered) on ``current``; pure, and each analysis is computed once.

    ``false_alarm_rate`` is each detector's false-alarm probability for this check (its share of a
    monitor's budget, see :class:`~insightloop.detectors.calibration.AlarmBudget`); None: the rate the
    profile was calibrated at. ``rule`` turns each insight's accuracy cost into its severity.
    Raises ``ValueError`` when the window's classes differ from the profile's (another model scored it).
    """
    require_same_classes(reference.class_names, current.class_names)
    insights: list[Insight] = []
    results: list[DetectorResult] = []
    for detector in detectors if detectors is not None else all_detectors():
        measurement = detector.measure(reference, current)
        threshold = detector.threshold_for(reference, false_alarm_rate)
        found = detector.insights_for(reference, current, measurement, model_version, threshold=threshold, rule=rule)
        insights.extend(found)
        results.append(DetectorResult.of(detector.name, measurement, threshold, found[0].severity if found else None))
    return CheckResult(insights=insights, results=results)
