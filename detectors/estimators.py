"""Label-free accuracy estimates: what a window's accuracy probably is before its labels arrive.

Four estimators, all fitted on a labeled reference (the model version's held-out rows) and applied to
a window's softmax outputs; ``bench/estimates.py`` measures each against the accuracy the labels show
on real shifts in ``../shared/data`` and the detectors use :data:`SHIPPED_ESTIMATOR`:

* ``average_confidence``: the mean top softmax score (no fitting; over-confident models overstate);
* ``calibrated_confidence``: the mean of the top score mapped through an isotonic calibrator fitted on
  the reference;
* ``temperature_scaled``: the mean top score after temperature scaling, the one temperature fitted on the
  reference so that the top score's log loss against right/wrong is least (Guo et al., 2017; a smooth,
  one-parameter calibration where isotonic regression fits a step for every few rows);
* ``doc``: difference of confidences (Guillory et al., ICCV 2021), reference accuracy minus the fall in
  mean confidence (shipped);
* ``atc``: average thresholded confidence (Garg et al., ICLR 2022): a threshold ``t`` on a confidence
  score fitted so that the share of reference rows above ``t`` equals the reference accuracy; the
  estimate is the share of current rows above ``t``. The score is the negative entropy of the softmax
  (for two classes the ranking equals the top score's, so both give the same estimate there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from insightloop.detectors._stats import BoolArray, FloatArray
from insightloop.detectors.calibration import ConfidenceCalibrator

EstimatorName = Literal["average_confidence", "calibrated_confidence", "temperature_scaled", "doc", "atc"]
ConfidenceScore = Literal["negative_entropy", "max_softmax"]

#: The estimator the detectors use, chosen by ``bench/estimates.py`` (figures in detectors/README.md): on 19
#: real shifts and controls, models trained with the production recipe's 3 epochs and targets of up to 1,000
#: labeled rows, DOC erred 2.8 accuracy points on average (seed 0), temperature scaling 3.3, isotonic-
#: calibrated confidence 3.7, ATC 8.8. On 1-epoch models and 300-row targets calibrated confidence had
#: erred less (3.9 against DOC's 6.2); the models the monitor watches are trained for 3 epochs.
SHIPPED_ESTIMATOR: EstimatorName = "doc"

#: How an insight's summary names each estimator.
ESTIMATOR_NAMES: dict[str, str] = {
    "average_confidence": "average confidence",
    "calibrated_confidence": "calibrated confidence",
    "temperature_scaled": "temperature-scaled confidence",
    "doc": "difference of confidences",
    "atc": "average thresholded confidence",
}

#: Fewer labeled reference rows than this and no estimator is fitted.
MIN_REFERENCE_ROWS = 30


def negative_entropy(probabilities: NDArray[np.floating]) -> FloatArray:
    """``Σ p log p`` of each row (0 for a one-hot row, ``-log k`` for a uniform one)."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out: FloatArray = terms.sum(axis=1)
    return out


def tempered_top(probabilities: NDArray[np.floating], temperature: float) -> FloatArray:
    """The top score of each row after dividing its log-probabilities by ``temperature`` (the same as dividing
    the logits: a row's constant log-normaliser cancels).

    >>> [round(float(v), 4) for v in tempered_top(np.array([[0.8, 0.2], [0.5, 0.5]]), 2.0)]
    [0.6667, 0.5]
    """
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out: FloatArray = 1.0 / np.exp(logp).sum(axis=1)
    return out


def fit_temperature(probabilities: NDArray[np.floating], correct: NDArray[np.bool_]) -> float:
    """The temperature (0.05 to 20) whose tempered top score has the least log loss against ``correct``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.5, 1.0, 4000)
    >>> honest = rng.uniform(size=4000) < p
    >>> round(fit_temperature(np.c_[p, 1 - p], honest), 1)  # already calibrated: about 1
    1.0
    """
    from scipy.optimize import minimize_scalar

    right = np.asarray(correct, dtype=np.float64)

    def log_loss(log_t: float) -> float:
        top = np.clip(tempered_top(probabilities, math.exp(log_t)), 1e-9, 1 - 1e-9)
        return float(-(right * np.log(top) + (1 - right) * np.log(1 - top)).mean())

    found = minimize_scalar(log_loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return math.exp(float(found.x))


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


# -- the estimators: fitted on the labeled reference, then a per-row value whose mean is the estimate --------
@dataclass(frozen=True)
class FittedEstimator:
    """A label-free estimator fitted on a labeled reference.

    :meth:`rows` gives one value per row whose mean is the estimated accuracy (ATC: 1 above the
    threshold, else 0; calibrated confidence: the calibrated top score; temperature scaled: the tempered
    top score; DOC: the top score shifted by the reference's accuracy minus its mean confidence; average
    confidence: the top score), so a window's estimate and its standard error come from the same numbers.
    """

    name: EstimatorName
    n: int
    reference_accuracy: float
    atc: AtcThreshold | None = None
    calibrator: ConfidenceCalibrator | None = None
    offset: float = 0.0
    temperature: float | None = None

    def rows(self, probabilities: NDArray[np.floating]) -> FloatArray:
        """Per row: its contribution to the estimated accuracy."""
        if self.atc is not None:
            out: FloatArray = self.atc.above(probabilities).astype(np.float64)
            return out
        if self.temperature is not None:
            return tempered_top(probabilities, self.temperature)
        top = max_softmax(probabilities)
        if self.calibrator is not None:
            return self.calibrator.transform(top)
        shifted: FloatArray = np.clip(top + self.offset, 0.0, 1.0)
        return shifted

    def estimate(self, probabilities: NDArray[np.floating]) -> float:
        """Estimated accuracy of the rows (NaN for no rows)."""
        return float(self.rows(probabilities).mean()) if len(probabilities) else math.nan


def fit_estimator(
    name: EstimatorName, probabilities: NDArray[np.floating], correct: NDArray[np.bool_]
) -> FittedEstimator:
    """Fit estimator ``name`` on labeled reference rows (``correct``: prediction equals label)."""
    right = np.asarray(correct, dtype=bool)
    if len(probabilities) != right.size or right.size < 2:
        raise ValueError("need at least two rows of probabilities and as many correctness flags")
    accuracy = float(right.mean())
    n = int(right.size)
    if name == "atc":
        return FittedEstimator(name, n, accuracy, atc=fit_atc(probabilities, right))
    if name == "calibrated_confidence":
        calibrator = ConfidenceCalibrator.fit(max_softmax(probabilities), right)
        return FittedEstimator(name, n, accuracy, calibrator=calibrator)
    if name == "temperature_scaled":
        return FittedEstimator(name, n, accuracy, temperature=fit_temperature(probabilities, right))
    if name == "doc":
        return FittedEstimator(name, n, accuracy, offset=accuracy - float(max_softmax(probabilities).mean()))
    if name == "average_confidence":
        return FittedEstimator(name, n, accuracy)
    raise ValueError(f"unknown estimator {name!r}")


#: (reference probabilities, reference correct, current probabilities) -> estimated current accuracy.
Estimator = Callable[[FloatArray, BoolArray, FloatArray], float]


def _estimator(name: EstimatorName) -> Estimator:
    def estimate(reference: FloatArray, correct: BoolArray, current: FloatArray) -> float:
        return fit_estimator(name, reference, correct).estimate(current)

    estimate.__name__ = name
    return estimate


ESTIMATORS: dict[EstimatorName, Estimator] = {name: _estimator(name) for name in get_args(EstimatorName)}
