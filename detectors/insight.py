"""The typed finding a detector returns: statistic, evidence, a sentence and a recommendation."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from insightloop.detectors.slicekey import SliceKey, SliceKeyText

INSIGHT_SCHEMA_VERSION = 1

Severity = Literal["info", "warning", "critical"]
InsightKind = Literal[
    "text_drift",
    "embedding_drift",
    "prediction_drift",
    "quality_drop",
    "estimated_quality_drop",
    "slice_degradation",
]
Action = Literal["retrain", "recalibrate", "none"]

_SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


def severity_rank(severity: Severity) -> int:
    """``info`` < ``warning`` < ``critical`` as 0, 1, 2: the one ordering of severities."""
    return _SEVERITY_RANK[severity]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number (JSON has no NaN or infinity)")
    return value


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None else _finite(value)


Finite = Annotated[float, AfterValidator(_finite)]
OptionalFinite = Annotated[float | None, AfterValidator(_finite_or_none)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WindowSpan(_Model):
    """Which rows the insight is about: first and last event time (when known) and how many rows."""

    start: datetime | None = None
    end: datetime | None = None
    count: int = Field(ge=0)
    #: When the oldest row that no earlier check had seen was scored (set by the monitor). Labels on rows
    #: scored from then on are what a job for this insight learns from: rows an earlier check found clean
    #: are left out, and a backlog that arrived in one poll is not mistaken for rows before the change.
    unchecked_since: datetime | None = None


class DescriptorShift(_Model):
    """One text descriptor compared between reference and current window."""

    name: str
    reference_mean: Finite
    current_mean: Finite
    reference_median: Finite
    current_median: Finite
    p_value: Finite = Field(ge=0.0, le=1.0)
    drifted: bool


class SliceFinding(_Model):
    """A slice of the current window (length bucket, ``meta`` value, new vocabulary) and how it fares.

    ``key`` is a :class:`SliceKey` in its wire form ``"<field>=<value>"``, e.g. ``"length_tokens=256+"``,
    ``"meta.domain=kitchen"`` or ``"new_vocabulary=high"`` (case-sensitive; ``field`` and ``value`` are its
    two halves); training plans use it as the key of ``slice_weights``.
    ``metric`` is ``"error_rate"`` (from labels) or ``"estimated_error_rate"`` (from calibrated confidence);
    ``excess_errors`` is rows × (current − reference value) and ``lift`` how much more the slice's value
    rose than the rest of the window's (positive: the loss concentrates here).
    """

    key: SliceKeyText
    field: str
    value: str
    count: int = Field(ge=0)
    share_reference: OptionalFinite = None
    share_current: Finite
    metric: Literal["error_rate", "estimated_error_rate"]
    reference_value: OptionalFinite = None
    current_value: OptionalFinite = None
    excess_errors: Finite = 0.0
    lift: OptionalFinite = None
    share_p_value: OptionalFinite = None
    loss_p_value: OptionalFinite = None

    @model_validator(mode="after")
    def _key_is_field_and_value(self) -> SliceFinding:
        if self.key != SliceKey(self.field, self.value).format():
            raise ValueError(f"key {self.key!r} is not '<field>=<value>' of {self.field!r} and {self.value!r}")
        return self

    @property
    def slice_key(self) -> SliceKey:
        """The typed key."""
        return SliceKey.parse(self.key)


class ClassShift(_Model):
    """One class: predicted share (and recall where labels exist) in reference and current window.

    For an entity type, the ``*_recall`` fields hold the type's entity F1, and ``quality_metric`` says so."""

    name: str
    reference_share: Finite
    current_share: Finite
    estimated_prior: OptionalFinite = None
    reference_recall: OptionalFinite = None
    current_recall: OptionalFinite = None
    current_support: int = 0
    quality_metric: Literal["recall", "F1"] = "recall"


class Example(_Model):
    """A current row shown to people: id, (shortened) text, and how far from the reference it lies."""

    id: str
    text: str
    score: Finite


class Evidence(_Model):
    """What moved: descriptors, slices, classes, named metrics, and example rows farthest from the reference."""

    descriptors: list[DescriptorShift] = Field(default_factory=list)
    slices: list[SliceFinding] = Field(default_factory=list)
    classes: list[ClassShift] = Field(default_factory=list)
    metrics: dict[str, Finite] = Field(default_factory=dict)
    examples: list[Example] = Field(default_factory=list)


class Adjustments(_Model):
    """The training-plan delta an insight proposes; every field optional (``slice_weights`` keys are
    :class:`SliceKey` wire forms)."""

    max_length: int | None = Field(default=None, ge=1)
    #: How a text past ``max_length`` is cut: ``head_tail`` keeps its beginning and its end; ``chunks`` reads
    #: it whole as overlapping windows.
    truncation: Literal["head", "head_tail", "chunks"] | None = None
    slice_weights: dict[SliceKeyText, Finite] = Field(default_factory=dict)
    class_weights: dict[str, Finite] = Field(default_factory=dict)
    recent_data_weight: OptionalFinite = None


class Recommendation(_Model):
    """``retrain`` (with ``adjust``), ``recalibrate`` (no GPU: prior/threshold correction) or ``none``."""

    action: Action
    adjust: Adjustments = Field(default_factory=Adjustments)
    because: str


NO_ACTION = Recommendation(action="none", because="nothing in the evidence calls for a change")


CostSource = Literal["labeled", "labeled_and_estimated", "estimated"]


class AccuracyCost(_Model):
    """What a change costs in accuracy on its window: reference accuracy minus the window's, in points.

    ``source`` says whether it was measured on the window's labels, measured on the ``n_labeled`` rows with
    labels and estimated for the others (``labeled_and_estimated``), or estimated without labels;
    ``low``/``high`` bound a 95 % interval; ``n`` is the rows it rests on. Positive: the window is worse.
    """

    points: Finite
    low: Finite
    high: Finite
    source: CostSource
    n: int = Field(ge=0)
    n_labeled: int = Field(0, ge=0)
    reference_accuracy: Finite
    current_accuracy: Finite
    #: What the points are of: a text classifier's accuracy, or a token classifier's entity micro F1.
    metric: Literal["accuracy", "entity micro F1"] = "accuracy"

    def describe(self) -> str:
        """One clause for a summary."""
        how = {
            "labeled": f"on the labels of {self.n} texts",
            "labeled_and_estimated": f"on the labels of {self.n_labeled} texts, estimated for "
            f"{self.n - self.n_labeled} newer ones",
            "estimated": f"estimated without labels on {self.n} texts",
        }[self.source]
        what = "accuracy cost" if self.metric == "accuracy" else f"cost in {self.metric}"
        return f"expected {what} {self.points:.1f} points (95% interval {self.low:.1f} to {self.high:.1f}, {how})"


class Insight(_Model):
    """A finding with evidence and a hypothesis, as published on the ``insights`` topic.

    JSON round-trip is exact: ``Insight.model_validate_json(i.model_dump_json()) == i``.
    """

    schema_version: Literal[1] = 1
    id: str
    detector: str
    kind: InsightKind
    severity: Severity
    window: WindowSpan
    statistic: Finite
    threshold: Finite
    p_value: OptionalFinite = Field(default=None, ge=0.0, le=1.0)
    evidence: Evidence = Field(default_factory=Evidence)
    summary: str
    recommendation: Recommendation = NO_ACTION
    cost: AccuracyCost | None = None
    created_at: datetime
    model_version: str
    report: str | None = None

    @property
    def ratio(self) -> float:
        """``statistic / threshold``: 1 at the alarm level."""
        return self.statistic / self.threshold if self.threshold > 0 else math.inf

    @property
    def severity_rank(self) -> int:
        """This insight's place in the ordering of severities (see ``severity_rank``)."""
        return severity_rank(self.severity)

    def at_least(self, severity: Severity) -> bool:
        """True when this insight is as severe as ``severity`` or more."""
        return self.severity_rank >= severity_rank(severity)


def insight_id(detector: str, model_version: str, row_ids: list[str]) -> str:
    """A deterministic id: the same detector on the same rows for the same model gives the same id."""
    digest = hashlib.sha256("\0".join([detector, model_version, *row_ids]).encode())
    return f"{detector}-{digest.hexdigest()[:16]}"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC, truncated to microseconds (what JSON keeps)."""
    return datetime.now(UTC)
