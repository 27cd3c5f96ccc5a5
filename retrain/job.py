"""The retraining job: plan in, candidate version (with evaluation, gate verdict and profile) out.

`insightloop retrain --spec SPEC.json` runs this, locally or in a Kubernetes Job's container. The job
writes its result (or a readable error) to the spec's result path; a job that fails or is killed
leaves no half-written version (the registry writes versions atomically).

Launched by ``torchrun --nproc_per_node=N`` (``controller.gpus_per_job`` = N above 1), every process reads
the data and trains its share data-parallel (retrain/distributed.py); then the group is left, and rank 0
alone evaluates, registers the candidate and writes the result while the other ranks exit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from insightloop.deploy import (
    EVALUATION_DIR,
    TOKEN_TASK,
    AdjustmentTest,
    Evaluation,
    EvaluationSection,
    GateVerdict,
    Lineage,
    ModelArtifact,
    PlanStep,
    Registry,
    SourceFile,
    VersionDraft,
    VersionRecord,
    VersionStatus,
    pick_device,
    utc_now,
)
from insightloop.retrain.ablation import (
    PLANNED,
    ablations,
    adjustment_test,
    choose_variant,
    evaluated_on,
    recent_score,
)
from insightloop.retrain.data import Example, read_jsonl, write_jsonl
from insightloop.retrain.distributed import SINGLE_PROCESS, Ranks, per_rank_batch, process_group, training_device
from insightloop.retrain.errors import RetrainPermanentError
from insightloop.retrain.evaluate import (
    RECENT,
    REFERENCE,
    REFERENCE_AT_MIX,
    GateSettings,
    Predictions,
    classification_report_text,
    compare,
    decide,
    evidently_classification_report,
    resample_to_mix,
)
from insightloop.retrain.finetune import fine_tune, seed_everything, stratified_split
from insightloop.retrain.plan import TrainingPlan
from insightloop.retrain.profile import build_profile

log = logging.getLogger(__name__)


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
    # Train a variant per adjustment with it left out, to test each by experiment (None: only on a GPU,
    # where a variant costs minutes, not the hours it can on a CPU).
    ablations: bool | None = None
    max_ablations: int = Field(3, ge=0)

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
    #: Training processes (torchrun's world size); 1 for a job not launched by torchrun.
    processes: int = 1
    seconds: float = 0.0
    finished_at: datetime = Field(default_factory=utc_now)


def _token_counts(artifact: ModelArtifact, examples: Sequence[Example]) -> list[int]:
    """Untruncated token counts, so 'at or past the old max_length' stays recognisable."""
    encoded = artifact.tokenizer([e.text for e in examples], truncation=False, verbose=False)["input_ids"]
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
        slice_weight = plan.slice_weight(meta=example.meta, n_tokens=n_tokens)
        if slice_weight is not None:
            weight *= slice_weight
        weighted.append(replace(example, weight=weight))
    return weighted


#: Labeled production texts (and of each class) from which the bias shift is fitted to them rather than set
#: from the priors alone: with a class nearly absent the fit would push its bias without bound.
MIN_FIT_ROWS = 30
MIN_FIT_PER_CLASS = 10


def fitted_bias_shift(
    log_probs: NDArray[np.float64], truth: NDArray[np.int64], start: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The per-class bias shift that makes ``softmax(log_probs + shift)`` fit the labels best (least
    cross-entropy), kept near ``start`` (the prior ratio) by a small penalty. Convex in ``shift``.

    The prior ratio alone assumes the model's probabilities are calibrated; a fine-tuned network's rarely
    are, so the shift it gives moves too few predictions. Fitting it on the recent labels corrects that,
    still as a prior/threshold correction (one number per class), which the gate then tests on newer rows.
    """
    from scipy.optimize import minimize

    n = len(truth)
    onehot = np.eye(log_probs.shape[1])[truth]

    def loss(shift: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        z = log_probs + shift
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        nll = -float(np.log(np.clip(p[np.arange(n), truth], 1e-12, None)).mean())
        penalty = 1e-3 * float(((shift - start) ** 2).sum())
        grad = (p - onehot).mean(axis=0) + 2e-3 * (shift - start)
        return nll + penalty, grad

    result = minimize(loss, start, jac=True, method="L-BFGS-B")
    shift: NDArray[np.float64] = np.asarray(result.x, dtype=np.float64)
    centred: NDArray[np.float64] = shift - shift.mean()  # softmax ignores a common offset
    return centred


def recalibrate(champion: ModelArtifact, reference: Sequence[Example], production: Sequence[Example]) -> None:
    """Prior correction in place: shift the classifier's bias by log(production prior / reference prior),
    fitted to the production labels (:func:`fitted_bias_shift`) when there are ``MIN_FIT_ROWS`` of them."""
    labels = champion.labels
    ref = np.array([sum(e.label == c for e in reference) for c in labels], dtype=np.float64) + 1.0
    cur = np.array([sum(e.label == c for e in production) for c in labels], dtype=np.float64) + 1.0
    shift = np.log((cur / cur.sum()) / (ref / ref.sum()))
    index = {c: i for i, c in enumerate(labels)}
    known = [e for e in production if str(e.label) in index]
    method = "prior ratio"
    per_class = [sum(str(e.label) == c for e in known) for c in labels]
    if len(known) >= MIN_FIT_ROWS and min(per_class) >= MIN_FIT_PER_CLASS:
        probabilities = champion.predict([e.text for e in known]).probabilities.astype(np.float64)
        truth = np.array([index[str(e.label)] for e in known], dtype=np.int64)
        shift = fitted_bias_shift(np.log(np.clip(probabilities, 1e-12, None)), truth, shift)
        method = f"fitted on {len(known)} labeled production texts"
    champion.info["prior_correction_method"] = method
    head = champion.model.classifier
    layer = head.out_proj if hasattr(head, "out_proj") else head
    with torch.no_grad():
        layer.bias += torch.tensor(shift, dtype=layer.bias.dtype, device=layer.bias.device)
    champion.info["prior_correction"] = {c: float(s) for c, s in zip(labels, shift, strict=True)}


@dataclass(frozen=True)
class JobData:
    """The plan's data, read and split: what is trained on and what is held out."""

    reference_path: str
    production_path: str
    reference: list[Example]
    ref_train: list[Example]
    ref_holdout: list[Example]
    prod_train: list[Example]
    prod_holdout: list[Example]  # the newest production examples, held out by time


@dataclass
class TrainedCandidate:
    """A candidate artifact, the rows it was trained on and those it was validated on."""

    artifact: ModelArtifact
    trained_on: list[Example]
    validation: list[Example]
    metrics: dict[str, float]


@dataclass(frozen=True)
class JobEvaluation:
    """Champion vs candidate on every evaluation set, and the gate's verdict."""

    sets: list[tuple[str, list[Example]]]
    predictions: dict[str, tuple[Predictions, Predictions]]
    sections: list[EvaluationSection]
    verdict: GateVerdict
    metrics: dict[str, float]


def load_data(plan: TrainingPlan) -> JobData:
    """Read the plan's reference and production files and split off the holdouts."""
    reference_path = next(d.path for d in plan.data if d.role == "reference")
    production_path = next(d.path for d in plan.data if d.role == "production")
    reference = read_jsonl(reference_path, require_label=True)
    production = read_jsonl(production_path, require_label=True)  # in arrival order: the holdout is the newest
    ref_train, ref_holdout = stratified_split(reference, 0.1, plan.hyper.seed)
    cut = min(len(production) - 1, max(1, math.floor(len(production) * (1 - plan.production_holdout_share))))
    data = JobData(
        reference_path, production_path, reference, ref_train, ref_holdout, production[:cut], production[cut:]
    )
    log.info(
        "data: %d reference (+%d holdout), %d production (+%d newest held out)",
        len(data.ref_train),
        len(data.ref_holdout),
        len(data.prod_train),
        len(data.prod_holdout),
    )
    return data


def train_candidate(
    spec: JobSpec, champion: ModelArtifact, data: JobData, device: str, ranks: Ranks = SINGLE_PROCESS
) -> TrainedCandidate:
    """Fine-tune with the plan's weights, or recalibrate the champion's priors, into a candidate.

    With several ``ranks`` the fine-tune is data-parallel (its process group joined); a recalibration is
    not trained and runs the same on every rank.
    """
    plan = spec.plan
    if plan.action == "fine_tune":
        counts = _token_counts(champion, data.prod_train)
        examples = weight_examples(plan, data.ref_train, data.prod_train, counts)
        settings = replace(plan.hyper.fine_tune_settings(device), projection_dims=spec.projection_dims)
        result = fine_tune(examples, plan.base_model, settings, progress=spec.progress, ranks=ranks)
        trained = TrainedCandidate(result.artifact, list(examples), result.validation, dict(result.metrics))
    else:
        artifact = ModelArtifact.load(plan.base_model, device=device)
        recalibrate(artifact, data.ref_train, data.prod_train)
        validation = list(data.ref_holdout) + list(data.prod_train[-max(1, len(data.prod_train) // 5) :])
        trained = TrainedCandidate(artifact, [*data.reference, *data.prod_train], validation, {})
    trained.artifact.info.update({"plan_id": plan.id, "parent": plan.base_version})
    return trained


def train_upper_bound(spec: JobSpec, device: str = "auto") -> ModelArtifact:
    """The plan's recipe trained on all of its data, nothing held out for a gate: what the loop could reach
    with perfect patience (``bench/loop.py``'s upper bound). Not registered."""
    plan = spec.plan
    reference_path = next(d.path for d in plan.data if d.role == "reference")
    production_path = next(d.path for d in plan.data if d.role == "production")
    reference = read_jsonl(reference_path, require_label=True)
    production = read_jsonl(production_path, require_label=True)
    data = JobData(reference_path, production_path, reference, reference, [], production, [])
    champion = ModelArtifact.load(plan.base_model, device=device)
    return train_candidate(spec, champion, data, champion.device.type).artifact


def evaluate_candidate(
    spec: JobSpec, champion: ModelArtifact, candidate: ModelArtifact, data: JobData
) -> JobEvaluation:
    """Score both models on the reference holdout, the newest production rows and the plan's slices; gate."""
    plan = spec.plan
    labels = list(champion.labels)
    sets: list[tuple[str, list[Example]]] = [(REFERENCE, list(data.ref_holdout))]
    if plan.action == "recalibrate":  # the gate judges a prior correction at the mix it corrects to
        counts = {c: sum(str(e.label) == c for e in data.prod_train) for c in labels}
        mix = {c: n / max(1, sum(counts.values())) for c, n in counts.items()}
        keep = resample_to_mix([str(e.label) for e in data.ref_holdout], mix, plan.hyper.seed)
        sets.append((REFERENCE_AT_MIX, [data.ref_holdout[i] for i in keep]))
    sets.append((RECENT, list(data.prod_holdout)))
    holdout_counts = _token_counts(champion, data.prod_holdout)
    for key in plan.evaluation_slices():
        members = [
            e for e, n in zip(data.prod_holdout, holdout_counts, strict=True) if key.contains(meta=e.meta, n_tokens=n)
        ]
        if members:
            sets.append((f"slice {key}", members))
    sections: list[EvaluationSection] = []
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
    sections = [
        s.model_copy(update={"report": f"{EVALUATION_DIR}/recent_candidate.html" if s.name == RECENT else None})
        for s in sections
    ]
    metrics = {
        f"{s.name.split(' (')[0].replace(' ', '_')}_{r.metric}": r.candidate or 0.0 for s in sections for r in s.rows
    }
    log.info("gate %s: %s", "passed" if verdict.passed else "failed", " | ".join(verdict.reasons))
    return JobEvaluation(sets, predictions, sections, verdict, metrics)


def _evaluation_writer(plan: TrainingPlan, labels: list[str], evaluation: JobEvaluation) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        for name, rows in evaluation.sets:
            truth = [str(e.label) for e in rows]
            champion_pred, candidate_pred = evaluation.predictions[name]
            stem = name.split(" (")[0].replace(" ", "_").replace("=", "_").replace("+", "plus")
            (folder / f"{stem}.txt").write_text(
                f"{name}\n\nchampion {plan.base_version}\n"
                f"{classification_report_text(truth, champion_pred.predicted, labels)}\n"
                f"candidate\n{classification_report_text(truth, candidate_pred.predicted, labels)}",
                encoding="utf-8",
            )
        truth = [str(e.label) for e in dict(evaluation.sets)[RECENT]]
        champion_pred, candidate_pred = evaluation.predictions[RECENT]
        evidently_classification_report(
            truth,
            candidate_pred.predicted,
            labels,
            folder / "recent_candidate.html",
            reference=(truth, champion_pred.predicted),
        )
        evidently_classification_report(truth, champion_pred.predicted, labels, folder / "recent_champion.html")

    return write


@dataclass(frozen=True)
class Variant:
    """One trained and evaluated variant of the plan (the planned one, or an ablation)."""

    name: str
    plan: TrainingPlan
    trained: TrainedCandidate
    evaluation: JobEvaluation

    @property
    def recent_accuracy(self) -> float:
        return recent_score(self.evaluation.sections, RECENT, "accuracy")


def run_ablations(
    spec: JobSpec, champion: ModelArtifact, data: JobData, device: str, planned: Variant
) -> tuple[Variant, list[AdjustmentTest]]:
    """Train and evaluate one variant per adjustment left out; return the variant that becomes the candidate
    (:func:`choose_variant`) and each adjustment's test against the planned model."""
    variants = ablations(spec.plan, spec.max_ablations)
    if not variants:
        return planned, []
    labels = list(champion.labels)
    sets = dict(planned.evaluation.sets)
    tests: list[AdjustmentTest] = []
    scores = [(PLANNED, planned.evaluation.verdict.passed, planned.recent_accuracy)]
    leader = planned  # only the planned model and the variant that would win so far stay in memory
    for offset, ablation in enumerate(variants, start=1):
        log.info("ablation %d of %d: %s", offset, len(variants), ablation.name)
        variant_spec = spec.model_copy(update={"plan": ablation.plan})
        trained = train_candidate(variant_spec, champion, data, device)
        evaluation = evaluate_candidate(variant_spec, champion, trained.artifact, data)
        variant = Variant(ablation.name, ablation.plan, trained, evaluation)
        name = evaluated_on(ablation.left_out, spec.plan, list(sets), RECENT)
        rows = sets[name]
        comparison = compare(
            name,
            [str(e.label) for e in rows],
            Predictions.of(trained.artifact, [e.text for e in rows]),
            planned.evaluation.predictions[name][1],
            labels,
            rounds=spec.gate.bootstrap_rounds,
            confidence=spec.gate.confidence,
            seed=spec.plan.hyper.seed + offset,
        )
        test = adjustment_test(ablation.left_out, comparison)
        if test is not None:
            tests.append(test)
            log.info("experiment: %s", test.describe())
        scores.append((variant.name, evaluation.verdict.passed, variant.recent_accuracy))
        chosen = choose_variant(scores)
        leader = planned if chosen == PLANNED else variant if chosen == variant.name else leader
    if leader.name != PLANNED:
        log.info("the candidate is the variant %s: it passed the gate and beat the planned model", leader.name)
    return leader, tests


def write_candidate(
    spec: JobSpec,
    registry: Registry,
    labels: list[str],
    data: JobData,
    trained: TrainedCandidate,
    evaluation: JobEvaluation,
    experiments: Sequence[AdjustmentTest] = (),
    chosen_variant: str | None = None,
) -> VersionRecord:
    """Build the candidate's reference profile and write the version: artifact, profile, data, plan, evaluation."""
    plan = spec.plan
    profile = build_profile(
        trained.artifact,
        trained.validation,
        [e.text for e in data.ref_train] + [e.text for e in data.prod_train],
        seed=plan.hyper.seed,
        n_rounds=spec.profile_rounds,
    )
    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=plan.base_version,
        base_model=plan.base_model,
        labels=labels,
        metrics={**trained.metrics, **evaluation.metrics},
        lineage=Lineage(
            action=plan.action,
            plan_id=plan.id,
            job_id=spec.job_id,
            adjustments=plan_steps(plan),
            experiments=list(experiments),
            chosen_variant=chosen_variant,
            settings=plan.hyper.model_dump(),
        ),
        insights=plan.insights,
        evaluation=Evaluation(champion_version=plan.base_version, sections=evaluation.sections),
        gate=evaluation.verdict,
    )
    draft = VersionDraft(
        record=record,
        save_artifact=trained.artifact.save,
        save_profile=profile.save,
        save_training_data=lambda path: write_jsonl(path, trained.trained_on),
        plan_json=plan.model_dump_json(indent=2),
        save_evaluation=_evaluation_writer(plan, labels, evaluation),
        sources=split_sources(
            data.reference_path,
            len(data.ref_train),
            len(data.ref_holdout),
            data.production_path,
            len(data.prod_train),
            len(data.prod_holdout),
        ),
        validation_rows=len(trained.validation),
    )
    return registry.write_version(draft, by=spec.by, reason=f"retraining job {spec.job_id} ({plan.action})")


def plan_steps(plan: TrainingPlan) -> list[PlanStep]:
    """The plan's adjustments as the candidate's lineage records them."""
    return [PlanStep(kind=a.kind, target=a.target, value=a.value, insight_id=a.insight_id) for a in plan.adjustments]


def split_sources(
    reference_path: str, ref_train: int, ref_holdout: int, production_path: str, prod_train: int, prod_holdout: int
) -> list[SourceFile]:
    """A job's two data files as the candidate records them: rows trained on and held out of each."""
    return [
        SourceFile(
            role="reference",
            path=reference_path,
            rows=ref_train + ref_holdout,
            train_rows=ref_train,
            holdout_rows=ref_holdout,
        ),
        SourceFile(
            role="production",
            path=production_path,
            rows=prod_train + prod_holdout,
            train_rows=prod_train,
            holdout_rows=prod_holdout,
        ),
    ]


def run_job(spec: JobSpec, ranks: Ranks = SINGLE_PROCESS) -> JobResult:
    """Train (or recalibrate), evaluate against the champion, and register the candidate.

    With several ``ranks`` (launched by torchrun) every rank trains; a rank other than 0 returns once
    training is done, with no version: rank 0's result is the job's.
    """
    started = time.perf_counter()
    plan = spec.plan
    if ModelArtifact.read_settings(plan.base_model).task == TOKEN_TASK:
        if ranks.distributed:
            raise RetrainPermanentError("a token classifier's job trains in one process; run it without torchrun")
        from insightloop.retrain.token_job import run_token_job

        version, verdict, device_type, seconds = run_token_job(spec)
        return JobResult(
            job_id=spec.job_id, state="succeeded", version=version, gate=verdict, device=device_type, seconds=seconds
        )
    if plan.action == "fine_tune":
        per_rank_batch(plan.hyper.batch_size, ranks.world_size)  # before anything is loaded, on every rank
    seed_everything(plan.hyper.seed)
    device = training_device(ranks, pick_device(spec.device))
    if ranks.is_main:
        log.info(
            "job %s: %s from %s on %s%s",
            spec.job_id,
            plan.action,
            plan.base_version or plan.base_model,
            device,
            f" ({ranks.world_size} processes)" if ranks.distributed else "",
        )
    champion = ModelArtifact.load(plan.base_model, device=device.type)
    data = load_data(plan)
    with process_group(ranks, device):
        trained = train_candidate(spec, champion, data, device.type, ranks)
    if not ranks.is_main:
        return JobResult(
            job_id=spec.job_id,
            state="succeeded",
            device=device.type,
            processes=ranks.world_size,
            seconds=time.perf_counter() - started,
        )
    evaluation = evaluate_candidate(spec, champion, trained.artifact, data)
    chosen = Variant(PLANNED, plan, trained, evaluation)
    experiments: list[AdjustmentTest] = []
    if spec.ablations if spec.ablations is not None else device.type == "cuda":
        if ranks.distributed:  # every variant would need the process group again; the planned one stands
            log.warning("ablations are not run in a distributed job; only the planned candidate is trained")
        else:
            chosen, experiments = run_ablations(spec, champion, data, device.type, chosen)
    created = write_candidate(
        spec.model_copy(update={"plan": chosen.plan}),
        Registry(spec.registry),
        list(champion.labels),
        data,
        chosen.trained,
        chosen.evaluation,
        experiments,
        chosen.name if experiments else None,
    )
    evaluation = chosen.evaluation
    seconds = time.perf_counter() - started
    log.info("job %s registered %s in %.1f s", spec.job_id, created.version, seconds)
    return JobResult(
        job_id=spec.job_id,
        state="succeeded",
        version=created.version,
        gate=evaluation.verdict,
        device=device.type,
        processes=ranks.world_size,
        seconds=seconds,
    )


def run_spec_file(spec_path: Path) -> JobResult:
    """Run the job in ``spec_path``, always leaving a result file (with the error when it failed).

    Under torchrun, rank 0 writes the result; another rank writes one only when it fails itself (torchrun
    then stops the rest), naming its rank, so the cause is not lost.
    """
    started = time.perf_counter()
    spec = JobSpec.model_validate_json(spec_path.read_text(encoding="utf-8"))
    target = spec.resolved_result_path(spec_path)
    ranks = SINGLE_PROCESS
    try:
        ranks = Ranks.from_environment(os.environ)
        if not ranks.is_main:
            # One copy of the job's log lines: rank 0's (the other ranks still say what goes wrong).
            logging.getLogger("insightloop").setLevel(logging.WARNING)
        result = run_job(spec, ranks)
    except Exception as exc:
        where = f"rank {ranks.rank} of {ranks.world_size}: " if ranks.distributed else ""
        result = JobResult(
            job_id=spec.job_id,
            state="failed",
            error=f"{where}{type(exc).__name__}: {exc}",
            processes=ranks.world_size,
            seconds=time.perf_counter() - started,
        )
        _write_result(target, result, ranks)
        raise
    if ranks.is_main:
        _write_result(target, result, ranks)
    return result


def _write_result(target: Path, result: JobResult, ranks: Ranks) -> None:
    """Write whole or not at all: several failing ranks may write at once; the last one's file stands."""
    partial = target.with_name(f"{target.name}.{ranks.rank}.tmp")
    partial.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(partial, target)


def read_result(path: Path) -> JobResult | None:
    """A job's result file, or None while it has not been written."""
    try:
        return JobResult.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
