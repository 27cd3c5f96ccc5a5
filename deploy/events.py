"""Events and records the deploy room owns: model events, version records, audit entries."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class VersionRecord(BaseModel):
    """What the registry knows about one version (its `version.json`)."""

    model_config = ConfigDict(extra="ignore")

    version: str
    created_at: datetime
    status: VersionStatus
    parent: str | None = None
    base_model: str
    labels: list[str]
    metrics: dict[str, float] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


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
