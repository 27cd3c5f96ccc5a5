"""Slices: length buckets, ``meta`` values and new vocabulary, each compared with the same slice of the
reference (share and loss).

Reference-side work is cached on the profile and window-side work on the (profile, window) pair, so
detectors that share a statistic share its cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from insightloop.detectors._stats import BoolArray, FloatArray, norm_sf, proportion_drop_p_value
from insightloop.detectors.slicekey import SliceKey, meta_value_str
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


@dataclass(frozen=True)
class SliceStats:
    """How a slice fares: its share in both windows and its (estimated) error rate."""

    definition: SliceKey
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
        values[i] = None if value is None else meta_value_str(value)
    return values


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


def slice_definitions(profile: ReferenceProfile, window: Window, max_values: int = 20) -> list[SliceKey]:
    """Length buckets, the most frequent values of each ``meta`` field of ``window``, and new vocabulary.

    A ``meta`` field whose name a slice key cannot carry (empty, or with ``=``) gives no slices."""
    defs: list[SliceKey] = []
    limit = profile.effective_max_length
    edges = length_edges(limit)
    for lo, hi in pairwise(edges):
        defs.append(SliceKey.length(lo, hi))
    defs.append(SliceKey.length(edges[-1]))
    fields = sorted({key for meta in window.meta for key in meta if key and "=" not in key})
    for name in fields:
        column = _meta_column_cached(profile, window, name)
        present = column[column != None]  # noqa: E711 - elementwise comparison on an object array
        if present.size == 0:
            continue
        values, counts = np.unique(present.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:max_values]
        for i in order:
            defs.append(SliceKey.meta(name, str(values[i])))
    defs.append(SliceKey.new_vocabulary())
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


def slice_mask(profile: ReferenceProfile, window: Window, definition: SliceKey) -> BoolArray:
    """Rows of ``window`` in the slice (:meth:`SliceKey.mask` on the columns its kind reads)."""
    if definition.kind == "length":
        return definition.mask(token_counts=window.token_counts)
    if definition.kind == "meta":
        return definition.mask(meta_values=_meta_column_cached(profile, window, definition.meta_name or ""))
    return definition.mask(new_vocabulary=profile.describe(window)["oov_share"] > new_vocabulary_cut(profile))


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
    return float(norm_sf(diff / se))


def _share_p_value(k_ref: int, n_ref: int, k_cur: int, n_cur: int) -> float:
    """Two-sided two-proportion z-test of a slice's share."""
    pooled = (k_ref + k_cur) / (n_ref + n_cur)
    var = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    if var <= 0:
        return 1.0
    return float(2 * norm_sf(abs(k_cur / n_cur - k_ref / n_ref) / math.sqrt(var)))


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
