"""Slice keys in insights and training plans: well-formed keys only, and the plan's slices and weights
go through ``SliceKey``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from insightloop.detectors import Adjustments, SliceFinding, SliceKey
from insightloop.retrain.plan import PlanAdjustment, TrainingPlan


def test_insights_and_plans_accept_only_well_formed_keys() -> None:
    Adjustments(slice_weights={"meta.domain=kitchen": 2.0, "length_tokens=128+": 2.0})
    with pytest.raises(ValidationError, match="slice key"):
        Adjustments(slice_weights={"domain=kitchen": 2.0})
    SliceFinding(
        key="meta.domain=kitchen", field="meta.domain", value="kitchen", count=3, share_current=0.1, metric="error_rate"
    )
    with pytest.raises(ValidationError, match="is not"):
        SliceFinding(
            key="meta.domain=kitchen",
            field="meta.domain",
            value="books",
            count=3,
            share_current=0.1,
            metric="error_rate",
        )
    with pytest.raises(ValidationError, match="slice key"):
        TrainingPlan(
            action="fine_tune", base_version=None, base_model="m", data=[], slice_weights={"Length_Tokens=12+": 2.0}
        )


def test_plan_slices_and_weights_use_the_key() -> None:
    plan = TrainingPlan(
        action="fine_tune",
        base_version=None,
        base_model="m",
        data=[],
        slice_weights={"meta.domain=kitchen": 2.0, "length_tokens=64+": 3.0},
        adjustments=[PlanAdjustment(kind="max_length", target="128", value=256, insight_id="i", because="b")],
    )
    assert plan.evaluation_slices() == [
        SliceKey.meta("domain", "kitchen"),
        SliceKey.length(64),
        SliceKey.length(128),
    ]
    assert plan.slices_to_evaluate() == ["meta.domain=kitchen", "length_tokens=64+", "length_tokens=128+"]
    assert plan.slice_weight(meta={"domain": "kitchen"}, n_tokens=10) == 2.0
    assert plan.slice_weight(meta={"domain": "kitchen"}, n_tokens=100) == 3.0
    assert plan.slice_weight(meta={"domain": "Kitchen"}, n_tokens=10) is None
