"""`insightloop train`: the first model — fine-tune, register as a new version, optionally promote."""

from __future__ import annotations

import getpass
import logging
from pathlib import Path

from insightloop.deploy import Registry, VersionRecord, VersionStatus
from insightloop.deploy.events import utc_now
from insightloop.retrain import FineTuneSettings, default_base_model, fine_tune, read_jsonl, write_jsonl
from insightloop.retrain.profile import TRAINING_DATA, build_profile, save_profile

log = logging.getLogger(__name__)


def train_first_model(
    data: Path,
    registry_path: Path,
    base: str | None,
    settings: FineTuneSettings,
    promote: bool,
    progress: bool = True,
    profile_rounds: int = 200,
) -> Path:
    """Fine-tune on ``data``, write the version into the registry and return its directory."""
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
    label_counts: dict[str, int] = {}
    for example in examples:
        label_counts[str(example.label)] = label_counts.get(str(example.label), 0) + 1
    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=None,
        base_model=str(base_model),
        labels=list(result.artifact.labels),
        metrics=result.metrics,
        data={
            "train_file": str(data),
            "examples": len(examples),
            "train_size": result.train_size,
            "validation_size": len(result.validation),
            "label_counts": label_counts,
            "settings": result.settings,
        },
    )
    by = getpass.getuser()

    def write(path: Path) -> None:
        result.artifact.save(path)
        save_profile(profile, path)
        write_jsonl(path / TRAINING_DATA, examples)

    created = registry.create_version(write, record, by=by, reason=f"trained on {data}")
    log.info(
        "registered %s (validation %s)",
        created.version,
        {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("validation_")},
    )
    if promote:
        # The operator who runs `train --promote` approves the first model explicitly.
        registry.approve(created.version, by=by, note="insightloop train --promote")
        registry.promote(created.version, by=by, reason="insightloop train --promote")
        log.info("promoted %s to production", created.version)
    return registry.path_of(created.version).resolve()
