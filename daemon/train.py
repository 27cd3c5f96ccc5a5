"""`insightloop train`: the first model — fine-tune, register as a new version, optionally promote.

Promotion goes through :class:`~insightloop.daemon.promotion.ModelService`, the path approvals take: the
version must load and pass the smoke test, the approval and the promotion are audited, the production
pointer moves atomically, and a ``models`` event is published when a publisher is given and the broker
answers. Scorers also poll the pointer, so a promotion whose event could not be sent still takes effect.
"""

from __future__ import annotations

import getpass
import logging
from dataclasses import asdict
from pathlib import Path

from insightloop.daemon.promotion import ModelService, Publisher
from insightloop.deploy import Lineage, Registry, SourceFile, VersionDraft, VersionRecord, VersionStatus, utc_now
from insightloop.retrain import (
    FineTuneSettings,
    build_entity_profile,
    build_profile,
    default_base_model,
    fine_tune,
    fine_tune_tokens,
    read_jsonl,
    read_tagged,
    split_sentences,
    write_jsonl,
    write_tagged_jsonl,
)

log = logging.getLogger(__name__)

PROMOTE_NOTE = "insightloop train --promote"


def train_first_model(
    data: Path,
    registry_path: Path,
    base: str | None,
    settings: FineTuneSettings,
    promote: bool,
    progress: bool = True,
    profile_rounds: int = 200,
    publish: Publisher | None = None,
) -> Path:
    """Fine-tune on ``data``, write the version into the registry and return its directory.

    With ``promote`` the operator running the command approves the new version, and it is promoted the
    way `models approve` does it; ``publish`` sends the ``models`` event (None: scorers find the new
    pointer by polling).
    """
    examples = read_jsonl(data, require_label=True)
    base_model = base or default_base_model()
    log.info("fine-tuning %s on %d examples from %s", base_model, len(examples), data)
    result = fine_tune(examples, base_model, settings, progress=progress)
    validation_ids = {id(e) for e in result.validation}
    profile = build_profile(
        result.artifact,
        result.validation,
        [e.text for e in examples if id(e) not in validation_ids],
        seed=settings.seed,
        n_rounds=profile_rounds,
    )
    registry = Registry(registry_path)
    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=None,
        base_model=str(base_model),
        labels=list(result.artifact.labels),
        metrics=result.metrics,
        lineage=Lineage(action="train", settings=asdict(settings)),
    )
    draft = VersionDraft(
        record=record,
        save_artifact=result.artifact.save,
        save_profile=profile.save,
        save_training_data=lambda path: write_jsonl(path, examples),
        sources=[
            SourceFile(
                role="train",
                path=str(data),
                rows=len(examples),
                train_rows=result.train_size,
                holdout_rows=len(result.validation),
            )
        ],
        validation_rows=len(result.validation),
    )
    validation = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("validation_")}
    return register(registry, draft, data, promote, publish, f"validation {validation}")


def train_first_tagger(
    data: Path,
    registry_path: Path,
    base: str | None,
    settings: FineTuneSettings,
    promote: bool,
    progress: bool = True,
    profile_rounds: int = 200,
    publish: Publisher | None = None,
) -> Path:
    """:func:`train_first_model` for a token classifier: fine-tune on tagged sentences, build the entity
    reference from the held-out split, write the version (task ``token-classification``), maybe promote."""
    sentences = [s for s in read_tagged(data) if s.tags]
    base_model = base or default_base_model()
    train, held = split_sentences(sentences, settings.validation_share, settings.seed)
    log.info("fine-tuning %s on %d tagged sentences from %s (%d held out)", base_model, len(train), data, len(held))
    result = fine_tune_tokens(train, base_model, settings, validation=held, progress=progress)
    profile = build_entity_profile(result.classifier, held, train, n_rounds=profile_rounds, seed=settings.seed)
    report = result.report
    metrics = report.metrics("validation")
    registry = Registry(registry_path)
    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=None,
        base_model=str(base_model),
        labels=list(result.classifier.labels),
        metrics=metrics,
        lineage=Lineage(action="train", settings={**asdict(settings), "task": "token-classification"}),
    )
    draft = VersionDraft(
        record=record,
        save_artifact=result.classifier.save,
        save_profile=profile.save,
        save_training_data=lambda path: write_tagged_jsonl(path, sentences),
        sources=[
            SourceFile(role="train", path=str(data), rows=len(sentences), train_rows=len(train), holdout_rows=len(held))
        ],
        validation_rows=len(held),
    )
    held_out = f"held-out entity micro F1 {report.micro.f1:.4f}\n{report.table()}"
    return register(registry, draft, data, promote, publish, held_out)


def register(
    registry: Registry, draft: VersionDraft, data: Path, promote: bool, publish: Publisher | None, summary: str
) -> Path:
    """Write the first version as the operator running the command, maybe promote it; its directory."""
    by = getpass.getuser()
    created = registry.write_version(draft, by=by, reason=f"trained on {data}")
    log.info("registered %s (%s)", created.version, summary)
    if promote:
        ModelService(registry, publish).approve(created.version, by=by, note=PROMOTE_NOTE)
        log.info("promoted %s to production", created.version)
    return registry.path_of(created.version).resolve()
