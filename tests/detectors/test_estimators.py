"""Label-free estimators on models whose confidence is off by a known temperature."""

from __future__ import annotations

import numpy as np
import pytest

from insightloop.detectors.estimators import ESTIMATORS, SHIPPED_ESTIMATOR, fit_temperature


def rows_of(n: int, top_max: float, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Two-class rows whose stated top score c is right with probability sigmoid(logit(c) / temperature):
    (probabilities, correct, expected accuracy)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, top_max, n)
    right_probability = 1 / (1 + np.exp(-np.log(c / (1 - c)) / temperature))
    correct = rng.uniform(size=n) < right_probability
    return np.c_[c, 1 - c], correct, float(right_probability.mean())


@pytest.mark.parametrize(
    ("temperature", "fitted_within"),
    [
        (0.7, (0.6, 0.8)),  # under-confident
        (1.0, (0.9, 1.1)),  # calibrated
        (2.0, (1.8, 2.2)),  # over-confident, the usual case after fine-tuning
        (3.0, (2.7, 3.3)),
    ],
)
def test_the_fitted_temperature_is_the_models_and_the_estimate_follows_a_shift(
    temperature: float, fitted_within: tuple[float, float]
) -> None:
    ref_p, ref_correct, _ = rows_of(20_000, 0.999, temperature, seed=1)
    low, high = fitted_within
    assert low <= fit_temperature(ref_p, ref_correct) <= high
    # The current traffic is less confident (a shift): the tempered mean follows the expected accuracy.
    cur_p, _, expected = rows_of(20_000, 0.9, temperature, seed=2)
    estimate = ESTIMATORS["temperature_scaled"](ref_p, ref_correct, cur_p)
    assert abs(estimate - expected) < 0.01, (estimate, expected)
    if temperature >= 2.0:  # the raw mean confidence overstates what an over-confident model gets right
        assert ESTIMATORS["average_confidence"](ref_p, ref_correct, cur_p) - expected > 0.05


def test_the_shipped_estimator_gives_a_calibrated_model_its_accuracy_after_a_shift() -> None:
    """Difference of confidences: accuracy falls as much as mean confidence does, which holds where the
    model's confidence tracks its correctness."""
    assert SHIPPED_ESTIMATOR == "doc"
    ref_p, ref_correct, _ = rows_of(20_000, 0.999, 1.0, seed=3)
    assert ESTIMATORS[SHIPPED_ESTIMATOR](ref_p, ref_correct, ref_p) == pytest.approx(ref_correct.mean(), abs=1e-3)
    cur_p, _, expected = rows_of(20_000, 0.85, 1.0, seed=4)
    estimate = ESTIMATORS[SHIPPED_ESTIMATOR](ref_p, ref_correct, cur_p)
    assert abs(estimate - expected) < 0.01, (estimate, expected)
    assert ref_correct.mean() - estimate > 0.05  # the shift is a real loss, and the estimate sees it
