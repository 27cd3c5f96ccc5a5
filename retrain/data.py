"""Labeled and unlabeled text examples read from JSON Lines files."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insightloop.retrain.errors import RetrainPermanentError

SCALAR = (str, int, float, bool)


class DataFileError(RetrainPermanentError):
    """A data file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One text, its label when known, and the other top-level keys as ``meta``."""

    text: str
    label: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0  # how much this example counts in the training loss


def iter_json_rows(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) of a JSON Lines file, skipping blank lines; DataFileError names file and line
    for a missing file, text that is not UTF-8, a line that is not JSON, or one that is not an object."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise DataFileError(f"{path}:{number}: expected a JSON object")
                yield number, row
        except UnicodeDecodeError as exc:
            raise DataFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def iter_jsonl(path: Path | str, require_label: bool = False) -> Iterator[Example]:
    """Yield examples from a JSON Lines file, raising DataFileError naming file and line on bad rows."""
    for number, row in iter_json_rows(path):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataFileError(f"{path}:{number}: 'text' must be a non-empty string")
        label = row.get("label")
        if label is not None and not isinstance(label, str | int | bool):
            raise DataFileError(f"{path}:{number}: 'label' must be a string")
        if require_label and label is None:
            raise DataFileError(f"{path}:{number}: 'label' is missing (training data needs labels)")
        raw_id = row.get("id")
        meta = {k: v for k, v in row.items() if k not in ("text", "label", "id") and isinstance(v, SCALAR)}
        yield Example(
            text=text,
            label=None if label is None else str(label),
            id=None if raw_id is None else str(raw_id),
            meta=meta,
        )


def write_jsonl(path: Path, examples: Sequence[Example]) -> Path:
    """Write examples as JSON Lines (``meta`` keys at the top level, as they were read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for example in examples:
            row: dict[str, Any] = {**example.meta, "text": example.text}
            if example.id is not None:
                row["id"] = example.id
            if example.label is not None:
                row["label"] = example.label
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path | str, require_label: bool = False, limit: int | None = None) -> list[Example]:
    """All examples of a JSON Lines file (at most ``limit``)."""
    examples: list[Example] = []
    for example in iter_jsonl(path, require_label=require_label):
        if limit is not None and len(examples) >= limit:
            break
        examples.append(example)
    if not examples:
        raise DataFileError(f"{path}: no examples")
    return examples
