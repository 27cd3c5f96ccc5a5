"""Named entities as spans, and the tag schemes that encode them word by word (IOB1, IOB2).

A token classifier predicts one tag per word; what a person reads, what the detectors count and what the
evaluation scores are entity *spans*. Spans are the canonical form here: a scheme is only a way to write
them down, and converting between IOB1, IOB2 and spans loses nothing for a well-formed sequence.

* IOB2: every entity starts with ``B-TYPE`` and continues with ``I-TYPE``.
* IOB1 (CoNLL-2003's files): entities are ``I-TYPE``; ``B-TYPE`` only starts an entity that directly follows
  another entity of the same type.

Reading is lenient where the CoNLL evaluation script is: an ``I-TYPE`` that follows ``O`` or another type
starts a new entity in either scheme. Tags that are neither ``O`` nor ``B-``/``I-`` with a type raise
:class:`TagSequenceError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from insightloop.deploy.errors import DeployPermanentError

TagScheme = Literal["IOB1", "IOB2"]
TAG_SCHEMES: tuple[TagScheme, ...] = ("IOB1", "IOB2")
OUTSIDE = "O"
#: Words of raw text: runs of letters and digits (with inner apostrophes and hyphens kept, "O'Neil", "co-op"),
#: or any other single non-space character (punctuation is a word of its own, as in CoNLL's tokens).
WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|[^\w\s]|_", re.UNICODE)


class TagSequenceError(DeployPermanentError):
    """A tag sequence or span list cannot be read: the message names the position and the value."""


class EntitySpan(BaseModel):
    """One entity: ``[start, end)`` over words (token spans) or characters (character spans), and its type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = Field(ge=0)
    end: int = Field(gt=0)
    type: str = Field(min_length=1, pattern=r"^[^\s]+$")

    @model_validator(mode="after")
    def _ordered(self) -> EntitySpan:
        if self.end <= self.start:
            raise ValueError(f"an entity ends after it starts (start {self.start}, end {self.end})")
        return self


def parse_tag(tag: str, position: int) -> tuple[str, str | None]:
    """``("O", None)``, ``("B", TYPE)`` or ``("I", TYPE)``; TagSequenceError for anything else."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in ("B", "I") and kind and not any(c.isspace() for c in kind):
        return prefix, kind
    raise TagSequenceError(f"tag {position}: {tag!r} is neither 'O' nor 'B-TYPE' / 'I-TYPE'")


def spans_from_tags(tags: Sequence[str]) -> list[EntitySpan]:
    """The entities of a tag sequence in either scheme, as word spans in order."""
    spans: list[EntitySpan] = []
    start: int | None = None
    current: str | None = None
    for position, tag in enumerate(tags):
        prefix, kind = parse_tag(tag, position)
        continues = prefix == "I" and kind == current and current is not None
        if start is not None and current is not None and not continues:
            spans.append(EntitySpan(start=start, end=position, type=current))
            start, current = None, None
        if prefix != OUTSIDE and not continues:
            start, current = position, kind
    if start is not None and current is not None:
        spans.append(EntitySpan(start=start, end=len(tags), type=current))
    return spans


def tags_from_spans(spans: Sequence[EntitySpan], length: int, scheme: TagScheme = "IOB2") -> list[str]:
    """``length`` tags in ``scheme`` for word spans; TagSequenceError for spans past the end or overlapping."""
    tags = [OUTSIDE] * length
    previous: EntitySpan | None = None
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if span.end > length:
            raise TagSequenceError(f"entity {span.type} [{span.start}, {span.end}) ends past the {length} words")
        if previous is not None and span.start < previous.end:
            raise TagSequenceError(
                f"entities {previous.type} [{previous.start}, {previous.end}) and {span.type} "
                f"[{span.start}, {span.end}) overlap"
            )
        adjacent_same = previous is not None and previous.end == span.start and previous.type == span.type
        first = "B" if scheme == "IOB2" or adjacent_same else "I"
        tags[span.start] = f"{first}-{span.type}"
        for position in range(span.start + 1, span.end):
            tags[position] = f"I-{span.type}"
        previous = span
    return tags


def convert_tags(tags: Sequence[str], scheme: TagScheme) -> list[str]:
    """The same entities written in ``scheme``."""
    return tags_from_spans(spans_from_tags(tags), len(tags), scheme)


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of raw text (see :data:`WORD`) and each word's ``[start, end)`` character offsets."""
    words: list[str] = []
    offsets: list[tuple[int, int]] = []
    for match in WORD.finditer(text):
        words.append(match.group())
        offsets.append(match.span())
    return words, offsets


def word_offsets(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Character offsets of ``words`` found in order in ``text`` (whitespace between them may be anything)."""
    offsets: list[tuple[int, int]] = []
    cursor = 0
    for position, word in enumerate(words):
        found = text.find(word, cursor)
        if found < 0 or text[cursor:found].strip():
            raise TagSequenceError(f"word {position} {word!r} is not the next word of the text at character {cursor}")
        offsets.append((found, found + len(word)))
        cursor = found + len(word)
    return offsets


def char_spans(spans: Sequence[EntitySpan], offsets: Sequence[tuple[int, int]]) -> list[EntitySpan]:
    """Word spans as character spans of the text the words were taken from."""
    if any(span.end > len(offsets) for span in spans):
        raise TagSequenceError(f"an entity ends past the {len(offsets)} words")
    return [EntitySpan(start=offsets[s.start][0], end=offsets[s.end - 1][1], type=s.type) for s in spans]


def word_spans(spans: Sequence[EntitySpan], offsets: Sequence[tuple[int, int]]) -> list[EntitySpan]:
    """Character spans as word spans; TagSequenceError when a span does not start and end on word boundaries."""
    starts = {start: index for index, (start, _) in enumerate(offsets)}
    ends = {end: index for index, (_, end) in enumerate(offsets)}
    result: list[EntitySpan] = []
    for span in spans:
        first, last = starts.get(span.start), ends.get(span.end)
        if first is None or last is None or last < first:
            raise TagSequenceError(
                f"entity {span.type} at characters [{span.start}, {span.end}) does not start and end on word boundaries"
            )
        result.append(EntitySpan(start=first, end=last + 1, type=span.type))
    return result
