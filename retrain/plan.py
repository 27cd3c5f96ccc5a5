"""The training plan: what the next candidate is trained on and how — derived from insights.

Every adjustment records the insight that caused it, so a version's lineage says why it is what
it is. Insights that only need a prior correction yield a ``recalibrate`` plan (no fine-tuning).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from insightloop.deploy import HEAD_SHARE, MAX_WINDOWS, InsightRef, Truncation, utc_now
from insightloop.detectors import Insight, SliceKey, SliceKeyText
from insightloop.retrain.finetune import FineTuneSettings

PLAN_SCHEMA_VERSION: Literal[1] = 1


class DataSource(BaseModel):
    """A JSON Lines file of labeled texts and how much its examples weigh."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    role: Literal["reference", "production"]
    weight: float = Field(1.0, gt=0)


class HyperParameters(BaseModel):
    """Fine-tuning settings of the plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(3e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8)
    truncation: Truncation = "head"  # the champion's, unless an insight changes it
    seed: int = 0
    early_stopping_patience: int = Field(1, ge=1)

    def fine_tune_settings(self, device: str) -> FineTuneSettings:
        """These hyper-parameters as a fine-tune's settings on ``device``."""
        return FineTuneSettings(
            epochs=self.epochs,
            max_length=self.max_length,
            truncation=self.truncation,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            device=device,
            early_stopping_patience=self.early_stopping_patience,
        )


class PlanAdjustment(BaseModel):
    """One change to the default recipe, and the insight that caused it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["max_length", "truncation", "slice_weight", "class_weight", "recent_data_weight", "prior_correction"]
    target: str = ""  # the slice key or class name it applies to
    value: float
    replaces: str | None = None  # the champion's setting it changes, where a variant needs it back (truncation)
    insight_id: str
    because: str


class TrainingPlan(BaseModel):
    """What a retraining job does; saved with the candidate as its lineage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = PLAN_SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: datetime = Field(default_factory=utc_now)
    action: Literal["fine_tune", "recalibrate"]
    base_version: str | None
    base_model: str  # directory of the champion (or a base model for a first training)
    data: list[DataSource]
    production_holdout_share: float = Field(0.3, gt=0, lt=1)
    hyper: HyperParameters = Field(default_factory=HyperParameters)
    slice_weights: dict[SliceKeyText, float] = Field(default_factory=dict)
    class_weights: dict[str, float] = Field(default_factory=dict)
    adjustments: list[PlanAdjustment] = Field(default_factory=list)
    insights: list[InsightRef] = Field(default_factory=list)

    def evaluation_slices(self) -> list[SliceKey]:
        """Slices named by the insights (weighted ones, and the texts at or past an old ``max_length``);
        each gets its own rows in the evaluation."""
        keys = [SliceKey.parse(key) for key in self.slice_weights]
        keys += [SliceKey.length(int(a.target)) for a in self.adjustments if a.kind == "max_length"]
        return list(dict.fromkeys(keys))

    def slices_to_evaluate(self) -> list[str]:
        """:meth:`evaluation_slices` in their wire form."""
        return [key.format() for key in self.evaluation_slices()]

    def slice_weight(self, *, meta: Mapping[str, object], n_tokens: int) -> float | None:
        """The largest weight of the plan's slices a training row belongs to (None when it is in none);
        membership is :meth:`SliceKey.contains`, so the job weights the rows the detectors measured."""
        matched = [
            weight
            for key, weight in self.slice_weights.items()
            if SliceKey.parse(key).contains(meta=meta, n_tokens=n_tokens)
        ]
        return max(matched) if matched else None


def truncation_value(truncation: Truncation) -> float:
    """What a truncation adjustment records as its value.

    >>> [truncation_value(t) for t in ("head", "head_tail", "chunks")]
    [1.0, 0.25, 8.0]
    """
    return {"head_tail": HEAD_SHARE, "chunks": float(MAX_WINDOWS)}.get(truncation, 1.0)


def plan_from_insights(
    insights: Sequence[Insight],
    champion_version: str | None,
    champion_dir: str,
    champion_max_length: int,
    reference_data: str,
    production_data: str,
    hyper: HyperParameters | None = None,
    production_weight: float = 2.0,
) -> TrainingPlan:
    """Turn insights into a plan: the cheapest action their evidence supports, with every adjustment traced."""
    hyper = hyper or HyperParameters(max_length=champion_max_length)
    acting = [i for i in insights if i.recommendation.action != "none"]
    retrain = [i for i in acting if i.recommendation.action == "retrain"]
    action: Literal["fine_tune", "recalibrate"] = "fine_tune" if retrain or not acting else "recalibrate"
    adjustments: list[PlanAdjustment] = []
    slice_weights: dict[str, float] = {}
    class_weights: dict[str, float] = {}
    max_length = max(hyper.max_length, champion_max_length)
    truncation = hyper.truncation
    for insight in retrain:
        adjust = insight.recommendation.adjust
        because = insight.recommendation.because
        if adjust.max_length is not None and adjust.max_length > max_length:
            adjustments.append(
                PlanAdjustment(
                    kind="max_length",
                    target=str(champion_max_length),
                    value=adjust.max_length,
                    insight_id=insight.id,
                    because=because,
                )
            )
            max_length = adjust.max_length
        if adjust.truncation is not None and adjust.truncation != truncation:
            # value: the share of the token budget kept from the text's beginning (the rest is its end); for
            # chunks, the most windows a text is read in
            adjustments.append(
                PlanAdjustment(
                    kind="truncation",
                    target=adjust.truncation,
                    value=truncation_value(adjust.truncation),
                    replaces=truncation,
                    insight_id=insight.id,
                    because=because,
                )
            )
            truncation = adjust.truncation
        for key, weight in adjust.slice_weights.items():
            if weight > slice_weights.get(key, 1.0):
                slice_weights[key] = weight
                adjustments.append(
                    PlanAdjustment(
                        kind="slice_weight", target=key, value=weight, insight_id=insight.id, because=because
                    )
                )
        for name, weight in adjust.class_weights.items():
            if weight != class_weights.get(name, 1.0):
                class_weights[name] = weight
                adjustments.append(
                    PlanAdjustment(
                        kind="class_weight", target=name, value=weight, insight_id=insight.id, because=because
                    )
                )
        if adjust.recent_data_weight is not None and adjust.recent_data_weight > production_weight:
            production_weight = adjust.recent_data_weight
            adjustments.append(
                PlanAdjustment(
                    kind="recent_data_weight",
                    target="production",
                    value=adjust.recent_data_weight,
                    insight_id=insight.id,
                    because=because,
                )
            )
    if action == "recalibrate":
        for insight in acting:
            adjustments.append(
                PlanAdjustment(
                    kind="prior_correction", value=1.0, insight_id=insight.id, because=insight.recommendation.because
                )
            )
    return TrainingPlan(
        action=action,
        base_version=champion_version,
        base_model=champion_dir,
        data=[
            DataSource(path=reference_data, role="reference", weight=1.0),
            DataSource(path=production_data, role="production", weight=production_weight),
        ],
        hyper=hyper.model_copy(update={"max_length": max_length, "truncation": truncation}),
        slice_weights=slice_weights,
        class_weights=class_weights,
        adjustments=adjustments,
        insights=[
            InsightRef(id=i.id, kind=i.kind, severity=i.severity, summary=i.summary, report=i.report) for i in insights
        ],
    )
