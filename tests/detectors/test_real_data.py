"""On real reviews (../shared/data): no alarm within a domain, a named drift across domains, and a
labeled degradation concentrated in one slice shows up as that slice.

Skipped with a reason when the data folder is absent. See ``realdata.py`` for the stand-in model.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from insightloop.detectors import Insight, ReferenceProfile, Window, check_all, severity_for_cost, vocabulary_from_texts
from tests.detectors.realdata import AMAZON, MAX_LENGTH, StandIn, fit_stand_in, rows

pytestmark = pytest.mark.skipif(
    not (AMAZON / "train.jsonl").is_file(),
    reason=f"real data not found at {AMAZON} (the sibling ../shared/data folder of the repository)",
)

DRIFT_KINDS = {"text_drift", "embedding_drift", "prediction_drift"}


@pytest.fixture(scope="module")
def books() -> tuple[StandIn, ReferenceProfile]:
    """A stand-in model trained on 800 books reviews; its profile from 800 other books reviews."""
    data = rows("train", ("books",))
    random.Random(2007).shuffle(data)
    train, validation = data[:800], data[800:]
    model = fit_stand_in(train, validation)
    vocabulary = vocabulary_from_texts(r["text"] for r in train)
    profile = ReferenceProfile.build(
        model.window(validation),
        vocabulary,
        false_alarm_rate=0.001,
        n_rounds=100,
        seed=0,
        window_size=400,
        max_length=MAX_LENGTH,
    )
    return model, profile


def serious(insights: list[Insight]) -> list[Insight]:
    return [i for i in insights if i.at_least("warning")]


def plant_errors(window: Window, where: np.ndarray, share: float, seed: int) -> Window:
    """Relabel ``share`` of the rows in ``where`` so the prediction is wrong there (planted degradation)."""
    rng = np.random.default_rng(seed)
    labels = list(window.labels)
    for i in np.flatnonzero(where):
        if rng.uniform() < share:
            predicted = window.predicted_index[i]
            labels[i] = window.class_names[1 - predicted]
    fields: dict[str, Any] = {
        name: getattr(window, name)
        for name in ("ids", "texts", "class_names", "probabilities", "embeddings", "token_counts", "meta", "timestamps")
    }
    return Window(labels=labels, **fields)


@pytest.mark.parametrize("labeled", [True, False])
def test_books_against_other_books_raises_nothing(books: tuple[StandIn, ReferenceProfile], labeled: bool) -> None:
    model, profile = books
    current = model.window(rows("test", ("books",)), labels=labeled)  # disjoint from train and reference
    result = check_all(profile, current, "books-v1")
    assert serious(result.insights) == [], [i.summary for i in result.insights]


def test_books_against_electronics_and_kitchen_names_what_changed(books: tuple[StandIn, ReferenceProfile]) -> None:
    model, profile = books
    current = model.window(rows("test", ("electronics", "kitchen")), labels=False)
    insights = serious(check_all(profile, current, "books-v1").insights)
    drift = [i for i in insights if i.kind in DRIFT_KINDS]
    assert drift, [i.summary for i in insights]
    text = next(i for i in drift if i.kind == "text_drift")
    drifted = {d.name for d in text.evidence.descriptors if d.drifted}
    assert drifted & {"oov_share", "length_words", "length_tokens"}, text.evidence.descriptors
    oov = next(d for d in text.evidence.descriptors if d.name == "oov_share")
    assert oov.current_mean > oov.reference_mean  # new words: gadgets and kitchenware, not novels
    slice_keys = {s.key for s in text.evidence.slices}
    assert slice_keys & {"meta.domain=electronics", "meta.domain=kitchen"}, slice_keys
    assert "out-of-vocabulary share rose" in text.summary or "length" in text.summary
    ids = set(current.ids)
    for insight in drift:
        assert insight.evidence.examples and all(e.id in ids for e in insight.evidence.examples)
        assert insight.recommendation.action == "retrain"
        assert set(insight.recommendation.adjust.slice_weights) & {"meta.domain=electronics", "meta.domain=kitchen"}
    embedding = next(i for i in drift if i.kind == "embedding_drift")
    # Severity follows the cost the label-free estimate puts on this unlabeled window, not the p-value.
    assert embedding.cost is not None and embedding.cost.source == "estimated" and embedding.cost.points >= 1.0
    assert embedding.severity == severity_for_cost(embedding.cost)


def test_errors_in_long_texts_name_the_long_slice_and_ask_for_a_longer_max_length(
    books: tuple[StandIn, ReferenceProfile],
) -> None:
    model, profile = books
    current = model.window(rows("test", ("books",)))
    long_texts = current.token_counts > 200
    assert 40 <= long_texts.sum() <= 300
    degraded = plant_errors(current, long_texts, share=0.6, seed=1)
    insights = serious(check_all(profile, degraded, "books-v1").insights)
    kinds = {i.kind for i in insights}
    assert {"quality_drop", "slice_degradation"} <= kinds, [i.summary for i in insights]
    for insight in insights:
        if insight.kind in ("quality_drop", "slice_degradation"):
            top = insight.evidence.slices[0]
            assert top.field == "length_tokens" and top.value in ("128-255", f"{MAX_LENGTH}+"), top
            assert top.current_value is not None and top.reference_value is not None
            assert top.current_value > top.reference_value
            assert insight.recommendation.action == "retrain"
            assert insight.recommendation.adjust.max_length == 2 * MAX_LENGTH
            assert insight.recommendation.adjust.truncation == "head_tail"
            # texts of 128-255 tokens are not cut at 256; only the 256+ bucket is
            cut = top.value == f"{MAX_LENGTH}+"
            said = f"which the model truncates at {MAX_LENGTH}" if cut else f"near the {MAX_LENGTH} tokens"
            assert said in insight.recommendation.because, insight.recommendation.because
            assert "length_tokens" in insight.summary


def test_errors_in_one_domain_name_that_domain(books: tuple[StandIn, ReferenceProfile]) -> None:
    model, profile = books
    current = model.window(rows("test", ("books", "dvd")))
    dvd = np.array([m["domain"] == "dvd" for m in current.meta])
    degraded = plant_errors(current, dvd, share=0.4, seed=2)
    insights = serious(check_all(profile, degraded, "books-v1").insights)
    slice_insight = next(i for i in insights if i.kind == "slice_degradation")
    assert slice_insight.evidence.slices[0].key == "meta.domain=dvd"
    assert "meta.domain=dvd" in slice_insight.summary
    quality = next(i for i in insights if i.kind == "quality_drop")
    assert quality.evidence.slices[0].key == "meta.domain=dvd"
    assert quality.recommendation.action == "retrain"
    assert quality.recommendation.adjust.max_length is None
    assert "meta.domain=dvd" in quality.recommendation.adjust.slice_weights


def test_a_pure_label_mix_shift_asks_for_recalibration(books: tuple[StandIn, ReferenceProfile]) -> None:
    """Real books reviews re-sampled to 80 % positive (the texts are real; the class mix is ours)."""
    model, profile = books
    test = rows("test", ("books",))
    positive = [r for r in test if r["label"] == "positive"]
    negative = [r for r in test if r["label"] == "negative"][:50]
    current = model.window(positive + negative, labels=False)
    # All insights: their severity follows the accuracy cost, which this shift need not have.
    insights = check_all(profile, current, "books-v1").insights
    assert [i.kind for i in insights] == ["prediction_drift"], [i.summary for i in insights]
    recommendation = insights[0].recommendation
    assert recommendation.action == "recalibrate"
    weights = recommendation.adjust.class_weights
    assert weights["positive"] > 1 > weights["negative"]
    shares = {c.name: c for c in insights[0].evidence.classes}
    assert shares["positive"].current_share > shares["positive"].reference_share


def test_full_movie_reviews_after_one_sentence_snippets_ask_for_a_longer_context() -> None:
    """A model trained on SST-2 snippets meets full movie reviews: every text is now cut at the model's
    limit, so no slice of the window can show where the errors are. The traffic that became long is the
    diagnosis, and the recommendation is a longer context that keeps each review's beginning and end."""
    data = AMAZON.parent
    if not (data / "sst2" / "train.jsonl").is_file() or not (data / "movie_review_polarity" / "test.jsonl").is_file():
        pytest.skip("the sst2 and movie_review_polarity data are not in ../shared/data")

    def read(path: str) -> list[dict[str, Any]]:
        with open(data / path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    snippets = read("sst2/train.jsonl")
    random.Random(5).shuffle(snippets)
    model = fit_stand_in(snippets[:3000], read("sst2/dev.jsonl")[:800])
    profile = ReferenceProfile.build(
        model.window(read("sst2/dev.jsonl")[:800]),
        vocabulary_from_texts(r["text"] for r in snippets[:3000]),
        false_alarm_rate=0.001,
        n_rounds=100,
        seed=0,
        window_size=400,
        max_length=MAX_LENGTH,
    )
    current = model.window(read("movie_review_polarity/test.jsonl"))
    assert np.mean(current.token_counts >= MAX_LENGTH) > 0.9, "nearly every review is cut"
    insights = serious(check_all(profile, current, "sst2-v1").insights)
    assert insights, "full reviews after snippets must be seen"
    for insight in insights:
        adjust = insight.recommendation.adjust
        assert insight.recommendation.action == "retrain", insight.recommendation
        assert (adjust.max_length, adjust.truncation) == (2 * MAX_LENGTH, "head_tail"), insight.recommendation
        because = insight.recommendation.because
        assert f"traffic moved to texts of {MAX_LENGTH}+ tokens" in because, because
        needed = int(because.split("they need about ")[1].split()[0])  # ~700 words: more than even 512 holds
        assert needed > 2 * MAX_LENGTH, because
