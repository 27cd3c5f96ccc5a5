"""Predictions: black-box shift detection on the softmax outputs (Rabanser et al. 2019) and BBSE priors.

Reference-side work is cached on the profile and window-side work on the (profile, window) pair, so
detectors that share a statistic share its cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped]

from insightloop.detectors._stats import FloatArray
from insightloop.detectors.base import bonferroni
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


@dataclass(frozen=True)
class PredictionTest:
    """Predicted-label mix (chi-square), confidence and per-class scores (KS), Bonferroni-combined."""

    p_values: dict[str, float]
    reference_shares: FloatArray
    current_shares: FloatArray
    reference_confidence: float
    current_confidence: float
    estimated_priors: FloatArray | None  # BBSE estimate of the current class priors (needs labels)
    reference_priors: FloatArray | None

    @property
    def p_value(self) -> float:
        """Bonferroni-combined p-value."""
        return bonferroni(list(self.p_values.values()))

    @property
    def label_p_value(self) -> float:
        """p-value of the predicted-label mix alone."""
        return self.p_values["predicted_labels"]


def chi_square_p_value(ref_counts: NDArray[np.int64], cur_counts: NDArray[np.int64]) -> float:
    """Chi-square test of homogeneity of two count vectors (1 when fewer than two categories occur)."""
    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.pvalue)


def ks_p_value(reference: FloatArray, current: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (1 for empty or constant data)."""
    if reference.size == 0 or current.size == 0:
        return 1.0
    if np.ptp(np.concatenate([reference, current])) == 0:
        return 1.0
    return float(stats.ks_2samp(reference, current, method="asymp").pvalue)


def bbse_priors(reference: Window, current_shares: FloatArray) -> tuple[FloatArray, FloatArray] | None:
    """Black-box shift estimation (Lipton et al. 2018) of the current class priors, with the reference's.

    Solves ``C w = μ`` for the class importance weights ``w`` (``C`` the reference's joint
    distribution of predicted and true class, ``μ`` the current predicted-class shares); returns
    ``(estimated current priors, reference priors)`` or None without enough labels.
    """
    mask = reference.label_index >= 0
    if int(mask.sum()) < 30:
        return None
    k = len(reference.class_names)
    joint = np.zeros((k, k))
    np.add.at(joint, (reference.predicted_index[mask], reference.label_index[mask]), 1.0)
    joint /= joint.sum()
    ref_priors = joint.sum(axis=0)
    weights, *_ = np.linalg.lstsq(joint, current_shares, rcond=None)
    weights = np.clip(weights, 0.0, None)
    priors = weights * ref_priors
    total = priors.sum()
    if not math.isfinite(total) or total <= 0:
        return None
    return priors / total, ref_priors


def bbse_class_weights(reference: Window, current_shares: FloatArray) -> FloatArray | None:
    """Importance weight of each true class, current prior / reference prior (BBSE; None without labels)."""
    bbse = bbse_priors(reference, current_shares)
    if bbse is None:
        return None
    priors, ref_priors = bbse
    weights: FloatArray = np.where(ref_priors > 0, priors / np.where(ref_priors > 0, ref_priors, 1.0), 0.0)
    return weights


def class_mix_row_weights(
    reference: Window, current_predicted: NDArray[np.int64], class_weights: FloatArray | None
) -> FloatArray:
    """Per reference row: the weight that gives the reference the current window's class mix.

    With BBSE ``class_weights`` (true classes), labeled rows take their class's weight and unlabeled
    rows their predicted class's. Without them (no labels), the predicted-class mix stands in: each
    predicted class is weighted by its current share over its reference share. Weights sum to 1.
    """
    k = len(reference.class_names)
    if class_weights is not None:
        cls = np.where(reference.label_index >= 0, reference.label_index, reference.predicted_index)
        rows = class_weights[cls]
    else:
        ref_shares = np.bincount(reference.predicted_index, minlength=k) / max(len(reference), 1)
        cur_shares = np.bincount(current_predicted, minlength=k) / max(current_predicted.size, 1)
        per_class = np.where(ref_shares > 0, cur_shares / np.where(ref_shares > 0, ref_shares, 1.0), 0.0)
        rows = per_class[reference.predicted_index]
    total = float(rows.sum())
    if not math.isfinite(total) or total <= 0:
        return np.full(len(reference), 1.0 / max(len(reference), 1))
    out: FloatArray = rows / total
    return out


def prior_weights(profile: ReferenceProfile, window: Window) -> FloatArray:
    """Reference row weights re-weighting the reference to ``window``'s estimated class mix (see
    :func:`class_mix_row_weights`); computed once per (profile, window)."""

    def compute() -> FloatArray:
        ref = profile.window
        k = len(ref.class_names)
        shares = np.bincount(window.predicted_index, minlength=k) / max(len(window), 1)
        return class_mix_row_weights(ref, window.predicted_index, bbse_class_weights(ref, shares))

    return profile.window_memo(window, ("prior_weights",), compute)


def effective_size(weights: FloatArray) -> float:
    """Kish's effective sample size of weighted rows, ``(Σw)² / Σw²``."""
    total, squares = float(weights.sum()), float((weights**2).sum())
    return total * total / squares if squares > 0 else 0.0


def weighted_ks_p_value(reference: FloatArray, weights: FloatArray, current: FloatArray) -> float:
    """Two-sample KS p-value of a weighted reference against an unweighted current sample.

    The statistic is the largest gap between the weighted reference ECDF and the current ECDF; its
    p-value is the asymptotic Kolmogorov one with the reference counted at its effective size (what
    ``scipy.stats.ks_2samp(method="asymp")`` does for equal weights).
    """
    if reference.size == 0 or current.size == 0:
        return 1.0
    if np.ptp(np.concatenate([reference, current])) == 0:
        return 1.0
    order = np.argsort(reference, kind="stable")
    ref_sorted, w = reference[order], weights[order]
    w = w / w.sum()
    cur_sorted = np.sort(current)
    points = np.concatenate([ref_sorted, cur_sorted])
    ref_cdf = np.concatenate([[0.0], np.cumsum(w)])[np.searchsorted(ref_sorted, points, side="right")]
    cur_cdf = np.searchsorted(cur_sorted, points, side="right") / cur_sorted.size
    gap = float(np.max(np.abs(ref_cdf - cur_cdf)))
    n_eff, m = effective_size(weights), current.size
    if n_eff <= 0:
        return 1.0
    en = max(1, round(n_eff * m / (n_eff + m)))
    return float(min(1.0, max(0.0, stats.kstwo.sf(gap, en))))


def prediction_test(profile: ReferenceProfile, window: Window) -> PredictionTest:
    """Black-box shift detection on the model's outputs, reference vs ``window``."""

    def compute() -> PredictionTest:
        ref = profile.window
        k = len(ref.class_names)
        ref_counts = np.bincount(ref.predicted_index, minlength=k)
        cur_counts = np.bincount(window.predicted_index, minlength=k)
        p_values = {
            "predicted_labels": chi_square_p_value(ref_counts, cur_counts),
            "confidence": ks_p_value(ref.confidence, window.confidence),
        }
        columns = range(k) if k > 2 else [1]
        for j in columns:
            p_values[f"score[{ref.class_names[j]}]"] = ks_p_value(ref.probabilities[:, j], window.probabilities[:, j])
        cur_shares = cur_counts / max(len(window), 1)
        bbse = bbse_priors(ref, cur_shares)
        return PredictionTest(
            p_values=p_values,
            reference_shares=ref_counts / len(ref),
            current_shares=cur_shares,
            reference_confidence=float(ref.confidence.mean()),
            current_confidence=float(window.confidence.mean()) if len(window) else math.nan,
            estimated_priors=bbse[0] if bbse else None,
            reference_priors=bbse[1] if bbse else None,
        )

    return profile.window_memo(window, ("prediction_test",), compute)
