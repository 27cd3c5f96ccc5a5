"""The statistics behind the detectors, memoised per profile and per window so one check computes each once.

Every function here takes the reference profile and a current window and returns a small frozen
dataclass; reference-side work (fitted reductions, reference features) is cached on the profile,
window-side work on the (profile, window) pair, so detectors that share an analysis share its cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats  # type: ignore[import-untyped]

from insightloop.detectors._evidently import ensure_evidently
from insightloop.detectors.base import bonferroni
from insightloop.detectors.descriptors import DESCRIPTOR_NAMES
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Evidently column-drift tests that return a p-value (the ones a ``-log10`` statistic can use).
P_VALUE_METHODS: tuple[str, ...] = ("ks", "cramer_von_mises", "mannw", "t_test", "es")


def _norm_sf(z: float) -> float:
    """Upper tail of the standard normal (``scipy.stats.norm.sf`` without its per-call overhead)."""
    return float(special.ndtr(-z))


# ---------------------------------------------------------------------------------------------
# Text descriptors: Evidently column drift on a few per-text numbers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DescriptorTest:
    """Per-descriptor drift p-values (Evidently's column drift test) and location summaries."""

    method: str
    p_values: dict[str, float]
    reference_mean: dict[str, float]
    current_mean: dict[str, float]
    reference_median: dict[str, float]
    current_median: dict[str, float]

    @property
    def p_value(self) -> float:
        """Bonferroni-combined p-value over the descriptors."""
        return bonferroni(list(self.p_values.values()))


def evidently_p_value(reference: FloatArray, current: FloatArray, method: str) -> float:
    """The p-value of Evidently's numerical column drift test ``method`` (as ``ValueDrift`` runs it)."""
    import pandas as pd  # type: ignore[import-untyped]

    ensure_evidently()
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    ref = pd.Series(reference, dtype="float64")
    cur = pd.Series(current, dtype="float64")
    if np.ptp(np.concatenate([reference, current])) == 0:
        return 1.0  # a constant column has not drifted
    test = get_stattest(ref, cur, ColumnType.Numerical, method)
    return float(test(ref, cur, ColumnType.Numerical, None).drift_score)


def descriptor_test(
    profile: ReferenceProfile, window: Window, method: str = "ks", names: tuple[str, ...] = DESCRIPTOR_NAMES
) -> DescriptorTest:
    """Evidently column drift of each text descriptor, reference vs ``window``."""

    def compute() -> DescriptorTest:
        ref = profile.descriptors
        cur = profile.describe(window)
        p_values, rm, cm, rmed, cmed = {}, {}, {}, {}, {}
        for name in names:
            p_values[name] = evidently_p_value(ref[name], cur[name], method)
            rm[name], cm[name] = float(ref[name].mean()), float(cur[name].mean())
            rmed[name], cmed[name] = float(np.median(ref[name])), float(np.median(cur[name]))
        return DescriptorTest(method, p_values, rm, cm, rmed, cmed)

    return profile.window_memo(window, ("descriptor_test", method, names), compute)


# ---------------------------------------------------------------------------------------------
# Embeddings: whitened PCA fitted on the reference, then random-Fourier-feature MMD
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingState:
    """Reference-side state of the embedding test, fitted once per profile."""

    mean: FloatArray  # (d,)
    components: FloatArray  # (k, d): whitening PCA
    frequencies: NDArray[np.float32]  # (k, D)
    offsets: NDArray[np.float32]  # (D,)
    reference_mean: FloatArray  # (D,) mean feature vector of the reference
    trace: float  # tr(Σ) of the reference features
    trace_sq: float  # tr(Σ²)
    class_means: FloatArray  # (K, D) mean features per predicted class
    class_counts: NDArray[np.int64]  # (K,)
    n: int
    bandwidth: float

    def reduce(self, embeddings: FloatArray) -> FloatArray:
        """Whitened PCA coordinates."""
        out: FloatArray = (embeddings - self.mean) @ self.components.T
        return out

    def features(self, embeddings: FloatArray) -> NDArray[np.float32]:
        """Random Fourier features of the RBF kernel in the whitened PCA space (float32: cheap, and
        precise enough for means over hundreds of rows)."""
        reduced = self.reduce(embeddings).astype(np.float32)
        projected = reduced @ self.frequencies
        projected += self.offsets
        np.cos(projected, out=projected)
        projected *= np.float32(math.sqrt(2.0 / self.offsets.size))
        return projected


def _class_means(
    feats: NDArray[np.float32], predicted: NDArray[np.int64], n_classes: int
) -> tuple[FloatArray, NDArray[np.int64]]:
    counts = np.bincount(predicted, minlength=n_classes).astype(np.int64)
    means = np.zeros((n_classes, feats.shape[1]))
    for j in range(n_classes):
        if counts[j]:
            means[j] = feats[predicted == j].mean(axis=0, dtype=np.float64)
    return means, counts


def fit_embedding_state(
    window: Window, n_components: int, n_features: int, bandwidth: float | None, seed: int
) -> EmbeddingState | None:
    """Fit the reduction and reference features (None when the embeddings carry no variance)."""
    x = window.embeddings
    n, d = x.shape
    if d == 0 or n < 3:
        return None
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    keep = singular > 1e-9 * max(float(singular[0]), 1e-300)
    k = int(min(n_components, int(keep.sum())))
    if k == 0:
        return None
    std = singular[:k] / math.sqrt(n - 1)
    components = vt[:k] / std[:, None]
    reduced = centred @ components.T
    rng = np.random.default_rng([seed, 7919])
    if bandwidth is None:
        sample = reduced[rng.choice(n, size=min(n, 400), replace=False)]
        sq = (sample**2).sum(axis=1)
        dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * sample @ sample.T, 0.0)
        upper = dist2[np.triu_indices(sample.shape[0], k=1)]
        bandwidth = float(math.sqrt(np.median(upper))) if upper.size else 1.0
        bandwidth = bandwidth if bandwidth > 0 else 1.0
    frequencies = (rng.normal(size=(k, n_features)) / bandwidth).astype(np.float32)
    offsets = rng.uniform(0.0, 2 * math.pi, size=n_features).astype(np.float32)
    state = EmbeddingState(
        mean=mean,
        components=components,
        frequencies=frequencies,
        offsets=offsets,
        reference_mean=np.zeros(n_features),
        trace=0.0,
        trace_sq=0.0,
        class_means=np.zeros((len(window.class_names), n_features)),
        class_counts=np.zeros(len(window.class_names), dtype=np.int64),
        n=n,
        bandwidth=float(bandwidth),
    )
    feats = state.features(x)
    ref_mean = feats.mean(axis=0, dtype=np.float64)
    centred_feats = feats - ref_mean.astype(np.float32)
    cov = (centred_feats.T @ centred_feats).astype(np.float64) / max(n - 1, 1)
    class_means, counts = _class_means(feats, window.predicted_index, len(window.class_names))
    return replace(
        state,
        reference_mean=ref_mean,
        trace=float(np.trace(cov)),
        trace_sq=float((cov * cov).sum()),
        class_means=class_means,
        class_counts=counts,
    )


def embedding_state(
    profile: ReferenceProfile, n_components: int = 16, n_features: int = 256, bandwidth: float | None = None
) -> EmbeddingState | None:
    """The profile's embedding state for these parameters (fitted once).

    A calibration subset derives its state from its parent's (same reduction and kernel; reference
    means of its own rows) rather than refitting, which keeps calibration cheap.
    """
    key = ("embedding_state", n_components, n_features, bandwidth)
    parent, idx = profile.parent, profile.parent_indices
    if parent is not None and idx is not None:
        parent_state = embedding_state(parent, n_components, n_features, bandwidth)
        if parent_state is None:
            return None

        def derive() -> EmbeddingState:
            assert parent_state is not None
            feats = parent.memo(
                ("embedding_features", *key[1:]), lambda: parent_state.features(parent.window.embeddings)
            )[idx]
            class_means, counts = _class_means(feats, profile.window.predicted_index, len(profile.class_names))
            return replace(
                parent_state,
                reference_mean=feats.mean(axis=0, dtype=np.float64),
                class_means=class_means,
                class_counts=counts,
                n=int(idx.size),
            )

        return profile.memo(key, derive)
    return profile.memo(
        key, lambda: fit_embedding_state(profile.window, n_components, n_features, bandwidth, profile.seed)
    )


def _gamma_p_value(value: float, factor: float, trace: float, trace_sq: float) -> float:
    """P(T >= value) for T = factor * Σ λ_i Z_i², by a moment-matched gamma (Satterthwaite)."""
    if trace <= 0 or trace_sq <= 0 or factor <= 0:
        return 1.0
    mean0 = factor * trace
    var0 = 2.0 * factor * factor * trace_sq
    shape = mean0 * mean0 / var0
    scale = var0 / mean0
    return float(special.gammaincc(shape, value / scale))


@dataclass(frozen=True)
class EmbeddingTest:
    """MMD (random Fourier features) between reference and current embeddings, and what explains it."""

    mmd2: float
    p_value: float
    excess: float  # mmd2 / its null mean (≈ 1 without drift)
    residual_mmd2: float  # after re-weighting the reference to the current predicted-class mix
    residual_p_value: float
    residual_excess: float
    witness: FloatArray  # per current row: how much more like the current than the reference it is
    explained_by_class_mix: bool


def embedding_test(
    profile: ReferenceProfile,
    window: Window,
    n_components: int = 16,
    n_features: int = 256,
    bandwidth: float | None = None,
) -> EmbeddingTest | None:
    """The embedding two-sample test (None when the embeddings are unusable)."""
    state = embedding_state(profile, n_components, n_features, bandwidth)
    if state is None or len(window) == 0 or window.embeddings.shape[1] != state.mean.shape[0]:
        return None

    def compute() -> EmbeddingTest:
        feats = state.features(window.embeddings)
        m = feats.shape[0]
        cur_mean = feats.mean(axis=0, dtype=np.float64)
        diff = cur_mean - state.reference_mean
        mmd2 = float(diff @ diff)
        factor = 1.0 / state.n + 1.0 / m
        p_value = _gamma_p_value(mmd2, factor, state.trace, state.trace_sq)
        null_mean = factor * state.trace
        # Re-weight the reference by the current predicted-class mix: what a pure prior shift predicts.
        n_classes = state.class_counts.size
        shares = np.bincount(window.predicted_index, minlength=n_classes) / m
        uncovered = bool(np.any((shares > 0) & (state.class_counts == 0)))
        weighted = shares @ state.class_means
        res = cur_mean - weighted
        residual = float(res @ res)
        res_factor = 1.0 / m + float(np.sum(shares**2 / np.maximum(state.class_counts, 1)))
        residual_p = 1e-300 if uncovered else _gamma_p_value(residual, res_factor, state.trace, state.trace_sq)
        res_null = res_factor * state.trace
        excess = mmd2 / null_mean if null_mean > 0 else 0.0
        res_excess = residual / res_null if res_null > 0 else 0.0
        # The class mix explains the shift when what is left is not significant, or is small next to it.
        explained = (not uncovered) and (residual_p >= 0.01 or (res_excess - 1.0) <= 0.25 * max(excess - 1.0, 0.0))
        return EmbeddingTest(
            mmd2=mmd2,
            p_value=p_value,
            excess=excess,
            residual_mmd2=residual,
            residual_p_value=residual_p,
            residual_excess=res_excess,
            witness=(feats @ diff.astype(np.float32)).astype(np.float64),
            explained_by_class_mix=explained,
        )

    return profile.window_memo(window, ("embedding_test", n_components, n_features, bandwidth), compute)


# ---------------------------------------------------------------------------------------------
# Predictions: black-box shift detection on the softmax outputs (Rabanser et al. 2019)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictionTest:
    """Predicted-label mix (chi-square), confidence and per-class scores (KS), Bonferroni-combined."""

    p_values: dict[str, float]
    reference_shares: FloatArray
    current_shares: FloatArray
    reference_confidence: float
    current_confidence: float
    estimated_priors: FloatArray | None  # BBSE estimate of the current class priors (needs labels)
    reference_priors: FloatArray | None

    @property
    def p_value(self) -> float:
        """Bonferroni-combined p-value."""
        return bonferroni(list(self.p_values.values()))

    @property
    def label_p_value(self) -> float:
        """p-value of the predicted-label mix alone."""
        return self.p_values["predicted_labels"]


def chi_square_p_value(ref_counts: NDArray[np.int64], cur_counts: NDArray[np.int64]) -> float:
    """Chi-square test of homogeneity of two count vectors (1 when fewer than two categories occur)."""
    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.pvalue)


def ks_p_value(reference: FloatArray, current: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (1 for empty or constant data)."""
    if reference.size == 0 or current.size == 0:
        return 1.0
    if np.ptp(np.concatenate([reference, current])) == 0:
        return 1.0
    return float(stats.ks_2samp(reference, current, method="asymp").pvalue)


def bbse_priors(reference: Window, current_shares: FloatArray) -> tuple[FloatArray, FloatArray] | None:
    """Black-box shift estimation (Lipton et al. 2018) of the current class priors, with the reference's.

    Solves ``C w = μ`` for the class importance weights ``w`` (``C`` the reference's joint
    distribution of predicted and true class, ``μ`` the current predicted-class shares); returns
    ``(estimated current priors, reference priors)`` or None without enough labels.
    """
    mask = reference.label_index >= 0
    if int(mask.sum()) < 30:
        return None
    k = len(reference.class_names)
    joint = np.zeros((k, k))
    np.add.at(joint, (reference.predicted_index[mask], reference.label_index[mask]), 1.0)
    joint /= joint.sum()
    ref_priors = joint.sum(axis=0)
    weights, *_ = np.linalg.lstsq(joint, current_shares, rcond=None)
    weights = np.clip(weights, 0.0, None)
    priors = weights * ref_priors
    total = priors.sum()
    if not math.isfinite(total) or total <= 0:
        return None
    return priors / total, ref_priors


def prediction_test(profile: ReferenceProfile, window: Window) -> PredictionTest:
    """Black-box shift detection on the model's outputs, reference vs ``window``."""

    def compute() -> PredictionTest:
        ref = profile.window
        k = len(ref.class_names)
        ref_counts = np.bincount(ref.predicted_index, minlength=k)
        cur_counts = np.bincount(window.predicted_index, minlength=k)
        p_values = {
            "predicted_labels": chi_square_p_value(ref_counts, cur_counts),
            "confidence": ks_p_value(ref.confidence, window.confidence),
        }
        columns = range(k) if k > 2 else [1]
        for j in columns:
            p_values[f"score[{ref.class_names[j]}]"] = ks_p_value(ref.probabilities[:, j], window.probabilities[:, j])
        cur_shares = cur_counts / max(len(window), 1)
        bbse = bbse_priors(ref, cur_shares)
        return PredictionTest(
            p_values=p_values,
            reference_shares=ref_counts / len(ref),
            current_shares=cur_shares,
            reference_confidence=float(ref.confidence.mean()),
            current_confidence=float(window.confidence.mean()) if len(window) else math.nan,
            estimated_priors=bbse[0] if bbse else None,
            reference_priors=bbse[1] if bbse else None,
        )

    return profile.window_memo(window, ("prediction_test",), compute)


# ---------------------------------------------------------------------------------------------
# Quality with labels
# ---------------------------------------------------------------------------------------------
def proportion_drop_p_value(k_ref: int, n_ref: int, k_cur: int, n_cur: int) -> float:
    """One-sided two-proportion z-test that the current success rate is below the reference one."""
    if n_ref == 0 or n_cur == 0:
        return 1.0
    pooled = (k_ref + k_cur) / (n_ref + n_cur)
    var = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    diff = k_ref / n_ref - k_cur / n_cur
    if var <= 0:
        return 1.0 if diff <= 0 else 0.0
    return float(_norm_sf(diff / math.sqrt(var)))


def macro_f1(labels: NDArray[np.int64], predicted: NDArray[np.int64], k: int) -> float:
    """Macro-averaged F1 over the ``k`` classes (labels outside the classes count as errors)."""
    return float(_macro_f1_batch(labels[None, :], predicted[None, :], k)[0])


def _macro_f1_batch(labels: NDArray[np.int64], predicted: NDArray[np.int64], k: int) -> FloatArray:
    """Macro-F1 of each row of (B, n) label/prediction index arrays."""
    b = labels.shape[0]
    lab = np.where(labels < 0, k, labels)
    kk = k + 1
    flat = (np.arange(b)[:, None] * kk * kk + lab * kk + predicted).reshape(-1)
    confusion = np.bincount(flat, minlength=b * kk * kk).reshape(b, kk, kk).astype(np.float64)
    tp = confusion[:, np.arange(k), np.arange(k)]
    support = confusion[:, :k, :].sum(axis=2)
    predicted_count = confusion[:, :, :k].sum(axis=1)
    denom = support + predicted_count
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)
    present = (support + predicted_count) > 0
    out: FloatArray = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return out


@dataclass(frozen=True)
class LabeledQuality:
    """Accuracy, per-class recall and macro-F1 on the labeled rows, reference vs current."""

    n_reference: int
    n_current: int
    reference_accuracy: float
    current_accuracy: float
    p_values: dict[str, float]
    reference_recall: dict[str, float]
    current_recall: dict[str, float]
    current_support: dict[str, int]
    reference_macro_f1: float
    current_macro_f1: float

    @property
    def p_value(self) -> float:
        """Bonferroni-combined p-value over accuracy and the per-class recalls."""
        return bonferroni(list(self.p_values.values()))

    @property
    def accuracy_drop(self) -> float:
        """Reference accuracy minus current accuracy (positive = worse now)."""
        return self.reference_accuracy - self.current_accuracy

    @property
    def largest_recall_drop(self) -> float:
        """The largest drop of a class recall (0 when none dropped)."""
        drops = [
            self.reference_recall[c] - self.current_recall[c] for c in self.current_recall if c in self.reference_recall
        ]
        return max([0.0, *drops])


def labeled_quality(profile: ReferenceProfile, window: Window, min_class_support: int = 10) -> LabeledQuality | None:
    """Quality on the labeled rows of ``window`` against the reference (None without labels on both sides)."""

    def compute() -> LabeledQuality | None:
        ref, cur = profile.window, window
        rmask, cmask = ref.labeled_mask, cur.labeled_mask
        n_r, n_c = int(rmask.sum()), int(cmask.sum())
        if n_r == 0 or n_c == 0:
            return None
        k = len(ref.class_names)
        r_lab, r_pred = ref.label_index[rmask], ref.predicted_index[rmask]
        c_lab, c_pred = cur.label_index[cmask], cur.predicted_index[cmask]
        k_r, k_c = int((r_lab == r_pred).sum()), int((c_lab == c_pred).sum())
        p_values = {"accuracy": proportion_drop_p_value(k_r, n_r, k_c, n_c)}
        ref_recall: dict[str, float] = {}
        cur_recall: dict[str, float] = {}
        support: dict[str, int] = {}
        for j, name in enumerate(ref.class_names):
            rj, cj = r_lab == j, c_lab == j
            nr, nc = int(rj.sum()), int(cj.sum())
            support[name] = nc
            if nr:
                ref_recall[name] = float((r_pred[rj] == j).mean())
            if nc:
                cur_recall[name] = float((c_pred[cj] == j).mean())
            if nr >= min_class_support and nc >= min_class_support:
                p_values[f"recall[{name}]"] = proportion_drop_p_value(
                    int((r_pred[rj] == j).sum()), nr, int((c_pred[cj] == j).sum()), nc
                )
        return LabeledQuality(
            n_reference=n_r,
            n_current=n_c,
            reference_accuracy=k_r / n_r,
            current_accuracy=k_c / n_c,
            p_values=p_values,
            reference_recall=ref_recall,
            current_recall=cur_recall,
            current_support=support,
            reference_macro_f1=macro_f1(r_lab, r_pred, k),
            current_macro_f1=macro_f1(c_lab, c_pred, k),
        )

    return profile.window_memo(window, ("labeled_quality", min_class_support), compute)


def macro_f1_interval(
    profile: ReferenceProfile, window: Window, n_bootstrap: int = 200, level: float = 0.95
) -> tuple[float, float] | None:
    """Bootstrap interval of the macro-F1 on the labeled rows of ``window`` (None without labels)."""
    mask = window.labeled_mask
    n = int(mask.sum())
    if n == 0:
        return None
    labels, predicted = window.label_index[mask], window.predicted_index[mask]
    rng = np.random.default_rng([profile.seed, 104729, n])
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    boot = _macro_f1_batch(labels[idx], predicted[idx], len(window.class_names))
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Quality without labels: calibrated confidence
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimatedQuality:
    """Accuracy estimated from calibrated confidence, reference vs current (and the labeled value if any)."""

    reference_accuracy: float
    reference_estimate: float
    current_estimate: float
    p_value: float
    per_class_estimate: dict[str, float]
    labeled_count: int
    labeled_accuracy: float | None
    estimate_on_labeled: float | None

    @property
    def drop(self) -> float:
        """Reference estimate minus current estimate."""
        return self.reference_estimate - self.current_estimate


def estimated_quality(profile: ReferenceProfile, window: Window) -> EstimatedQuality | None:
    """Estimated accuracy of ``window`` from the profile's confidence calibrator (None without one)."""
    calibrator = profile.calibrator
    if calibrator is None or len(window) == 0:
        return None

    def compute() -> EstimatedQuality:
        ref_c = profile.memo(("calibrated_confidence",), lambda: calibrator.transform(profile.window.confidence))
        cur_c = calibrator.transform(window.confidence)
        n, m = ref_c.size, cur_c.size
        est_r, est_c = float(ref_c.mean()), float(cur_c.mean())
        se = math.sqrt(float(ref_c.var(ddof=1)) / n + (float(cur_c.var(ddof=1)) if m > 1 else 0.25) / m)
        p_value = float(_norm_sf((est_r - est_c) / se)) if se > 0 else (1.0 if est_c >= est_r else 0.0)
        per_class = {}
        for j, name in enumerate(window.class_names):
            rows = window.predicted_index == j
            if rows.any():
                per_class[name] = float(cur_c[rows].mean())
        mask = window.labeled_mask
        n_lab = int(mask.sum())
        return EstimatedQuality(
            reference_accuracy=calibrator.accuracy,
            reference_estimate=est_r,
            current_estimate=est_c,
            p_value=p_value,
            per_class_estimate=per_class,
            labeled_count=n_lab,
            labeled_accuracy=float(window.correct[mask].mean()) if n_lab else None,
            estimate_on_labeled=float(cur_c[mask].mean()) if n_lab else None,
        )

    return profile.window_memo(window, ("estimated_quality",), compute)


# ---------------------------------------------------------------------------------------------
# Slices: length buckets, meta values, new vocabulary
# ---------------------------------------------------------------------------------------------
SliceKind = Literal["length", "meta", "vocabulary"]


@dataclass(frozen=True)
class SliceDef:
    """A named subset of rows, defined the same way on the reference and the current window."""

    kind: SliceKind
    field: str
    value: str
    lower: float | None = None  # length buckets: tokens in [lower, upper)
    upper: float | None = None

    @property
    def key(self) -> str:
        """``"<field>=<value>"``."""
        return f"{self.field}={self.value}"


@dataclass(frozen=True)
class SliceStats:
    """How a slice fares: its share in both windows and its (estimated) error rate."""

    definition: SliceDef
    count_reference: int
    count_current: int
    share_reference: float
    share_current: float
    share_p_value: float
    metric: Literal["error_rate", "estimated_error_rate"]
    loss_count: int  # rows the loss was measured on (labeled rows in labeled mode)
    reference_loss: float | None
    current_loss: float | None
    loss_p_value: float | None
    excess_errors: float  # rows × (current loss − reference loss)
    lift: float | None = None  # (slice's loss rise) − (loss rise of the rest of the window)

    @property
    def concentration(self) -> float:
        """Excess errors beyond the window's general rise: rows × lift (what ranks slices)."""
        return self.loss_count * self.lift if self.lift is not None else self.excess_errors


@dataclass(frozen=True)
class SliceAnalysis:
    """All slices of a window with their statistics."""

    mode: Literal["labels", "confidence"]
    slices: list[SliceStats]
    n_tested: int
    overall_reference_loss: float | None
    overall_current_loss: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def p_value(self) -> float:
        """Bonferroni-combined p-value of the loss tests (1 when none was tested)."""
        tested = [s.loss_p_value for s in self.slices if s.loss_p_value is not None]
        return min(1.0, min(tested) * self.n_tested) if tested else 1.0

    def degraded(self, alpha: float, min_delta: float = 0.0) -> list[SliceStats]:
        """Slices whose loss rose significantly (Bonferroni at ``alpha``) by at least ``min_delta`` and
        more than in the rest of the window; the largest concentration of excess errors first."""
        level = alpha / max(self.n_tested, 1)
        found = [
            s
            for s in self.slices
            if s.loss_p_value is not None
            and s.loss_p_value <= level
            and (s.current_loss or 0.0) - (s.reference_loss or 0.0) >= min_delta
            and (s.lift is None or s.lift > 0)
        ]
        return sorted(found, key=lambda s: (-s.concentration, s.loss_p_value or 1.0))

    def grown(self, alpha: float) -> list[SliceStats]:
        """Slices whose share rose significantly, largest rise first."""
        level = alpha / max(len(self.slices), 1)
        found = [s for s in self.slices if s.share_p_value <= level and s.share_current > s.share_reference]
        return sorted(found, key=lambda s: (-(s.share_current - s.share_reference), s.share_p_value))


def _meta_column(window: Window, name: str) -> NDArray[np.object_]:
    values = np.empty(len(window), dtype=object)
    for i, meta in enumerate(window.meta):
        value = meta.get(name)
        values[i] = None if value is None else _meta_str(value)
    return values


def _meta_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def length_edges(max_length: int | None) -> list[int]:
    """Bucket edges for token counts: powers of two from 32, ending at the truncation length if known."""
    top = max_length if max_length is not None else 512
    edges = [0]
    edge = 32
    while edge < top:
        edges.append(edge)
        edge *= 2
    edges.append(top)
    return edges


def slice_definitions(profile: ReferenceProfile, window: Window, max_values: int = 20) -> list[SliceDef]:
    """Length buckets, the most frequent values of each ``meta`` field of ``window``, and new vocabulary."""
    defs: list[SliceDef] = []
    limit = profile.effective_max_length
    edges = length_edges(limit)
    for lo, hi in pairwise(edges):
        defs.append(SliceDef("length", "length_tokens", f"{lo}-{hi - 1}", lower=lo, upper=hi))
    defs.append(SliceDef("length", "length_tokens", f"{edges[-1]}+", lower=edges[-1], upper=None))
    fields = sorted({key for meta in window.meta for key in meta})
    for name in fields:
        column = _meta_column_cached(profile, window, name)
        present = column[column != None]  # noqa: E711 - elementwise comparison on an object array
        if present.size == 0:
            continue
        values, counts = np.unique(present.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:max_values]
        for i in order:
            defs.append(SliceDef("meta", f"meta.{name}", str(values[i])))
    defs.append(SliceDef("vocabulary", "new_vocabulary", "high"))
    return defs


def warm_slices(profile: ReferenceProfile) -> None:
    """Cache the reference's ``meta`` columns and new-vocabulary cut (calibration splits inherit them)."""
    for name in sorted({key for meta in profile.window.meta for key in meta}):
        _meta_column_cached(profile, profile.window, name)
    new_vocabulary_cut(profile)


def _meta_column_cached(profile: ReferenceProfile, window: Window, name: str) -> NDArray[np.object_]:
    """A ``meta`` field as strings (None where absent), cached on the window so sub-windows inherit it."""
    key = f"meta:{name}"
    column = window.cached_rows(key)
    if column is None:
        column = _meta_column(window, name)
        window.cache_rows(key, column)
    return column


def slice_mask(profile: ReferenceProfile, window: Window, definition: SliceDef) -> BoolArray:
    """Rows of ``window`` in the slice."""
    if definition.kind == "length":
        counts = window.token_counts
        mask = counts >= (definition.lower or 0)
        if definition.upper is not None:
            mask &= counts < definition.upper
        return mask
    if definition.kind == "meta":
        column = _meta_column_cached(profile, window, definition.field.removeprefix("meta."))
        out: BoolArray = column == definition.value
        return out.astype(bool)
    cut = new_vocabulary_cut(profile)
    return profile.describe(window)["oov_share"] > cut


def new_vocabulary_cut(profile: ReferenceProfile) -> float:
    """Out-of-vocabulary share above which a text counts as rich in new words (reference 90th percentile)."""
    return profile.memo(("oov_cut",), lambda: float(np.quantile(profile.descriptors["oov_share"], 0.9)))


def _welch_drop_p_value(ref: FloatArray, cur: FloatArray) -> float:
    """One-sided Welch z-test that ``cur`` has a larger mean than ``ref``."""
    if ref.size < 2 or cur.size < 2:
        return 1.0
    se = math.sqrt(float(ref.var(ddof=1)) / ref.size + float(cur.var(ddof=1)) / cur.size)
    diff = float(cur.mean() - ref.mean())
    if se <= 0:
        return 1.0 if diff <= 0 else 0.0
    return float(_norm_sf(diff / se))


def _share_p_value(k_ref: int, n_ref: int, k_cur: int, n_cur: int) -> float:
    """Two-sided two-proportion z-test of a slice's share."""
    pooled = (k_ref + k_cur) / (n_ref + n_cur)
    var = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    if var <= 0:
        return 1.0
    return float(2 * _norm_sf(abs(k_cur / n_cur - k_ref / n_ref) / math.sqrt(var)))


def slice_analysis(
    profile: ReferenceProfile,
    window: Window,
    min_count: int = 30,
    max_values: int = 20,
    min_labeled: int = 100,
) -> SliceAnalysis:
    """Where the loss concentrates: labeled errors when the window has ``min_labeled`` labels, else the
    drop of calibrated confidence (estimated error), per slice, against the same slice of the reference
    (or the whole reference where the slice is rare there)."""

    def compute() -> SliceAnalysis:
        ref, cur = profile.window, window
        n, m = len(ref), len(cur)
        use_labels = cur.n_labeled >= min_labeled and ref.n_labeled >= min_count
        mode: Literal["labels", "confidence"] = "labels" if use_labels else "confidence"
        calibrator = profile.calibrator
        if use_labels:
            ref_has, cur_has = ref.labeled_mask, cur.labeled_mask
            ref_loss_rows = (~ref.correct).astype(np.float64)
            cur_loss_rows = (~cur.correct).astype(np.float64)
        elif calibrator is not None:
            ref_has, cur_has = np.ones(n, bool), np.ones(m, bool)
            ref_loss_rows = profile.memo(("estimated_error",), lambda: 1.0 - calibrator.transform(ref.confidence))
            cur_loss_rows = 1.0 - calibrator.transform(cur.confidence)
        else:
            ref_has, cur_has = np.zeros(n, bool), np.zeros(m, bool)
            ref_loss_rows, cur_loss_rows = np.zeros(n), np.zeros(m)
        overall_ref = float(ref_loss_rows[ref_has].mean()) if ref_has.any() else None
        overall_cur = float(cur_loss_rows[cur_has].mean()) if cur_has.any() else None
        ref_sum, ref_n = float(ref_loss_rows[ref_has].sum()), int(ref_has.sum())
        cur_sum, cur_n = float(cur_loss_rows[cur_has].sum()), int(cur_has.sum())
        results: list[SliceStats] = []
        n_tested = 0
        for definition in slice_definitions(profile, window, max_values):
            cmask = slice_mask(profile, cur, definition)
            k_cur = int(cmask.sum())
            if k_cur == 0:
                continue
            rmask = profile.memo(("slice_mask", definition), partial(slice_mask, profile, ref, definition))
            k_ref = int(rmask.sum())
            share_p = _share_p_value(k_ref, n, k_cur, m)
            c_rows = cmask & cur_has
            r_rows = rmask & ref_has
            loss_count = int(c_rows.sum())
            ref_loss = cur_loss = loss_p = lift = None
            excess = 0.0
            # A slice holding (nearly) the whole window says nothing about where the loss is.
            if loss_count >= min_count and ref_has.any() and loss_count <= 0.9 * cur_n:
                cur_vals = cur_loss_rows[c_rows]
                own_reference = int(r_rows.sum()) >= min_count and ref_n - int(r_rows.sum()) >= min_count
                ref_vals = ref_loss_rows[r_rows] if own_reference else ref_loss_rows[ref_has]
                cur_loss, ref_loss = float(cur_vals.mean()), float(ref_vals.mean())
                cur_rest = (cur_sum - float(cur_vals.sum())) / (cur_n - loss_count)
                ref_rest = (ref_sum - float(ref_vals.sum())) / (ref_n - ref_vals.size) if own_reference else ref_loss
                lift = (cur_loss - ref_loss) - (cur_rest - ref_rest)
                if use_labels:
                    loss_p = proportion_drop_p_value(
                        int(ref_vals.size - ref_vals.sum()),
                        ref_vals.size,
                        int(cur_vals.size - cur_vals.sum()),
                        cur_vals.size,
                    )
                else:
                    loss_p = _welch_drop_p_value(ref_vals, cur_vals)
                excess = loss_count * (cur_loss - ref_loss)
                n_tested += 1
            results.append(
                SliceStats(
                    definition=definition,
                    count_reference=k_ref,
                    count_current=k_cur,
                    share_reference=k_ref / n,
                    share_current=k_cur / m,
                    share_p_value=share_p,
                    metric="error_rate" if use_labels else "estimated_error_rate",
                    loss_count=loss_count,
                    reference_loss=ref_loss,
                    current_loss=cur_loss,
                    loss_p_value=loss_p,
                    excess_errors=excess,
                    lift=lift,
                )
            )
        return SliceAnalysis(mode, results, n_tested, overall_ref, overall_cur)

    return profile.window_memo(window, ("slice_analysis", min_count, max_values, min_labeled), compute)
