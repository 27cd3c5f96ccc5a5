"""One macro-F1: pinned against sklearn's f1_score(average="macro") over the classes with support."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from insightloop.detectors import macro_f1, macro_f1_batch


def _sklearn(truth: list[int], predicted: list[int], k: int) -> float:
    labels = sorted({t for t in truth if 0 <= t < k})
    return float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0))


TABLES = [
    pytest.param([0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2], 3, id="perfect"),
    pytest.param([0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 0], 3, id="one-error-each"),
    pytest.param([0, 0, 1, 1], [0, 1, 1, 1], 3, id="class-absent-from-window"),
    pytest.param([0, 0, 1, 1], [0, 2, 1, 1], 3, id="absent-class-predicted"),
    pytest.param([0, 0, 0, 0, 1], [1, 1, 1, 1, 1], 2, id="all-one-class"),
    pytest.param([-1, 0, 1, 1], [0, 0, 1, 0], 2, id="label-outside-the-classes"),
    pytest.param([0, 1, 1, 2], [0, 1, -1, 2], 3, id="prediction-outside-the-classes"),
    pytest.param([3, 3, 0], [3, 0, 0], 5, id="sparse-classes"),
]


@pytest.mark.parametrize(("truth", "predicted", "k"), TABLES)
def test_macro_f1_equals_sklearn_over_the_classes_with_support(truth: list[int], predicted: list[int], k: int) -> None:
    assert macro_f1(truth, predicted, k) == pytest.approx(_sklearn(truth, predicted, k), abs=1e-12)


def test_absent_class_is_not_averaged_in() -> None:
    """A window without class 2 is not capped at 2/3: its macro-F1 is that of classes 0 and 1."""
    assert macro_f1([0, 0, 1, 1], [0, 0, 1, 1], 3) == 1.0
    # sklearn over all classes would give 2/3 here; over truth-or-predicted, class 2 would count as 0.
    assert macro_f1([0, 0, 1, 1], [0, 2, 1, 1], 3) == pytest.approx((2 / 3 + 1.0) / 2)


def test_random_tables_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(2, 6))
        n = int(rng.integers(1, 60))
        truth = rng.integers(-1, k, size=n).tolist()
        predicted = rng.integers(0, k, size=n).tolist()
        if not any(0 <= t < k for t in truth):
            continue
        assert macro_f1(truth, predicted, k) == pytest.approx(_sklearn(truth, predicted, k), abs=1e-12)


def test_batch_is_row_by_row() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, size=(20, 30))
    predicted = rng.integers(0, 4, size=(20, 30))
    batch = macro_f1_batch(truth, predicted, 4)
    assert batch.shape == (20,)
    assert batch.tolist() == pytest.approx([macro_f1(t, p, 4) for t, p in zip(truth, predicted, strict=True)])


def test_no_row_of_a_known_class_is_zero() -> None:
    assert macro_f1([], [], 3) == 0.0
    assert macro_f1([-1, -1], [0, 1], 3) == 0.0


def test_batch_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        macro_f1_batch(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 4), dtype=np.int64), 2)
