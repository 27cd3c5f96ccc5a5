"""A window of scored texts: what the scorer produced for a batch of production (or reference) rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from insightloop.detectors.insight import WindowSpan

MetaValue = str | int | float | bool | None
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Window:
    """Scored texts, one row per text, all columns in the same order.

    Parameters
    ----------
    ids : list of str
        Stable ids of the texts (the Kafka message keys).
    texts : list of str
        The raw texts.
    class_names : tuple of str
        The model's classes; the columns of ``probabilities`` follow this order.
    probabilities : ndarray of shape (n, k)
        Softmax scores.
    embeddings : ndarray of shape (n, d)
        Pooled embeddings, already projected to a few dozen dimensions by the model version's projection.
    token_counts : ndarray of shape (n,)
        Tokens per text as the model saw them (after truncation).
    labels : list of str or None, optional
        Late ground truth; ``None`` where no label arrived. Empty means "all ``None``".
    meta : list of dict, optional
        Per-row scalar metadata (``domain``, ``date``, ...), usable as slices. Empty means "no metadata".
    timestamps : list of datetime or None, optional
        Event times; empty means "unknown".

    Windows are immutable and compared by identity, so derived per-row values (descriptors) can be
    cached on them; :meth:`take` carries those caches over to the sub-window.

    Examples
    --------
    >>> import numpy as np
    >>> w = Window(ids=["a", "b"], texts=["good", "bad"], class_names=("neg", "pos"),
    ...            probabilities=np.array([[0.2, 0.8], [0.9, 0.1]]), embeddings=np.zeros((2, 4)),
    ...            token_counts=np.array([3, 3]), labels=["pos", None])
    >>> w.predicted_labels
    ['pos', 'neg']
    >>> len(w.labeled())
    1
    """

    ids: list[str]
    texts: list[str]
    class_names: tuple[str, ...]
    probabilities: FloatArray
    embeddings: FloatArray
    token_counts: IntArray
    labels: list[str | None] = field(default_factory=list)
    meta: list[dict[str, MetaValue]] = field(default_factory=list)
    timestamps: list[datetime | None] = field(default_factory=list)
    _rows: dict[str, NDArray[Any]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        set_ = object.__setattr__
        set_(self, "ids", [str(i) for i in self.ids])
        set_(self, "texts", list(self.texts))
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must hold at least two distinct names")
        if len(self.texts) != n:
            raise ValueError(f"texts has {len(self.texts)} rows, ids has {n}")
        probabilities = np.asarray(self.probabilities, dtype=np.float64)
        if probabilities.ndim == 1 and n == 0:
            probabilities = probabilities.reshape(0, len(self.class_names))
        if probabilities.shape != (n, len(self.class_names)):
            raise ValueError(f"probabilities must have shape ({n}, {len(self.class_names)}), got {probabilities.shape}")
        embeddings = np.asarray(self.embeddings, dtype=np.float64)
        if embeddings.ndim == 1 and n == 0:
            embeddings = embeddings.reshape(0, 0)
        if embeddings.ndim != 2 or embeddings.shape[0] != n:
            raise ValueError(f"embeddings must have shape ({n}, d), got {embeddings.shape}")
        if not (np.all(np.isfinite(probabilities)) and np.all(np.isfinite(embeddings))):
            raise ValueError("probabilities and embeddings must be finite")
        token_counts = np.asarray(self.token_counts, dtype=np.int64).reshape(-1)
        if token_counts.shape != (n,):
            raise ValueError(f"token_counts must have shape ({n},), got {token_counts.shape}")
        set_(self, "probabilities", probabilities)
        set_(self, "embeddings", embeddings)
        set_(self, "token_counts", token_counts)
        for name, default in (("labels", None), ("timestamps", None)):
            column = list(getattr(self, name))
            if not column:
                column = [default] * n
            if len(column) != n:
                raise ValueError(f"{name} has {len(column)} rows, ids has {n}")
            set_(self, name, column)
        meta = [dict(m) for m in self.meta] if self.meta else [{} for _ in range(n)]
        if len(meta) != n:
            raise ValueError(f"meta has {len(meta)} rows, ids has {n}")
        set_(self, "meta", meta)
        for array in (probabilities, embeddings, token_counts):
            array.flags.writeable = False

    # -- convenience ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def predicted_index(self) -> IntArray:
        """Column index of the most probable class of each row."""
        cached = self._rows.get("predicted_index")
        if cached is None:
            cached = self.probabilities.argmax(axis=1).astype(np.int64) if len(self) else np.zeros(0, np.int64)
            self._rows["predicted_index"] = cached
        return cached

    @property
    def predicted_labels(self) -> list[str]:
        """The most probable class name of each row."""
        return [self.class_names[i] for i in self.predicted_index]

    @property
    def confidence(self) -> FloatArray:
        """The top softmax score of each row."""
        cached = self._rows.get("confidence")
        if cached is None:
            cached = self.probabilities.max(axis=1) if len(self) else np.zeros(0)
            self._rows["confidence"] = cached
        return cached

    @property
    def label_index(self) -> IntArray:
        """Column index of each row's label; -1 where there is no label, -2 for a label outside ``class_names``."""
        cached = self._rows.get("label_index")
        if cached is None:
            position = {name: i for i, name in enumerate(self.class_names)}
            cached = np.array(
                [-1 if label is None else position.get(label, -2) for label in self.labels], dtype=np.int64
            )
            self._rows["label_index"] = cached
        return cached

    @property
    def labeled_mask(self) -> NDArray[np.bool_]:
        """True where a label is present."""
        mask: NDArray[np.bool_] = np.not_equal(self.label_index, -1)
        return mask

    @property
    def n_labeled(self) -> int:
        """How many rows carry a label."""
        return int(self.labeled_mask.sum())

    @property
    def correct(self) -> NDArray[np.bool_]:
        """Per row: prediction equals label (False where unlabeled; use with :attr:`labeled_mask`)."""
        same: NDArray[np.bool_] = np.equal(self.predicted_index, self.label_index)
        return same

    def labeled(self) -> Window:
        """The sub-window of rows that carry a label."""
        return self.take(np.flatnonzero(self.labeled_mask))

    def take(self, indices: Sequence[int] | NDArray[np.integer[Any]]) -> Window:
        """The sub-window of the given rows (in the given order); cached per-row values come along."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        picked = Window(
            ids=[self.ids[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            class_names=self.class_names,
            probabilities=self.probabilities[idx],
            embeddings=self.embeddings[idx],
            token_counts=self.token_counts[idx],
            labels=[self.labels[i] for i in idx],
            meta=[self.meta[i] for i in idx],
            timestamps=[self.timestamps[i] for i in idx],
        )
        for key, values in self._rows.items():
            picked._rows[key] = values[idx]
        return picked

    def without_labels(self) -> Window:
        """The same rows with every label removed (what the monitor sees before feedback arrives)."""
        stripped = Window(
            ids=self.ids,
            texts=self.texts,
            class_names=self.class_names,
            probabilities=self.probabilities,
            embeddings=self.embeddings,
            token_counts=self.token_counts,
            labels=[],
            meta=self.meta,
            timestamps=self.timestamps,
        )
        for key, values in self._rows.items():
            if not key.startswith("label"):
                stripped._rows[key] = values
        return stripped

    def span(self) -> WindowSpan:
        """First and last event time (None when unknown) and the row count."""
        known = [t for t in self.timestamps if t is not None]
        try:
            return WindowSpan(start=min(known) if known else None, end=max(known) if known else None, count=len(self))
        except TypeError:  # a mix of naive and aware datetimes cannot be ordered
            return WindowSpan(start=None, end=None, count=len(self))

    def cached_rows(self, key: str) -> NDArray[Any] | None:
        """A per-row array cached under ``key`` (internal use by the detectors)."""
        return self._rows.get(key)

    def cache_rows(self, key: str, values: NDArray[Any]) -> None:
        """Cache a per-row array under ``key``; it follows the rows through :meth:`take`."""
        if values.shape[:1] != (len(self),):
            raise ValueError(f"cached values must have {len(self)} rows, got {values.shape}")
        self._rows[key] = values
