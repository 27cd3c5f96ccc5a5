"""Text descriptors: Evidently column drift on a few per-text numbers.

Reference-side work is cached on the profile and window-side work on the (profile, window) pair, so
detectors that share a statistic share its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from insightloop.detectors._evidently import ensure_evidently
from insightloop.detectors._stats import FloatArray
from insightloop.detectors.base import bonferroni
from insightloop.detectors.descriptors import DESCRIPTOR_NAMES
from insightloop.detectors.prediction_stats import prior_weights, weighted_ks_p_value
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


#: Evidently column-drift tests that return a p-value (the ones a ``-log10`` statistic can use).
P_VALUE_METHODS: tuple[str, ...] = ("ks", "cramer_von_mises", "mannw", "t_test", "es")


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


def class_conditional_descriptor_test(
    profile: ReferenceProfile, window: Window, names: tuple[str, ...] = DESCRIPTOR_NAMES
) -> DescriptorTest:
    """Each descriptor tested against the reference re-weighted to the window's estimated class mix.

    A pure prior shift moves descriptors whose values differ by class (one class writes longer texts,
    or uses words the other does not); re-weighting the reference rows by the BBSE class weights (see
    :func:`~insightloop.detectors.prediction_stats.prior_weights`) removes exactly that part, so what
    stays significant is a change of the inputs within the classes. Weighted KS per descriptor.
    """

    def compute() -> DescriptorTest:
        weights = prior_weights(profile, window)
        ref = profile.descriptors
        cur = profile.describe(window)
        p_values, rm, cm, rmed, cmed = {}, {}, {}, {}, {}
        for name in names:
            p_values[name] = weighted_ks_p_value(ref[name], weights, cur[name])
            rm[name], cm[name] = float(weights @ ref[name]), float(cur[name].mean())
            rmed[name], cmed[name] = _weighted_median(ref[name], weights), float(np.median(cur[name]))
        return DescriptorTest("weighted_ks", p_values, rm, cm, rmed, cmed)

    return profile.window_memo(window, ("class_conditional_descriptor_test", names), compute)


def _weighted_median(values: FloatArray, weights: FloatArray) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][min(int(np.searchsorted(cumulative, 0.5 * cumulative[-1])), values.size - 1)])
