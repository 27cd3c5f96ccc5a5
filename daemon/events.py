"""Typed events at the Kafka edge: texts and labels in, predictions and dead letters out.

Validation happens once, here; the rest of the daemon only sees these models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from insightloop.deploy import EntitySpan

SCHEMA_VERSION = 1
#: The schema of a prediction that carries entities (a token classifier's): version 1 plus ``task``,
#: ``entities`` and ``token_confidence``. Text classifiers' predictions stay at version 1, unchanged.
ENTITY_SCHEMA_VERSION = 2
RAW_KEEP_BYTES = 2048  # how much of a rejected message the dead letter keeps
ERROR_KEEP_CHARS = 1000  # how much of the reason's text a dead letter keeps
DESCRIBE_ITEMS = 5  # validation errors named in an invalid-fields reason (the rest are counted)
ITEM_KEEP_CHARS = 160  # per validation error: where it is and what is wrong
#: The smallest bound a dead letter can be held to (its fixed fields, a short reason, no raw excerpt).
MIN_DEAD_LETTER_BYTES = 1024


class RejectReason(StrEnum):
    """Why an input message went to the dead-letter topic."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    INVALID_FIELDS = "invalid_fields"
    SCORING_FAILED = "scoring_failed"
    #: The broker refused the scorer's output for this text for good (too large, invalid topic, ...).
    UNDELIVERABLE = "undeliverable"


class RejectedMessage(Exception):
    """An input message that cannot be used, with the reason it goes to the dead-letter topic."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


Scalar = str | int | float | bool | None


class TextEvent(BaseModel):
    """A production text to score (the texts topic)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)
    ts: datetime | None = None
    meta: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime | None:
        """Accept RFC 3339 strings or epoch milliseconds."""
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, bool):
            raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")
        if isinstance(value, int | float):
            try:
                return datetime.fromtimestamp(value / 1000.0, tz=UTC)
            except (OverflowError, OSError, ValueError) as exc:
                # Out of the platform's range (1e300, Infinity): a reason to reject the message, not to crash.
                raise ValueError(f"ts {value!r} is not a usable epoch-milliseconds time") from exc
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")


class EntityLabel(BaseModel):
    """The gold entities of one text: IOB1/IOB2 ``tags`` (one per word of the text as
    :func:`~insightloop.deploy.split_words` splits it) or character ``entities``, exactly one of the two.

    The store keeps it as its compact JSON in the label column; the monitor reads it back against the text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags: list[str] | None = Field(None, min_length=1)
    entities: list[EntitySpan] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> EntityLabel:
        if (self.tags is None) == (self.entities is None):
            raise ValueError("an entity label has either 'tags' or 'entities', not both and not neither")
        return self

    def encode(self) -> str:
        """The stored form (compact JSON)."""
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def decode(cls, stored: str) -> EntityLabel:
        """The label :meth:`encode` stored; ValueError for anything else (a text classifier's label)."""
        return cls.model_validate_json(stored)


class LabelEvent(BaseModel):
    """Delayed ground truth for a text (the labels topic): a class ``label`` for a text classifier, word
    ``tags`` or character ``entities`` for a token classifier (exactly one of the three)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=512)
    label: str | None = Field(None, min_length=1)
    tags: list[str] | None = Field(None, min_length=1)
    entities: list[EntitySpan] | None = None
    ts: datetime | None = None

    @model_validator(mode="after")
    def _one_label(self) -> LabelEvent:
        given = [name for name in ("label", "tags", "entities") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a label event has exactly one of 'label', 'tags' or 'entities' (got {given or 'none'})")
        return self

    @property
    def entity_label(self) -> EntityLabel | None:
        """The gold entities, when this label is a token classifier's."""
        if self.label is not None:
            return None
        return EntityLabel(tags=self.tags, entities=self.entities)

    def stored(self) -> str:
        """What the store keeps in its label column: the class, or the entity label's compact JSON."""
        entity = self.entity_label
        return entity.encode() if entity is not None else str(self.label)


class PredictedEntity(BaseModel):
    """One entity a token classifier found in a raw text: character span, type, string and confidence."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    start: int = Field(ge=0)
    end: int = Field(gt=0)
    type: str = Field(min_length=1)
    text: str
    confidence: float = Field(ge=0.0, le=1.0)


class TokenConfidence(BaseModel):
    """A text's word confidences in brief: their mean and minimum, how many words, entities and words past
    the model's ``max_length`` (tagged ``O``, confidence 0)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    mean: float = Field(ge=0.0, le=1.0)
    min: float = Field(ge=0.0, le=1.0)
    words: int = Field(ge=0)
    entity_count: int = Field(ge=0)
    truncated_words: int = Field(0, ge=0)


class PredictionEvent(BaseModel):
    """What the scorer publishes for each text (the predictions topic)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION
    id: str
    model_version: str
    label: str
    scores: dict[str, float]
    embedding: list[float]
    n_tokens: int
    ts: datetime | None = None
    scored_at: datetime = Field(default_factory=utc_now)
    # The numerics that produced the scores (``ModelArtifact.precision``); absent from older producers.
    precision: str | None = Field(None, pattern=r"^[a-z0-9]{1,16}/(float32|bfloat16|int8)$")
    # A token classifier's prediction (schema 2): ``label`` names the entity types found (``"LOC+PER"``, or
    # ``"O"``), ``scores`` is empty and the entities and word confidences are here.
    task: Literal["text-classification", "token-classification"] = "text-classification"
    entities: list[PredictedEntity] | None = None
    token_confidence: TokenConfidence | None = None


class EntityDetail(BaseModel):
    """A token classifier's prediction as the store keeps it (the records' ``entities`` column, JSON)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    entities: list[PredictedEntity]
    token_confidence: TokenConfidence

    @classmethod
    def of(cls, prediction: PredictionEvent) -> EntityDetail | None:
        """The entity part of ``prediction``; None for a text classifier's."""
        if prediction.entities is None or prediction.token_confidence is None:
            return None
        return cls(entities=prediction.entities, token_confidence=prediction.token_confidence)


def entity_types_label(types: list[str]) -> str:
    """The text-level label of a token classifier's prediction: its entity types, sorted, joined by ``+``
    (``"O"`` when it found none), so per-text views (the console, the predicted column) stay readable.

    >>> entity_types_label(["PER", "LOC", "PER"])
    'LOC+PER'
    >>> entity_types_label([])
    'O'
    """
    return "+".join(sorted(set(types))) or "O"


class DeadLetter(BaseModel):
    """A rejected input message with the reason (the dead-letter topic)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION
    source_topic: str
    partition: int
    offset: int
    reason: RejectReason
    error: str
    raw: str
    raw_bytes: int
    rejected_at: datetime = Field(default_factory=utc_now)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _describe(error: ValidationError) -> str:
    """The first few validation errors, each clipped, and how many more there were.

    A message can carry tens of thousands of invalid fields (a ``meta`` of 20,000 lists): listing them
    all made a 269 KB message's dead letter 3.98 MB, which the broker refused, and the scorer retried
    it for ever. Only ``errors()``' count is needed for the rest, not their text.
    """
    count = error.error_count()
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:DESCRIBE_ITEMS]:
        where = ".".join(str(p) for p in item["loc"]) or "(message)"
        parts.append(_clip(f"{where}: {item['msg']}", ITEM_KEEP_CHARS))
    if count > DESCRIBE_ITEMS:
        parts.append(f"and {count - DESCRIBE_ITEMS} more invalid field(s)")
    return _clip("; ".join(parts), ERROR_KEEP_CHARS)


def parse_text_message(value: bytes | None, max_bytes: int) -> TextEvent:
    """Validate one raw texts-topic message or raise RejectedMessage with its reason."""
    if value is None:
        raise RejectedMessage(RejectReason.NOT_JSON, "empty message (no value)")
    if len(value) > max_bytes:
        raise RejectedMessage(RejectReason.TOO_LARGE, f"{len(value)} bytes exceeds the limit of {max_bytes}")
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedMessage(RejectReason.NOT_UTF8, f"{exc.reason} at byte {exc.start}") from exc
    try:
        payload = json.loads(decoded)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RejectedMessage(RejectReason.NOT_JSON, str(exc)[:200]) from exc
    if not isinstance(payload, dict):
        raise RejectedMessage(RejectReason.NOT_OBJECT, f"expected a JSON object, got {type(payload).__name__}")
    try:
        return TextEvent.model_validate(payload)
    except ValidationError as exc:
        raise RejectedMessage(RejectReason.INVALID_FIELDS, _describe(exc)) from exc


def dead_letter_of(record: Any, reason: RejectReason, error: str) -> DeadLetter:
    """The dead letter of a rejected Kafka consumer record."""
    return dead_letter_for(record.value, record.topic, record.partition, record.offset, reason, error)


def dead_letter_for(
    value: bytes | None, topic: str, partition: int, offset: int, reason: RejectReason, error: str
) -> DeadLetter:
    """Build the dead letter of a rejected message, keeping a truncated, printable copy of it."""
    raw = (value or b"")[:RAW_KEEP_BYTES].decode("utf-8", errors="backslashreplace")
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
        error=_clip(error, ERROR_KEEP_CHARS),
        raw=raw,
        raw_bytes=len(value or b""),
    )


def encode_dead_letter(letter: DeadLetter, max_bytes: int) -> bytes:
    """The dead letter as JSON of at most ``max_bytes`` bytes: the raw excerpt, then the reason, shortened to fit.

    The error and the excerpt are already capped (:data:`ERROR_KEEP_CHARS`, :data:`RAW_KEEP_BYTES`), but
    escaping can grow the excerpt up to eightfold, so the encoded size is checked, not assumed.
    """
    bound = max(max_bytes, MIN_DEAD_LETTER_BYTES)
    encoded = letter.model_dump_json().encode("utf-8")
    raw, error = letter.raw, letter.error
    while len(encoded) > bound and raw:
        raw = raw[: len(raw) // 2]
        encoded = letter.model_copy(update={"raw": raw, "error": error}).model_dump_json().encode("utf-8")
    if len(encoded) > bound:
        error = _clip(error, 200)
        encoded = letter.model_copy(update={"raw": "", "error": error}).model_dump_json().encode("utf-8")
    return encoded
