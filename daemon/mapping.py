"""The ``input`` mapping: the user's message and file shapes onto insightloop's text and label events.

A team's topic rarely carries ``{"id", "text", "meta"}``. :class:`MessageMapping` reads the text, id and
label by dotted path (``payload.body``) or JSON pointer (``/data/text``), takes the id from the Kafka key
when the value has none, picks ``meta`` fields by path and reads the timestamp in the format given. It
turns a raw message into the canonical JSON that :func:`~insightloop.daemon.events.parse_text_message`
validates, so validation still happens once, at the edge, and the rest of the daemon only sees typed
events. A message it cannot read raises :class:`~insightloop.daemon.events.RejectedMessage` naming the
configured key and the path that failed; the caller dead-letters it.

With the default configuration the mapping is the identity: raw bytes pass through untouched.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from insightloop.daemon.events import LabelEvent, RejectedMessage, RejectReason, TextEvent, parse_text_message
from insightloop.retrain import DataFileError, Example, iter_json_rows, iter_jsonl

if TYPE_CHECKING:
    from insightloop.daemon.config import InputConfig

SCALARS = (str, int, float, bool)
TS_FORMATS = ("auto", "rfc3339", "epoch_ms", "epoch_s")
_MISSING = object()


class MappingError(ValueError):
    """A path or timestamp format in the ``input`` section cannot be used."""


@dataclass(frozen=True)
class FieldPath:
    """Where a field lives in a JSON value: ``a.b.0`` (dotted) or ``/a/b/0`` (RFC 6901 JSON pointer).

    >>> FieldPath.parse("/data/text").find({"data": {"text": "hi"}})
    'hi'
    >>> FieldPath.parse("ctx.shop").name
    'ctx.shop'
    """

    raw: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str) -> FieldPath:
        """Parse a dotted path or a JSON pointer; raise MappingError when it names nothing."""
        if not isinstance(raw, str) or not raw.strip():
            raise MappingError("a field path must be a non-empty string")
        if raw.startswith("/"):
            parts = tuple(p.replace("~1", "/").replace("~0", "~") for p in raw[1:].split("/"))
        else:
            parts = tuple(raw.split("."))
        if not parts or any(p == "" for p in parts):
            raise MappingError(f"field path {raw!r} has an empty segment")
        return cls(raw, parts)

    @property
    def name(self) -> str:
        """The dotted form, used to name a ``meta`` field picked by this path (``/ctx/shop`` → ``ctx.shop``)."""
        return ".".join(self.parts)

    def find(self, value: Any, default: Any = _MISSING) -> Any:
        """The value at this path in ``value``; ``default`` (or KeyError naming the path) when absent."""
        node = value
        for part in self.parts:
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                if default is _MISSING:
                    raise KeyError(self.raw)
                return default
        return node


def _optional_path(raw: str | None) -> FieldPath | None:
    return None if raw is None or raw == "" else FieldPath.parse(raw)


def check_ts_format(value: str) -> str:
    """A timestamp format: ``auto``, ``rfc3339``, ``epoch_ms``, ``epoch_s`` or a ``strptime`` pattern with ``%``."""
    if value not in TS_FORMATS and "%" not in value:
        raise MappingError(f"ts_format {value!r}: use one of {', '.join(TS_FORMATS)} or a strptime pattern")
    return value


def parse_ts(value: Any, ts_format: str) -> str | float | None:
    """A timestamp in ``ts_format`` as RFC 3339 text or epoch milliseconds (what TextEvent reads); ValueError if not."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if ts_format == "auto":
        if isinstance(value, str | int | float):
            return value
        raise ValueError("expected an RFC 3339 string or epoch milliseconds")
    if ts_format == "rfc3339":
        if not isinstance(value, str):
            raise ValueError("expected an RFC 3339 string")
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()
    if ts_format in ("epoch_ms", "epoch_s"):
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, int | float):
            raise ValueError(f"expected a number ({ts_format})")
        return float(number) * (1000.0 if ts_format == "epoch_s" else 1.0)
    if not isinstance(value, str):
        raise ValueError(f"expected a string in the format {ts_format!r}")
    parsed = datetime.strptime(value, ts_format)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True)
class MessageMapping:
    """How the user's messages and file rows map onto text and label events (the ``input`` config section).

    Build it once with :meth:`from_config`; its methods are pure. :meth:`parse_text` and
    :meth:`parse_label` are the entry points for Kafka records, :meth:`read_examples` for files.
    """

    text: FieldPath = FieldPath("text", ("text",))
    id: FieldPath | None = FieldPath("id", ("id",))
    id_from_key: bool = False
    ts: FieldPath | None = FieldPath("ts", ("ts",))
    ts_format: str = "auto"
    meta_object: FieldPath | None = FieldPath("meta", ("meta",))
    meta: tuple[FieldPath, ...] = ()
    label_id: FieldPath | None = FieldPath("id", ("id",))
    label: FieldPath = FieldPath("label", ("label",))

    @classmethod
    def from_config(cls, section: InputConfig) -> MessageMapping:
        """The mapping an ``input`` section describes (its paths were checked when the config loaded)."""
        return cls(
            text=FieldPath.parse(section.text),
            id=_optional_path(section.id),
            id_from_key=section.id_from_key,
            ts=_optional_path(section.ts),
            ts_format=check_ts_format(section.ts_format),
            meta_object=_optional_path(section.meta_object),
            meta=tuple(FieldPath.parse(p) for p in section.meta),
            label_id=_optional_path(section.label_id),
            label=FieldPath.parse(section.label),
        )

    @functools.cached_property
    def identity(self) -> bool:
        """True when messages already have insightloop's shape: they pass through unchanged.

        Cached: comparing every field was ~4 µs, asked once per message by the scorer and the monitor.
        """
        return self == MessageMapping()

    # -- texts --------------------------------------------------------------------------------
    def parse_text(self, value: bytes | None, key: bytes | None, max_bytes: int) -> TextEvent:
        """The text event of one raw texts-topic message, or RejectedMessage with the reason and failed path.

        Size, UTF-8, JSON and object checks are :func:`parse_text_message`'s, with its reasons.
        """
        canonical = self.canonical_text(value, key, max_bytes)
        # The canonical form of an accepted message may differ in size from the raw one; the raw one was checked.
        limit = max_bytes if canonical is value or canonical is None else max(max_bytes, len(canonical))
        return parse_text_message(canonical, limit)

    def canonical_text(self, value: bytes | None, key: bytes | None, max_bytes: int) -> bytes | None:
        """``value`` rewritten as canonical ``{"id","text","ts","meta"}`` JSON bytes.

        Returned unchanged when the mapping is the identity, or when the message is empty, too large or
        not a JSON object (so :func:`parse_text_message` rejects it with its own reason).
        """
        if self.identity or value is None or len(value) > max_bytes:
            return value
        payload = _json_object(value)
        if payload is None:
            return value
        event = self.text_fields(payload, _key_text(key))
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def text_fields(self, payload: Mapping[str, Any], key: str | None, require_id: bool = True) -> dict[str, Any]:
        """The canonical text-event fields of one decoded message (or file row); RejectedMessage if unreadable.

        Without ``require_id`` (file rows, whose ids default to ``<file stem>-<row>``) a missing id is None.
        """
        text = self._required(payload, self.text, "input.text")
        if not isinstance(text, str):
            raise _rejected("input.text", self.text, f"must be a string, got {type(text).__name__}")
        event: dict[str, Any] = {"id": self._id(payload, key, self.id, "input.id", require_id), "text": text}
        if self.ts is not None:
            raw_ts = self.ts.find(payload, None)
            try:
                ts = parse_ts(raw_ts, self.ts_format)
            except (ValueError, OverflowError) as exc:
                raise _rejected("input.ts", self.ts, f"not a {self.ts_format} timestamp ({exc})") from exc
            if ts is not None:
                event["ts"] = ts
        event["meta"] = self._meta(payload)
        return event

    def _id(
        self, payload: Mapping[str, Any], key: str | None, path: FieldPath | None, name: str, required: bool = True
    ) -> str | None:
        raw = path.find(payload, None) if path is not None else None
        if raw is None and self.id_from_key and key:
            return key
        if raw is None and not required:
            return None
        if raw is None:
            where = "no id path" if path is None else f"path {path.raw!r} not found"
            suffix = " and the message has no key" if self.id_from_key else " (input.id_from_key is off)"
            raise RejectedMessage(RejectReason.INVALID_FIELDS, f"{name}: {where}{suffix}")
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            assert path is not None
            raise _rejected(name, path, f"must be a string or an integer, got {type(raw).__name__}")
        return str(raw)

    def _meta(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.meta_object is not None:
            found = self.meta_object.find(payload, None)
            if isinstance(found, Mapping):
                meta.update({str(k): v for k, v in found.items() if v is None or isinstance(v, SCALARS)})
        for path in self.meta:
            value = path.find(payload, None)
            if value is None:
                continue
            if not isinstance(value, SCALARS):
                raise _rejected("input.meta", path, f"must be a scalar, got {type(value).__name__}")
            meta[path.name] = value
        return meta

    @staticmethod
    def _required(payload: Mapping[str, Any], path: FieldPath, name: str) -> Any:
        try:
            return path.find(payload)
        except KeyError:
            raise _rejected(name, path, "not found") from None

    # -- labels -------------------------------------------------------------------------------
    def parse_label(self, value: bytes | None, key: bytes | None, max_bytes: int) -> LabelEvent:
        """The label event of one raw labels-topic message, or RejectedMessage naming the failed path.

        Every unusable label is ``invalid_fields`` (labels have always had one reason); the detail says why.
        With the identity mapping the message is validated as the label event itself.
        """
        if value is None:
            raise RejectedMessage(RejectReason.INVALID_FIELDS, "empty message (no value)")
        if len(value) > max_bytes:
            raise RejectedMessage(RejectReason.INVALID_FIELDS, f"{len(value)} bytes exceeds the limit of {max_bytes}")
        if self.identity:
            try:
                return LabelEvent.model_validate_json(value)
            except ValidationError as exc:
                raise RejectedMessage(RejectReason.INVALID_FIELDS, str(exc)[:500]) from exc
        payload = _json_object(value)
        if payload is None:
            raise RejectedMessage(RejectReason.INVALID_FIELDS, "a label message must be a JSON object")
        return self.label_event(payload, _key_text(key))

    def label_event(self, payload: Mapping[str, Any], key: str | None) -> LabelEvent:
        """The label event of one decoded message or file row."""
        label = self._required(payload, self.label, "input.label")
        if isinstance(label, bool) or not isinstance(label, str | int) or str(label) == "":
            raise _rejected("input.label", self.label, "must be a non-empty string")
        text_id = self._id(payload, key, self.label_id, "input.label_id")
        assert text_id is not None  # required ids are never None
        return LabelEvent(id=text_id, label=str(label))

    def label_message(self, text_id: str, label: str) -> bytes:
        """A label message in the user's shape (what ``replay`` sends): id and label at their paths."""
        message: dict[str, Any] = {}
        if self.label_id is not None:
            _put(message, self.label_id, text_id)
        _put(message, self.label, label)
        return json.dumps(message, ensure_ascii=False).encode("utf-8")

    def with_id(self, row: Mapping[str, Any], text_id: str) -> dict[str, Any]:
        """``row`` with ``text_id`` at the id path when it has none there (what ``replay`` sends)."""
        message = json.loads(json.dumps(row))
        if self.id is not None and self.id.find(message, None) is None:
            _put(message, self.id, text_id)
        return dict(message)

    # -- files --------------------------------------------------------------------------------
    def iter_examples(self, path: Path | str, require_label: bool = False) -> Iterator[tuple[Example, dict[str, Any]]]:
        """Examples of a JSON Lines file read through this mapping, each with its raw row.

        With the identity mapping a row is read as ``train`` reads it (other top-level keys become
        ``meta``). A row the mapping cannot read raises DataFileError naming file, line and path.
        """
        path = Path(path)
        if self.identity:
            for example in iter_jsonl(path, require_label=require_label):
                yield example, {}
            return
        for number, row in iter_json_rows(path):
            try:
                fields = self.text_fields(row, None, require_id=False)
                label = self.label.find(row, None)
                if label is not None and (isinstance(label, bool) or not isinstance(label, str | int)):
                    raise _rejected("input.label", self.label, "must be a string")
            except RejectedMessage as exc:
                raise DataFileError(f"{path}:{number}: {exc.detail}") from exc
            if require_label and label is None:
                raise DataFileError(f"{path}:{number}: input.label: path {self.label.raw!r} not found")
            if not fields["text"].strip():
                raise DataFileError(f"{path}:{number}: input.text: path {self.text.raw!r} is empty")
            yield (
                Example(
                    text=fields["text"],
                    label=None if label is None else str(label),
                    id=fields.get("id"),
                    meta=fields["meta"],
                ),
                row,
            )

    def read_examples(self, path: Path | str, require_label: bool = False, limit: int | None = None) -> list[Example]:
        """Every example of a file read through this mapping (at most ``limit``); DataFileError if none."""
        examples: list[Example] = []
        for example, _ in self.iter_examples(path, require_label=require_label):
            if limit is not None and len(examples) >= limit:
                break
            examples.append(example)
        if not examples:
            raise DataFileError(f"{path}: no examples")
        return examples


_BUILT: dict[int, tuple[InputConfig, MessageMapping]] = {}


def mapping_for(section: InputConfig) -> MessageMapping:
    """The mapping of an ``input`` section, built once per section object (configs are parsed once in ``main``).

    What a worker calls where it parses a raw message::

        event = mapping_for(config.input).parse_text(record.value, record.key, config.scorer.max_message_bytes)
    """
    built = _BUILT.get(id(section))
    if built is None or built[0] is not section:
        built = (section, MessageMapping.from_config(section))
        _BUILT[id(section)] = built
    return built[1]


def _rejected(name: str, path: FieldPath, problem: str) -> RejectedMessage:
    return RejectedMessage(RejectReason.INVALID_FIELDS, f"{name}: path {path.raw!r} {problem}")


def _json_object(value: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _key_text(key: bytes | str | None) -> str | None:
    if key is None or isinstance(key, str):
        return key or None
    try:
        return key.decode("utf-8") or None
    except UnicodeDecodeError:
        return None


def _put(message: dict[str, Any], path: FieldPath, value: Any) -> None:
    node = message
    for part in path.parts[:-1]:
        node = node.setdefault(part, {})
    node[path.parts[-1]] = value
