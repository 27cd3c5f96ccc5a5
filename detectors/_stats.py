"""Small statistical helpers shared by the statistic families (array aliases, normal tail, proportion test)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import special  # type: ignore[import-untyped]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def norm_sf(z: float) -> float:
    """Upper tail of the standard normal (``scipy.stats.norm.sf`` without its per-call overhead)."""
    return float(special.ndtr(-z))


def proportion_drop_p_value(k_ref: int, n_ref: int, k_cur: int, n_cur: int) -> float:
    """One-sided two-proportion z-test that the current success rate is below the reference one."""
    if n_ref == 0 or n_cur == 0:
        return 1.0
    pooled = (k_ref + k_cur) / (n_ref + n_cur)
    var = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    diff = k_ref / n_ref - k_cur / n_cur
    if var <= 0:
        return 1.0 if diff <= 0 else 0.0
    return float(norm_sf(diff / math.sqrt(var)))
