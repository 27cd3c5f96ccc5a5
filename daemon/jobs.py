"""A retraining job's files: its production data and its spec, in ``<registry>/jobs/<job id>/`` (the registry
volume, which a Kubernetes Job's pod mounts; the daemon's state directory it does not).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from insightloop.daemon.config import ControllerConfig
from insightloop.daemon.events import EntityLabel
from insightloop.daemon.state import StoredRecord
from insightloop.deploy import Registry, RegistryError
from insightloop.detectors import Insight
from insightloop.retrain import GateSettings, HyperParameters, JobSpec, plan_from_insights


def new_job_id(now: datetime | None = None) -> str:
    """A job id: sortable by launch time, unique, a valid Kubernetes name part."""
    return f"retrain-{now or datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


def result_path(spec_path: Path) -> Path:
    """Where a job writes its result (``JobSpec.resolved_result_path`` for the specs written here)."""
    return spec_path.with_suffix(".result.json")


def reference_data(policy: ControllerConfig, registry: Registry, champion: str) -> str:
    """The labeled reference training data of a job: configured, else the champion's own training file."""
    if policy.reference_data is not None:
        return str(policy.reference_data)
    stored = registry.training_data_file(champion)
    if stored is None:
        raise RegistryError(f"{champion} records no training file; set controller.reference_data")
    return str(stored)


def write_production(path: Path, records: Sequence[StoredRecord]) -> None:
    """Labeled production texts as JSONL, the job's production data: ``text`` and ``label`` for a text
    classifier's, NER rows (``text`` with ``tags`` or ``entities``) for a token classifier's."""
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            entity = _entity_label(record)
            if entity is not None:
                row = {"id": record.id, "text": record.text, **json.loads(entity.encode())}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                continue
            meta = {k: v for k, v in record.meta.items() if k not in ("id", "text", "label")}
            out.write(json.dumps({"id": record.id, "text": record.text, "label": record.label, **meta}) + "\n")


def _entity_label(record: StoredRecord) -> EntityLabel | None:
    """The record's gold entities when it belongs to a token classifier (its prediction carries entities)."""
    if record.entities is None or record.label is None:
        return None
    try:
        return EntityLabel.decode(record.label)
    except ValueError:
        return None


def write_spec(
    jobs_dir: Path,
    job_id: str,
    registry: Registry,
    policy: ControllerConfig,
    insights: Sequence[Insight],
    champion: str,
    labeled: Sequence[StoredRecord],
) -> tuple[JobSpec, Path]:
    """Write the job's production data and spec; return the spec and its path.

    Raises ``RegistryError`` when the champion's version cannot be planned from (no training data).
    """
    job_dir = jobs_dir / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    production = job_dir / "production.jsonl"
    write_production(production, labeled)
    champion_dir = registry.path_of(champion)
    settings = registry.artifact_settings(champion)
    max_length = settings.max_length
    hyper = HyperParameters(
        epochs=policy.epochs,
        learning_rate=policy.learning_rate,
        batch_size=policy.batch_size,
        max_length=max_length,
        truncation=settings.truncation,
    )
    plan = plan_from_insights(
        list(insights),
        champion,
        str(champion_dir),
        max_length,
        reference_data(policy, registry, champion),
        str(production),
        hyper=hyper,
        production_weight=policy.production_weight,
    )
    plan = plan.model_copy(update={"production_holdout_share": policy.production_holdout_share})
    spec = JobSpec(
        job_id=job_id,
        registry=str(registry.root),
        plan=plan,
        device=policy.device,
        progress=False,
        projection_dims=policy.projection_dims,
        profile_rounds=policy.profile_rounds,
        gate=GateSettings(min_improvement=policy.gate_min_improvement, max_regression=policy.gate_max_regression),
        ablations=policy.ablations,
        max_ablations=policy.max_ablations,
    )
    spec_path = job_dir / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    return spec, spec_path
