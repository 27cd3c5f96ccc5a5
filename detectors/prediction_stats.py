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
