"""Ablations: which variants a plan gets, what each adjustment is judged on, and which variant is chosen."""

from __future__ import annotations

import pytest

from insightloop.deploy import EvaluationSection, MetricComparison
from insightloop.retrain.ablation import PLANNED, ablations, adjustment_test, choose_variant, evaluated_on
from insightloop.retrain.plan import HyperParameters, PlanAdjustment, TrainingPlan

LONG = "length_tokens=128+"
KITCHEN = "meta.domain=kitchen"


def step(kind: str, target: str, value: float = 2.0) -> PlanAdjustment:
    return PlanAdjustment(kind=kind, target=target, value=value, insight_id="i1", because="b")  # type: ignore[arg-type]


def plan(*adjustments: PlanAdjustment, action: str = "fine_tune") -> TrainingPlan:
    return TrainingPlan(
        action=action,  # type: ignore[arg-type]
        base_version="v1",
        base_model="m",
        data=[],
        hyper=HyperParameters(max_length=256, truncation="head_tail"),
        slice_weights={LONG: 2.0, KITCHEN: 3.0},
        class_weights={"positive": 1.5},
        adjustments=list(adjustments),
    )


def test_each_adjustment_gets_one_variant_that_leaves_only_it_out() -> None:
    planned = plan(
        step("max_length", "128", 256),
        step("truncation", "head_tail", 0.25),
        step("slice_weight", LONG),
        step("slice_weight", KITCHEN, 3.0),
        step("class_weight", "positive", 1.5),
        step("recent_data_weight", "production", 3.0),
    )
    variants = {v.name: v.plan for v in ablations(planned, budget=10)}
    assert list(variants) == [
        "without max_length 128",
        "without truncation head_tail",
        f"without slice_weight {LONG}",
        f"without slice_weight {KITCHEN}",
        "without class_weight positive",
    ], "recent_data_weight keeps no earlier value to go back to"
    shorter = variants["without max_length 128"]
    assert (shorter.hyper.max_length, shorter.hyper.truncation) == (128, "head_tail")
    head = variants["without truncation head_tail"]
    assert (head.hyper.max_length, head.hyper.truncation) == (256, "head")
    assert variants[f"without slice_weight {LONG}"].slice_weights == {KITCHEN: 3.0}
    assert variants["without class_weight positive"].class_weights == {}
    for name, variant in variants.items():
        assert len(variant.adjustments) == len(planned.adjustments) - 1, name
        assert variant.id == planned.id and variant.data == planned.data, "the same job otherwise"


@pytest.mark.parametrize(
    ("budget", "action", "expected"),
    [(2, "fine_tune", 2), (0, "fine_tune", 0), (5, "recalibrate", 0)],
)
def test_the_budget_and_the_action_bound_the_variants(budget: int, action: str, expected: int) -> None:
    planned = plan(
        step("max_length", "128", 256), step("slice_weight", LONG), step("class_weight", "positive"), action=action
    )
    assert len(ablations(planned, budget)) == expected


SETS = ["reference holdout", "recent production", f"slice {LONG}", f"slice {KITCHEN}"]


@pytest.mark.parametrize(
    ("adjustment", "sets", "expected"),
    [
        (step("max_length", "128", 256), SETS, f"slice {LONG}"),  # the texts the old length cut
        (step("truncation", "head_tail", 0.25), SETS, f"slice {LONG}"),  # the plan's longest slice
        (step("slice_weight", KITCHEN, 3.0), SETS, f"slice {KITCHEN}"),
        (step("class_weight", "positive", 1.5), SETS, "recent production"),
        (step("slice_weight", KITCHEN, 3.0), SETS[:2], "recent production"),  # no rows of the slice held out
    ],
)
def test_an_adjustment_is_judged_on_the_rows_it_is_about(
    adjustment: PlanAdjustment, sets: list[str], expected: str
) -> None:
    assert evaluated_on(adjustment, plan(adjustment), sets, "recent production") == expected


@pytest.mark.parametrize(
    ("low", "supported"),
    [(0.03, True), (0.0, False), (-0.02, False)],
)
def test_an_adjustment_is_supported_only_when_its_interval_is_above_zero(low: float, supported: bool) -> None:
    row = MetricComparison(metric="accuracy", champion=0.6, candidate=0.7, delta=0.1, ci_low=low, ci_high=0.2, n=90)
    test = adjustment_test(step("truncation", "head_tail", 0.25), EvaluationSection(name=f"slice {LONG}", rows=[row]))
    assert test is not None and test.supported is supported
    assert (test.without, test.with_adjustment, test.effect, test.n) == (0.6, 0.7, 0.1, 90)
    assert test.describe().startswith(f"truncation head_tail: +10.0 points on slice {LONG}")
    assert adjustment_test(step("truncation", "head_tail"), EvaluationSection(name="empty")) is None


@pytest.mark.parametrize(
    ("scores", "chosen"),
    [
        ([(PLANNED, True, 0.80), ("without a", True, 0.82)], "without a"),  # the adjustment did not help
        ([(PLANNED, True, 0.80), ("without a", True, 0.80)], PLANNED),  # ties: the planned one
        ([(PLANNED, True, 0.80), ("without a", False, 0.90)], PLANNED),  # only what the gate passed
        ([(PLANNED, False, 0.80), ("without a", False, 0.90)], PLANNED),  # none passed: the plan, refused
        ([(PLANNED, False, 0.70), ("without a", True, 0.75), ("without b", True, 0.78)], "without b"),
    ],
)
def test_the_best_variant_the_gate_passed_becomes_the_candidate(
    scores: list[tuple[str, bool, float]], chosen: str
) -> None:
    assert choose_variant(scores) == chosen


@pytest.mark.parametrize(
    ("target", "replaces", "back_to"),
    [
        ("chunks", "head_tail", "head_tail"),  # reading long texts whole, tested against the cut it replaced
        ("chunks", "head", "head"),
        ("head_tail", None, "head"),  # a plan saved before adjustments named what they replaced
    ],
)
def test_leaving_out_a_truncation_goes_back_to_the_policy_it_replaced(
    target: str, replaces: str | None, back_to: str
) -> None:
    cut = PlanAdjustment(kind="truncation", target=target, value=1.0, replaces=replaces, insight_id="i1", because="b")
    planned = plan(cut).model_copy(update={"hyper": HyperParameters(max_length=512, truncation=target)})  # type: ignore[arg-type]
    (variant,) = ablations(planned, budget=3)
    assert variant.name == f"without truncation {target}"
    assert (variant.plan.hyper.truncation, variant.plan.hyper.max_length) == (back_to, 512)
