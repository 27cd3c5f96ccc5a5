"""The evaluation's macro-F1 is the detectors' one: sklearn's over the classes with support in the set."""

from __future__ import annotations

import pytest
from sklearn.metrics import f1_score

from insightloop.retrain.evaluate import Predictions, compare


def test_compare_reports_the_shared_macro_f1_with_a_class_absent_from_the_set() -> None:
    labels = ["books", "dvd", "kitchen"]
    truth = ["books", "books", "dvd", "dvd", "books", "dvd"]  # no kitchen text in this set
    champion = Predictions(["books", "kitchen", "dvd", "books", "books", "dvd"])
    candidate = Predictions(["books", "books", "dvd", "dvd", "books", "kitchen"])
    section = compare("set", truth, champion, candidate, labels, rounds=200)
    row = next(r for r in section.rows if r.metric == "macro_f1")
    present = ["books", "dvd"]
    assert row.champion == pytest.approx(f1_score(truth, champion.predicted, labels=present, average="macro"))
    assert row.candidate == pytest.approx(f1_score(truth, candidate.predicted, labels=present, average="macro"))
    assert row.ci_low is not None and row.ci_high is not None and row.ci_low <= row.delta <= row.ci_high
    accuracy = next(r for r in section.rows if r.metric == "accuracy")
    assert accuracy.champion == pytest.approx(4 / 6) and accuracy.candidate == pytest.approx(5 / 6)
