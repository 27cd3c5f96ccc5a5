"""Diagnoses that hold on real data: a pure class-mix change is a prior shift (inputs tested against the
reference re-weighted to the estimated class mix), a new domain is not; reference rows the model was
trained on are left out of the reference; the label-free estimator behaves as Garg et al. define it.

The pure functions are table-driven; the real-data cases use reviews from ../shared/data (stand-in model,
see ``realdata.py``) and are skipped with a reason when the folder is absent.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from insightloop.detectors import (
    ReferenceProfile,
    Window,
    check_all,
    normalise_text,
    texts_without,
    training_overlap,
    vocabulary_from_texts,
)
from insightloop.detectors.advice import diagnose
from insightloop.detectors.estimators import fit_atc, negative_entropy
from insightloop.detectors.prediction_stats import class_mix_row_weights, effective_size, weighted_ks_p_value
from insightloop.detectors.quality_stats import estimated_quality
from tests.detectors.realdata import AMAZON, MAX_LENGTH, StandIn, fit_stand_in, rows

needs_data = pytest.mark.skipif(
    not (AMAZON / "train.jsonl").is_file(), reason=f"real data not found at {AMAZON} (../shared/data)"
)


# -- pure functions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("texts", "training", "expected"),
    [
        (["A good book", "new"], ["a good book"], [True, False]),
        (["  A\tgood\n book "], ["a good book"], [True]),  # white space collapsed, case folded
        (["ﬁne print"], ["fine print"], [True]),  # NFKC: the ligature is two letters
        (["Straße"], ["STRASSE"], [True]),  # casefold, not lower
        (["a good book"], ["a good books"], [False]),
        ([], ["x"], []),
    ],
)
def test_training_overlap_matches_on_normalised_text(
    texts: list[str], training: list[str], expected: list[bool]
) -> None:
    assert training_overlap(texts, training).tolist() == expected


@pytest.mark.parametrize(
    ("texts", "removed", "expected"),
    [
        (["a", "b", "a"], ["A"], ["b", "a"]),  # one occurrence per removed text
        (["a", "b"], ["c"], ["a", "b"]),
        (["a", "a"], ["a", "a", "a"], []),
    ],
)
def test_texts_without_takes_out_one_occurrence_each(texts: list[str], removed: list[str], expected: list[str]) -> None:
    assert texts_without(texts, removed) == expected
    assert normalise_text(" X  y ") == "x y"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("n", "m", "shift"), [(300, 200, 0.0), (500, 100, 0.3), (200, 400, 0.15)])
def test_weighted_ks_with_equal_weights_is_the_two_sample_ks(n: int, m: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(shift, 1.0, size=m)
    expected = stats.ks_2samp(a, b, method="asymp").pvalue
    assert weighted_ks_p_value(a, np.ones(n), b) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_weighted_ks_removes_a_class_mix_change_and_keeps_a_real_one() -> None:
    """Two classes with different value distributions: the current window has 85 % of class 1."""
    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1], 500)
    reference = np.where(labels == 1, rng.normal(1.0, 1.0, 1000), rng.normal(-1.0, 1.0, 1000))
    current = np.r_[rng.normal(1.0, 1.0, 340), rng.normal(-1.0, 1.0, 60)]
    weights = np.where(labels == 1, 0.85 / 500, 0.15 / 500)
    assert weighted_ks_p_value(reference, np.ones(1000), current) < 1e-10  # the mix alone moves it
    assert weighted_ks_p_value(reference, weights, current) > 0.01  # re-weighted: nothing left
    moved = current + 0.6  # a change within the classes is still seen after re-weighting
    assert weighted_ks_p_value(reference, weights, moved) < 1e-6
    assert effective_size(weights) < 1000


def _window(labels: list[str | None], predicted: list[int]) -> Window:
    p = np.array([[0.9, 0.1] if k == 0 else [0.2, 0.8] for k in predicted])
    n = len(predicted)
    return Window(
        ids=[str(i) for i in range(n)],
        texts=["t"] * n,
        class_names=("neg", "pos"),
        probabilities=p,
        embeddings=np.zeros((n, 1)),
        token_counts=np.ones(n, dtype=np.int64),
        labels=labels,
    )


@pytest.mark.parametrize(
    ("labels", "predicted", "current", "class_weights", "expected"),
    [
        # BBSE weights on the true class; unlabeled rows take their predicted class's weight.
        (["neg", "pos", "pos", None], [0, 1, 0, 1], [1, 1], [0.5, 1.5], [0.5, 1.5, 1.5, 1.5]),
        # No labels: the predicted-class mix (current share / reference share) stands in.
        ([None] * 4, [0, 0, 1, 1], [1, 1, 1, 0], None, [0.5, 0.5, 1.5, 1.5]),
        # A class the current window never predicts gets no weight.
        ([None] * 4, [0, 0, 1, 1], [1, 1], None, [0.0, 0.0, 2.0, 2.0]),
    ],
)
def test_class_mix_row_weights(
    labels: list[str | None],
    predicted: list[int],
    current: list[int],
    class_weights: list[float] | None,
    expected: list[float],
) -> None:
    weights = class_mix_row_weights(
        _window(labels, predicted),
        np.array(current, dtype=np.int64),
        np.array(class_weights) if class_weights is not None else None,
    )
    assert weights == pytest.approx(np.array(expected) / sum(expected))


@pytest.mark.parametrize("accuracy", [0.6, 0.8, 0.95])
def test_atc_threshold_leaves_the_reference_accuracy_above_it(accuracy: float) -> None:
    rng = np.random.default_rng(int(accuracy * 100))
    p = rng.uniform(0.5, 1.0, 2000)
    probabilities = np.c_[p, 1 - p]
    correct = np.zeros(2000, dtype=bool)
    correct[: round(accuracy * 2000)] = True
    rng.shuffle(correct)
    atc = fit_atc(probabilities, correct)
    assert atc.estimate(probabilities) == pytest.approx(accuracy, abs=1 / 2000)
    assert atc.reference_accuracy == pytest.approx(accuracy)
    # For two classes negative entropy ranks rows as the top score does: the same estimate.
    assert fit_atc(probabilities, correct, score="max_softmax").estimate(probabilities) == atc.estimate(probabilities)
    assert negative_entropy(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx([0.0, -np.log(2)])


# -- real data ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def books_pool() -> list[dict[str, object]]:
    data = rows("train", ("books",)) + rows("test", ("books",))
    random.Random(15).shuffle(data)
    return data


@pytest.fixture(scope="module")
def books(books_pool: list[dict[str, object]]) -> tuple[StandIn, ReferenceProfile, list[dict[str, object]]]:
    """A stand-in trained on 700 books reviews, a 50/50 profile of 600 others; the rest of the pool."""
    train, rest = books_pool[:700], books_pool[700:]
    positive = [r for r in rest if r["label"] == "positive"]
    negative = [r for r in rest if r["label"] == "negative"]
    validation = positive[:300] + negative[:300]
    # The embedding projection is fitted on training rows: fitted on the reference rows themselves it
    # gives them more spread than any new row has, and every disjoint window looks drifted.
    model = fit_stand_in(train, train)
    profile = ReferenceProfile.build(
        model.window(validation),
        vocabulary_from_texts(str(r["text"]) for r in train),
        n_rounds=100,
        seed=0,
        window_size=400,
        max_length=MAX_LENGTH,
    )
    return model, profile, positive[300:] + negative[300:]


@needs_data
@pytest.mark.parametrize(("positive_share", "seed"), [(0.85, 1), (0.85, 2), (0.15, 3)])
def test_a_resampled_class_mix_is_a_prior_shift_and_is_recalibrated(
    books: tuple[StandIn, ReferenceProfile, list[dict[str, object]]], positive_share: float, seed: int
) -> None:
    """Books reviews from the profile's pool (disjoint rows), class mix moved from 50/50 to 85/15."""
    model, profile, unused = books
    rng = random.Random(seed)
    positive = [r for r in unused if r["label"] == "positive"]
    negative = [r for r in unused if r["label"] == "negative"]
    n_pos = round(360 * positive_share)
    current = model.window(rng.sample(positive, n_pos) + rng.sample(negative, 360 - n_pos), labels=False)
    diagnosis = diagnose(profile, current)
    assert diagnosis.prior_shift and not diagnosis.input_shift, (
        diagnosis.conditional_descriptors,
        diagnosis.embeddings,
    )
    assert diagnosis.conditional_descriptors is not None
    # Every insight, whatever its severity (that follows the accuracy cost, which a prior shift may not have).
    insights = check_all(profile, current, "books-v1").insights
    assert insights, "a 50/50 → 85/15 class mix is a real change"
    assert {i.recommendation.action for i in insights} == {"recalibrate"}, [i.summary for i in insights]
    weights = insights[0].recommendation.adjust.class_weights
    grown, shrunk = ("positive", "negative") if positive_share > 0.5 else ("negative", "positive")
    assert weights[grown] > 1 > weights[shrunk]


@needs_data
@pytest.mark.parametrize("domain", ["kitchen", "electronics"])
def test_another_domain_with_a_moved_class_mix_is_still_an_input_shift(
    books: tuple[StandIn, ReferenceProfile, list[dict[str, object]]], domain: str
) -> None:
    model, profile, _ = books
    other = rows("test", (domain,))
    positive = [r for r in other if r["label"] == "positive"][:170]
    negative = [r for r in other if r["label"] == "negative"][:30]
    current = model.window(positive + negative, labels=False)
    diagnosis = diagnose(profile, current)
    assert diagnosis.input_shift
    insights = [i for i in check_all(profile, current, "books-v1").insights if i.at_least("warning")]
    assert insights and {i.recommendation.action for i in insights} == {"retrain"}, [i.summary for i in insights]


@needs_data
def test_reference_rows_seen_in_training_fake_drift_unless_left_out(
    books_pool: list[dict[str, object]], caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case, with the stand-in: the reference is drawn from the file the model was trained on."""
    train = books_pool[:900]
    model = fit_stand_in(train, train)
    reference = books_pool[:1000]  # 900 of them trained on, 100 held out
    current = model.window(rows("test", ("books",)), labels=True)  # disjoint
    vocabulary = vocabulary_from_texts(str(r["text"]) for r in train)
    texts = [str(r["text"]) for r in train]
    kwargs = {"n_rounds": 100, "seed": 0, "window_size": 400, "max_length": MAX_LENGTH}

    naive = ReferenceProfile.build(model.window(reference), vocabulary, **kwargs)  # type: ignore[arg-type]
    faked = [i for i in check_all(naive, current, "v1").insights if i.at_least("warning")]
    assert faked, "without the rule the overlap fakes drift (the failure this guards against)"

    fixed = ReferenceProfile.build(model.window(reference), vocabulary, training_texts=texts, **kwargs)  # type: ignore[arg-type]
    seen = int(sum(training_overlap([str(r["text"]) for r in reference], texts)))
    assert fixed.training_overlap_rows == seen
    assert f"{seen} of the 1000 reference rows are texts the model was trained on" in caplog.text
    assert len(fixed.window) == 1000 - fixed.training_overlap_rows >= 90
    assert [i.summary for i in check_all(fixed, current, "v1").insights if i.at_least("warning")] == []
    # The label-free estimate comes from held-out rows only: near the accuracy the labels show.
    est = estimated_quality(fixed, current)
    assert est is not None and est.labeled_accuracy is not None
    assert abs(est.current_estimate - est.labeled_accuracy) < 0.08


def test_a_reference_the_model_was_trained_on_entirely_is_refused() -> None:
    window = _window([None] * 40, [0, 1] * 20)
    window = Window(
        ids=window.ids,
        texts=[f"text {i}" for i in range(40)],
        class_names=window.class_names,
        probabilities=window.probabilities,
        embeddings=np.random.default_rng(0).normal(size=(40, 2)),
        token_counts=window.token_counts,
    )
    with pytest.raises(ValueError, match="35 of the 40 reference rows are texts the model was trained on"):
        ReferenceProfile.build(window, ["text"], [], n_rounds=0, training_texts=[f"TEXT {i}" for i in range(35)])
