"""Ablations: every adjustment of a plan tested by experiment.

Next to the planned candidate, a job trains one variant per adjustment with that adjustment left out (the
same data, seed and recipe otherwise). The planned model against each variant, on the rows the adjustment is
about, says whether the insight's hypothesis held ("longer context: +6.1 points on texts of 256+ tokens,
95% CI [+3.0, +9.2]"). The variants are plans, so what was tested is what would be trained again.

Adjustments that can be left out: ``max_length`` (back to the champion's), ``truncation`` (back to the policy it
replaced), each ``slice_weight`` and each ``class_weight``. ``recent_data_weight`` changes a data weight whose
earlier value the plan does not keep, and a recalibration has nothing to leave out: neither is ablated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from insightloop.deploy import AdjustmentTest, EvaluationSection
from insightloop.detectors import SliceKey
from insightloop.retrain.plan import PlanAdjustment, TrainingPlan

ABLATABLE = ("max_length", "truncation", "slice_weight", "class_weight")
PLANNED = "planned"


@dataclass(frozen=True)
class Ablation:
    """A variant of the plan with one adjustment left out."""

    name: str  # "without <kind> <target>"
    left_out: PlanAdjustment
    plan: TrainingPlan


def _without(plan: TrainingPlan, adjustment: PlanAdjustment) -> TrainingPlan:
    rest = [a for a in plan.adjustments if a != adjustment]
    if adjustment.kind == "max_length":
        hyper = plan.hyper.model_copy(update={"max_length": int(adjustment.target)})
        return plan.model_copy(update={"hyper": hyper, "adjustments": rest})
    if adjustment.kind == "truncation":
        before = adjustment.replaces or ("head_tail" if adjustment.target == "head" else "head")
        hyper = plan.hyper.model_copy(update={"truncation": before})
        return plan.model_copy(update={"hyper": hyper, "adjustments": rest})
    if adjustment.kind == "slice_weight":
        weights = {k: w for k, w in plan.slice_weights.items() if k != adjustment.target}
        return plan.model_copy(update={"slice_weights": weights, "adjustments": rest})
    weights = {k: w for k, w in plan.class_weights.items() if k != adjustment.target}
    return plan.model_copy(update={"class_weights": weights, "adjustments": rest})


def ablations(plan: TrainingPlan, budget: int) -> list[Ablation]:
    """At most ``budget`` variants of a fine-tune plan, one per adjustment that can be left out, in the
    plan's order (the adjustments the insights proposed first come first).

    >>> ablations(TrainingPlan(action="recalibrate", base_version=None, base_model="m", data=[]), 3)
    []
    """
    if plan.action != "fine_tune" or budget <= 0:
        return []
    seen: set[tuple[str, str]] = set()
    found = []
    for adjustment in plan.adjustments:
        key = (adjustment.kind, adjustment.target)
        if adjustment.kind not in ABLATABLE or key in seen:
            continue
        seen.add(key)
        found.append(Ablation(f"without {adjustment.kind} {adjustment.target}", adjustment, _without(plan, adjustment)))
    return found[:budget]


def evaluated_on(adjustment: PlanAdjustment, plan: TrainingPlan, set_names: Sequence[str], recent: str) -> str:
    """The evaluation set an adjustment is judged on: its own slice where the evaluation has one, else
    ``recent`` (the newest production rows).

    A ``max_length`` change is about the texts at or past the old length; a truncation change about the
    longest slice the plan evaluates; a slice weight about its slice; a class weight about all recent rows.
    """
    wanted: str | None = None
    if adjustment.kind == "max_length":
        wanted = f"slice {SliceKey.length(int(adjustment.target)).format()}"
    elif adjustment.kind == "truncation":
        lengths = [k for k in plan.evaluation_slices() if k.kind == "length"]
        wanted = f"slice {lengths[0].format()}" if lengths else None
    elif adjustment.kind == "slice_weight":
        wanted = f"slice {adjustment.target}"
    return wanted if wanted is not None and wanted in set_names else recent


def adjustment_test(
    adjustment: PlanAdjustment, comparison: EvaluationSection, metric: str = "accuracy"
) -> AdjustmentTest | None:
    """The test of one adjustment from ``comparison`` (its variant as "champion", the planned model as
    "candidate", on the set it is judged on) by ``metric`` (an entity recogniser's: ``entity_micro_f1``);
    None when that set had no rows."""
    row = next((r for r in comparison.rows if r.metric == metric), None)
    if row is None or row.champion is None or row.candidate is None or row.delta is None:
        return None
    low = row.ci_low if row.ci_low is not None else row.delta
    high = row.ci_high if row.ci_high is not None else row.delta
    return AdjustmentTest(
        kind=adjustment.kind,
        target=adjustment.target,
        insight_id=adjustment.insight_id,
        evaluated_on=comparison.name,
        with_adjustment=row.candidate,
        without=row.champion,
        effect=row.delta,
        ci_low=low,
        ci_high=high,
        n=row.n or 0,
        supported=low > 0,
    )


def recent_score(sections: Sequence[EvaluationSection], recent: str, metric: str) -> float:
    """The candidate's ``metric`` on the ``recent`` set of an evaluation (0 without one): what
    :func:`choose_variant` ranks variants by."""
    section = next((s for s in sections if s.name == recent), None)
    row = next((r for r in section.rows if r.metric == metric), None) if section else None
    return row.candidate if row is not None and row.candidate is not None else 0.0


def choose_variant(scores: Sequence[tuple[str, bool, float]]) -> str:
    """The variant that becomes the candidate: of those the gate passed, the most accurate on the newest
    production rows (ties: the planned one, then the order given); with none passed, the planned one.

    ``scores``: (variant name, gate passed, recent accuracy), the planned variant first.

    >>> choose_variant([("planned", True, 0.80), ("without truncation head_tail", True, 0.82)])
    'without truncation head_tail'
    >>> choose_variant([("planned", False, 0.80), ("without slice_weight x", False, 0.90)])
    'planned'
    """
    passed = [(accuracy, -i, name) for i, (name, ok, accuracy) in enumerate(scores) if ok]
    return max(passed)[2] if passed else PLANNED
