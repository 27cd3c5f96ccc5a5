"""Quality: accuracy, recall and macro-F1 on late labels, and accuracy estimated before labels arrive
(``estimators.SHIPPED_ESTIMATOR``, the estimator ``bench/estimates.py`` measured best).

Reference-side work is cached on the profile and window-side work on the (profile, window) pair, so
detectors that share a statistic share its cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from insightloop.detectors._stats import norm_sf, proportion_drop_p_value
from insightloop.detectors.base import bonferroni
from insightloop.detectors.estimators import MIN_REFERENCE_ROWS, SHIPPED_ESTIMATOR, FittedEstimator, fit_estimator
from insightloop.detectors.metrics import macro_f1, macro_f1_batch
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


@dataclass(frozen=True)
class LabeledQuality:
    """Accuracy, per-class recall and macro-F1 on the labeled rows, reference vs current."""

    n_reference: int
    n_current: int
    reference_accuracy: float
    current_accuracy: float
    p_values: dict[str, float]
    reference_recall: dict[str, float]
    current_recall: dict[str, float]
    current_support: dict[str, int]
    reference_macro_f1: float
    current_macro_f1: float

    @property
    def p_value(self) -> float:
        """Bonferroni-combined p-value over accuracy and the per-class recalls."""
        return bonferroni(list(self.p_values.values()))

    @property
    def accuracy_drop(self) -> float:
        """Reference accuracy minus current accuracy (positive = worse now)."""
        return self.reference_accuracy - self.current_accuracy

    @property
    def largest_recall_drop(self) -> float:
        """The largest drop of a class recall (0 when none dropped)."""
        drops = [
            self.reference_recall[c] - self.current_recall[c] for c in self.current_recall if c in self.reference_recall
        ]
        return max([0.0, *drops])


def labeled_quality(profile: ReferenceProfile, window: Window, min_class_support: int = 10) -> LabeledQuality | None:
    """Quality on the labeled rows of ``window`` against the reference (None without labels on both sides)."""

    def compute() -> LabeledQuality | None:
        ref, cur = profile.window, window
        rmask, cmask = ref.labeled_mask, cur.labeled_mask
        n_r, n_c = int(rmask.sum()), int(cmask.sum())
        if n_r == 0 or n_c == 0:
            return None
        k = len(ref.class_names)
        r_lab, r_pred = ref.label_index[rmask], ref.predicted_index[rmask]
        c_lab, c_pred = cur.label_index[cmask], cur.predicted_index[cmask]
        k_r, k_c = int((r_lab == r_pred).sum()), int((c_lab == c_pred).sum())
        p_values = {"accuracy": proportion_drop_p_value(k_r, n_r, k_c, n_c)}
        ref_recall: dict[str, float] = {}
        cur_recall: dict[str, float] = {}
        support: dict[str, int] = {}
        for j, name in enumerate(ref.class_names):
            rj, cj = r_lab == j, c_lab == j
            nr, nc = int(rj.sum()), int(cj.sum())
            support[name] = nc
            if nr:
                ref_recall[name] = float((r_pred[rj] == j).mean())
            if nc:
                cur_recall[name] = float((c_pred[cj] == j).mean())
            if nr >= min_class_support and nc >= min_class_support:
                p_values[f"recall[{name}]"] = proportion_drop_p_value(
                    int((r_pred[rj] == j).sum()), nr, int((c_pred[cj] == j).sum()), nc
                )
        return LabeledQuality(
            n_reference=n_r,
            n_current=n_c,
            reference_accuracy=k_r / n_r,
            current_accuracy=k_c / n_c,
            p_values=p_values,
            reference_recall=ref_recall,
            current_recall=cur_recall,
            current_support=support,
            reference_macro_f1=macro_f1(r_lab, r_pred, k),
            current_macro_f1=macro_f1(c_lab, c_pred, k),
        )

    return profile.window_memo(window, ("labeled_quality", min_class_support), compute)


def macro_f1_interval(
    profile: ReferenceProfile, window: Window, n_bootstrap: int = 200, level: float = 0.95
) -> tuple[float, float] | None:
    """Bootstrap interval of the macro-F1 on the labeled rows of ``window`` (None without labels)."""
    mask = window.labeled_mask
    n = int(mask.sum())
    if n == 0:
        return None
    labels, predicted = window.label_index[mask], window.predicted_index[mask]
    rng = np.random.default_rng([profile.seed, 104729, n])
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    boot = macro_f1_batch(labels[idx], predicted[idx], len(window.class_names))
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Quality without labels: the shipped label-free estimator (see detectors/estimators.py)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimatedQuality:
    """Accuracy estimated without labels, reference vs current (and the labeled value if any).

    ``reference_estimate`` is the estimator applied to the reference rows it was fitted on (for ATC
    and DOC exactly their accuracy), so ``drop`` compares like with like.
    """

    reference_accuracy: float
    reference_estimate: float
    current_estimate: float
    p_value: float
    per_class_estimate: dict[str, float]
    labeled_count: int
    labeled_accuracy: float | None
    estimate_on_labeled: float | None
    estimator: str = SHIPPED_ESTIMATOR

    @property
    def drop(self) -> float:
        """Reference estimate minus current estimate."""
        return self.reference_estimate - self.current_estimate


def shipped_estimator(profile: ReferenceProfile) -> FittedEstimator | None:
    """The shipped label-free estimator fitted on the profile's labeled rows (None with too few of them).

    Only profiles with a confidence calibrator (enough labeled rows when built) estimate accuracy, so a
    profile saved without one keeps saying "no estimate" rather than guessing from a few labels.
    """
    if profile.calibrator is None:
        return None

    def fit() -> FittedEstimator | None:
        ref = profile.window
        rows = ref.label_index >= 0
        if int(rows.sum()) < MIN_REFERENCE_ROWS:
            return None
        return fit_estimator(SHIPPED_ESTIMATOR, ref.probabilities[rows], ref.correct[rows])

    return profile.memo(("shipped_estimator",), fit)


def estimated_quality(profile: ReferenceProfile, window: Window) -> EstimatedQuality | None:
    """Estimated accuracy of ``window`` by the shipped estimator (None without enough labeled reference rows)."""
    estimator = shipped_estimator(profile)
    if estimator is None or len(window) == 0:
        return None

    def compute() -> EstimatedQuality:
        ref = profile.window
        ref_rows = profile.memo(
            ("shipped_estimator_rows",), lambda: estimator.rows(ref.probabilities[ref.label_index >= 0])
        )
        cur_rows = estimator.rows(window.probabilities)
        n, m = ref_rows.size, cur_rows.size
        est_r, est_c = float(ref_rows.mean()), float(cur_rows.mean())
        # One-sided test of the mean per-row value (for ATC, the rows above its threshold: two proportions).
        se = math.sqrt(float(ref_rows.var(ddof=1)) / n + (float(cur_rows.var(ddof=1)) if m > 1 else 0.25) / m)
        p_value = float(norm_sf((est_r - est_c) / se)) if se > 0 else (1.0 if est_c >= est_r else 0.0)
        per_class = {}
        for j, name in enumerate(window.class_names):
            rows = window.predicted_index == j
            if rows.any():
                per_class[name] = float(cur_rows[rows].mean())
        mask = window.labeled_mask
        n_lab = int(mask.sum())
        return EstimatedQuality(
            reference_accuracy=estimator.reference_accuracy,
            reference_estimate=est_r,
            current_estimate=est_c,
            p_value=p_value,
            per_class_estimate=per_class,
            labeled_count=n_lab,
            labeled_accuracy=float(window.correct[mask].mean()) if n_lab else None,
            estimate_on_labeled=float(cur_rows[mask].mean()) if n_lab else None,
        )

    return profile.window_memo(window, ("estimated_quality",), compute)
