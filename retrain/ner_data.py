"""Entity-tagged sentences read from CoNLL files and from JSON Lines, in one canonical shape.

Every reader returns :class:`TaggedSentence` records: the words, their tags in IOB2 (whatever scheme the file
used; the spans are the same) and, where the source had raw text, the text and each word's character offsets.

* CoNLL (``eng.train`` and friends): one word per line, columns separated by spaces, the tag in the last
  column (``tag_column``), a blank line between sentences, ``-DOCSTART-`` lines between documents. IOB1
  (CoNLL-2003's) and IOB2 read alike: both name the same spans.
* JSON Lines texts: ``{"id", "text"}`` (raw text, split into words by :func:`split_words`) or
  ``{"id", "tokens": [...]}``.
* JSON Lines labels: ``{"id", "tags": [...]}`` (one per word, either scheme) or
  ``{"id", "entities": [{"start", "end", "type"}]}`` with character offsets into the text (for a
  ``tokens`` row: into its tokens joined by single spaces). A file may hold both in one row.

Errors name the file and line (:class:`DataFileError`); nothing is silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from insightloop.deploy import (
    EntitySpan,
    TagScheme,
    TagSequenceError,
    convert_tags,
    spans_from_tags,
    split_words,
    tags_from_spans,
    word_offsets,
    word_spans,
)
from insightloop.retrain.data import DataFileError, iter_json_rows

DOCSTART = "-DOCSTART-"


class TaggedSentence(BaseModel):
    """Words with one IOB2 tag each (empty ``tags`` when unlabeled), the raw text and offsets when known."""

    model_config = ConfigDict(frozen=True)

    id: str
    words: list[str] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    text: str | None = None
    offsets: list[tuple[int, int]] | None = None
    document: str | None = None

    @model_validator(mode="after")
    def _aligned(self) -> TaggedSentence:
        if self.tags and len(self.tags) != len(self.words):
            raise ValueError(f"{len(self.tags)} tags for {len(self.words)} words")
        if self.offsets is not None and len(self.offsets) != len(self.words):
            raise ValueError(f"{len(self.offsets)} offsets for {len(self.words)} words")
        return self

    @property
    def entities(self) -> list[EntitySpan]:
        """Word spans of the labeled entities."""
        return spans_from_tags(self.tags)


def read_conll(path: Path | str, tag_column: int = -1, limit: int | None = None) -> list[TaggedSentence]:
    """Sentences of a CoNLL file (IOB1 or IOB2), tags rewritten as IOB2; DataFileError names file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    sentences: list[TaggedSentence] = []
    for sentence in _conll_sentences(path, tag_column):
        sentences.append(sentence)
        if limit is not None and len(sentences) >= limit:
            break
    if not sentences:
        raise DataFileError(f"{path}: no sentences")
    return sentences


def _conll_sentences(path: Path, tag_column: int) -> Iterator[TaggedSentence]:
    document = 0
    words: list[str] = []
    tags: list[str] = []
    first_line = 0

    def finished() -> TaggedSentence:
        try:
            iob2 = convert_tags(tags, "IOB2")
        except TagSequenceError as exc:
            raise DataFileError(f"{path}:{first_line}: {exc}") from exc
        return TaggedSentence(
            id=f"{path.stem}-{document}-{first_line}", words=list(words), tags=iob2, document=f"{path.stem}-{document}"
        )

    try:
        with open(path, encoding="utf-8", errors="strict") as handle:
            for number, line in enumerate(handle, start=1):
                columns = line.split()
                if not columns or columns[0] == DOCSTART:
                    if words:
                        yield finished()
                        words, tags = [], []
                    if columns:
                        document += 1
                    continue
                if len(columns) < 2:
                    raise DataFileError(f"{path}:{number}: expected a word and a tag, got {line.strip()!r}")
                try:
                    tag = columns[tag_column]
                except IndexError:
                    raise DataFileError(f"{path}:{number}: no column {tag_column} in {len(columns)} columns") from None
                if not words:
                    first_line = number
                words.append(columns[0])
                tags.append(tag)
            if words:
                yield finished()
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


class EntityLabel(BaseModel):
    """An entity in a labels file: character offsets ``[start, end)`` and a type."""

    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0)
    end: int = Field(gt=0)
    type: str = Field(min_length=1)


class NerRow(BaseModel):
    """One JSON Lines row of the NER shapes; exactly one of ``text`` / ``tokens``, at most one of ``tags`` /
    ``entities``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    text: str | None = None
    tokens: list[str] | None = None
    tags: list[str] | None = None
    entities: list[EntityLabel] | None = None
    document: str | None = None  # sentences of one document are held out together

    @model_validator(mode="after")
    def _one_shape(self) -> NerRow:
        if self.tags is not None and self.entities is not None:
            raise ValueError("give 'tags' or 'entities', not both")
        if self.text is not None and self.tokens is not None:
            raise ValueError("give 'text' or 'tokens', not both")
        if self.tokens is not None and (not self.tokens or any(not t or t != t.strip() for t in self.tokens)):
            raise ValueError("'tokens' must be non-empty strings without surrounding whitespace")
        return self


def read_ner_rows(path: Path | str) -> Iterator[tuple[int, NerRow]]:
    """(line number, row) of a JSON Lines file in the NER shapes; DataFileError names file and line."""
    for number, raw in iter_json_rows(path):
        if "id" in raw and not isinstance(raw["id"], str):
            raw = {**raw, "id": str(raw["id"])}
        try:
            yield number, NerRow.model_validate(raw)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            raise DataFileError(f"{path}:{number}: {problem}") from None


def sentence_of(row: NerRow, labels: NerRow | None = None, where: str = "") -> TaggedSentence:
    """The words of a texts row with the tags of a labels row (or the row's own labels); ``where`` prefixes
    errors ("FILE:LINE")."""
    label_row = labels if labels is not None else row
    try:
        if row.text is not None:
            words, offsets = split_words(row.text)
            text = row.text
        elif row.tokens is not None:
            words = list(row.tokens)
            text = " ".join(words)
            offsets = word_offsets(text, words)
        else:
            raise TagSequenceError("the row has neither 'text' nor 'tokens'")
        if not words:
            raise TagSequenceError("the text has no words")
        if label_row.tags is not None:
            if len(label_row.tags) != len(words):
                raise TagSequenceError(f"{len(label_row.tags)} tags for {len(words)} words")
            tags = convert_tags(label_row.tags, "IOB2")
        elif label_row.entities is not None:
            spans = [EntitySpan(start=e.start, end=e.end, type=e.type) for e in label_row.entities]
            tags = tags_from_spans(word_spans(spans, offsets), len(words), "IOB2")
        else:
            tags = []
    except (TagSequenceError, ValidationError) as exc:
        raise DataFileError(f"{where}: {exc}" if where else str(exc)) from None
    return TaggedSentence(id=row.id, words=words, tags=tags, text=text, offsets=offsets, document=row.document)


def read_ner_jsonl(path: Path | str, labels: Path | str | None = None) -> list[TaggedSentence]:
    """Sentences of a JSON Lines file in the NER shapes, labeled by the rows themselves or by a labels file
    joined on ``id`` (a text without a label stays unlabeled; a label without a text is an error)."""
    by_id: dict[str, tuple[int, NerRow]] = {}
    if labels is not None:
        for number, row in read_ner_rows(labels):
            if row.tags is None and row.entities is None:
                raise DataFileError(f"{labels}:{number}: a labels row needs 'tags' or 'entities'")
            by_id[row.id] = (number, row)
    sentences: list[TaggedSentence] = []
    seen: set[str] = set()
    for number, row in read_ner_rows(path):
        if row.id in seen:
            raise DataFileError(f"{path}:{number}: id {row.id!r} appears twice")
        seen.add(row.id)
        label = by_id.get(row.id)
        where = f"{labels}:{label[0]}" if label else f"{path}:{number}"
        sentences.append(sentence_of(row, label[1] if label else None, where))
    missing = sorted(set(by_id) - seen)
    if missing:
        raise DataFileError(f"{labels}: {len(missing)} labels name no text of {path} (first: {missing[0]!r})")
    if not sentences:
        raise DataFileError(f"{path}: no rows")
    return sentences


def tag_counts(sentences: Iterable[TaggedSentence], scheme: TagScheme = "IOB2") -> dict[str, int]:
    """How many words carry each tag, written in ``scheme``."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for tag in convert_tags(sentence.tags, scheme):
            counts[tag] = counts.get(tag, 0) + 1
    return counts


def entity_types(sentences: Sequence[TaggedSentence]) -> list[str]:
    """The entity types the sentences' tags name, sorted."""
    return sorted({span.type for sentence in sentences for span in sentence.entities})


def write_tagged_jsonl(path: Path | str, sentences: Iterable[TaggedSentence]) -> int:
    """Sentences as JSON Lines ``{"id", "tokens", "tags"}`` (IOB2), what :func:`read_ner_jsonl` reads back."""
    import json

    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for sentence in sentences:
            row: dict[str, object] = {"id": sentence.id, "tokens": sentence.words, "tags": sentence.tags}
            if sentence.document is not None:
                row["document"] = sentence.document
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_tagged(path: Path | str) -> list[TaggedSentence]:
    """Sentences of a CoNLL file, or of JSON Lines in the NER shapes (a ``.jsonl`` or ``.json`` file)."""
    if Path(path).suffix in (".jsonl", ".json"):
        return read_ner_jsonl(path)
    return read_conll(path)
