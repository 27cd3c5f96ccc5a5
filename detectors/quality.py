"""Quality drops: measured on late labels, and estimated from confidence before labels arrive."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from insightloop.detectors._stats import BoolArray
from insightloop.detectors.advice import (
    Diagnosis,
    class_shifts,
    describe_slice,
    diagnose,
    error_examples,
    farthest_examples,
    recommend,
    slice_findings,
)
from insightloop.detectors.base import Detector, Measurement, log_p
from insightloop.detectors.estimators import ESTIMATOR_NAMES
from insightloop.detectors.insight import Evidence, InsightKind, Recommendation, SliceFinding
from insightloop.detectors.quality_stats import estimated_quality, labeled_quality, macro_f1_interval
from insightloop.detectors.slice_stats import slice_mask
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


def _metrics(**values: float | None) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in values.items() if v is not None and math.isfinite(v)}


def _where_quality_fell(
    reference: ReferenceProfile, current: Window
) -> tuple[Diagnosis, list[SliceFinding], BoolArray | None]:
    """The diagnosis, the slices that lost most, and the rows of the worst one (None when none lost)."""
    diagnosis = diagnose(reference, current)
    worst = diagnosis.degraded[0] if diagnosis.degraded else None
    mask = slice_mask(reference, current, worst.definition) if worst else None
    return diagnosis, slice_findings(diagnosis, focus="loss"), mask


class _QualityDropDetector(Detector):
    """What both quality detectors share: a material drop and a critical one, read from one metric."""

    drop_metric: ClassVar[str]
    min_drop: float
    critical_drop: float

    def _set_drops(self, min_drop: float, critical_drop: float) -> None:
        if not (math.isfinite(min_drop) and 0 <= min_drop < 1):
            raise ValueError("min_drop must lie in [0, 1)")
        if not (math.isfinite(critical_drop) and min_drop <= critical_drop < 1):
            raise ValueError("critical_drop must lie in [min_drop, 1)")
        self.min_drop = min_drop
        self.critical_drop = critical_drop


class LabeledQualityDrop(_QualityDropDetector):
    """Quality drop on the labeled part of the window: accuracy and per-class recall, with tests.

    Predictions joined with late labels are compared with the reference's labeled validation split:
    a one-sided two-proportion z-test for accuracy and for each class's recall (classes with at least
    10 labels on both sides), Bonferroni-combined; the statistic is ``-log10`` of that p-value. It
    fires only with ``min_labeled`` labels and a drop of at least ``min_drop`` (accuracy or a class
    recall), so noise on a few labels does not page anyone. Macro-F1 and its bootstrap interval are in
    the evidence. The ground truth: prefer it whenever labels arrive; until then
    :class:`EstimatedQualityDrop` gives an earlier, weaker signal.

    Parameters
    ----------
    min_labeled : int, default 50
        Labeled rows the window needs before the detector says anything.
    min_drop : float, default 0.02
        Smallest drop (accuracy or a class recall, as a fraction) worth an insight.
    critical_drop : float, default 0.05
        Formerly the drop from which the insight was ``critical``; severity now follows the accuracy
        cost (:class:`~insightloop.detectors.cost.SeverityRule`). Validated and kept for saved parameters.
    threshold, critical_factor
        See :class:`Detector`.

    Examples
    --------
    >>> from insightloop.detectors import LabeledQualityDrop
    >>> LabeledQualityDrop(min_labeled=100).min_labeled
    100
    >>> LabeledQualityDrop(min_drop=0.1, critical_drop=0.05)
    Traceback (most recent call last):
    ...
    ValueError: critical_drop must lie in [min_drop, 1)
    """

    name: ClassVar[str] = "labeled_quality"
    kind: ClassVar[InsightKind] = "quality_drop"
    requires_labels: ClassVar[bool] = True
    drop_metric: ClassVar[str] = "accuracy_drop"

    def __init__(
        self,
        min_labeled: int = 50,
        min_drop: float = 0.02,
        critical_drop: float = 0.05,
        *,
        threshold: float | None = None,
        critical_factor: float = 2.0,
    ) -> None:
        super().__init__(threshold=threshold, critical_factor=critical_factor)
        if min_labeled < 10:
            raise ValueError("min_labeled must be at least 10")
        self._set_drops(min_drop, critical_drop)
        self.min_labeled = min_labeled

    def measure(self, reference: ReferenceProfile, current: Window) -> Measurement:
        if current.n_labeled < self.min_labeled:
            return Measurement.not_applicable(
                self.name, f"{current.n_labeled} labeled rows, need {self.min_labeled}", len(current)
            )
        quality = labeled_quality(reference, current)
        if quality is None or quality.n_reference < self.min_labeled:
            return Measurement.not_applicable(self.name, "the reference has too few labels", len(current))
        material = max(quality.accuracy_drop, quality.largest_recall_drop) >= self.min_drop
        return Measurement(
            detector=self.name,
            statistic=log_p(quality.p_value),
            p_value=quality.p_value,
            material=material,
            n_current=len(current),
            metrics=_metrics(
                accuracy=quality.current_accuracy,
                macro_f1=quality.current_macro_f1,
                labeled_count=quality.n_current,
                accuracy_drop=quality.accuracy_drop,
            ),
        )

    def explain(
        self, reference: ReferenceProfile, current: Window, measurement: Measurement
    ) -> tuple[Evidence, str, Recommendation]:
        quality = labeled_quality(reference, current)
        assert quality is not None
        diagnosis, slices, mask = _where_quality_fell(reference, current)
        low, high = macro_f1_interval(reference, current) or (None, None)
        evidence = Evidence(
            slices=slices,
            classes=class_shifts(reference, current, diagnosis.predictions),
            metrics=_metrics(
                reference_accuracy=quality.reference_accuracy,
                current_accuracy=quality.current_accuracy,
                accuracy_drop=quality.accuracy_drop,
                labeled_count=quality.n_current,
                reference_macro_f1=quality.reference_macro_f1,
                current_macro_f1=quality.current_macro_f1,
                current_macro_f1_low=low,
                current_macro_f1_high=high,
            ),
            examples=error_examples(reference, current, mask=mask),
        )
        where = f", concentrated in {describe_slice(slices[0])}" if slices and mask is not None else ""
        summary = (
            f"Accuracy fell {quality.accuracy_drop * 100:.1f} points ({quality.reference_accuracy:.2f} → "
            f"{quality.current_accuracy:.2f} on {quality.n_current} labeled texts, p={measurement.p_value:.1e}; "
            f"macro-F1 {quality.reference_macro_f1:.2f} → {quality.current_macro_f1:.2f}){where}."
        )
        return evidence, summary, recommend(reference, diagnosis, quality_focus=True)


class EstimatedQualityDrop(_QualityDropDetector):
    """Quality drop estimated without labels, by the shipped label-free estimator.

    The estimator (:data:`~insightloop.detectors.estimators.SHIPPED_ESTIMATOR`, chosen by
    ``bench/estimates.py`` on real shifts: difference of confidences, which beat isotonic-calibrated
    confidence, temperature scaling, ATC and the raw mean confidence there) is fitted on the labeled
    reference and gives each row a value whose mean is the window's estimated accuracy. A one-sided z-test
    compares it with the reference's; the statistic is ``-log10`` of the p-value, and the insight needs a
    drop of at least ``min_drop``. When labels exist the evidence also carries the labeled accuracy, so
    the estimate can be checked. It sees degradation before labels arrive but assumes the reference's
    link between confidence and correctness still holds (true under covariate shift, not under concept
    shift): confirm with :class:`LabeledQualityDrop`.

    Parameters
    ----------
    min_drop : float, default 0.02
        Smallest estimated accuracy drop worth an insight.
    critical_drop : float, default 0.05
        Formerly the estimated drop from which the insight was ``critical``; severity now follows the
        accuracy cost (:class:`~insightloop.detectors.cost.SeverityRule`). Validated and kept.
    threshold, critical_factor
        See :class:`Detector`.

    Examples
    --------
    >>> from insightloop.detectors import EstimatedQualityDrop
    >>> EstimatedQualityDrop(min_drop=0.03).clone().min_drop
    0.03
    """

    name: ClassVar[str] = "estimated_quality"
    kind: ClassVar[InsightKind] = "estimated_quality_drop"
    drop_metric: ClassVar[str] = "estimated_drop"

    def __init__(
        self,
        min_drop: float = 0.02,
        critical_drop: float = 0.05,
        *,
        threshold: float | None = None,
        critical_factor: float = 2.0,
    ) -> None:
        super().__init__(threshold=threshold, critical_factor=critical_factor)
        self._set_drops(min_drop, critical_drop)

    def measure(self, reference: ReferenceProfile, current: Window) -> Measurement:
        if len(current) < 2:
            return Measurement.not_applicable(self.name, "fewer than two rows", len(current))
        est = estimated_quality(reference, current)
        if est is None:
            return Measurement.not_applicable(self.name, "the profile has no confidence calibrator", len(current))
        return Measurement(
            detector=self.name,
            statistic=log_p(est.p_value),
            p_value=est.p_value,
            material=est.drop >= self.min_drop,
            n_current=len(current),
            metrics=_metrics(
                estimated_accuracy=est.current_estimate, estimated_drop=est.drop, labeled_accuracy=est.labeled_accuracy
            ),
        )

    def explain(
        self, reference: ReferenceProfile, current: Window, measurement: Measurement
    ) -> tuple[Evidence, str, Recommendation]:
        est = estimated_quality(reference, current)
        assert est is not None
        diagnosis, slices, mask = _where_quality_fell(reference, current)
        evidence = Evidence(
            descriptors=[],
            slices=slices,
            classes=class_shifts(reference, current, diagnosis.predictions),
            metrics=_metrics(
                reference_accuracy=est.reference_accuracy,
                reference_estimated_accuracy=est.reference_estimate,
                estimated_accuracy=est.current_estimate,
                estimated_drop=est.drop,
                labeled_count=est.labeled_count,
                labeled_accuracy=est.labeled_accuracy,
                estimated_accuracy_on_labeled=est.estimate_on_labeled,
            ),
            examples=farthest_examples(reference, current, mask=mask),
        )
        labeled = (
            f"; on the {est.labeled_count} labeled texts it is {est.labeled_accuracy:.2f} "
            f"(estimate {est.estimate_on_labeled:.2f})"
            if est.labeled_accuracy is not None and est.estimate_on_labeled is not None
            else ""
        )
        where = f", lowest in {describe_slice(slices[0])}" if slices and mask is not None else ""
        summary = (
            f"Estimated accuracy fell from {est.reference_estimate:.2f} to {est.current_estimate:.2f} "
            f"({ESTIMATOR_NAMES[est.estimator]}, p={measurement.p_value:.1e}){labeled}{where}."
        )
        return evidence, summary, recommend(reference, diagnosis, quality_focus=True)
