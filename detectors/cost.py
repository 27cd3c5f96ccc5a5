"""Severity that means cost: what a change costs in accuracy decides how loudly it is reported.

A detector fires when its statistic passes the threshold the false-alarm budget sets: the change is
(statistically) certain. Whether anyone should be woken for it is another question, answered here: the
window's expected accuracy cost (reference accuracy minus the window's, in accuracy points), with a 95 %
interval: measured on the rows that have labels when the window has enough of them, estimated by the
label-free estimator (:func:`~insightloop.detectors.quality_stats.estimated_quality`) for the rows that
have none yet (labels lag, and the newest rows are the ones a change fills first), or estimated for the
whole window without labels.

:func:`severity_for_cost` is the pure rule (table-driven tests in tests/detectors/test_cost.py):

* cost below ``min_accuracy_cost`` (default 1 point), or negative → ``info``: visible in the store, the
  console and the API, never published at the default ``monitor.min_severity``, never paged, never a job;
* cost of at least ``critical_accuracy_cost`` (default 5 points) whose interval also clears
  ``min_accuracy_cost`` → ``critical``;
* otherwise → ``warning``; also when no cost can be measured (no labels and no estimator): a certain
  change of unknown cost is not declared harmless.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from insightloop.detectors.insight import AccuracyCost, CostSource, Severity

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile
    from insightloop.detectors.window import Window

#: z of a two-sided 95 % normal interval.
Z_95 = 1.959964


class SeverityRule(BaseModel):
    """The accuracy costs (in points) at which a certain change becomes a warning, and critical.

    Examples
    --------
    >>> rule = SeverityRule(min_accuracy_cost=1.0, critical_accuracy_cost=5.0)
    >>> rule.critical_accuracy_cost
    5.0
    >>> try:
    ...     SeverityRule(min_accuracy_cost=3.0, critical_accuracy_cost=2.0)
    ... except ValueError as error:
    ...     print("critical_accuracy_cost must be at least min_accuracy_cost" in str(error))
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_accuracy_cost: float = Field(1.0, ge=0.0, le=100.0, description="points; below: info")
    critical_accuracy_cost: float = Field(5.0, ge=0.0, le=100.0, description="points; from here: critical")
    min_labeled: int = Field(50, ge=1, description="labeled window rows from which the cost is measured on labels")

    @model_validator(mode="after")
    def _ordered(self) -> SeverityRule:
        if self.critical_accuracy_cost < self.min_accuracy_cost:
            raise ValueError("critical_accuracy_cost must be at least min_accuracy_cost")
        return self


DEFAULT_SEVERITY_RULE = SeverityRule()


def severity_for_cost(cost: AccuracyCost | None, rule: SeverityRule = DEFAULT_SEVERITY_RULE) -> Severity:
    """The severity of a change that fired, from its accuracy cost (see the module docstring)."""
    if cost is None:
        return "warning"
    if not cost.points >= rule.min_accuracy_cost:  # also NaN-safe
        return "info"
    if cost.points >= rule.critical_accuracy_cost and cost.low >= rule.min_accuracy_cost:
        return "critical"
    return "warning"


def _difference(
    reference: float,
    n_reference: int,
    current: float,
    n_current: int,
    source: CostSource,
    *,
    n_labeled: int = 0,
    current_var: float | None = None,
) -> AccuracyCost:
    """Cost ``reference - current`` (fractions) in points, with a normal interval for two proportions."""
    if current_var is None:
        current_var = current * (1 - current) / max(n_current, 1)
    var = reference * (1 - reference) / max(n_reference, 1) + current_var
    half = Z_95 * math.sqrt(max(var, 0.0))
    points = 100.0 * (reference - current)
    return AccuracyCost(
        points=round(points, 4),
        low=round(points - 100.0 * half, 4),
        high=round(points + 100.0 * half, 4),
        source=source,
        n=n_current,
        n_labeled=n_labeled,
        reference_accuracy=round(reference, 6),
        current_accuracy=round(current, 6),
    )


def accuracy_cost(
    reference: ReferenceProfile, current: Window, rule: SeverityRule = DEFAULT_SEVERITY_RULE
) -> AccuracyCost | None:
    """The window's expected accuracy cost: with ``rule.min_labeled`` labeled rows, measured on them and
    estimated for the rows without labels; else estimated for the whole window.

    None when neither is available (no labels, and the profile has no label-free estimator).
    Cached per (profile, window), like the statistics it reads.
    """
    from insightloop.detectors.quality_stats import estimated_quality, labeled_quality

    def compute() -> AccuracyCost | None:
        labeled = labeled_quality(reference, current)
        if labeled is not None and labeled.n_current >= rule.min_labeled:
            unlabeled = np.flatnonzero(~current.labeled_mask)
            # Labels lag: the newest rows have none yet, and they are the ones a change fills first. Their
            # accuracy is estimated (the label-free estimator), the labeled rows' is measured.
            rest = estimated_quality(reference, current.take(unlabeled)) if unlabeled.size else None
            if rest is None or not math.isfinite(rest.current_estimate):
                return _difference(
                    labeled.reference_accuracy,
                    labeled.n_reference,
                    labeled.current_accuracy,
                    labeled.n_current,
                    "labeled",
                    n_labeled=labeled.n_current,
                )
            n_lab, n_est = labeled.n_current, int(unlabeled.size)
            acc_lab, acc_est = labeled.current_accuracy, rest.current_estimate
            current_accuracy = (n_lab * acc_lab + n_est * acc_est) / (n_lab + n_est)
            current_var = (n_lab * acc_lab * (1 - acc_lab) + n_est * acc_est * (1 - acc_est)) / (n_lab + n_est) ** 2
            return _difference(
                labeled.reference_accuracy,
                labeled.n_reference,
                current_accuracy,
                n_lab + n_est,
                "labeled_and_estimated",
                n_labeled=n_lab,
                current_var=current_var,
            )
        estimated = estimated_quality(reference, current)
        if estimated is None or not math.isfinite(estimated.current_estimate):
            return None
        n_reference = max(int((reference.window.label_index >= 0).sum()), 1)
        return _difference(
            estimated.reference_estimate, n_reference, estimated.current_estimate, len(current), "estimated"
        )

    return reference.window_memo(current, ("accuracy_cost", rule.min_labeled), compute)
