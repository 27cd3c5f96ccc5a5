"""Calibration: confidence → probability of being right, and thresholds for a target false-alarm rate."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

#: Fewer labeled reference rows than this and no confidence calibrator is fitted.
MIN_CALIBRATION_ROWS = 30


class ConfidenceCalibrator(BaseModel):
    """Isotonic map from a row's top softmax score to the probability that the prediction is right.

    Fitted on the reference (validation split, with labels); the mean of the calibrated confidences of
    a window estimates its accuracy without labels (valid while the link between confidence and
    correctness holds, i.e. under covariate shift, not under concept shift).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> confidence = rng.uniform(0.5, 1.0, 2000)
    >>> correct = rng.uniform(size=2000) < confidence - 0.1  # an over-confident model
    >>> calibrator = ConfidenceCalibrator.fit(confidence, correct)
    >>> round(float(calibrator.transform(np.array([0.9]))[0]), 1)
    0.8
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    x: list[float] = Field(description="confidence knots, increasing")
    y: list[float] = Field(description="probability of a correct prediction at each knot")
    n: int = Field(ge=1, description="labeled rows it was fitted on")
    accuracy: float = Field(ge=0, le=1, description="accuracy of those rows")

    @classmethod
    def fit(cls, confidence: NDArray[np.float64], correct: NDArray[np.bool_]) -> ConfidenceCalibrator:
        """Fit on top softmax scores and whether each prediction was right."""
        from sklearn.isotonic import IsotonicRegression

        confidence = np.asarray(confidence, dtype=np.float64)
        target = np.asarray(correct, dtype=np.float64)
        if confidence.shape != target.shape or confidence.size < 2:
            raise ValueError("need at least two (confidence, correct) pairs of equal length")
        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        model.fit(confidence, target)
        x = np.asarray(model.X_thresholds_, dtype=np.float64)
        y = np.asarray(model.y_thresholds_, dtype=np.float64)
        return cls(
            x=[float(v) for v in x], y=[float(v) for v in y], n=int(confidence.size), accuracy=float(target.mean())
        )

    def transform(self, confidence: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability that each prediction is right."""
        if len(self.x) == 1:
            return np.full(np.shape(confidence), self.y[0], dtype=np.float64)
        return np.interp(np.asarray(confidence, dtype=np.float64), self.x, self.y)

    def expected_accuracy(self, confidence: NDArray[np.float64]) -> float:
        """Estimated accuracy of a window from its confidences."""
        return float(self.transform(confidence).mean()) if np.size(confidence) else math.nan


def reference_splits(
    n: int, window_size: int, n_rounds: int, seed: int
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Random disjoint (reference part, current part) index pairs of a reference of ``n`` rows.

    The current part has ``window_size`` rows (at most half the reference); the rest is the reference part.
    """
    size = max(1, min(window_size, n // 2))
    rng = np.random.default_rng(seed)
    for _ in range(n_rounds):
        order = rng.permutation(n).astype(np.int64)
        yield np.sort(order[size:]), np.sort(order[:size])


def tail_threshold(null_statistics: Sequence[float] | NDArray[np.float64], false_alarm_rate: float) -> float:
    """The level a statistic exceeds with probability ``false_alarm_rate`` under the null.

    The empirical quantile when there are at least five null values beyond it; otherwise a
    peaks-over-threshold fit: an exponential tail above the 80th-90th percentile (at least 20 values
    beyond it), extrapolated to the requested rate. The statistics here are ``-log10`` p-values, whose
    tails are exponential with scale ``1 / ln 10`` when the underlying test is exact; the tail scale is
    the robust estimate (median excess / ln 2) shrunk towards that value with the weight of 20
    exceedances, so one extreme split neither inflates nor deflates the threshold much.
    """
    if not 0 < false_alarm_rate < 1:
        raise ValueError("false_alarm_rate must lie strictly between 0 and 1")
    values = np.sort(np.asarray(null_statistics, dtype=np.float64))
    values = values[np.isfinite(values)]
    if values.size < 10:
        raise ValueError("need at least 10 finite null statistics to calibrate a threshold")
    n = values.size
    if false_alarm_rate * n >= 5:
        return float(np.quantile(values, 1 - false_alarm_rate))
    tail_rate = min(0.2, max(0.1, 20 / n))
    base = float(np.quantile(values, 1 - tail_rate))
    excess = values[values > base] - base
    exact_scale = 1 / math.log(10)
    estimate = float(np.median(excess)) / math.log(2) if excess.size else exact_scale
    prior_weight = 20
    scale = (excess.size * estimate + prior_weight * exact_scale) / (excess.size + prior_weight)
    return base + scale * math.log(tail_rate / false_alarm_rate)


class AlarmBudget(BaseModel):
    """A false-alarm budget for a whole monitor, spent across its checks and detectors.

    ``budget_texts`` is the expected number of in-distribution texts between two false alarms of the
    monitor as a whole (its expected run time, ERT, as alibi-detect's online detectors state it). The
    monitor checks after every ``check_every_records`` texts, so a budget of B texts allows
    ``alpha = check_every_records / B`` false alarms per check; Bonferroni splits that evenly across the
    ``detectors`` that may raise one: each detector's threshold is the level its statistic exceeds with
    probability ``alpha / detectors`` under no change.

    Why this spends the budget safely: the union bound makes the per-check rate at most ``alpha`` whatever
    the dependence between detectors; successive checks share most of their (overlapping) window and the
    same reference, so their exceedances are positively correlated and cluster, which makes the expected
    number of *separate* false alarms per text at most ``alpha / check_every_records`` (a cluster raises
    one condition and one insight, see ``ConditionTracker``); and an insight pages only at warning or
    above, which further needs a measured accuracy cost (see ``severity_for_cost``). So the stated
    budget is a lower bound on the expected run time, not an estimate of it.

    Examples
    --------
    >>> budget = AlarmBudget(budget_texts=1_000_000, check_every_records=100, detectors=6)
    >>> budget.per_check_rate, round(budget.per_detector_rate, 8), round(budget.nominal_threshold, 2)
    (0.0001, 1.667e-05, 4.78)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_texts: int = Field(ge=1, description="expected in-distribution texts between two false alarms")
    check_every_records: int = Field(ge=1, description="new texts between two checks")
    detectors: int = Field(ge=1, description="detectors that may raise an alarm at each check")

    @property
    def checks_per_budget(self) -> float:
        """Checks the monitor runs on ``budget_texts`` texts."""
        return self.budget_texts / self.check_every_records

    @property
    def per_check_rate(self) -> float:
        """Probability of a false alarm per check, all detectors together (at most 0.5)."""
        return min(0.5, self.check_every_records / self.budget_texts)

    @property
    def per_detector_rate(self) -> float:
        """Probability of a false alarm per check and detector (Bonferroni)."""
        return self.per_check_rate / self.detectors

    @property
    def nominal_threshold(self) -> float:
        """``-log10`` of the per-detector rate: the threshold of an exact test."""
        return -math.log10(self.per_detector_rate)


def threshold_at_rate(
    null_statistics: Sequence[float] | None,
    false_alarm_rate: float,
    *,
    stored_value: float,
    stored_rate: float,
    floor: float = 0.0,
) -> float:
    """A detector's threshold for ``false_alarm_rate`` per check, from its null statistics.

    The level is the larger of (a) the nominal ``-log10(false_alarm_rate)``, which an exact or
    conservative test's statistic exceeds at most that often at *any* window size, and (b) the tail
    threshold of the null statistics measured on reference splits (:func:`tail_threshold`), which covers
    a test that is anti-conservative at the split's size. A profile that kept no null statistics (written
    before they were stored) moves its stored threshold along the exponential tail of an exact test.
    Taking the larger means a calibration split smaller than the monitoring window never lowers the
    threshold below what an exact test needs at the window's size.
    """
    if not 0 < false_alarm_rate < 1:
        raise ValueError("false_alarm_rate must lie strictly between 0 and 1")
    nominal = -math.log10(false_alarm_rate)
    finite = [v for v in (null_statistics or []) if math.isfinite(v)]
    if len(finite) >= 10:
        calibrated = tail_threshold(finite, false_alarm_rate)
    else:
        calibrated = stored_value + nominal + math.log10(stored_rate)
    return max(nominal, calibrated, floor)
