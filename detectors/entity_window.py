"""A token classifier's scored texts as the entity detectors read them, and its reference profile.

An :class:`EntityWindow` holds, per text, its words, the entities the model found (type, string, confidence),
the predicted and (where a label arrived) the gold tags over the same words, the mean word confidence, the
pooled embedding, the line's shape and its ``meta``. An :class:`EntityProfile` is the window of a version's
held-out sentences at training time, plus what only training knows: the entity strings it saw, how far
entity confidence can be trusted (a calibrator fitted on the held-out gold), and each detector's null
statistics from reference-vs-reference splits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from insightloop.detectors.calibration import ConfidenceCalibrator
from insightloop.detectors.insight import WindowSpan
from insightloop.detectors.profile import CalibratedThreshold

ENTITY_PROFILE_FILE = "entity_profile.json"
ENTITY_EMBEDDINGS_FILE = "entity_embeddings.npy"
#: A line is ``table`` when at least this share of its words are numbers (sports results, price lists).
TABLE_NUMBER_SHARE = 0.3
#: A line is ``caps`` when at least this share of its words of letters are written in capitals (headlines).
CAPS_SHARE = 0.8
_NUMBER = re.compile(r"^[+-]?\d[\d.,:/-]*$")


def line_shape(words: Sequence[str]) -> str:
    """``table``, ``caps`` or ``prose``: how a line reads (see :data:`TABLE_NUMBER_SHARE`, :data:`CAPS_SHARE`).

    >>> line_shape(["Leicester", "3", "Chelsea", "2"])
    'table'
    >>> line_shape(["SOCCER", "-", "ENGLISH", "PREMIER", "LEAGUE", "RESULTS", "."])
    'caps'
    >>> line_shape(["Germany", "imported", "47,600", "sheep", "."])
    'prose'
    """
    if not words:
        return "prose"
    numbers = sum(1 for w in words if _NUMBER.match(w))
    if numbers / len(words) >= TABLE_NUMBER_SHARE:
        return "table"
    lettered = [w for w in words if any(c.isalpha() for c in w)]
    if len(lettered) >= 2 and sum(1 for w in lettered if w.isupper()) / len(lettered) >= CAPS_SHARE:
        return "caps"
    return "prose"


class WindowEntity(BaseModel):
    """One predicted entity of a window's text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    text: str
    confidence: float = Field(ge=0.0, le=1.0)


def entity_key(text: str) -> str:
    """How entity strings are compared with those seen in training: case and inner spacing folded."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class EntityWindow:
    """Scored texts of one token classifier, in order (every list has one item per text)."""

    ids: list[str]
    texts: list[str]
    words: list[list[str]]
    entities: list[list[WindowEntity]]
    predicted_tags: list[list[str]]
    gold_tags: list[list[str] | None]
    mean_confidence: NDArray[np.float64]
    embeddings: NDArray[np.float64]
    meta: list[dict[str, Any]] = field(default_factory=list)
    timestamps: list[datetime | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.ids)
        sizes = {
            "texts": len(self.texts),
            "words": len(self.words),
            "entities": len(self.entities),
            "predicted_tags": len(self.predicted_tags),
            "gold_tags": len(self.gold_tags),
            "mean_confidence": len(self.mean_confidence),
            "embeddings": len(self.embeddings),
        }
        wrong = {name: size for name, size in sizes.items() if size != n}
        if wrong:
            raise ValueError(f"an entity window of {n} ids has columns of other lengths: {wrong}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def shapes(self) -> list[str]:
        """Each text's :func:`line_shape`."""
        return [line_shape(words) for words in self.words]

    @property
    def word_counts(self) -> NDArray[np.int64]:
        """Words per text."""
        return np.array([len(words) for words in self.words], dtype=np.int64)

    @property
    def labeled(self) -> list[int]:
        """Indices of the texts with gold tags."""
        return [i for i, gold in enumerate(self.gold_tags) if gold is not None]

    def take(self, indices: Sequence[int] | NDArray[np.int64]) -> EntityWindow:
        """The texts at ``indices``, in that order."""
        rows = [int(i) for i in indices]
        return EntityWindow(
            ids=[self.ids[i] for i in rows],
            texts=[self.texts[i] for i in rows],
            words=[self.words[i] for i in rows],
            entities=[self.entities[i] for i in rows],
            predicted_tags=[self.predicted_tags[i] for i in rows],
            gold_tags=[self.gold_tags[i] for i in rows],
            mean_confidence=self.mean_confidence[rows],
            embeddings=self.embeddings[rows],
            meta=[self.meta[i] for i in rows] if self.meta else [],
            timestamps=[self.timestamps[i] for i in rows] if self.timestamps else [],
        )

    def span(self) -> WindowSpan:
        """First and last event time (where known) and the number of texts."""
        known = [t for t in self.timestamps if t is not None]
        return WindowSpan(start=min(known) if known else None, end=max(known) if known else None, count=len(self))


class EntityProfile(BaseModel):
    """A token classifier version's reference: its held-out window and what training knew.

    ``known_entities`` are the training data's entity strings (:func:`entity_key`); ``calibrator`` maps an
    entity's confidence to the chance that it is right (type and both boundaries), fitted on the held-out
    gold; ``reference_f1`` is the held-out entity-level micro F1; ``thresholds`` the detectors' alarm levels
    with the null statistics they were derived from.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    window: EntityWindow
    known_entities: frozenset[str]
    entity_types: list[str]
    calibrator: ConfidenceCalibrator | None = None
    reference_f1: float | None = None
    reference_f1_by_type: dict[str, float] = Field(default_factory=dict)
    window_size: int = Field(ge=1)
    thresholds: dict[str, CalibratedThreshold] = Field(default_factory=dict)

    def subset(self, indices: Sequence[int] | NDArray[np.int64]) -> EntityProfile:
        """The same profile over part of its window (what calibration splits use)."""
        return self.model_copy(update={"window": self.window.take(indices)})

    # -- files ----------------------------------------------------------------------------------
    def save(self, folder: Path | str) -> Path:
        """Write the profile into ``folder`` (JSON plus the embeddings as ``.npy``); return the folder."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        w = self.window
        payload = {
            "known_entities": sorted(self.known_entities),
            "entity_types": self.entity_types,
            "calibrator": self.calibrator.model_dump() if self.calibrator is not None else None,
            "reference_f1": self.reference_f1,
            "reference_f1_by_type": self.reference_f1_by_type,
            "window_size": self.window_size,
            "thresholds": {k: v.model_dump() for k, v in self.thresholds.items()},
            "rows": [
                {
                    "id": w.ids[i],
                    "text": w.texts[i],
                    "words": w.words[i],
                    "entities": [e.model_dump() for e in w.entities[i]],
                    "predicted_tags": w.predicted_tags[i],
                    "gold_tags": w.gold_tags[i],
                    "mean_confidence": float(w.mean_confidence[i]),
                    "meta": w.meta[i] if w.meta else {},
                }
                for i in range(len(w))
            ],
        }
        (root / ENTITY_PROFILE_FILE).write_text(json.dumps(payload) + "\n", encoding="utf-8")
        np.save(root / ENTITY_EMBEDDINGS_FILE, w.embeddings.astype(np.float32))
        return root

    @classmethod
    def load(cls, folder: Path | str) -> EntityProfile:
        """A profile written by :meth:`save`; FileNotFoundError or ValueError when there is none usable."""
        root = Path(folder)
        payload = json.loads((root / ENTITY_PROFILE_FILE).read_text(encoding="utf-8"))
        rows: list[Mapping[str, Any]] = payload["rows"]
        embeddings = np.load(root / ENTITY_EMBEDDINGS_FILE).astype(np.float64)
        window = EntityWindow(
            ids=[r["id"] for r in rows],
            texts=[r["text"] for r in rows],
            words=[list(r["words"]) for r in rows],
            entities=[[WindowEntity.model_validate(e) for e in r["entities"]] for r in rows],
            predicted_tags=[list(r["predicted_tags"]) for r in rows],
            gold_tags=[list(r["gold_tags"]) if r["gold_tags"] is not None else None for r in rows],
            mean_confidence=np.array([r["mean_confidence"] for r in rows], dtype=np.float64),
            embeddings=embeddings,
            meta=[dict(r.get("meta") or {}) for r in rows],
            timestamps=[None] * len(rows),
        )
        calibrator = payload.get("calibrator")
        return cls(
            window=window,
            known_entities=frozenset(payload["known_entities"]),
            entity_types=list(payload["entity_types"]),
            calibrator=ConfidenceCalibrator.model_validate(calibrator) if calibrator else None,
            reference_f1=payload.get("reference_f1"),
            reference_f1_by_type=dict(payload.get("reference_f1_by_type") or {}),
            window_size=int(payload["window_size"]),
            thresholds={k: CalibratedThreshold.model_validate(v) for k, v in payload["thresholds"].items()},
        )
