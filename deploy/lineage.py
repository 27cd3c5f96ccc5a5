"""What a version was made from: its lineage (why and how) and its training data (on what).

These replace the untyped ``data`` dict of the first release's ``version.json``;
:func:`from_legacy_data` reads that dict into the typed records, so old registries still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from insightloop.deploy.layout import TRAINING_DATA

Action = Literal["train", "fine_tune", "recalibrate", "import", "unknown"]
SourceRole = Literal["train", "reference", "production"]
SettingValue = str | int | float | bool | None


class SourceFile(BaseModel):
    """A data file a version was trained from, as it was when the version was made."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: SourceRole
    path: str  # where it was read from (outside the version directory; it may since have changed)
    sha256: str | None = None  # of the file when the version was written; None if it was gone by then
    rows: int | None = None  # examples read from it
    train_rows: int | None = None  # of those, trained on
    holdout_rows: int | None = None  # of those, held out for validation or evaluation


class TrainingData(BaseModel):
    """The examples a version was trained on: a copy inside the version directory, counted and checksummed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    file: str | None = TRAINING_DATA  # relative to the version directory; None when no copy is recorded
    sha256: str | None = None
    rows: int | None = None
    label_counts: dict[str, int] = Field(default_factory=dict)
    validation_rows: int | None = None  # held out of training for early stopping and the reference profile
    sources: list[SourceFile] = Field(default_factory=list)

    def source(self, role: SourceRole) -> SourceFile | None:
        """The source file with ``role``, if one was recorded."""
        return next((s for s in self.sources if s.role == role), None)


class PlanStep(BaseModel):
    """One adjustment of a retraining plan, as the lineage keeps it (the full plan is ``plan.json``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: str
    target: str = ""
    value: float
    insight_id: str


class AdjustmentTest(BaseModel):
    """One adjustment tested by experiment: the planned model against the same job without that adjustment.

    ``effect`` is the accuracy of the model with it minus the one without, on ``evaluated_on`` (the slice the
    adjustment is about, else the newest production rows), with a paired bootstrap interval. ``supported``:
    the interval is above zero, so the insight's hypothesis held.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: str
    target: str = ""
    insight_id: str
    evaluated_on: str
    with_adjustment: float
    without: float
    effect: float
    ci_low: float
    ci_high: float
    n: int
    supported: bool

    def describe(self) -> str:
        """One line a person reads, e.g. ``truncation head_tail: +6.1 points on slice …, 95% CI [+3.0, +9.2]``."""
        name = f"{self.kind} {self.target}".strip()
        verdict = "supported" if self.supported else "not supported"
        return (
            f"{name}: {100 * self.effect:+.1f} points on {self.evaluated_on} "
            f"({self.without:.3f} without → {self.with_adjustment:.3f} with, n={self.n}), "
            f"95% CI [{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}]: {verdict}"
        )


class Lineage(BaseModel):
    """How a version came to be. Its parent and the insights behind it stay on the record itself."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    action: Action = "unknown"  # train: a first training; fine_tune / recalibrate: a retraining job
    plan_id: str | None = None
    job_id: str | None = None
    adjustments: list[PlanStep] = Field(default_factory=list)
    experiments: list[AdjustmentTest] = Field(default_factory=list)  # ablations: each adjustment left out once
    chosen_variant: str | None = None  # "planned", or the ablation that beat it ("without <kind> <target>")
    settings: dict[str, SettingValue] = Field(default_factory=dict)  # fine-tuning hyper-parameters
    imported_from: str | None = None  # a model directory registered as it was
    imported_sha256: str | None = None


def _int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def from_legacy_data(raw: Mapping[str, Any]) -> tuple[Lineage, TrainingData | None]:
    """Typed lineage and training data from the ``data`` dict the first release wrote.

    ``insightloop train`` wrote ``train_file``, ``examples``, ``train_size``, ``validation_size``,
    ``label_counts`` and ``settings``; a retraining job wrote ``reference_file``, ``production_file``, the
    train/holdout counts of each, ``plan_id``, ``action`` and ``job_id``. Neither recorded whether a copy of
    the training data was stored, so ``file`` is None and readers look for the copy on disk.
    """
    action = raw.get("action")
    settings = raw.get("settings")
    lineage = Lineage(
        action=action if action in ("fine_tune", "recalibrate") else "train" if "train_file" in raw else "unknown",
        plan_id=str(raw["plan_id"]) if raw.get("plan_id") is not None else None,
        job_id=str(raw["job_id"]) if raw.get("job_id") is not None else None,
        settings={
            str(k): v
            for k, v in (settings.items() if isinstance(settings, Mapping) else ())
            if v is None or isinstance(v, str | int | float | bool)
        },
    )
    sources: list[SourceFile] = []
    if "train_file" in raw:
        sources.append(
            SourceFile(
                role="train",
                path=str(raw["train_file"]),
                rows=_int(raw, "examples"),
                train_rows=_int(raw, "train_size"),
                holdout_rows=_int(raw, "validation_size"),
            )
        )
    roles: tuple[SourceRole, ...] = ("reference", "production")
    for role in roles:
        if f"{role}_file" in raw:
            train_rows, holdout_rows = _int(raw, f"{role}_train"), _int(raw, f"{role}_holdout")
            rows = None if train_rows is None or holdout_rows is None else train_rows + holdout_rows
            sources.append(
                SourceFile(
                    role=role,
                    path=str(raw[f"{role}_file"]),
                    rows=rows,
                    train_rows=train_rows,
                    holdout_rows=holdout_rows,
                )
            )
    if not sources:
        return lineage, None
    counts = raw.get("label_counts")
    label_counts = {str(k): int(v) for k, v in counts.items()} if isinstance(counts, Mapping) else {}
    training = TrainingData(
        file=None,
        rows=_int(raw, "examples"),
        label_counts=label_counts,
        validation_rows=_int(raw, "validation_size"),
        sources=sources,
    )
    return lineage, training
