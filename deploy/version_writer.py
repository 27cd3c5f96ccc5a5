"""The one writer that assembles a version directory: artifact, reference profile, training data, plan, evaluation.

Rooms that train (``insightloop train``, retraining jobs) describe a version with a :class:`VersionDraft`
— a record and callables that save each piece into the path they are given — and hand it to
``Registry.write_version``. Deploy decides where each piece goes (:mod:`insightloop.deploy.layout`),
checks the artifact, counts and checksums the training data it was given, and commits the directory
atomically; deploy never needs to know the other rooms' types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from insightloop.deploy.artifact import ModelArtifact
from insightloop.deploy.errors import DeployPermanentError
from insightloop.deploy.events import VersionRecord
from insightloop.deploy.layout import EVALUATION_DIR, PLAN_FILE, PROFILE_DIR, TRAINING_DATA
from insightloop.deploy.lineage import SourceFile, TrainingData

SaveInto = Callable[[Path], object]  # what it returns is ignored


class VersionWriteError(DeployPermanentError):
    """A draft cannot become a version: a piece is missing or contradicts the record."""


@dataclass(frozen=True)
class VersionDraft:
    """A version to write. Each ``save_*`` callable writes one piece into the path it is given.

    ``save_artifact`` gets the version directory (``ModelArtifact.save`` fits); ``save_profile`` gets
    ``<version>/reference``; ``save_training_data`` gets ``<version>/data/train.jsonl`` and writes JSON
    Lines with a ``label`` key; ``save_evaluation`` gets an existing ``<version>/evaluation`` folder.
    ``record.training`` is filled in by the writer from the file written and ``sources``.
    """

    record: VersionRecord
    save_artifact: SaveInto
    save_profile: SaveInto | None = None
    save_training_data: SaveInto | None = None
    plan_json: str | None = None
    save_evaluation: SaveInto | None = None
    sources: Sequence[SourceFile] = field(default_factory=tuple)
    validation_rows: int | None = None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def summarise_training_data(path: Path) -> tuple[int, dict[str, int]]:
    """Rows and label counts of a JSON Lines file of training examples (a tagged sentence's ``tags`` in IOB2
    count its entities, by type)."""
    rows = 0
    counts: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                tags = row.get("tags")
                labels = [t[2:] for t in tags if t.startswith("B-")] if isinstance(tags, list) else [row.get("label")]
            except (json.JSONDecodeError, AttributeError, TypeError) as exc:
                raise VersionWriteError(f"{path}:{number}: training data is not a JSON object per line") from exc
            rows += 1
            for label in labels:
                counts[str(label)] = counts.get(str(label), 0) + 1
    return rows, dict(sorted(counts.items()))


def _checksummed(source: SourceFile) -> SourceFile:
    if source.sha256 is not None:
        return source
    path = Path(source.path)
    return source.model_copy(update={"sha256": sha256_of(path)}) if path.is_file() else source


def assemble(draft: VersionDraft, directory: Path) -> VersionRecord:
    """Write every piece of ``draft`` into ``directory`` (a staging folder); return the completed record."""
    draft.save_artifact(directory)
    settings = ModelArtifact.read_settings(directory)
    if list(settings.labels) != list(draft.record.labels):
        raise VersionWriteError(
            f"the artifact's labels {settings.labels} differ from the record's {draft.record.labels}"
        )
    if draft.save_profile is not None:
        draft.save_profile(directory / PROFILE_DIR)
    training = draft.record.training
    if draft.save_training_data is not None:
        data_path = directory / TRAINING_DATA
        data_path.parent.mkdir(parents=True, exist_ok=True)
        draft.save_training_data(data_path)
        if not data_path.is_file():
            raise VersionWriteError(f"save_training_data wrote nothing to {TRAINING_DATA}")
        rows, label_counts = summarise_training_data(data_path)
        training = TrainingData(
            file=TRAINING_DATA,
            sha256=sha256_of(data_path),
            rows=rows,
            label_counts=label_counts,
            validation_rows=draft.validation_rows,
            sources=[_checksummed(s) for s in draft.sources],
        )
    elif draft.sources:
        training = TrainingData(
            file=None, validation_rows=draft.validation_rows, sources=[_checksummed(s) for s in draft.sources]
        )
    if draft.plan_json is not None:
        (directory / PLAN_FILE).write_text(draft.plan_json.rstrip("\n") + "\n", encoding="utf-8")
    if draft.save_evaluation is not None:
        evaluation = directory / EVALUATION_DIR
        evaluation.mkdir(exist_ok=True)
        draft.save_evaluation(evaluation)
    return draft.record.model_copy(update={"training": training})
