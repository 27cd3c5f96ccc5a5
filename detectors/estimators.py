"""Label-free accuracy estimates: what a window's accuracy probably is before its labels arrive.

Four estimators, all fitted on a labeled reference (the model version's held-out rows) and applied to
a window's softmax outputs; ``bench/estimates.py`` measures each against the accuracy the labels show
on every real shift in ``../shared/data`` and the detectors use :data:`SHIPPED_ESTIMATOR`:

* ``average_confidence``: the mean top softmax score (no fitting; over-confident models overstate);
* ``calibrated_confidence``: the mean of the top score mapped through an isotonic calibrator fitted on
  the reference (what ``EstimatedQualityDrop`` used first);
* ``doc``: difference of confidences, reference accuracy minus the fall in mean confidence;
* ``atc``: average thresholded confidence (Garg et al., ICLR 2022): a threshold ``t`` on a confidence
  score fitted so that the share of reference rows above ``t`` equals the reference accuracy; the
  estimate is the share of current rows above ``t``. The score is the negative entropy of the softmax
  (for two classes the ranking equals the top score's, so both give the same estimate there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from insightloop.detectors._stats import BoolArray, FloatArray
from insightloop.detectors.calibration import ConfidenceCalibrator

EstimatorName = Literal["average_confidence", "calibrated_confidence", "doc", "atc"]
ConfidenceScore = Literal["negative_entropy", "max_softmax"]

#: The estimator the detectors use: the lowest overall error in ``bench/estimates.py`` (see the README).
SHIPPED_ESTIMATOR: EstimatorName = "atc"

#: Fewer labeled reference rows than this and no estimator is fitted.
MIN_REFERENCE_ROWS = 30


def negative_entropy(probabilities: NDArray[np.floating]) -> FloatArray:
    """``Σ p log p`` of each row (0 for a one-hot row, ``-log k`` for a uniform one)."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out: FloatArray = terms.sum(axis=1)
    return out


def max_softmax(probabilities: NDArray[np.floating]) -> FloatArray:
    """The top softmax score of each row."""
    out: FloatArray = np.asarray(probabilities, dtype=np.float64).max(axis=1)
    return out


SCORES: dict[ConfidenceScore, Callable[[NDArray[np.floating]], FloatArray]] = {
    "negative_entropy": negative_entropy,
    "max_softmax": max_softmax,
}


@dataclass(frozen=True)
class AtcThreshold:
    """A fitted ATC threshold: rows scoring above it are counted as (probably) right.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.5, 1.0, 1000)
    >>> probabilities = np.c_[p, 1 - p]
    >>> correct = rng.uniform(size=1000) < p
    >>> atc = fit_atc(probabilities, correct)
    >>> bool(abs(atc.estimate(probabilities) - correct.mean()) < 0.002)
    True
    """

    threshold: float
    score: ConfidenceScore
    reference_accuracy: float
    n: int

    def scores(self, probabilities: NDArray[np.floating]) -> FloatArray:
        """The confidence score of each row."""
        return SCORES[self.score](probabilities)

    def above(self, probabilities: NDArray[np.floating]) -> BoolArray:
        """Per row: the score exceeds the threshold."""
        out: BoolArray = self.scores(probabilities) > self.threshold
        return out

    def estimate(self, probabilities: NDArray[np.floating]) -> float:
        """Estimated accuracy: the share of rows above the threshold (NaN for no rows)."""
        return float(self.above(probabilities).mean()) if len(probabilities) else math.nan


def fit_atc(
    probabilities: NDArray[np.floating], correct: NDArray[np.bool_], score: ConfidenceScore = "negative_entropy"
) -> AtcThreshold:
    """Fit the ATC threshold on labeled reference rows (``correct``: prediction equals label).

    The threshold lies midway between the ``k``-th and ``k+1``-th highest scores, ``k`` the number of
    correct rows, so exactly the reference accuracy's share of rows lies above it (ties aside).
    """
    s = SCORES[score](probabilities)
    right = np.asarray(correct, dtype=bool)
    if s.shape != right.shape or s.size < 2:
        raise ValueError("need at least two rows of probabilities and as many correctness flags")
    n = s.size
    k = int(right.sum())
    ordered = np.sort(s)  # ascending: the k highest are ordered[n - k:]
    if k == n:
        threshold = float(ordered[0]) - 1.0
    elif k == 0:
        threshold = float(ordered[-1])
    else:
        threshold = float((ordered[n - k - 1] + ordered[n - k]) / 2)
    return AtcThreshold(threshold=threshold, score=score, reference_accuracy=k / n, n=n)


# -- the estimators, one signature: (reference probabilities, reference correct, current probabilities) ----
Estimator = Callable[[FloatArray, BoolArray, FloatArray], float]


def average_confidence(reference: FloatArray, correct: BoolArray, current: FloatArray) -> float:
    """Mean top softmax score of the current rows (the reference is not used)."""
    return float(max_softmax(current).mean()) if len(current) else math.nan


def calibrated_confidence(reference: FloatArray, correct: BoolArray, current: FloatArray) -> float:
    """Mean isotonically calibrated top score (calibrator fitted on the reference)."""
    calibrator = ConfidenceCalibrator.fit(max_softmax(reference), np.asarray(correct, dtype=bool))
    return calibrator.expected_accuracy(max_softmax(current))


def difference_of_confidences(reference: FloatArray, correct: BoolArray, current: FloatArray) -> float:
    """Reference accuracy minus (reference mean confidence − current mean confidence)."""
    if not len(current):
        return math.nan
    shift = float(max_softmax(reference).mean() - max_softmax(current).mean())
    return float(np.clip(float(np.mean(correct)) - shift, 0.0, 1.0))


def average_thresholded_confidence(reference: FloatArray, correct: BoolArray, current: FloatArray) -> float:
    """ATC with the negative-entropy score (Garg et al., 2022)."""
    return fit_atc(reference, correct).estimate(current)


ESTIMATORS: dict[EstimatorName, Estimator] = {
    "average_confidence": average_confidence,
    "calibrated_confidence": calibrated_confidence,
    "doc": difference_of_confidences,
    "atc": average_thresholded_confidence,
}
