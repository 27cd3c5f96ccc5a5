"""Hysteresis: raise at one level, clear at a lower one; one ongoing condition keeps one insight id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from insightloop.detectors import ConditionTracker, Insight, TrackerState, Transition, WindowSpan

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(tracker: ConditionTracker, ratios: list[float], key: str = "embeddings") -> list[str]:
    return [tracker.observe(key, r * 2.0, 2.0, at=T0 + timedelta(minutes=i)).value for i, r in enumerate(ratios)]


def test_raises_at_the_raise_level_and_clears_only_below_the_clear_level() -> None:
    tracker = ConditionTracker(raise_level=1.0, clear_level=0.7)
    assert run(tracker, [0.5, 0.99, 1.0, 0.9, 0.8, 0.71, 1.3, 0.69, 0.9, 1.1]) == [
        "quiet",
        "quiet",
        "new",
        "ongoing",
        "ongoing",
        "ongoing",
        "ongoing",
        "cleared",
        "quiet",
        "new",
    ]


def test_a_statistic_hovering_at_the_threshold_does_not_flap() -> None:
    tracker = ConditionTracker(raise_level=1.0, clear_level=0.8)
    transitions = run(tracker, [1.02, 0.97, 1.01, 0.95, 1.03, 0.98, 1.0, 0.96])
    assert transitions.count("new") == 1 and "cleared" not in transitions


def test_clear_after_needs_consecutive_quiet_checks() -> None:
    tracker = ConditionTracker(raise_level=1.0, clear_level=0.8, clear_after=2)
    assert run(tracker, [1.5, 0.5, 1.2, 0.5, 0.5]) == ["new", "ongoing", "ongoing", "ongoing", "cleared"]


def test_keys_are_independent() -> None:
    tracker = ConditionTracker()
    assert tracker.observe("a", 3.0, 1.0) is Transition.NEW
    assert tracker.observe("b", 0.1, 1.0) is Transition.QUIET
    assert set(tracker.active) == {"a"}


def _insight(statistic: float, suffix: str) -> Insight:
    return Insight(
        id=f"embeddings-{suffix}",
        detector="embeddings",
        kind="embedding_drift",
        severity="warning",
        window=WindowSpan(count=10),
        statistic=statistic,
        threshold=2.0,
        summary="Embeddings drifted.",
        created_at=T0,
        model_version="v1",
    )


def test_follow_keeps_the_first_insight_id_while_the_condition_lasts() -> None:
    tracker = ConditionTracker(raise_level=1.0, clear_level=0.8)
    transition, first = tracker.follow(_insight(4.0, "a"))
    assert transition is Transition.NEW and first.id == "embeddings-a"
    transition, update = tracker.follow(_insight(3.0, "b"))
    assert transition is Transition.ONGOING and update.id == "embeddings-a" and update.statistic == 3.0
    transition, _ = tracker.follow(_insight(1.0, "c"))
    assert transition is Transition.CLEARED
    transition, fresh = tracker.follow(_insight(5.0, "d"))
    assert transition is Transition.NEW and fresh.id == "embeddings-d"


def test_state_round_trips_through_json() -> None:
    tracker = ConditionTracker(raise_level=1.2, clear_level=0.9, clear_after=3)
    tracker.observe("slices", 5.0, 2.0, at=T0, insight_id="slices-1")
    tracker.observe("slices", 4.0, 2.0, at=T0 + timedelta(minutes=5))
    state = TrackerState.model_validate_json(tracker.state().model_dump_json())
    restored = ConditionTracker.from_state(state)
    assert restored.get_params() == tracker.get_params()
    assert restored.active == tracker.active
    condition = restored.active["slices"]
    assert condition.insight_id == "slices-1" and condition.checks == 2 and condition.peak_ratio == 2.5
    assert restored.observe("slices", 1.0, 2.0) is Transition.ONGOING  # 0.5 < 0.9 but clear_after=3


@pytest.mark.parametrize(
    "params",
    [{"raise_level": 0.0}, {"raise_level": 1.0, "clear_level": 1.5}, {"clear_level": -1.0}, {"clear_after": 0}],
)
def test_parameters_are_validated(params: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ConditionTracker(**params)  # type: ignore[arg-type]
