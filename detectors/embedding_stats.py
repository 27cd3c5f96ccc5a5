"""Embeddings: whitened PCA fitted on the reference, then a random-Fourier-feature MMD two-sample test.

Reference-side work is cached on the profile and window-side work on the (profile, window) pair, so
detectors that share a statistic share its cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import special  # type: ignore[import-untyped]

from insightloop.detectors._stats import FloatArray
from insightloop.detectors.prediction_stats import prior_weights
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


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


def reference_features(
    profile: ReferenceProfile, state: EmbeddingState, n_components: int, n_features: int, bandwidth: float | None
) -> NDArray[np.float32]:
    """Random Fourier features of every reference row (computed once per profile; a calibration subset
    takes its rows of its parent's)."""
    key = ("embedding_features", n_components, n_features, bandwidth)
    parent, idx = profile.parent, profile.parent_indices
    if parent is not None and idx is not None:
        parent_state = embedding_state(parent, n_components, n_features, bandwidth)
        if parent_state is not None:
            return reference_features(parent, parent_state, n_components, n_features, bandwidth)[idx]
    return profile.memo(key, lambda: state.features(profile.window.embeddings))


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
    residual_mmd2: float  # after re-weighting the reference rows to the current (BBSE-estimated) class mix
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
        # Re-weight the reference rows to the current class mix (BBSE weights on the true classes when
        # the reference has labels, else the predicted-class mix): what a pure prior shift predicts.
        n_classes = state.class_counts.size
        shares = np.bincount(window.predicted_index, minlength=n_classes) / m
        uncovered = bool(np.any((shares > 0) & (state.class_counts == 0)))
        row_weights = prior_weights(profile, window)
        weighted = row_weights @ reference_features(profile, state, n_components, n_features, bandwidth)
        res = cur_mean - weighted
        residual = float(res @ res)
        res_factor = 1.0 / m + float(np.sum(row_weights**2))
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
