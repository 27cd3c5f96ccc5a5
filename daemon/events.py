"""Typed events at the Kafka edge: texts and labels in, predictions and dead letters out.

Validation happens once, here; the rest of the daemon only sees these models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
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


class LabelEvent(BaseModel):
    """Delayed ground truth for a text (the labels topic)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=512)
    label: str = Field(min_length=1)
    ts: datetime | None = None


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
