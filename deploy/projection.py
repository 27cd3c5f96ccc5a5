"""A linear projection (PCA fitted on reference embeddings) that makes pooled embeddings compact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]


class Projection:
    """Centre and project embeddings onto the top principal directions of a reference set.

    Saved with each model version so every scorer replica emits the same coordinates, and the
    drift detectors compare production with the reference in the same low-dimensional space.
    """

    def __init__(self, mean: FloatArray, components: FloatArray) -> None:
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise ValueError(f"projection shapes do not fit: mean {mean.shape}, components {components.shape}")
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)

    @property
    def input_dim(self) -> int:
        """Width of the pooled embeddings this projection takes."""
        return int(self.mean.shape[0])

    @property
    def output_dim(self) -> int:
        """Width of the projected embeddings."""
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, embeddings: FloatArray, dims: int) -> Projection:
        """Fit a PCA projection with at most ``dims`` components (fewer if the data has fewer)."""
        if embeddings.ndim != 2 or embeddings.shape[0] < 2:
            raise ValueError("need a 2-D array with at least two rows to fit a projection")
        if dims < 1:
            raise ValueError("dims must be at least 1")
        data = embeddings.astype(np.float64)
        mean = data.mean(axis=0)
        # SVD of the centred data: rows of vt are the principal directions, largest first.
        _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
        keep = min(dims, vt.shape[0])
        return cls(mean.astype(np.float32), vt[:keep].astype(np.float32))

    def transform(self, embeddings: FloatArray) -> FloatArray:
        """Project embeddings of shape (n, input_dim) to (n, output_dim)."""
        result: FloatArray = ((embeddings - self.mean) @ self.components.T).astype(np.float32)
        return result

    def save(self, path: Path) -> None:
        """Write the projection as an .npz file."""
        with open(path, "wb") as handle:
            np.savez(handle, mean=self.mean, components=self.components)

    @classmethod
    def load(cls, path: Path) -> Projection:
        """Read a projection written by :meth:`save`."""
        with np.load(path) as data:
            return cls(data["mean"], data["components"])
