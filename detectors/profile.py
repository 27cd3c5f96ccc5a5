"""The reference profile: what a model version was trained for, saved with it as plain files."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import unicodedata
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from insightloop.detectors.calibration import MIN_CALIBRATION_ROWS, ConfidenceCalibrator, reference_splits
from insightloop.detectors.descriptors import (
    Descriptors,
    DescriptorStats,
    describe,
    normalise_vocabulary,
    summarise,
    vocabulary_digest,
)
from insightloop.detectors.insight import utc_now
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.base import Detector

log = logging.getLogger(__name__)

PROFILE_SCHEMA_VERSION = 1
MANIFEST_FILE = "profile.json"
ROWS_FILE = "rows.json"
VOCABULARY_FILE = "vocabulary.json"
ARRAY_FILES = ("probabilities", "embeddings", "token_counts")

#: The numerics a profile was scored with when nothing else is known (see ``ModelArtifact.precision``).
DEFAULT_PRECISION = "cpu/float32"

#: Default size of the "current" part of each calibration split (the typical monitoring window).
DEFAULT_WINDOW_SIZE = 1000

#: Fewest reference rows a profile is built from.
MIN_PROFILE_ROWS = 20

T = TypeVar("T")
JsonScalar = str | int | float | bool | None


class CalibratedThreshold(BaseModel):
    """A detector's alarm level and how it was obtained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float = Field(gt=0)
    method: Literal["calibrated", "nominal"]
    false_alarm_rate: float = Field(gt=0, lt=1)
    n_rounds: int = Field(ge=0)
    window_size: int = Field(ge=0)
    params: dict[str, Any] = Field(default_factory=dict)
    null_median: float | None = None
    null_max: float | None = None
    # The reference-split statistics themselves, so a monitor can derive the threshold for its own
    # false-alarm budget (``calibration.threshold_at_rate``) without calibrating again.
    null_statistics: list[float] | None = None


class ProfileManifest(BaseModel):
    """``profile.json``: everything of a profile that is not an array, the rows or the vocabulary."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    class_names: list[str]
    n_rows: int
    n_labeled: int
    embedding_dim: int
    max_length: int | None
    false_alarm_rate: float
    n_rounds: int
    seed: int
    window_size: int
    vocabulary_size: int
    vocabulary_digest: str
    created_at: datetime
    # Profiles written before this field existed were scored in float32 on a CPU.
    precision: str = DEFAULT_PRECISION
    # Rows left out of the profile because the model saw them in training (0 for profiles before this field).
    training_overlap_rows: int = 0
    descriptors: dict[str, DescriptorStats]
    calibrator: ConfidenceCalibrator | None
    thresholds: dict[str, CalibratedThreshold]


def normalise_text(text: str) -> str:
    """The form texts are matched in: Unicode NFKC, case-folded, runs of white space made one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def training_overlap(texts: Sequence[str], training_texts: Iterable[str]) -> NDArray[np.bool_]:
    """Per text: the model saw it in training (matched on :func:`normalise_text`).

    Examples
    --------
    >>> training_overlap(["A  good book", "new text"], ["a good\tbook", "other"]).tolist()
    [True, False]
    """
    seen = {normalise_text(t) for t in training_texts}
    return np.fromiter((normalise_text(t) in seen for t in texts), dtype=bool, count=len(texts))


def texts_without(texts: Sequence[str], removed: Sequence[str]) -> list[str]:
    """``texts`` with one occurrence of each of ``removed`` taken out (matched on :func:`normalise_text`)."""
    pending = Counter(normalise_text(t) for t in removed)
    out = []
    for text in texts:
        key = normalise_text(text)
        if pending[key] > 0:
            pending[key] -= 1
        else:
            out.append(text)
    return out


def _fit_calibrator(window: Window) -> ConfidenceCalibrator | None:
    """The confidence calibrator of a scored reference, if it has enough labeled rows."""
    labeled = window.labeled_mask & (window.label_index >= -2)
    if int(labeled.sum()) < MIN_CALIBRATION_ROWS:
        return None
    return ConfidenceCalibrator.fit(window.confidence[labeled], window.correct[labeled])


def drop_training_overlap(window: Window, training_texts: Iterable[str]) -> tuple[Window, int]:
    """``window`` without the rows whose text is among ``training_texts``, and how many were dropped.

    Raises ``ValueError`` when fewer than :data:`MIN_PROFILE_ROWS` rows were not trained on: such a
    reference says how the model does on its training data, not on new traffic.
    """
    seen = training_overlap(window.texts, training_texts)
    n_seen = int(seen.sum())
    if n_seen == 0:
        return window, 0
    kept = np.flatnonzero(~seen)
    if kept.size < MIN_PROFILE_ROWS:
        raise ValueError(
            f"{n_seen} of the {len(window)} reference rows are texts the model was trained on and only "
            f"{kept.size} are not; a reference needs at least {MIN_PROFILE_ROWS} rows the model did not see "
            "(use held-out rows, e.g. a test split)"
        )
    log.warning(
        "%d of the %d reference rows are texts the model was trained on; they are left out of the reference "
        "statistics (out-of-vocabulary share, confidence, scores, accuracy, embeddings), %d rows remain",
        n_seen,
        len(window),
        kept.size,
    )
    return window.take(kept), n_seen


class ReferenceProfile:
    """What a model version was trained for: its validation split scored, vocabulary, calibration, thresholds.

    Build it with :meth:`build` at training time (from the scored validation split and the training
    vocabulary), :meth:`save` it into the model version directory, and :meth:`load` it in the monitor
    and the ``check`` command. Checks compare production windows with it.

    Examples
    --------
    >>> import numpy as np
    >>> from insightloop.detectors import PredictionDrift, Window
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=400)
    >>> window = Window(ids=[str(i) for i in range(400)], texts=["a fine text"] * 400,
    ...                 class_names=("neg", "pos"), probabilities=np.c_[1 - p, p],
    ...                 embeddings=rng.normal(size=(400, 4)), token_counts=np.full(400, 5),
    ...                 labels=["pos" if v > 0.5 else "neg" for v in p])
    >>> profile = ReferenceProfile.build(window, ["a", "fine", "text"], [PredictionDrift()],
    ...                                  false_alarm_rate=0.01, n_rounds=50, seed=0)
    >>> sorted(profile.thresholds)
    ['predictions']
    """

    def __init__(
        self,
        window: Window,
        vocabulary: Iterable[str],
        *,
        calibrator: ConfidenceCalibrator | None = None,
        thresholds: dict[str, CalibratedThreshold] | None = None,
        false_alarm_rate: float = 0.001,
        n_rounds: int = 200,
        seed: int = 0,
        window_size: int | None = None,
        max_length: int | None = None,
        created_at: datetime | None = None,
        precision: str = DEFAULT_PRECISION,
        training_overlap_rows: int = 0,
    ) -> None:
        if len(window) < 2:
            raise ValueError("a reference profile needs at least two rows")
        if not 0 < false_alarm_rate < 1:
            raise ValueError("false_alarm_rate must lie strictly between 0 and 1")
        if n_rounds < 0:
            raise ValueError("n_rounds must not be negative")
        if max_length is not None and max_length < 1:
            raise ValueError("max_length must be positive")
        self.window = window
        self.vocabulary: frozenset[str] = (
            vocabulary if isinstance(vocabulary, frozenset) else normalise_vocabulary(vocabulary)
        )
        self.vocabulary_digest = vocabulary_digest(self.vocabulary)
        self.calibrator = calibrator
        self.thresholds: dict[str, CalibratedThreshold] = dict(thresholds or {})
        self.false_alarm_rate = false_alarm_rate
        self.n_rounds = n_rounds
        self.seed = seed
        self.window_size = max(1, min(window_size or DEFAULT_WINDOW_SIZE, len(window) // 2))
        self.max_length = max_length
        self.created_at = created_at or utc_now()
        self.precision = precision
        self.training_overlap_rows = training_overlap_rows
        self._lock = threading.RLock()
        self._memo: dict[Any, Any] = {}
        self._per_window: weakref.WeakKeyDictionary[Window, dict[Any, Any]] = weakref.WeakKeyDictionary()
        self._descriptor_stats: dict[str, DescriptorStats] | None = None
        self.parent: ReferenceProfile | None = None
        self.parent_indices: NDArray[np.int64] | None = None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        window: Window,
        vocabulary: Iterable[str],
        detectors: Sequence[Detector] | None = None,
        *,
        false_alarm_rate: float = 0.001,
        n_rounds: int = 200,
        seed: int = 0,
        window_size: int | None = None,
        max_length: int | None = None,
        precision: str = DEFAULT_PRECISION,
        training_texts: Iterable[str] | None = None,
    ) -> ReferenceProfile:
        """Profile a scored validation split and calibrate ``detectors`` (default: all registered).

        Parameters
        ----------
        window : Window
            The model version's validation split, scored by that version, with labels.
        vocabulary : iterable of str
            Words seen in the training texts (see :func:`vocabulary_from_texts`).
        detectors : sequence of Detector, optional
            Detectors to calibrate thresholds for; default :func:`all_detectors`.
        false_alarm_rate : float, default 0.001
            Target probability, per detector and check, of an alarm on traffic like the reference.
        n_rounds : int, default 200
            Reference-vs-reference splits used for calibration.
        seed : int, default 0
            Seeds the splits and every random choice the detectors make.
        window_size : int, optional
            Rows in the current part of each split (the monitoring window); default 1000, at most half.
        max_length : int, optional
            The model's tokenizer ``max_length`` (tells truncated texts apart); inferred when omitted.
        precision : str, default "cpu/float32"
            The numerics ``window`` was scored with (``ModelArtifact.precision``).
        training_texts : iterable of str, optional
            Texts the model was trained on (or the vocabulary was taken from). Reference rows among them
            (matched on :func:`normalise_text`) are left out of the profile, with a warning that counts
            them: the model is more confident and more often right on rows it saw, and their words are
            in the vocabulary by construction, so they would bias the confidence, score, accuracy and
            out-of-vocabulary statistics every production window is compared with.
        """
        overlap = 0
        if training_texts is not None:
            window, overlap = drop_training_overlap(window, training_texts)
        if len(window) < MIN_PROFILE_ROWS:
            raise ValueError(f"a reference profile needs at least {MIN_PROFILE_ROWS} rows, got {len(window)}")
        if detectors is None:
            from insightloop.detectors.registry import all_detectors

            detectors = all_detectors()
        calibrator = _fit_calibrator(window)
        profile = cls(
            window,
            vocabulary,
            calibrator=calibrator,
            false_alarm_rate=false_alarm_rate,
            n_rounds=n_rounds,
            seed=seed,
            window_size=window_size,
            max_length=max_length,
            precision=precision,
            training_overlap_rows=overlap,
        )
        profile.calibrate(detectors)
        for detector in detectors:
            detector.prepare(profile)
        return profile

    def calibrate(self, detectors: Sequence[Detector]) -> dict[str, CalibratedThreshold]:
        """Calibrate and store thresholds for ``detectors``; all share the same random splits."""
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        nulls: dict[str, list[float]] = {d.name: [] for d in detectors}
        # Warm the full reference's caches: the splits take their per-row values from it.
        self.descriptors  # noqa: B018 - computed for its cache
        for detector in detectors:
            detector.prepare(self)
        if self.n_rounds > 0:
            for ref_idx, cur_idx in reference_splits(len(self.window), self.window_size, self.n_rounds, self.seed):
                sub = self.subset(ref_idx)
                current = self.window.take(cur_idx)
                for detector in detectors:
                    nulls[detector.name].append(detector.null_statistic(sub, current))
        result = {d.name: self._threshold_record(d, nulls[d.name]) for d in detectors}
        with self._lock:
            self.thresholds.update(result)
        return result

    def _threshold_record(self, detector: Detector, values: list[float]) -> CalibratedThreshold:
        from insightloop.detectors.base import threshold_from_null

        finite = [v for v in values if math.isfinite(v)]
        value = threshold_from_null(values, self.false_alarm_rate)
        return CalibratedThreshold(
            value=value,
            method="calibrated" if len(finite) >= 10 else "nominal",
            false_alarm_rate=self.false_alarm_rate,
            n_rounds=len(finite),
            window_size=self.window_size,
            params=detector.calibration_key(),
            null_median=float(np.median(finite)) if finite else None,
            null_max=float(np.max(finite)) if finite else None,
            null_statistics=sorted(round(float(v), 4) for v in finite) if finite else None,
        )

    def rescored(
        self, probabilities: NDArray[np.floating[Any]], embeddings: NDArray[np.floating[Any]], precision: str
    ) -> ReferenceProfile:
        """The same reference rows as scored with other numerics (``precision``); thresholds are kept.

        A model served in bf16 or int8 gives slightly different scores than the numerics its profile was
        built with; checked against the original rows, a sensitive test reads that difference as drift.
        The thresholds were calibrated on reference-vs-reference splits and do not depend on it; the
        confidence calibrator is refitted on the new scores.
        """
        if probabilities.shape != self.window.probabilities.shape or len(embeddings) != len(self.window):
            raise ValueError(
                f"re-scored arrays {probabilities.shape}/{embeddings.shape} do not fit the profile's "
                f"{self.window.probabilities.shape} rows"
            )
        window = dataclasses.replace(
            self.window,
            probabilities=np.asarray(probabilities, dtype=np.float64),
            embeddings=np.asarray(embeddings, dtype=np.float64),
        )
        calibrator = _fit_calibrator(window) if self.calibrator is not None else None
        profile = ReferenceProfile(
            window,
            self.vocabulary,
            calibrator=calibrator,
            thresholds=dict(self.thresholds),
            false_alarm_rate=self.false_alarm_rate,
            n_rounds=self.n_rounds,
            seed=self.seed,
            window_size=self.window_size,
            max_length=self.max_length,
            created_at=self.created_at,
            precision=precision,
            training_overlap_rows=self.training_overlap_rows,
        )
        profile._descriptor_stats = self._descriptor_stats  # texts and token counts are unchanged
        return profile

    def subset(self, indices: NDArray[np.int64] | Sequence[int]) -> ReferenceProfile:
        """A profile of some reference rows only (same vocabulary and settings; calibrator refitted).

        The subset remembers its parent, so fitted reference-side state (e.g. the embedding reduction)
        is derived from the parent's instead of being refitted for every calibration split.
        """
        idx = np.asarray(indices, dtype=np.int64)
        window = self.window.take(idx)
        calibrator = None
        if self.calibrator is not None:
            labeled = window.labeled_mask
            if int(labeled.sum()) >= MIN_CALIBRATION_ROWS:
                calibrator = ConfidenceCalibrator.fit(window.confidence[labeled], window.correct[labeled])
        sub = ReferenceProfile(
            window,
            self.vocabulary,
            calibrator=calibrator,
            false_alarm_rate=self.false_alarm_rate,
            n_rounds=0,
            seed=self.seed,
            window_size=self.window_size,
            max_length=self.effective_max_length,
            created_at=self.created_at,
        )
        sub.window_size = self.window_size
        sub.parent, sub.parent_indices = self, idx
        return sub

    # -- thresholds ------------------------------------------------------------------------------
    def threshold_for(self, detector: Detector) -> float:
        """The calibrated threshold of ``detector``; calibrated now (and kept in memory) if missing or stale."""
        with self._lock:
            record = self.thresholds.get(detector.name)
            if record is not None and record.params == _jsonable(detector.calibration_key()):
                return record.value
        log.warning(
            "profile has no threshold for %r with these parameters; calibrating now (%d rounds)",
            detector,
            self.n_rounds,
        )
        self.calibrate([detector])
        return self.thresholds[detector.name].value

    # -- derived data and caches -----------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes, in probability-column order."""
        return self.window.class_names

    @property
    def descriptors(self) -> Descriptors:
        """Per-row descriptors of the reference texts."""
        return self.describe(self.window)

    @property
    def descriptor_stats(self) -> dict[str, DescriptorStats]:
        """Summary statistics of each descriptor over the reference."""
        if self._descriptor_stats is None:
            self._descriptor_stats = summarise(self.descriptors)
        return self._descriptor_stats

    @property
    def effective_max_length(self) -> int | None:
        """``max_length`` if given, else the token count many reference texts are cut at (if any)."""
        if self.max_length is not None:
            return self.max_length
        counts = self.window.token_counts
        top = int(counts.max())
        at_top = int((counts == top).sum())
        return top if at_top >= max(3, 0.01 * counts.size) else None

    def describe(self, window: Window) -> Descriptors:
        """Descriptors of any window against this profile's vocabulary (cached on the window)."""
        return describe(window, self.vocabulary, self.vocabulary_digest)

    def memo(self, key: Any, factory: Callable[[], T]) -> T:
        """Reference-side state computed once per profile (fitted reductions, reference statistics)."""
        with self._lock:
            if key in self._memo:
                return self._memo[key]  # type: ignore[no-any-return]
        value = factory()
        with self._lock:
            return self._memo.setdefault(key, value)  # type: ignore[no-any-return]

    def window_memo(self, window: Window, key: Any, factory: Callable[[], T]) -> T:
        """State about one current window computed once per profile (shared by the detectors of a check)."""
        with self._lock:
            cache = self._per_window.get(window)
            if cache is None:
                cache = {}
                self._per_window[window] = cache
            if key in cache:
                return cache[key]  # type: ignore[no-any-return]
        value = factory()
        with self._lock:
            return cache.setdefault(key, value)  # type: ignore[no-any-return]

    # -- persistence -----------------------------------------------------------------------------
    def manifest(self) -> ProfileManifest:
        """The JSON part of the profile."""
        return ProfileManifest(
            class_names=list(self.class_names),
            n_rows=len(self.window),
            n_labeled=self.window.n_labeled,
            embedding_dim=int(self.window.embeddings.shape[1]),
            max_length=self.max_length,
            false_alarm_rate=self.false_alarm_rate,
            n_rounds=self.n_rounds,
            seed=self.seed,
            window_size=self.window_size,
            vocabulary_size=len(self.vocabulary),
            vocabulary_digest=self.vocabulary_digest,
            created_at=self.created_at,
            descriptors=self.descriptor_stats,
            calibrator=self.calibrator,
            thresholds=dict(self.thresholds),
            precision=self.precision,
            training_overlap_rows=self.training_overlap_rows,
        )

    def save(self, directory: Path | str) -> Path:
        """Write the profile as plain files (JSON and ``.npy``, no pickle) into ``directory``; return it."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        w = self.window
        rows = {
            "ids": w.ids,
            "texts": w.texts,
            "labels": w.labels,
            "meta": w.meta,
            "timestamps": [t.isoformat() if t is not None else None for t in w.timestamps],
        }
        _write_text(root / ROWS_FILE, json.dumps(rows, ensure_ascii=False))
        _write_text(root / VOCABULARY_FILE, json.dumps(sorted(self.vocabulary), ensure_ascii=False))
        for name in ARRAY_FILES:
            with open(root / f"{name}.npy", "wb") as handle:
                np.save(handle, getattr(w, name), allow_pickle=False)
        # The manifest last: a directory with a manifest is complete.
        _write_text(root / MANIFEST_FILE, self.manifest().model_dump_json(indent=2) + "\n")
        return root

    @classmethod
    def load(cls, directory: Path | str) -> ReferenceProfile:
        """Read a profile written by :meth:`save`."""
        root = Path(directory)
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{root} holds no reference profile ({MANIFEST_FILE} is missing)")
        manifest = ProfileManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        rows = json.loads((root / ROWS_FILE).read_text(encoding="utf-8"))
        vocabulary = json.loads((root / VOCABULARY_FILE).read_text(encoding="utf-8"))
        arrays = {name: np.load(root / f"{name}.npy", allow_pickle=False) for name in ARRAY_FILES}
        window = Window(
            ids=rows["ids"],
            texts=rows["texts"],
            class_names=tuple(manifest.class_names),
            probabilities=arrays["probabilities"],
            embeddings=arrays["embeddings"],
            token_counts=arrays["token_counts"],
            labels=rows["labels"],
            meta=rows["meta"],
            timestamps=[datetime.fromisoformat(t) if t is not None else None for t in rows["timestamps"]],
        )
        profile = cls(
            window,
            frozenset(vocabulary),
            calibrator=manifest.calibrator,
            thresholds=manifest.thresholds,
            false_alarm_rate=manifest.false_alarm_rate,
            n_rounds=manifest.n_rounds,
            seed=manifest.seed,
            window_size=manifest.window_size,
            max_length=manifest.max_length,
            created_at=manifest.created_at,
            precision=manifest.precision,
            training_overlap_rows=manifest.training_overlap_rows,
        )
        if profile.vocabulary_digest != manifest.vocabulary_digest:
            raise ValueError(f"{root}: the vocabulary does not match the manifest's digest")
        profile._descriptor_stats = manifest.descriptors
        return profile

    def __repr__(self) -> str:
        return (
            f"ReferenceProfile(rows={len(self.window)}, labeled={self.window.n_labeled}, "
            f"classes={list(self.class_names)}, thresholds={sorted(self.thresholds)})"
        )


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as they come back from JSON (tuples become lists)."""
    loaded: dict[str, Any] = json.loads(json.dumps(params))
    return loaded
