"""Slice analysis: where the loss concentrates (length buckets, ``meta`` values, new vocabulary)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from insightloop.detectors.advice import (
    describe_slice,
    diagnose,
    error_examples,
    farthest_examples,
    recommend,
    slice_finding,
)
from insightloop.detectors.base import Detector, Measurement, log_p
from insightloop.detectors.insight import Evidence, InsightKind, Recommendation
from insightloop.detectors.slice_stats import slice_analysis, slice_mask, warm_slices
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


class SliceDegradation(Detector):
    """Finds the slices of the window where the loss rose: the evidence that says *why*.

    Slices: token-length buckets (powers of two up to the model's ``max_length``, and the truncated
    texts at or beyond it), the most frequent values of every ``meta`` field, and texts rich in new
    words (out-of-vocabulary share above the reference's 90th percentile). The loss is the error rate
    on labeled rows when the window has ``min_labeled`` labels, else the estimated error rate from
    calibrated confidence; each slice is compared with the same slice of the reference (or the whole
    reference where the slice is rare there) by a one-sided test, and the statistic is ``-log10`` of the
    Bonferroni-combined p-value. The other detectors put these slices in their evidence too; this one
    raises its own insight when a slice degrades while the window as a whole does not (yet). Prefer
    :class:`LabeledQualityDrop` to know whether the whole window got worse.

    Parameters
    ----------
    min_count : int, default 30
        Rows (labeled rows in label mode) a slice needs before its loss is tested.
    max_values : int, default 20
        Most frequent values per ``meta`` field that become slices.
    min_labeled : int, default 100
        Labeled rows in the window from which errors (not estimated errors) are used.
    min_delta : float, default 0.05
        Smallest rise of a slice's error rate worth an insight.
    threshold, critical_factor
        See :class:`Detector`.

    Examples
    --------
    >>> from insightloop.detectors import SliceDegradation
    >>> SliceDegradation(min_count=50).get_params()["min_count"]
    50
    >>> SliceDegradation(min_delta=2.0)
    Traceback (most recent call last):
    ...
    ValueError: min_delta must lie in [0, 1)
    """

    name: ClassVar[str] = "slices"
    kind: ClassVar[InsightKind] = "slice_degradation"

    def __init__(
        self,
        min_count: int = 30,
        max_values: int = 20,
        min_labeled: int = 100,
        min_delta: float = 0.05,
        *,
        threshold: float | None = None,
        critical_factor: float = 2.0,
    ) -> None:
        super().__init__(threshold=threshold, critical_factor=critical_factor)
        if min_count < 5:
            raise ValueError("min_count must be at least 5")
        if max_values < 1:
            raise ValueError("max_values must be at least 1")
        if min_labeled < min_count:
            raise ValueError("min_labeled must be at least min_count")
        if not (math.isfinite(min_delta) and 0 <= min_delta < 1):
            raise ValueError("min_delta must lie in [0, 1)")
        self.min_count = min_count
        self.max_values = max_values
        self.min_labeled = min_labeled
        self.min_delta = min_delta

    def prepare(self, reference: ReferenceProfile) -> None:
        warm_slices(reference)

    def measure(self, reference: ReferenceProfile, current: Window) -> Measurement:
        if len(current) < self.min_count:
            return Measurement.not_applicable(self.name, f"fewer than {self.min_count} rows", len(current))
        analysis = slice_analysis(reference, current, self.min_count, self.max_values, self.min_labeled)
        if analysis.n_tested == 0:
            return Measurement.not_applicable(self.name, "no slice has enough rows to test", len(current))
        # Material: a (loosely) significant slice whose loss rose clearly more than the rest's did,
        # so a uniform degradation (the quality detectors' business) is not reported as a slice.
        candidates = analysis.degraded(0.05)
        lift = max((s.lift if s.lift is not None else 0.0 for s in candidates), default=0.0)
        p_value = analysis.p_value
        return Measurement(
            detector=self.name,
            statistic=log_p(p_value),
            p_value=p_value,
            material=lift >= self.min_delta,
            n_current=len(current),
            metrics={"top_slice_lift": round(lift, 6), "slices_tested": float(analysis.n_tested)},
        )

    def null_statistic(self, reference: ReferenceProfile, current: Window) -> float:
        """The larger of the label-mode and the confidence-mode statistic (the threshold covers both)."""
        values = [self.measure(reference, current)]
        if current.n_labeled:
            values.append(self.measure(reference, current.without_labels()))
        finite = [m.statistic for m in values if m.applicable]
        return max(finite) if finite else math.nan

    def explain(
        self, reference: ReferenceProfile, current: Window, measurement: Measurement
    ) -> tuple[Evidence, str, Recommendation]:
        analysis = slice_analysis(reference, current, self.min_count, self.max_values, self.min_labeled)
        level = 10 ** -self.threshold_for(reference)
        degraded = analysis.degraded(level, self.min_delta) or analysis.degraded(1.0, self.min_delta)
        grown = [s for s in analysis.grown(0.01) if s not in degraded]
        findings = [slice_finding(s) for s in [*degraded[:5], *grown[:3]]]
        worst = degraded[0] if degraded else None
        mask = slice_mask(reference, current, worst.definition) if worst else None
        examples = (
            error_examples(reference, current, mask=mask)
            if analysis.mode == "labels"
            else farthest_examples(reference, current, mask=mask)
        )
        metrics = {
            "slices_tested": float(analysis.n_tested),
            **(
                {"overall_reference_loss": round(analysis.overall_reference_loss, 6)}
                if analysis.overall_reference_loss is not None
                else {}
            ),
            **(
                {"overall_current_loss": round(analysis.overall_current_loss, 6)}
                if analysis.overall_current_loss is not None
                else {}
            ),
        }
        evidence = Evidence(slices=findings, metrics=metrics, examples=examples)
        source = "labeled errors" if analysis.mode == "labels" else "calibrated confidence"
        named = describe_slice(findings[0]) if findings else "no single slice"
        summary = f"The loss concentrates in {named} ({source}, p={measurement.p_value:.1e})."
        diagnosis = diagnose(reference, current)
        return evidence, summary, recommend(reference, diagnosis, quality_focus=True)
