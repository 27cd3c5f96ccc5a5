"""The monitor's check as a pure step: planted windows and tracker states in, insights and states out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from insightloop.detectors import (
    AlarmBudget,
    ReferenceProfile,
    Severity,
    StepOutcome,
    TrackerState,
    Transition,
    check_step,
    detector_key,
    traffic_key,
)
from tests.detectors.conftest import WINDOW
from tests.detectors.worlds import Shift, make_window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VERSION = "v0001"
CALM = Shift()
DOMAIN = Shift(domain=0.5)
CONCEPT = Shift(concept=0.3)


def fresh() -> TrackerState:
    return TrackerState(raise_level=1.0, clear_level=0.8, clear_after=2)


def run(profile: ReferenceProfile, shifts: list[Shift], **policy: Severity) -> list[StepOutcome]:
    """One step per planted window, each fed the tracker state the previous one returned."""
    state, outcomes = fresh(), []
    for n, shift in enumerate(shifts):
        window = make_window(WINDOW, seed=100 + n, shift=shift, prefix="cur")
        outcome = check_step(profile, window, VERSION, state, at=T0 + timedelta(minutes=n), **policy)
        outcomes.append(outcome)
        state = outcome.tracker
    return outcomes


@pytest.mark.parametrize(
    ("shifts", "transitions"),
    [
        pytest.param([CALM, CALM], ["quiet", "quiet"], id="calm traffic says nothing"),
        pytest.param([DOMAIN, DOMAIN], ["new", "ongoing"], id="one shift is one condition"),
        pytest.param([DOMAIN, CALM, CALM], ["new", "ongoing", "cleared"], id="clears after two calm checks"),
        pytest.param([CALM, DOMAIN], ["quiet", "new"], id="raised when the shift comes"),
    ],
)
def test_the_traffic_condition_follows_the_planted_windows(
    profile: ReferenceProfile, shifts: list[Shift], transitions: list[str]
) -> None:
    outcomes = run(profile, shifts)
    assert [o.transition.value for o in outcomes] == transitions
    for outcome, shift in zip(outcomes, shifts, strict=True):
        assert (outcome.insight is not None) == (shift is DOMAIN)
        assert outcome.publish == (outcome.transition is Transition.NEW)
        assert {g.detector for g in outcome.gauges} == {r.detector for r in outcome.result.results}
        assert (traffic_key(VERSION) in outcome.tracker.conditions) == (outcome.transition.value in ("new", "ongoing"))


def test_an_ongoing_shift_keeps_the_id_of_the_insight_that_raised_it(profile: ReferenceProfile) -> None:
    first, second = run(profile, [DOMAIN, DOMAIN])
    assert first.insight is not None and second.insight is not None
    assert second.insight.id == first.insight.id
    assert first.tracker.conditions[traffic_key(VERSION)].insight_id == first.insight.id
    raised = {g.detector for g in first.gauges if g.raised}
    assert "embeddings" in raised
    assert all(first.tracker.conditions.get(detector_key(VERSION, d)) for d in raised)


def test_the_cleared_outcome_names_the_insight_to_close(profile: ReferenceProfile) -> None:
    raised, _, cleared = run(profile, [DOMAIN, CALM, CALM])
    assert raised.insight is not None
    assert cleared.cleared == raised.insight.id and cleared.insight is None and not cleared.publish
    assert traffic_key(VERSION) not in cleared.tracker.conditions


def test_min_severity_decides_what_is_published(profile: ReferenceProfile) -> None:
    (low,) = run(profile, [DOMAIN], min_severity="info")
    assert low.insight is not None and low.publish
    (high,) = run(profile, [DOMAIN], min_severity="critical")
    assert high.insight is not None and high.transition is Transition.NEW
    assert high.publish == (high.insight.severity == "critical")


def test_the_step_is_pure(profile: ReferenceProfile) -> None:
    state = fresh()
    before = state.model_dump()
    window = make_window(WINDOW, seed=7, shift=DOMAIN, prefix="cur")
    one = check_step(profile, window, VERSION, state, at=T0)
    two = check_step(profile, window, VERSION, state, at=T0)
    assert state.model_dump() == before, "the input tracker state is not changed"
    assert one == two and one.transition is Transition.NEW


def test_a_merged_quality_loss_reaches_the_caller_under_its_plain_name(profile: ReferenceProfile) -> None:
    (outcome,) = run(profile, [CONCEPT])
    assert outcome.insight is not None
    assert "labeled_quality" in {i.detector for i in outcome.result.insights}
    assert outcome.insight.evidence.metrics["accuracy_drop"] > 0
    assert outcome.labeled_accuracy is not None and outcome.labeled_accuracy < 0.85


COSTLY = Shift(domain=0.5, concept=0.3)


def test_a_cheap_change_is_stored_as_info_and_published_once_it_costs(profile: ReferenceProfile) -> None:
    cheap, costly, again = run(profile, [DOMAIN, COSTLY, COSTLY], min_severity="warning")
    assert cheap.insight is not None and cheap.insight.severity == "info" and cheap.transition is Transition.NEW
    assert not cheap.publish, "an info insight is never published at min_severity warning"
    assert not any(g.drifted for g in cheap.gauges), "nor does it set a drifted gauge (the alert's input)"
    assert any(g.raised for g in cheap.gauges)
    assert costly.insight is not None and costly.transition is Transition.ONGOING
    assert costly.insight.at_least("warning") and costly.publish, "the cost made it a warning: published now"
    assert costly.insight.id == cheap.insight.id, "under the id of the condition it belongs to"
    assert any(g.drifted for g in costly.gauges)
    assert again.insight is not None
    assert again.publish == (again.insight.severity_rank > costly.insight.severity_rank), "no page per check"


def test_the_budget_sets_the_thresholds_of_the_step(profile: ReferenceProfile) -> None:
    window = make_window(WINDOW, seed=9, shift=DOMAIN, prefix="cur")
    budget = AlarmBudget(budget_texts=1_000_000, check_every_records=100, detectors=6)
    strict = check_step(profile, window, VERSION, fresh(), at=T0, budget=budget)
    assert strict.false_alarm_rate == pytest.approx(1e-4 / 6)
    loose = check_step(profile, window, VERSION, fresh(), at=T0)
    for tight, own in zip(strict.result.results, loose.result.results, strict=True):
        assert tight.threshold >= budget.nominal_threshold - 1e-9, tight
        assert tight.threshold >= own.threshold, "a budget of 1e6 texts is stricter than the profile's 1 %"
