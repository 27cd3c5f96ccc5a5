"""Thresholds calibrated on the reference give the configured false-alarm rate; confidence calibration."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from insightloop.detectors import (
    ConfidenceCalibrator,
    DescriptorDrift,
    EmbeddingDrift,
    PredictionDrift,
    ReferenceProfile,
    tail_threshold,
)
from insightloop.detectors.calibration import reference_splits
from tests.detectors.worlds import VOCABULARY, make_window

RATE = 0.05
WINDOW = 250
CHECKS = 120


def test_observed_false_alarm_rate_is_near_the_configured_rate() -> None:
    """Calibrate at 5 % on one reference sample, then check fresh windows drawn like the reference."""
    detectors = [PredictionDrift(), EmbeddingDrift(), DescriptorDrift()]
    reference = make_window(1000, seed=11, prefix="ref")
    profile = ReferenceProfile.build(
        reference, VOCABULARY, detectors, false_alarm_rate=RATE, n_rounds=120, seed=3, window_size=WINDOW
    )
    alarms = {d.name: 0 for d in detectors}
    for i in range(CHECKS):
        window = make_window(WINDOW, seed=10_000 + i, prefix="cur")
        for detector in detectors:
            alarms[detector.name] += bool(detector.check(profile, window, "v1"))
    rates = {name: count / CHECKS for name, count in alarms.items()}
    # Binomial(120, 0.05): 6 expected, 99 % of draws within 1..13 per detector; 18 expected pooled.
    for rate in rates.values():
        assert rate <= 0.12, rates
    pooled = sum(alarms.values()) / (CHECKS * len(detectors))
    assert 0.015 <= pooled <= 0.09, rates


def test_calibrate_equals_what_build_stores() -> None:
    reference = make_window(600, seed=12, prefix="ref")
    detector = PredictionDrift()
    profile = ReferenceProfile.build(
        reference, VOCABULARY, [detector], false_alarm_rate=0.05, n_rounds=40, seed=5, window_size=200
    )
    alone = detector.calibrate(profile, 0.05, 40, 5, window_size=200)
    assert alone == pytest.approx(profile.thresholds["predictions"].value)
    assert profile.thresholds["predictions"].method == "calibrated"
    assert profile.thresholds["predictions"].n_rounds == 40


def test_changed_parameters_are_recalibrated_on_the_fly(caplog: pytest.LogCaptureFixture) -> None:
    reference = make_window(400, seed=13, prefix="ref")
    profile = ReferenceProfile.build(
        reference, VOCABULARY, [EmbeddingDrift()], false_alarm_rate=0.05, n_rounds=20, seed=0, window_size=100
    )
    stored = profile.thresholds["embeddings"]
    changed = EmbeddingDrift(n_components=4)
    with caplog.at_level(logging.WARNING, logger="insightloop.detectors.profile"):
        value = changed.threshold_for(profile)
    assert "calibrating now" in caplog.text
    assert profile.thresholds["embeddings"].params["n_components"] == 4
    assert value > 0 and profile.thresholds["embeddings"] != stored
    assert EmbeddingDrift().threshold_for(profile) > 0  # back to the default: recalibrated again


@pytest.mark.parametrize("n", [200, 3000])
def test_tail_threshold_of_exact_p_values_is_nominal(n: int) -> None:
    rng = np.random.default_rng(n)
    null = -np.log10(rng.uniform(size=n))
    assert tail_threshold(null, 0.001) == pytest.approx(3.0, abs=0.6)
    assert tail_threshold(null, 0.05) == pytest.approx(-math.log10(0.05), abs=0.25)


def test_tail_threshold_validates() -> None:
    with pytest.raises(ValueError):
        tail_threshold([1.0] * 50, 0.0)
    with pytest.raises(ValueError):
        tail_threshold([1.0] * 5, 0.01)


def test_reference_splits_are_disjoint_and_reproducible() -> None:
    first = list(reference_splits(100, 30, 5, seed=1))
    again = list(reference_splits(100, 30, 5, seed=1))
    for (ref, cur), (ref2, cur2) in zip(first, again, strict=True):
        assert np.array_equal(ref, ref2) and np.array_equal(cur, cur2)
        assert len(cur) == 30 and len(ref) == 70 and not set(ref) & set(cur)
    assert len(next(iter(reference_splits(100, 80, 1, seed=1)))[1]) == 50  # at most half


def test_confidence_calibrator_estimates_accuracy() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 4000)
    correct = rng.uniform(size=4000) < confidence - 0.15  # over-confident by 15 points
    calibrator = ConfidenceCalibrator.fit(confidence[:2000], correct[:2000])
    mapped = calibrator.transform(np.linspace(0.5, 1.0, 50))
    assert np.all(np.diff(mapped) >= 0)
    assert calibrator.expected_accuracy(confidence[2000:]) == pytest.approx(correct[2000:].mean(), abs=0.03)
    assert ConfidenceCalibrator.model_validate_json(calibrator.model_dump_json()) == calibrator


def test_the_budgeted_thresholds_hold_on_windows_larger_than_the_calibration_splits() -> None:
    """A 300-row reference is calibrated on splits of 150 rows; the monitor then checks 600-row windows.

    Every registered detector, at its Bonferroni share of a budget: the alarms must not exceed what the
    budget allows (the threshold never goes below the nominal level of an exact test at any size).
    """
    from insightloop.detectors import AlarmBudget, all_detectors

    detectors = all_detectors()
    reference = make_window(300, seed=21, prefix="ref")
    profile = ReferenceProfile.build(reference, VOCABULARY, detectors, false_alarm_rate=0.01, n_rounds=60, seed=4)
    assert profile.window_size == 150
    budget = AlarmBudget(budget_texts=2_500, check_every_records=100, detectors=len(detectors))  # 4 % per check
    rate = budget.per_detector_rate
    checks = 30
    alarms = {d.name: 0 for d in detectors}
    for i in range(checks):
        window = make_window(600, seed=20_000 + i, prefix="big")
        for detector in detectors:
            measurement = detector.measure(profile, window)
            threshold = detector.threshold_for(profile, rate)
            assert threshold >= -math.log10(rate) - 1e-9
            alarms[detector.name] += detector.fires(measurement, threshold)
    # 30 checks at 4 % per check for all six together: 1.2 expected; P(Binomial(30, 0.04) >= 6) < 0.1 %.
    assert sum(alarms.values()) <= 5, alarms
