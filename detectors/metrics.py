"""Classification metrics with one definition each, shared by the detectors and the retraining gate.

**Macro-F1 averages over the classes with support**: the classes that occur at least once among the true
labels of the rows at hand. It equals scikit-learn's
``f1_score(truth, predicted, labels=<classes present in truth>, average="macro")``; rows whose true label
is outside the classes still count as false positives of the class predicted for them, and a prediction
outside the classes is a false negative of the true class.

Why those classes, and not all of them nor sklearn's default (classes in truth *or* predictions):

* A class absent from a window has no recall to measure. Counting it as F1 = 0 (all classes) caps a
  window that lacks a class at (k-1)/k, so a change of traffic mix would read as a quality drop.
* Adding classes that are only predicted (sklearn's ``labels=None``) makes one stray prediction cost a
  whole class's worth of F1, and gives two models scored on the same rows different denominators; with
  the support set both share the same classes, and the stray prediction still costs the true class its
  recall.
* With no row of a known class, the macro-F1 is 0.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def macro_f1_batch(truth: ArrayLike, predicted: ArrayLike, n_classes: int) -> FloatArray:
    """Macro-F1 of each row of ``(B, n)`` arrays of class indices (see the module docstring).

    Indices outside ``0 .. n_classes - 1`` (``-1`` for an unknown label) are labels outside the classes.
    The bootstrap intervals use it on a batch of resamples.
    """
    t = np.asarray(truth, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"truth and predicted must be (B, n) arrays of one shape, not {t.shape} and {p.shape}")
    k = int(n_classes)
    b = t.shape[0]
    kk = k + 1
    t = np.where((t < 0) | (t >= k), k, t)
    p = np.where((p < 0) | (p >= k), k, p)
    flat = (np.arange(b)[:, None] * kk * kk + t * kk + p).reshape(-1)
    confusion = np.bincount(flat, minlength=b * kk * kk).reshape(b, kk, kk).astype(np.float64)
    diagonal = np.arange(k)
    tp = confusion[:, diagonal, diagonal]
    support = confusion[:, :k, :].sum(axis=2)
    predicted_count = confusion[:, :, :k].sum(axis=1)
    denominator = support + predicted_count
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)
    present = support > 0
    out: FloatArray = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return out


def macro_f1(truth: ArrayLike, predicted: ArrayLike, n_classes: int) -> float:
    """Macro-F1 of one set of rows: class indices of the true labels and the predictions.

    Examples
    --------
    >>> macro_f1([0, 0, 1, 1], [0, 1, 1, 1], n_classes=3)  # class 2 has no rows: averaged over 0 and 1
    0.7333333333333334
    """
    t = np.asarray(truth, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    return float(macro_f1_batch(t[None, :], p[None, :], n_classes)[0])
