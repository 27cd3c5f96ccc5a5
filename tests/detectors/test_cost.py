"""Severity follows cost: the rule as a table, the cost a window measures, and insights that obey both."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insightloop.detectors import (
    AccuracyCost,
    AlarmBudget,
    EmbeddingDrift,
    ReferenceProfile,
    SeverityRule,
    accuracy_cost,
    severity_for_cost,
    tail_threshold,
    threshold_at_rate,
)
from insightloop.detectors.quality_stats import estimated_quality
from tests.detectors.conftest import WINDOW
from tests.detectors.worlds import Shift, make_window


def cost(points: float, low: float | None = None, high: float | None = None) -> AccuracyCost:
    return AccuracyCost(
        points=points,
        low=points - 1.0 if low is None else low,
        high=points + 1.0 if high is None else high,
        source="estimated",
        n=500,
        reference_accuracy=0.9,
        current_accuracy=0.9 - points / 100,
    )


@pytest.mark.parametrize(
    ("measured", "rule", "expected"),
    [
        pytest.param(None, SeverityRule(), "warning", id="unknown cost is not declared harmless"),
        pytest.param(cost(0.0), SeverityRule(), "info", id="no cost"),
        pytest.param(cost(-4.0), SeverityRule(), "info", id="accuracy rose"),
        pytest.param(cost(0.99), SeverityRule(), "info", id="just below one point"),
        pytest.param(cost(1.0), SeverityRule(), "warning", id="one point"),
        pytest.param(cost(4.9, low=2.0), SeverityRule(), "warning", id="below the critical cost"),
        pytest.param(cost(6.0, low=0.5), SeverityRule(), "warning", id="costly but its interval reaches below min"),
        pytest.param(cost(6.0, low=1.0), SeverityRule(), "critical", id="costly and its interval clears min"),
        pytest.param(cost(30.0, low=20.0), SeverityRule(), "critical", id="far past the critical cost"),
        pytest.param(cost(2.0), SeverityRule(min_accuracy_cost=3.0), "info", id="a stricter min"),
        pytest.param(
            cost(2.0, low=1.5), SeverityRule(min_accuracy_cost=0.5, critical_accuracy_cost=2.0), "critical", id="laxer"
        ),
        pytest.param(cost(0.0, low=-1.0), SeverityRule(min_accuracy_cost=0.0), "warning", id="min 0: any change"),
    ],
)
def test_severity_follows_the_cost(measured: AccuracyCost | None, rule: SeverityRule, expected: str) -> None:
    assert severity_for_cost(measured, rule) == expected


def test_the_rule_validates() -> None:
    with pytest.raises(ValueError, match="critical_accuracy_cost"):
        SeverityRule(min_accuracy_cost=3.0, critical_accuracy_cost=2.0)
    with pytest.raises(ValueError):
        SeverityRule(min_accuracy_cost=-1.0)


def test_cost_on_labels_is_the_accuracy_difference_with_its_interval(profile: ReferenceProfile) -> None:
    window = make_window(WINDOW, seed=41, shift=Shift(concept=0.2), prefix="cost")
    measured = accuracy_cost(profile, window)
    assert measured is not None and measured.source == "labeled" and measured.n == WINDOW
    ref = profile.window
    expected = 100 * (ref.correct[ref.labeled_mask].mean() - window.correct.mean())
    assert measured.points == pytest.approx(expected, abs=1e-3)
    assert measured.low < measured.points < measured.high
    # A 95 % interval of two proportions: about ±2 standard errors.
    a, b = ref.correct[ref.labeled_mask].mean(), window.correct.mean()
    se = 100 * math.sqrt(a * (1 - a) / ref.n_labeled + b * (1 - b) / WINDOW)
    assert measured.high - measured.low == pytest.approx(2 * 1.96 * se, rel=1e-3)


def test_rows_without_labels_yet_get_the_label_free_estimate(profile: ReferenceProfile) -> None:
    window = make_window(WINDOW, seed=45, shift=Shift(hard=0.4), prefix="cost", labeled=0.5)
    measured = accuracy_cost(profile, window)
    assert measured is not None and measured.source == "labeled_and_estimated"
    labeled = window.labeled_mask
    assert measured.n == WINDOW and measured.n_labeled == int(labeled.sum())
    newest = estimated_quality(profile, window.take(np.flatnonzero(~labeled)))
    assert newest is not None
    current = (labeled.sum() * window.correct[labeled].mean() + (~labeled).sum() * newest.current_estimate) / WINDOW
    ref = profile.window
    assert measured.points == pytest.approx(100 * (ref.correct[ref.labeled_mask].mean() - current), abs=1e-3)
    assert measured.low < measured.points < measured.high
    assert "newer ones" in measured.describe()


def test_without_labels_the_cost_is_the_label_free_estimate(profile: ReferenceProfile) -> None:
    window = make_window(WINDOW, seed=42, shift=Shift(hard=0.4), prefix="cost").without_labels()
    measured = accuracy_cost(profile, window)
    estimate = estimated_quality(profile, window)
    assert measured is not None and estimate is not None and measured.source == "estimated"
    assert measured.points == pytest.approx(100 * estimate.drop, abs=1e-3)
    assert measured.points > 1.0  # harder classes: the estimate sees the loss


def test_a_change_that_costs_nothing_is_info_and_one_that_costs_is_not(profile: ReferenceProfile) -> None:
    # The embeddings move off the reference along directions the classifier ignores (a certain change)
    # while the classes stay as separable: no accuracy cost.
    moved = make_window(WINDOW, seed=43, shift=Shift(domain=0.5), prefix="moved")
    (cheap,) = EmbeddingDrift().check(profile, moved, "v1")
    assert cheap.cost is not None and cheap.cost.points < 1.0
    assert cheap.severity == "info" and "for information only" in cheap.summary
    # The same detector on a change that costs accuracy (labels flipped on a moved window): warning or above.
    costly_window = make_window(WINDOW, seed=44, shift=Shift(domain=0.5, concept=0.3), prefix="costly")
    (costly,) = EmbeddingDrift().check(profile, costly_window, "v1")
    assert costly.cost is not None and costly.cost.points >= 5.0
    assert costly.severity == severity_for_cost(costly.cost) != "info"


@pytest.mark.parametrize(
    ("budget", "every", "detectors", "per_check", "per_detector"),
    [
        (1_000_000, 100, 6, 1e-4, 1e-4 / 6),
        (1_000_000, 500, 6, 5e-4, 5e-4 / 6),
        (10_000, 500, 5, 0.05, 0.01),
        (1000, 1000, 2, 0.5, 0.25),  # capped: at most one false alarm every other check
    ],
)
def test_the_budget_is_spent_per_check_and_split_across_detectors(
    budget: int, every: int, detectors: int, per_check: float, per_detector: float
) -> None:
    spent = AlarmBudget(budget_texts=budget, check_every_records=every, detectors=detectors)
    assert spent.per_check_rate == pytest.approx(per_check)
    assert spent.per_detector_rate == pytest.approx(per_detector)
    assert spent.nominal_threshold == pytest.approx(-math.log10(per_detector))


def test_a_threshold_never_goes_below_the_nominal_level() -> None:
    rng = np.random.default_rng(5)
    conservative = (-np.log10(rng.uniform(size=200)) * 0.5).tolist()  # a test whose p-values are too large
    liberal = (-np.log10(rng.uniform(size=200)) * 2.0).tolist()  # one whose p-values are too small
    rate = 1e-5
    assert threshold_at_rate(conservative, rate, stored_value=1.0, stored_rate=0.001) == pytest.approx(5.0)
    # Anti-conservative nulls: the calibrated tail, which lies above the nominal level, is what counts.
    assert threshold_at_rate(liberal, rate, stored_value=1.0, stored_rate=0.001) == pytest.approx(
        tail_threshold(liberal, rate)
    )
    assert tail_threshold(liberal, rate) > 5.0
    # No null statistics kept (an older profile): the stored level moves along an exact test's tail.
    assert threshold_at_rate(None, rate, stored_value=3.5, stored_rate=0.001) == pytest.approx(5.5)
