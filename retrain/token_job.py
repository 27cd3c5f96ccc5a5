"""A retraining job for a token classifier: the plan's data and weights, a fine-tune from the champion, the
per-type evaluation against it and the gate on entity micro F1.

The plan is the one :func:`~insightloop.retrain.plan_from_insights` makes from entity insights: class weights
name entity types, slice weights name line shapes, entity types, sentence lengths (in words) or ``meta``
values, and the production data weighs ``recent_data_weight``. Token classification trains on whole
sentences, so a weight is applied by repetition: a sentence of weight ``w`` is trained on ``round(w)`` times
per epoch (at least once). The evaluation is seqeval's entity-level scores per type with micro, macro and
weighted averages, champion against candidate with paired-bootstrap intervals over sentences, on the
reference holdout, the newest production sentences (held out by time) and each slice the plan names.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from insightloop.deploy import (
    AdjustmentTest,
    Evaluation,
    EvaluationSection,
    GateVerdict,
    Lineage,
    Registry,
    TokenClassifier,
    VersionDraft,
    VersionRecord,
    VersionStatus,
    spans_from_tags,
    utc_now,
)
from insightloop.detectors import SliceKey, line_shape
from insightloop.retrain.ablation import (
    PLANNED,
    ablations,
    adjustment_test,
    choose_variant,
    evaluated_on,
    recent_score,
)
from insightloop.retrain.entity_eval import compare_entities, entity_report
from insightloop.retrain.entity_profile import build_entity_profile
from insightloop.retrain.evaluate import RECENT, REFERENCE, GateSettings, decide
from insightloop.retrain.ner_data import TaggedSentence, read_ner_jsonl, write_tagged_jsonl
from insightloop.retrain.plan import TrainingPlan
from insightloop.retrain.token_finetune import fine_tune_tokens, split_sentences

if TYPE_CHECKING:
    from insightloop.retrain.job import JobSpec

log = logging.getLogger(__name__)

#: The row of the evaluation the gate judges for a token classifier.
GATE_METRIC = "entity_micro_f1"
#: A sentence is trained on at most this many times per epoch, whatever its weight.
MAX_REPEATS = 5


@dataclass(frozen=True)
class TokenJobData:
    """The plan's sentences, split: reference (by document) and production (the newest held out)."""

    reference_path: str
    production_path: str
    ref_train: list[TaggedSentence]
    ref_holdout: list[TaggedSentence]
    prod_train: list[TaggedSentence]
    prod_holdout: list[TaggedSentence]


def load_token_data(plan: TrainingPlan) -> TokenJobData:
    """Read the plan's reference and production sentences and split off the holdouts."""
    reference_path = next(d.path for d in plan.data if d.role == "reference")
    production_path = next(d.path for d in plan.data if d.role == "production")
    reference = [s for s in read_ner_jsonl(reference_path) if s.tags]
    production = [s for s in read_ner_jsonl(production_path) if s.tags]  # arrival order
    ref_train, ref_holdout = split_sentences(reference, 0.1, plan.hyper.seed)
    cut = min(len(production) - 1, max(1, math.floor(len(production) * (1 - plan.production_holdout_share))))
    data = TokenJobData(reference_path, production_path, ref_train, ref_holdout, production[:cut], production[cut:])
    log.info(
        "data: %d reference sentences (+%d held out), %d production (+%d newest held out)",
        len(data.ref_train),
        len(data.ref_holdout),
        len(data.prod_train),
        len(data.prod_holdout),
    )
    return data


def in_slice(key: SliceKey, sentence: TaggedSentence, meta: dict[str, object] | None = None) -> bool:
    """Whether a labeled sentence belongs to a slice the detectors name (its gold entity types count)."""
    return key.contains(
        meta=meta or {},
        n_tokens=len(sentence.words),
        shape=line_shape(sentence.words),
        entity_types={span.type for span in spans_from_tags(sentence.tags)},
    )


def sentence_weight(plan: TrainingPlan, sentence: TaggedSentence, production: bool) -> float:
    """The plan's weight of one sentence: its source's, times its largest slice weight and its largest
    entity-type weight."""
    role = "production" if production else "reference"
    weight = next((d.weight for d in plan.data if d.role == role), 1.0)
    slices = [w for key, w in plan.slice_weights.items() if in_slice(SliceKey.parse(key), sentence)]
    types = [plan.class_weights.get(span.type, 1.0) for span in spans_from_tags(sentence.tags)]
    return weight * max(slices, default=1.0) * max(types, default=1.0)


def weighted_sentences(plan: TrainingPlan, data: TokenJobData) -> list[TaggedSentence]:
    """The training sentences with each repeated as its weight says (see the module docstring)."""
    out: list[TaggedSentence] = []
    for production, rows in ((False, data.ref_train), (True, data.prod_train)):
        for sentence in rows:
            repeats = min(MAX_REPEATS, max(1, round(sentence_weight(plan, sentence, production))))
            out.extend([sentence] * repeats)
    return out


@dataclass(frozen=True)
class TokenEvaluation:
    """Champion against candidate on every evaluation set, and the gate's verdict."""

    sets: list[tuple[str, list[TaggedSentence]]]
    tables: dict[str, tuple[str, str]]  # set name → (champion's, candidate's) per-type table
    sections: list[EvaluationSection]
    verdict: GateVerdict
    metrics: dict[str, float]


def evaluate_token_candidate(
    plan: TrainingPlan,
    champion: TokenClassifier,
    candidate: TokenClassifier,
    data: TokenJobData,
    gate: GateSettings,
    batch_size: int = 32,
) -> TokenEvaluation:
    """Score both models on the reference holdout, the newest production sentences and the plan's slices."""
    sets: list[tuple[str, list[TaggedSentence]]] = [(REFERENCE, data.ref_holdout), (RECENT, data.prod_holdout)]
    for key in plan.evaluation_slices():
        members = [s for s in data.prod_holdout if in_slice(key, s)]
        if members:
            sets.append((f"slice {key}", members))
    sections: list[EvaluationSection] = []
    tables: dict[str, tuple[str, str]] = {}
    for offset, (name, rows) in enumerate(sets):
        words = [s.words for s in rows]
        gold = [s.tags for s in rows]
        a = champion.predict(words, batch_size).tags if rows else []
        b = candidate.predict(words, batch_size).tags if rows else []
        sections.append(
            compare_entities(
                name,
                gold,
                a,
                b,
                rounds=gate.bootstrap_rounds,
                confidence=gate.confidence,
                seed=plan.hyper.seed + offset,
            )
        )
        if rows:
            tables[name] = (entity_report(gold, a).table(), entity_report(gold, b).table())
    verdict = decide(sections, gate, metric=GATE_METRIC)
    metrics = {
        f"{s.name.split(' (')[0].replace(' ', '_')}_{r.metric}": r.candidate or 0.0 for s in sections for r in s.rows
    }
    log.info("gate %s: %s", "passed" if verdict.passed else "failed", " | ".join(verdict.reasons))
    return TokenEvaluation(sets, tables, sections, verdict, metrics)


def _evaluation_writer(plan: TrainingPlan, evaluation: TokenEvaluation) -> Callable[[Path], None]:
    """The per-type tables as text (seqeval's layout, champion then candidate) and one HTML page of them all."""

    def write(folder: Path) -> None:
        from html import escape

        page = ["<!doctype html><html><head><meta charset='utf-8'><title>champion vs candidate</title></head><body>"]
        for name, (champion_table, candidate_table) in evaluation.tables.items():
            stem = name.split(" (")[0].replace(" ", "_").replace("=", "_").replace("+", "plus")
            text = f"{name}\n\nchampion {plan.base_version}\n{champion_table}\n\ncandidate\n{candidate_table}\n"
            (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
            page.append(f"<h2>{escape(name)}</h2><pre>{escape(text)}</pre>")
        for section in evaluation.sections:
            page.append(f"<h3>{escape(section.name)}: differences (candidate - champion)</h3><table border='1'>")
            page.append(
                "<tr><th>metric</th><th>champion</th><th>candidate</th><th>delta</th><th>CI</th><th>n</th></tr>"
            )
            for r in [*section.rows, *section.per_class]:
                page.append(
                    f"<tr><td>{escape(r.metric)}</td><td>{r.champion:.4f}</td><td>{r.candidate:.4f}</td>"
                    f"<td>{r.delta:+.4f}</td><td>[{r.ci_low:+.4f}, {r.ci_high:+.4f}]</td><td>{r.n}</td></tr>"
                )
            page.append("</table>")
        page.append("</body></html>\n")
        (folder / "entities.html").write_text("".join(page), encoding="utf-8")

    return write


@dataclass(frozen=True)
class TokenVariant:
    """One trained and evaluated variant of a recogniser's plan (the planned one, or an ablation)."""

    name: str
    plan: TrainingPlan
    classifier: TokenClassifier
    evaluation: TokenEvaluation

    @property
    def recent_f1(self) -> float:
        """The variant's entity micro F1 on the newest production sentences (0 without any)."""
        return recent_score(self.evaluation.sections, RECENT, GATE_METRIC)


def train_token_variant(
    spec: JobSpec, plan: TrainingPlan, champion: TokenClassifier, data: TokenJobData, name: str
) -> TokenVariant:
    """Fine-tune the champion on ``plan``'s weighted sentences and evaluate the result against it."""
    training = weighted_sentences(plan, data)
    settings = plan.hyper.fine_tune_settings(champion.device.type)
    log.info(
        "job %s (%s): fine-tune token classifier %s on %d sentences (%d after weights)",
        spec.job_id,
        name,
        plan.base_version,
        len(data.ref_train) + len(data.prod_train),
        len(training),
    )
    result = fine_tune_tokens(training, plan.base_model, settings, validation=data.ref_holdout, progress=spec.progress)
    candidate = result.classifier
    candidate.info.update({"plan_id": plan.id, "parent": plan.base_version})
    return TokenVariant(name, plan, candidate, evaluate_token_candidate(plan, champion, candidate, data, spec.gate))


def run_token_ablations(
    spec: JobSpec, champion: TokenClassifier, data: TokenJobData, planned: TokenVariant
) -> tuple[TokenVariant, list[AdjustmentTest]]:
    """:func:`~insightloop.retrain.job.run_ablations` for a recogniser: one variant per adjustment left out,
    each judged against the planned model by entity micro F1 on the sentences the adjustment is about; the
    variant that becomes the candidate (:func:`choose_variant`) and each adjustment's test."""
    variants = ablations(spec.plan, spec.max_ablations)
    sets = dict(planned.evaluation.sets)
    tests: list[AdjustmentTest] = []
    scores = [(PLANNED, planned.evaluation.verdict.passed, planned.recent_f1)]
    leader = planned  # only the planned model and the variant that would win so far stay in memory
    for offset, ablation in enumerate(variants, start=1):
        log.info("ablation %d of %d: %s", offset, len(variants), ablation.name)
        variant = train_token_variant(spec, ablation.plan, champion, data, ablation.name)
        name = evaluated_on(ablation.left_out, spec.plan, list(sets), RECENT)
        words = [s.words for s in sets[name]]
        comparison = compare_entities(
            name,
            [s.tags for s in sets[name]],
            variant.classifier.predict(words).tags,
            planned.classifier.predict(words).tags,
            rounds=spec.gate.bootstrap_rounds,
            confidence=spec.gate.confidence,
            seed=spec.plan.hyper.seed + offset,
        )
        test = adjustment_test(ablation.left_out, comparison, metric=GATE_METRIC)
        if test is not None:
            tests.append(test)
            log.info("experiment: %s", test.describe())
        scores.append((variant.name, variant.evaluation.verdict.passed, variant.recent_f1))
        chosen = choose_variant(scores)
        leader = planned if chosen == PLANNED else variant if chosen == variant.name else leader
    if leader.name != PLANNED:
        log.info("the candidate is the variant %s: it passed the gate and beat the planned model", leader.name)
    return leader, tests


def run_token_job(spec: JobSpec) -> tuple[str, GateVerdict, str, float]:
    """Fine-tune the champion token classifier on the plan's weighted sentences, evaluate it per entity type
    against the champion, and register the candidate; return (version, verdict, device, seconds)."""
    from insightloop.retrain.job import plan_steps, split_sources

    started = time.perf_counter()
    champion = TokenClassifier.load(spec.plan.base_model, device=spec.device)
    data = load_token_data(spec.plan)
    chosen = train_token_variant(spec, spec.plan, champion, data, PLANNED)
    experiments: list[AdjustmentTest] = []
    if spec.ablations if spec.ablations is not None else champion.device.type == "cuda":
        chosen, experiments = run_token_ablations(spec, champion, data, chosen)
    plan, candidate, evaluation = chosen.plan, chosen.classifier, chosen.evaluation
    profile = build_entity_profile(
        candidate,
        [*data.ref_holdout, *data.prod_holdout],
        [*data.ref_train, *data.prod_train],
        n_rounds=spec.profile_rounds,
        seed=plan.hyper.seed,
    )
    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=plan.base_version,
        base_model=plan.base_model,
        labels=list(candidate.labels),
        metrics=evaluation.metrics,
        lineage=Lineage(
            action=plan.action,
            plan_id=plan.id,
            job_id=spec.job_id,
            adjustments=plan_steps(plan),
            experiments=experiments,
            chosen_variant=chosen.name if experiments else None,
            settings={**plan.hyper.model_dump(), "task": "token-classification"},
        ),
        insights=plan.insights,
        evaluation=Evaluation(champion_version=plan.base_version, sections=evaluation.sections),
        gate=evaluation.verdict,
    )
    trained_on = [*data.ref_train, *data.prod_train]
    draft = VersionDraft(
        record=record,
        save_artifact=candidate.save,
        save_profile=profile.save,
        save_training_data=lambda path: write_tagged_jsonl(path, trained_on),
        plan_json=plan.model_dump_json(indent=2),
        save_evaluation=_evaluation_writer(plan, evaluation),
        sources=split_sources(
            data.reference_path,
            len(data.ref_train),
            len(data.ref_holdout),
            data.production_path,
            len(data.prod_train),
            len(data.prod_holdout),
        ),
        validation_rows=len(data.ref_holdout),
    )
    created = Registry(spec.registry).write_version(
        draft, by=spec.by, reason=f"retraining job {spec.job_id} (token classifier)"
    )
    seconds = time.perf_counter() - started
    log.info("job %s registered %s in %.1f s", spec.job_id, created.version, seconds)
    return created.version, evaluation.verdict, champion.device.type, seconds
