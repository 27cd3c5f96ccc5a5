"""Recommendations follow from the evidence: the cheapest action the diagnosis supports."""

from __future__ import annotations

import pytest

from insightloop.detectors import ReferenceProfile, check_all
from insightloop.detectors.advice import long_text_context, long_text_slice
from insightloop.detectors.slice_stats import SliceAnalysis, SliceStats
from insightloop.detectors.slicekey import SliceKey
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
    ("limit", "lower", "needed", "expected"),
    [
        (128, 128, None, (256, "head_tail")),  # twice the context, keeping each text's beginning and end
        (128, 128, 200, (256, "head_tail")),  # twice holds them
        (128, 128, 300, (512, "head_tail")),  # the power of two that holds them, up to the cap
        (128, 128, 990, (512, "head_tail")),  # full movie reviews after snippets: straight to the cap
        (64, 64, 70, (128, "head_tail")),  # at least double
        (384, 256, None, (512, "head_tail")),  # never past the position cap
        (512, 512, 900, (None, "chunks")),  # at the cap nothing longer fits: read the whole text in windows
        (1024, 512, None, (None, "chunks")),
        (None, 64, None, (256, "head_tail")),  # the model's limit unknown: from the failing slice
        (None, 400, None, (512, "head_tail")),
    ],
)
def test_a_long_text_insight_asks_for_the_context_its_texts_need_then_for_windows_at_the_cap(
    limit: int | None, lower: int, needed: int | None, expected: tuple[int | None, str]
) -> None:
    assert long_text_context(limit, lower, needed) == expected


def stats(key: str, share: tuple[float, float], share_p: float, loss: tuple[float, float] | None) -> SliceStats:
    """A slice of a 400-text window; ``loss``: (reference, current) error rates when it was tested."""
    return SliceStats(
        definition=SliceKey.parse(key),
        count_reference=int(400 * share[0]),
        count_current=int(400 * share[1]),
        share_reference=share[0],
        share_current=share[1],
        share_p_value=share_p,
        metric="error_rate",
        loss_count=int(400 * share[1]) if loss else 0,
        reference_loss=loss[0] if loss else None,
        current_loss=loss[1] if loss else None,
        loss_p_value=1e-6 if loss else None,
        excess_errors=400 * share[1] * (loss[1] - loss[0]) if loss else 0.0,
    )


LONG_ERRORS = stats("length_tokens=128+", (0.1, 0.3), 1e-5, (0.1, 0.5))
ALL_LONG = stats("length_tokens=128+", (0.0, 0.99), 1e-40, None)  # the whole window: its loss is not tested
HALF_LENGTH = stats("length_tokens=64-127", (0.0, 0.8), 1e-30, None)
SHORT_ERRORS = stats("length_tokens=16-31", (0.3, 0.3), 0.9, (0.1, 0.5))
DOMAIN = stats("meta.domain=kitchen", (0.0, 0.9), 1e-30, None)

EARLY_LONG = stats("length_tokens=128+", (0.0, 0.38), 1e-8, None)  # new long texts, a minority of the window so far
SEEN_LONG = stats("length_tokens=128+", (0.3, 0.4), 1e-8, None)  # the reference held texts this long too

# slices, the model's limit, quality dropped (significantly), the drop's point estimate, the slice blamed
LONG_CASES: list[tuple[list[SliceStats], int | None, bool, float, SliceStats | None]] = [
    ([LONG_ERRORS], 128, False, 0.0, LONG_ERRORS),  # errors concentrate in truncated texts
    ([SHORT_ERRORS], 128, True, 0.1, None),  # errors in short texts are not about the context
    ([ALL_LONG], 128, True, 0.1, ALL_LONG),  # the traffic became long texts, and quality dropped
    ([ALL_LONG], 128, False, 0.0, None),  # long traffic the model still reads well: nothing to fix
    ([HALF_LENGTH], 128, True, 0.1, HALF_LENGTH),  # from half of the context on, a text is long for the model
    ([HALF_LENGTH], 512, True, 0.1, None),  # ...but 64 tokens is short for a model taking 512
    ([DOMAIN], 128, True, 0.1, None),  # traffic moved, but not to long texts
    ([SEEN_LONG], 128, True, 0.1, None),  # grown, but a minority of the traffic, and seen in the reference
    ([EARLY_LONG], 128, False, 0.05, EARLY_LONG),  # texts it cuts and never saw, accuracy falling: not yet significant
    ([EARLY_LONG], 128, False, 0.0, None),  # ...the same with accuracy holding
    ([SEEN_LONG], 128, False, 0.05, None),  # ...and with texts like them in the reference
    ([stats("length_tokens=64-127", (0.0, 0.38), 1e-8, None)], 128, False, 0.05, None),  # long, but not cut
]


@pytest.mark.parametrize(("found", "limit", "dropped", "drop", "expected"), LONG_CASES)
def test_a_long_text_diagnosis_needs_errors_in_long_texts_or_traffic_that_became_long_and_worse(
    found: list[SliceStats], limit: int | None, dropped: bool, drop: float, expected: SliceStats | None
) -> None:
    analysis = SliceAnalysis("labels", found, sum(s.loss_p_value is not None for s in found), 0.2, 0.35)
    blamed = long_text_slice(analysis, limit, dropped, 0.01, drop)
    if expected is None:
        assert blamed is None
        return
    assert blamed is not None and blamed.definition == expected.definition
    if expected.loss_p_value is None:  # the whole window's error rates stand for the slice that is most of it
        assert (blamed.reference_loss, blamed.current_loss) == (0.2, 0.35)
    else:
        assert blamed == expected
