"""The retraining job: plan in, candidate version (with evaluation, gate verdict and profile) out.

`insightloop retrain --spec SPEC.json` runs this, locally or in a Kubernetes Job's container. The job
writes its result (or a readable error) to the spec's result path; a job that fails or is killed
leaves no half-written version (the registry writes versions atomically).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from insightloop.deploy import (
    Evaluation,
    EvaluationSection,
    GateVerdict,
    ModelArtifact,
    Registry,
    VersionRecord,
    VersionStatus,
    pick_device,
)
from insightloop.deploy.events import utc_now
from insightloop.retrain.data import Example, read_jsonl, write_jsonl
from insightloop.retrain.evaluate import (
    RECENT,
    REFERENCE,
    GateSettings,
    Predictions,
    classification_report_text,
    compare,
    decide,
    evidently_classification_report,
)
from insightloop.retrain.finetune import FineTuneSettings, fine_tune, seed_everything, stratified_split
from insightloop.retrain.plan import TrainingPlan
from insightloop.retrain.profile import TRAINING_DATA, build_profile, save_profile

log = logging.getLogger(__name__)

EVALUATION_DIR = "evaluation"


class JobSpec(BaseModel):
    """Everything a retraining job needs; written by the controller, read by `insightloop retrain`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str = Field(min_length=1, max_length=63)
    registry: str
    plan: TrainingPlan
    gate: GateSettings = Field(default_factory=GateSettings)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    by: str = "controller"
    progress: bool = True
    projection_dims: int = Field(32, ge=1)
    profile_rounds: int = Field(100, ge=0)
    result_path: str | None = None

    def resolved_result_path(self, spec_path: Path) -> Path:
        """Where the result goes: ``result_path`` or ``<spec>.result.json``."""
        return Path(self.result_path) if self.result_path else spec_path.with_suffix(".result.json")


class JobResult(BaseModel):
    """What a job did: the candidate it registered and the gate's verdict, or why it failed."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    state: Literal["succeeded", "failed"]
    version: str | None = None
    gate: GateVerdict | None = None
    error: str | None = None
    device: str | None = None
    seconds: float = 0.0
    finished_at: datetime = Field(default_factory=utc_now)


def _slice_member(key: str, example: Example, n_tokens: int) -> bool:
    field, _, value = key.partition("=")
    if field == "length_tokens":
        if value.endswith("+"):
            return n_tokens >= int(value[:-1])
        low, _, high = value.partition("-")
        return int(low) <= n_tokens <= int(high)
    if field.startswith("meta."):
        raw = example.meta.get(field.removeprefix("meta."))
        return raw is not None and str(raw).lower() == value.lower()
    return False  # slices that need the reference vocabulary are evaluated by the monitor only


def _token_counts(artifact: ModelArtifact, examples: Sequence[Example]) -> list[int]:
    """Untruncated token counts, so 'at or past the old max_length' stays recognisable."""
    encoded = artifact.tokenizer([e.text for e in examples], truncation=False)["input_ids"]
    return [len(ids) for ids in encoded]


def weight_examples(
    plan: TrainingPlan, reference: Sequence[Example], production: Sequence[Example], counts: Sequence[int]
) -> list[Example]:
    """Apply the plan's data weights, slice weights and class weights to the training examples."""
    ref_weight = next((d.weight for d in plan.data if d.role == "reference"), 1.0)
    prod_weight = next((d.weight for d in plan.data if d.role == "production"), 1.0)
    weighted = [replace(e, weight=ref_weight * plan.class_weights.get(str(e.label), 1.0)) for e in reference]
    for example, n_tokens in zip(production, counts, strict=True):
        weight = prod_weight * plan.class_weights.get(str(example.label), 1.0)
        matched = [w for key, w in plan.slice_weights.items() if _slice_member(key, example, n_tokens)]
        if matched:
            weight *= max(matched)
        weighted.append(replace(example, weight=weight))
    return weighted


def recalibrate(champion: ModelArtifact, reference: Sequence[Example], production: Sequence[Example]) -> None:
    """Prior correction in place: shift the classifier's bias by log(production prior / reference prior)."""
    labels = champion.labels
    ref = np.array([sum(e.label == c for e in reference) for c in labels], dtype=np.float64) + 1.0
    cur = np.array([sum(e.label == c for e in production) for c in labels], dtype=np.float64) + 1.0
    shift = np.log((cur / cur.sum()) / (ref / ref.sum()))
    head = champion.model.classifier
    layer = head.out_proj if hasattr(head, "out_proj") else head
    with torch.no_grad():
        layer.bias += torch.tensor(shift, dtype=layer.bias.dtype, device=layer.bias.device)
    champion.info["prior_correction"] = {c: float(s) for c, s in zip(labels, shift, strict=True)}


def run_job(spec: JobSpec) -> JobResult:
    """Train (or recalibrate), evaluate against the champion, and register the candidate."""
    started = time.perf_counter()
    plan = spec.plan
    seed_everything(plan.hyper.seed)
    device = pick_device(spec.device)
    registry = Registry(spec.registry)
    log.info("job %s: %s from %s on %s", spec.job_id, plan.action, plan.base_version or plan.base_model, device)
    champion = ModelArtifact.load(plan.base_model, device=device.type)
    reference_path = next(d.path for d in plan.data if d.role == "reference")
    production_path = next(d.path for d in plan.data if d.role == "production")
    reference = read_jsonl(reference_path, require_label=True)
    production = read_jsonl(production_path, require_label=True)  # in arrival order: the holdout is the newest
    ref_train, ref_holdout = stratified_split(reference, 0.1, plan.hyper.seed)
    cut = min(len(production) - 1, max(1, math.floor(len(production) * (1 - plan.production_holdout_share))))
    prod_train, prod_holdout = production[:cut], production[cut:]
    log.info(
        "data: %d reference (+%d holdout), %d production (+%d newest held out)",
        len(ref_train),
        len(ref_holdout),
        len(prod_train),
        len(prod_holdout),
    )

    if plan.action == "fine_tune":
        counts = _token_counts(champion, prod_train)
        examples = weight_examples(plan, ref_train, prod_train, counts)
        settings = FineTuneSettings(
            epochs=plan.hyper.epochs,
            max_length=plan.hyper.max_length,
            batch_size=plan.hyper.batch_size,
            learning_rate=plan.hyper.learning_rate,
            seed=plan.hyper.seed,
            device=device.type,
            early_stopping_patience=plan.hyper.early_stopping_patience,
            projection_dims=spec.projection_dims,
        )
        result = fine_tune(examples, plan.base_model, settings, progress=spec.progress)
        trained_on: list[Example] = list(examples)
        candidate, validation, metrics = result.artifact, result.validation, dict(result.metrics)
    else:
        candidate = ModelArtifact.load(plan.base_model, device=device.type)
        recalibrate(candidate, ref_train, prod_train)
        trained_on = [*reference, *prod_train]
        validation = list(ref_holdout) + list(prod_train[-max(1, len(prod_train) // 5) :])
        metrics = {}
    candidate.info.update({"plan_id": plan.id, "parent": plan.base_version})

    labels = list(champion.labels)
    sets: list[tuple[str, list[Example]]] = [(REFERENCE, list(ref_holdout)), (RECENT, list(prod_holdout))]
    holdout_counts = _token_counts(champion, prod_holdout)
    for key in plan.slices_to_evaluate():
        members = [e for e, n in zip(prod_holdout, holdout_counts, strict=True) if _slice_member(key, e, n)]
        if members:
            sets.append((f"slice {key}", members))
    sections: list[EvaluationSection] = []
    reports: dict[str, str] = {}
    predictions: dict[str, tuple[Predictions, Predictions]] = {}
    for offset, (name, rows) in enumerate(sets):
        texts, truth = [e.text for e in rows], [str(e.label) for e in rows]
        pair = (Predictions.of(champion, texts), Predictions.of(candidate, texts))
        predictions[name] = pair
        sections.append(
            compare(
                name,
                truth,
                *pair,
                labels,
                rounds=spec.gate.bootstrap_rounds,
                confidence=spec.gate.confidence,
                seed=plan.hyper.seed + offset,
            )
        )
    verdict = decide(sections, spec.gate)
    for section in sections:
        if section.name == RECENT:
            reports[section.name] = f"{EVALUATION_DIR}/recent_candidate.html"
    sections = [s.model_copy(update={"report": reports.get(s.name)}) for s in sections]
    metrics.update(
        {
            f"{n.split(' (')[0].replace(' ', '_')}_{r.metric}": r.candidate or 0.0
            for n, s in ((s.name, s) for s in sections)
            for r in s.rows
        }
    )
    log.info("gate %s: %s", "passed" if verdict.passed else "failed", " | ".join(verdict.reasons))

    profile = build_profile(
        candidate,
        validation,
        [e.text for e in ref_train] + [e.text for e in prod_train],
        seed=plan.hyper.seed,
        n_rounds=spec.profile_rounds,
    )

    def write(path: Path) -> None:
        candidate.save(path)
        save_profile(profile, path)
        write_jsonl(path / TRAINING_DATA, trained_on)
        (path / "plan.json").write_text(plan.model_dump_json(indent=2) + "\n", encoding="utf-8")
        evaluation_dir = path / EVALUATION_DIR
        evaluation_dir.mkdir()
        for name, rows in sets:
            truth = [str(e.label) for e in rows]
            champion_pred, candidate_pred = predictions[name]
            stem = name.split(" (")[0].replace(" ", "_").replace("=", "_").replace("+", "plus")
            (evaluation_dir / f"{stem}.txt").write_text(
                f"{name}\n\nchampion {plan.base_version}\n"
                f"{classification_report_text(truth, champion_pred.predicted, labels)}\n"
                f"candidate\n{classification_report_text(truth, candidate_pred.predicted, labels)}",
                encoding="utf-8",
            )
        recent_rows = dict(sets)[RECENT]
        truth = [str(e.label) for e in recent_rows]
        champion_pred, candidate_pred = predictions[RECENT]
        evidently_classification_report(
            truth,
            candidate_pred.predicted,
            labels,
            evaluation_dir / "recent_candidate.html",
            reference=(truth, champion_pred.predicted),
        )
        evidently_classification_report(truth, champion_pred.predicted, labels, evaluation_dir / "recent_champion.html")

    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=plan.base_version,
        base_model=plan.base_model,
        labels=labels,
        metrics=metrics,
        insights=plan.insights,
        evaluation=Evaluation(champion_version=plan.base_version, sections=sections),
        gate=verdict,
        data={
            "reference_file": reference_path,
            "production_file": production_path,
            "reference_train": len(ref_train),
            "reference_holdout": len(ref_holdout),
            "production_train": len(prod_train),
            "production_holdout": len(prod_holdout),
            "plan_id": plan.id,
            "action": plan.action,
            "job_id": spec.job_id,
            "max_length": candidate.max_length,
        },
    )
    created = registry.create_version(write, record, by=spec.by, reason=f"retraining job {spec.job_id} ({plan.action})")
    seconds = time.perf_counter() - started
    log.info("job %s registered %s in %.1f s", spec.job_id, created.version, seconds)
    return JobResult(
        job_id=spec.job_id,
        state="succeeded",
        version=created.version,
        gate=verdict,
        device=device.type,
        seconds=seconds,
    )


def run_spec_file(spec_path: Path) -> JobResult:
    """Run the job in ``spec_path``, always leaving a result file (with the error when it failed)."""
    started = time.perf_counter()
    spec = JobSpec.model_validate_json(spec_path.read_text(encoding="utf-8"))
    target = spec.resolved_result_path(spec_path)
    try:
        result = run_job(spec)
    except Exception as exc:
        result = JobResult(
            job_id=spec.job_id,
            state="failed",
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - started,
        )
        target.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
        raise
    target.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return result


def read_result(path: Path) -> JobResult | None:
    """A job's result file, or None while it has not been written."""
    try:
        return JobResult.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
