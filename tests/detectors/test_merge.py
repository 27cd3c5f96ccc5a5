"""merge_insights: one finding per check, the primary's evidence under its own names, losses kept plain."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from insightloop.detectors import (
    LOSS_METRICS,
    DescriptorShift,
    DetectorError,
    Evidence,
    Insight,
    InsightKind,
    Severity,
    WindowSpan,
    merge_insights,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def found(detector: str, kind: InsightKind, severity: Severity, ratio: float, **metrics: float) -> Insight:
    return Insight(
        id=f"{detector}-1",
        detector=detector,
        kind=kind,
        severity=severity,
        window=WindowSpan(count=400),
        statistic=ratio,
        threshold=1.0,
        summary=f"{detector} moved.",
        evidence=Evidence(
            metrics=metrics,
            descriptors=[
                DescriptorShift(
                    name=f"{detector}-d",
                    reference_mean=1.0,
                    current_mean=2.0,
                    reference_median=1.0,
                    current_median=2.0,
                    p_value=0.001,
                    drifted=True,
                )
            ],
        ),
        created_at=T0,
        model_version="v0001",
    )


def test_one_insight_is_returned_as_it_is() -> None:
    alone = found("embeddings", "embedding_drift", "warning", 2.0, mmd2=0.3)
    assert merge_insights([alone]) == alone


def test_the_most_severe_insight_leads_and_the_others_are_folded_in() -> None:
    drift = found("embeddings", "embedding_drift", "critical", 3.0, mmd2=0.4)
    quality = found("labeled_quality", "quality_drop", "warning", 9.0, accuracy_drop=0.12, accuracy=0.7)
    merged = merge_insights([quality, drift])
    assert (merged.id, merged.detector, merged.kind) == (drift.id, "embeddings", "embedding_drift")
    metrics = merged.evidence.metrics
    assert metrics["mmd2"] == 0.4, "the primary's metrics keep their own names"
    assert metrics["labeled_quality.accuracy"] == 0.7 and metrics["labeled_quality.ratio"] == 9.0
    assert {d.name for d in merged.evidence.descriptors} == {"embeddings-d", "labeled_quality-d"}
    assert merged.summary.endswith("Also seen: quality drop (warning).")


def test_a_merged_quality_insight_still_exposes_its_loss_under_the_plain_name() -> None:
    """The controller ranks by ``accuracy_drop`` & co.; renaming them would rank a quality loss as drift."""
    quality = found("labeled_quality", "quality_drop", "critical", 4.0, accuracy_drop=0.12)
    estimated = found("estimated_quality", "estimated_quality_drop", "warning", 2.0, estimated_drop=0.05)
    drift = found("embeddings", "embedding_drift", "warning", 5.0, mmd2=0.4)
    merged = merge_insights([drift, estimated, quality])
    assert merged.kind == "quality_drop"
    assert merged.evidence.metrics["accuracy_drop"] == 0.12
    assert merged.evidence.metrics["estimated_drop"] == 0.05, "a secondary's loss travels under its name too"
    assert merged.evidence.metrics["estimated_quality.estimated_drop"] == 0.05


@pytest.mark.parametrize("name", LOSS_METRICS)
def test_the_largest_of_each_loss_is_carried(name: str) -> None:
    first = found("labeled_quality", "quality_drop", "critical", 4.0, **{name: 0.02})
    second = found("slices", "slice_degradation", "warning", 2.0, **{name: 0.2})
    assert merge_insights([first, second]).evidence.metrics[name] == 0.2


def test_nothing_to_merge_is_an_error_of_the_detectors_room() -> None:
    with pytest.raises(DetectorError):
        merge_insights([])
