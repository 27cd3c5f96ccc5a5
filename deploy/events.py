"""Events and records the deploy room owns: model events, version records, audit entries."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from insightloop.deploy.lineage import Lineage, TrainingData, from_legacy_data

SCHEMA_VERSION = 1


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class VersionStatus(StrEnum):
    """Where a model version stands in its life."""

    CANDIDATE = "candidate"
    APPROVED = "approved"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    REJECTED = "rejected"


class ModelEvent(BaseModel):
    """Published on the models topic when what serves traffic changes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION
    action: Literal["promote", "rollback"]
    version: str
    by: str
    at: datetime = Field(default_factory=utc_now)
    reason: str = ""


class MetricComparison(BaseModel):
    """One metric, champion vs candidate, with a confidence interval on the difference."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    metric: str
    champion: float | None = None
    candidate: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None


class EvaluationSection(BaseModel):
    """A data set both models were scored on: overall rows, per-class rows, a report link."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    rows: list[MetricComparison] = Field(default_factory=list)
    per_class: list[MetricComparison] = Field(default_factory=list)
    report: str | None = None  # path of an HTML report, relative to the version directory


class GateVerdict(BaseModel):
    """Whether the candidate passed the promotion gate, and why."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    passed: bool
    reasons: list[str] = Field(default_factory=list)


class InsightRef(BaseModel):
    """The insight that caused a candidate (a copy, so the registry stands on its own)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    kind: str
    severity: str
    summary: str
    report: str | None = None


class Evaluation(BaseModel):
    """Champion vs candidate on every data set the gate looked at."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    champion_version: str | None = None
    sections: list[EvaluationSection] = Field(default_factory=list)


class VersionRecord(BaseModel):
    """What the registry knows about one version (its `version.json`).

    ``lineage`` says how the version came to be and ``training`` on what it was trained. The first
    release wrote both as one untyped ``data`` dict; such files still load (the dict is converted).
    """

    model_config = ConfigDict(extra="ignore")

    version: str
    created_at: datetime
    status: VersionStatus
    parent: str | None = None
    base_model: str
    labels: list[str]
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    training: TrainingData | None = None
    insights: list[InsightRef] = Field(default_factory=list)
    evaluation: Evaluation | None = None
    gate: GateVerdict | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_data(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "data" not in raw:
            return raw
        converted = {k: v for k, v in raw.items() if k != "data"}
        legacy = raw["data"]
        if isinstance(legacy, dict) and legacy:
            lineage, training = from_legacy_data(legacy)
            converted.setdefault("lineage", lineage)
            converted.setdefault("training", training)
        return converted


class AuditEntry(BaseModel):
    """One line of the registry's append-only audit log."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    at: datetime = Field(default_factory=utc_now)
    version: str
    action: str
    from_status: VersionStatus | None
    to_status: VersionStatus
    by: str
    reason: str = ""
    authenticated_as: str | None = None  # the credential's name when the change came over the API
