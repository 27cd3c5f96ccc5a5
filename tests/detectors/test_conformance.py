"""One contract for every registered detector (River-style conformance suite)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from insightloop.detectors import DETECTORS, Detector, Insight, ReferenceProfile, Window, check_all, severity_for_cost
from tests.detectors.conftest import WINDOW
from tests.detectors.worlds import Shift, make_window

#: The shift each detector must notice (every registered detector needs one).
PLANTED: dict[str, Shift] = {
    "descriptors": Shift(domain=0.5),
    "embeddings": Shift(domain=0.5),
    "predictions": Shift(prior=0.75),
    "labeled_quality": Shift(concept=0.15),
    "estimated_quality": Shift(hard=0.4),
    "slices": Shift(long_errors=True, long_share=0.15),
}

#: Parameters each detector must reject (besides the shared threshold / critical_factor checks).
INVALID: dict[str, list[dict[str, Any]]] = {
    "descriptors": [{"method": "psi"}, {"descriptors": ("colour",)}, {"descriptors": ()}],
    "embeddings": [{"n_components": 0}, {"n_features": 4}, {"bandwidth": -1.0}],
    "predictions": [],
    "labeled_quality": [{"min_labeled": 5}, {"min_drop": 1.5}, {"min_drop": 0.1, "critical_drop": 0.05}],
    "estimated_quality": [{"min_drop": -0.1}, {"critical_drop": 2.0}],
    "slices": [{"min_count": 1}, {"max_values": 0}, {"min_count": 30, "min_labeled": 10}, {"min_delta": 1.0}],
}
COMMON_INVALID: list[dict[str, Any]] = [
    {"threshold": 0.0},
    {"threshold": math.nan},
    {"critical_factor": 0.5},
]

NAMES = sorted(DETECTORS)


def warnings_or_worse(insights: list[Insight]) -> list[Insight]:
    return [i for i in insights if i.at_least("warning")]


@pytest.fixture(scope="module")
def planted(profile: ReferenceProfile) -> dict[str, Window]:
    return {
        name: make_window(WINDOW, seed=500 + i, shift=shift, prefix="cur")
        for i, (name, shift) in enumerate(sorted(PLANTED.items()))
    }


def test_registry_is_covered_by_this_suite() -> None:
    assert set(DETECTORS) == set(PLANTED) == set(INVALID)
    for name, cls in DETECTORS.items():
        assert cls.name == name
        assert issubclass(cls, Detector)
        assert cls.__doc__ and "Examples" in cls.__doc__ and "Parameters" in cls.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_no_insight_on_the_reference_itself(name: str, profile: ReferenceProfile) -> None:
    detector = DETECTORS[name]()
    assert detector.check(profile, profile.window, "v1") == []


@pytest.mark.parametrize("name", NAMES)
def test_no_insight_on_a_window_like_the_reference(name: str, profile: ReferenceProfile) -> None:
    window = make_window(WINDOW, seed=77, prefix="same")
    assert warnings_or_worse(DETECTORS[name]().check(profile, window, "v1")) == []


@pytest.mark.parametrize("name", NAMES)
def test_insight_on_a_planted_shift(name: str, profile: ReferenceProfile, planted: dict[str, Window]) -> None:
    detector = DETECTORS[name]()
    insights = detector.check(profile, planted[name], "v7")
    assert len(insights) == 1, detector.measure(profile, planted[name])
    insight = insights[0]
    assert insight.detector == name
    assert insight.kind == type(detector).kind
    # Severity follows the cost the window measured (labels or the label-free estimate), not the p-value.
    assert insight.cost is not None and 0 < insight.cost.n <= WINDOW
    assert insight.severity == severity_for_cost(insight.cost)
    assert insight.statistic >= insight.threshold > 0
    assert insight.model_version == "v7"
    assert insight.window.count == WINDOW
    assert insight.summary.endswith(".") and "\n" not in insight.summary
    assert insight.recommendation.action in ("retrain", "recalibrate", "none")
    assert insight.recommendation.because


@pytest.mark.parametrize("name", NAMES)
def test_insights_survive_a_json_round_trip(name: str, profile: ReferenceProfile, planted: dict[str, Window]) -> None:
    insights = DETECTORS[name]().check(profile, planted[name], "v1")
    assert insights
    for insight in insights:
        text = insight.model_dump_json()
        assert Insight.model_validate_json(text) == insight
        assert Insight.model_validate_json(text).model_dump_json() == text


@pytest.mark.parametrize("name", NAMES)
def test_check_is_deterministic(name: str, profile: ReferenceProfile, planted: dict[str, Window]) -> None:
    detector = DETECTORS[name]()
    first = detector.check(profile, planted[name], "v1")
    again = detector.check(profile, planted[name], "v1")
    assert [i.model_copy(update={"created_at": None}) for i in first] == [
        i.model_copy(update={"created_at": None}) for i in again
    ]


@pytest.mark.parametrize("name", NAMES)
def test_parameters_are_validated(name: str) -> None:
    cls = DETECTORS[name]
    for params in [*INVALID[name], *COMMON_INVALID]:
        with pytest.raises(ValueError):
            cls(**params)


@pytest.mark.parametrize("name", NAMES)
def test_clone_from_parameters(name: str) -> None:
    detector = DETECTORS[name](threshold=2.5, critical_factor=3.0)
    clone = type(detector)(**detector.get_params())
    assert clone is not detector
    assert clone.get_params() == detector.get_params()
    assert detector.clone(critical_factor=4.0).critical_factor == 4.0
    assert repr(clone) == repr(detector)


@pytest.mark.parametrize("name", NAMES)
def test_measure_exposes_statistic_and_p_value(
    name: str, profile: ReferenceProfile, planted: dict[str, Window]
) -> None:
    detector = DETECTORS[name]()
    measurement = detector.measure(profile, planted[name])
    assert measurement.applicable
    assert detector.statistic(profile, planted[name]) == measurement.statistic
    assert measurement.p_value is not None and 0 <= measurement.p_value <= 1
    assert measurement.statistic == pytest.approx(-math.log10(max(measurement.p_value, 1e-300)), abs=1e-9)


def test_configured_threshold_overrides_the_calibrated_one(
    profile: ReferenceProfile, planted: dict[str, Window]
) -> None:
    window = planted["predictions"]
    assert DETECTORS["predictions"](threshold=1000.0).check(profile, window, "v1") == []
    assert DETECTORS["predictions"](threshold=0.5).check(profile, window, "v1")


def test_check_all_reports_every_detector(profile: ReferenceProfile, planted: dict[str, Window]) -> None:
    result = check_all(profile, planted["embeddings"], "v1")
    assert [r.detector for r in result.results] == list(DETECTORS)
    fired = {i.detector for i in result.insights}
    assert {"descriptors", "embeddings"} <= fired
    for r in result.results:
        assert r.ratio == pytest.approx(r.statistic / r.threshold)
        assert (r.severity is not None) == (r.detector in fired)


def test_labeled_detector_waits_for_labels(profile: ReferenceProfile, planted: dict[str, Window]) -> None:
    unlabeled = planted["labeled_quality"].without_labels()
    measurement = DETECTORS["labeled_quality"]().measure(profile, unlabeled)
    assert not measurement.applicable and "labeled" in measurement.reason
    assert DETECTORS["labeled_quality"]().check(profile, unlabeled, "v1") == []


@pytest.mark.parametrize("size", [0, 1, 5])
def test_tiny_windows_are_handled(profile: ReferenceProfile, size: int) -> None:
    window = make_window(max(size, 1), seed=88, prefix="tiny").take(range(size))
    result = check_all(profile, window, "v1")
    assert warnings_or_worse(result.insights) == []
    assert len(result.results) == len(DETECTORS)
    if size < 2:
        assert not any(r.applicable for r in result.results)


def test_a_window_of_another_model_is_refused(profile: ReferenceProfile) -> None:
    window = make_window(50, seed=89)
    other = Window(
        ids=window.ids,
        texts=window.texts,
        class_names=("neg", "pos"),
        probabilities=window.probabilities,
        embeddings=window.embeddings,
        token_counts=window.token_counts,
    )
    with pytest.raises(ValueError, match="classes"):
        check_all(profile, other, "v1")
    with pytest.raises(ValueError, match="classes"):
        DETECTORS["predictions"]().check(profile, other, "v1")
