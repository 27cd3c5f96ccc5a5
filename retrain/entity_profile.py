"""Entity windows from scored raw texts, and a token classifier version's reference profile.

Production texts reach a token classifier raw: the scorer splits them into words (:func:`split_words`) and
reports entities as character spans. The reference is scored the same way: each held-out sentence is joined
into a raw text and scored as one, and its gold tags are carried over to the words that text splits into, so
the monitor compares like with like. A gold label whose entities do not start and end on those words cannot
be compared and counts as unlabeled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from insightloop.deploy import (
    EntitySpan,
    TagSequenceError,
    TokenClassifier,
    convert_tags,
    spans_from_tags,
    split_words,
    tags_from_spans,
    word_offsets,
    word_spans,
)
from insightloop.detectors import (
    EntityProfile,
    EntityWindow,
    WindowEntity,
    calibrate_entity_profile,
    entity_key,
    fit_entity_calibrator,
)
from insightloop.retrain.entity_eval import entity_report
from insightloop.retrain.ner_data import TaggedSentence

log = logging.getLogger(__name__)

#: Texts in one production window of a token classifier unless the profile is told otherwise.
ENTITY_WINDOW_SIZE = 200


@dataclass(frozen=True)
class ScoredEntity:
    """One predicted entity of a raw text, as the scorer reports it."""

    start: int
    end: int
    type: str
    text: str
    confidence: float


@dataclass(frozen=True)
class EntityRow:
    """One scored raw text with, where it arrived, its gold label: IOB tags over the text's words or
    character spans."""

    id: str
    text: str
    entities: list[ScoredEntity]
    mean_confidence: float
    embedding: Sequence[float]
    gold_tags: list[str] | None = None
    gold_spans: list[EntitySpan] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    ts: datetime | None = None


def text_tags(text: str, spans: Sequence[EntitySpan]) -> list[str]:
    """IOB2 tags over the words of ``text`` for character ``spans``; TagSequenceError when they do not fit."""
    words, offsets = split_words(text)
    return tags_from_spans(word_spans(spans, offsets), len(words), "IOB2")


def gold_of(row: EntityRow, words: int) -> list[str] | None:
    """The row's gold tags over its text's words (IOB2), or None when it has none usable."""
    try:
        if row.gold_spans is not None:
            return text_tags(row.text, row.gold_spans)
        if row.gold_tags is not None and len(row.gold_tags) == words:
            return convert_tags(row.gold_tags, "IOB2")
    except TagSequenceError as exc:
        log.debug("label of %s does not fit its words: %s", row.id, exc)
    return None


def entity_window(rows: Sequence[EntityRow]) -> EntityWindow:
    """The detectors' window of scored raw texts."""
    words_of: list[list[str]] = []
    predicted: list[list[str]] = []
    gold: list[list[str] | None] = []
    for row in rows:
        words, offsets = split_words(row.text)
        spans = [EntitySpan(start=e.start, end=e.end, type=e.type) for e in row.entities]
        try:
            tags = tags_from_spans(word_spans(spans, offsets), len(words), "IOB2")
        except TagSequenceError:  # the scorer's spans always fit; a foreign producer's may not
            tags = ["O"] * len(words)
        words_of.append(words)
        predicted.append(tags)
        gold.append(gold_of(row, len(words)))
    return EntityWindow(
        ids=[r.id for r in rows],
        texts=[r.text for r in rows],
        words=words_of,
        entities=[[WindowEntity(type=e.type, text=e.text, confidence=e.confidence) for e in r.entities] for r in rows],
        predicted_tags=predicted,
        gold_tags=gold,
        mean_confidence=np.array([r.mean_confidence for r in rows], dtype=np.float64),
        embeddings=np.array([list(r.embedding) for r in rows], dtype=np.float64).reshape(len(rows), -1),
        meta=[dict(r.meta) for r in rows],
        timestamps=[r.ts for r in rows],
    )


def sentence_text(sentence: TaggedSentence) -> tuple[str, list[EntitySpan]]:
    """A sentence as the raw text production would send (its own text, else its words joined by spaces)
    and its gold entities as character spans of that text."""
    text = sentence.text if sentence.text is not None else " ".join(sentence.words)
    offsets = sentence.offsets if sentence.offsets is not None else word_offsets(text, sentence.words)
    spans = [
        EntitySpan(start=offsets[s.start][0], end=offsets[s.end - 1][1], type=s.type)
        for s in spans_from_tags(sentence.tags)
    ]
    return text, spans


def score_rows(
    classifier: TokenClassifier, sentences: Sequence[TaggedSentence], batch_size: int = 32
) -> list[EntityRow]:
    """Labeled sentences scored as raw texts, each with its gold entities."""
    texts = [sentence_text(s) for s in sentences]
    scored = classifier.score_texts([text for text, _ in texts], batch_size)
    return [
        EntityRow(
            id=sentence.id,
            text=text,
            entities=[
                ScoredEntity(e.span.start, e.span.end, e.span.type, e.text, e.confidence) for e in result.entities
            ],
            mean_confidence=result.mean_confidence,
            embedding=result.embedding.tolist(),
            gold_spans=spans if sentence.tags else None,
        )
        for sentence, (text, spans), result in zip(sentences, texts, scored, strict=True)
    ]


def build_entity_profile(
    classifier: TokenClassifier,
    held_out: Sequence[TaggedSentence],
    training: Sequence[TaggedSentence],
    window_size: int = ENTITY_WINDOW_SIZE,
    n_rounds: int = 200,
    seed: int = 0,
    batch_size: int = 32,
) -> EntityProfile:
    """The version's reference: its held-out sentences scored as raw texts, the entity strings of its
    training data, a confidence calibrator and the held-out entity F1, and every entity detector's
    threshold calibrated on reference splits."""
    window = entity_window(score_rows(classifier, held_out, batch_size))
    labeled = window.labeled
    report = entity_report([window.gold_tags[i] or [] for i in labeled], [window.predicted_tags[i] for i in labeled])
    known = frozenset(
        entity_key(" ".join(s.words[span.start : span.end])) for s in training for span in spans_from_tags(s.tags)
    )
    types = sorted({kind for tag in classifier.labels if (kind := tag.partition("-")[2])})
    profile = EntityProfile(
        window=window,
        known_entities=known,
        entity_types=types,
        calibrator=fit_entity_calibrator(window),
        reference_f1=report.micro.f1 if labeled else None,
        reference_f1_by_type={score.name: score.f1 for score in report.types},
        window_size=max(1, min(window_size, len(window) // 2)),
    )
    return calibrate_entity_profile(profile, n_rounds=n_rounds, seed=seed)
