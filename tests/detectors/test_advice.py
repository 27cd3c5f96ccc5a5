"""Recommendations follow from the evidence: the cheapest action the diagnosis supports."""

from __future__ import annotations

import pytest

from insightloop.detectors import ReferenceProfile, check_all
from insightloop.detectors.advice import long_text_context
from tests.detectors.worlds import MAX_LENGTH, Shift, make_window


def actions(profile: ReferenceProfile, shift: Shift, seed: int) -> dict[str, object]:
    insights = check_all(profile, make_window(400, seed=seed, shift=shift, prefix="cur"), "v1").insights
    assert insights
    recommendations = {i.recommendation.model_dump_json() for i in insights}
    assert len(recommendations) == 1, recommendations  # one diagnosis, one story per window
    return insights[0].recommendation.model_dump()


def test_prior_shift_is_recalibrated(profile: ReferenceProfile) -> None:
    rec = actions(profile, Shift(prior=0.8), seed=201)
    assert rec["action"] == "recalibrate"
    assert rec["adjust"]["class_weights"]["positive"] > 1 > rec["adjust"]["class_weights"]["negative"]


def test_domain_shift_is_retrained_with_weight_on_the_new_traffic(profile: ReferenceProfile) -> None:
    rec = actions(profile, Shift(domain=0.6), seed=202)
    assert rec["action"] == "retrain"
    assert "meta.domain=gadgets" in rec["adjust"]["slice_weights"]
    assert rec["adjust"]["max_length"] is None and rec["adjust"]["truncation"] is None


def test_truncated_texts_failing_ask_for_a_longer_max_length(profile: ReferenceProfile) -> None:
    rec = actions(profile, Shift(long_errors=True, long_share=0.15), seed=203)
    assert rec["action"] == "retrain"
    assert rec["adjust"]["max_length"] == 2 * MAX_LENGTH
    assert rec["adjust"]["truncation"] == "head_tail", "past any context, a long text's end is kept too"
    assert f"length_tokens={MAX_LENGTH}+" in rec["adjust"]["slice_weights"]
    assert f"texts of {MAX_LENGTH}+ tokens, which the model truncates at {MAX_LENGTH}" in str(rec["because"])


def test_quality_drop_without_a_cause_retrains_on_recent_data(profile: ReferenceProfile) -> None:
    rec = actions(profile, Shift(concept=0.2), seed=204)
    assert rec["action"] == "retrain"
    assert rec["adjust"]["recent_data_weight"] == 2.0
    assert rec["adjust"]["max_length"] is None and not rec["adjust"]["class_weights"]


@pytest.mark.parametrize(
    ("limit", "lower", "expected"),
    [
        (128, 128, (256, "head_tail")),  # twice the context, keeping each text's beginning and end
        (384, 256, (512, "head_tail")),  # up to the position cap
        (512, 512, (None, "chunks")),  # at the cap nothing longer fits: read the whole text in windows
        (1024, 512, (None, "chunks")),
        (None, 64, (256, "head_tail")),  # the model's limit unknown: from the failing slice
        (None, 400, (512, "head_tail")),
    ],
)
def test_a_long_text_insight_asks_for_more_context_then_for_windows_at_the_cap(
    limit: int | None, lower: int, expected: tuple[int | None, str]
) -> None:
    assert long_text_context(limit, lower) == expected
