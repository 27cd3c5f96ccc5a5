"""One insight per check: several detectors usually see the same shift, people and the controller need one finding."""

from __future__ import annotations

from insightloop.detectors.errors import DetectorPermanentError
from insightloop.detectors.insight import Insight

#: The loss metrics a merged insight carries under their plain names (the largest across the merged insights),
#: so whoever ranks insights by the loss they cost finds it whichever detector came first.
LOSS_METRICS: tuple[str, ...] = ("accuracy_drop", "estimated_drop", "estimated_accuracy_drop", "macro_f1_drop")


def merge_insights(insights: list[Insight]) -> Insight:
    """The strongest finding of one check, with every other detector's evidence folded in.

    The primary is the most severe insight (ties: the highest ratio). Its id, kind, detector, statistic and
    metrics stay as they are, under their own names. From each other insight the descriptors, slices and
    classes it adds are kept, its metrics under ``"<detector>.<name>"`` and its ratio as
    ``"<detector>.ratio"``. Each loss metric of :data:`LOSS_METRICS` that any merged insight measured is
    also carried under its plain name, with the largest value found: a merged drift insight whose quality
    detector measured ``accuracy_drop`` still exposes ``accuracy_drop``.

    Parameters
    ----------
    insights : list of Insight
        The insights of one check, at least one.

    Raises
    ------
    DetectorPermanentError
        When ``insights`` is empty.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from insightloop.detectors.insight import Evidence, WindowSpan
    >>> def found(detector, kind, severity, ratio, **metrics):
    ...     return Insight(id=detector, detector=detector, kind=kind, severity=severity,
    ...                    window=WindowSpan(count=400), statistic=ratio, threshold=1.0,
    ...                    summary=f"{detector} moved.", model_version="v0001",
    ...                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...                    evidence=Evidence(metrics=metrics))
    >>> merged = merge_insights([found("embeddings", "embedding_drift", "critical", 5.0, mmd2=0.4),
    ...                          found("labeled_quality", "quality_drop", "warning", 2.0, accuracy_drop=0.12)])
    >>> merged.id, merged.evidence.metrics["mmd2"], merged.evidence.metrics["accuracy_drop"]
    ('embeddings', 0.4, 0.12)
    """
    if not insights:
        raise DetectorPermanentError("merge_insights needs at least one insight")
    ordered = sorted(insights, key=lambda i: (i.severity_rank, i.ratio), reverse=True)
    primary, others = ordered[0], ordered[1:]
    if not others:
        return primary
    evidence = primary.evidence
    descriptors = {d.name: d for d in evidence.descriptors}
    slices = {s.key: s for s in evidence.slices}
    metrics = dict(evidence.metrics)
    for other in others:
        for d in other.evidence.descriptors:
            descriptors.setdefault(d.name, d)
        for s in other.evidence.slices:
            slices.setdefault(s.key, s)
        metrics.update({f"{other.detector}.{k}": v for k, v in other.evidence.metrics.items()})
        metrics[f"{other.detector}.ratio"] = min(other.ratio, 1e6)
    for name in LOSS_METRICS:
        measured = [i.evidence.metrics[name] for i in ordered if name in i.evidence.metrics]
        if measured:
            metrics[name] = max(measured)
    merged = evidence.model_copy(
        update={
            "descriptors": list(descriptors.values()),
            "slices": list(slices.values()),
            "classes": evidence.classes or next((o.evidence.classes for o in others if o.evidence.classes), []),
            "metrics": metrics,
        }
    )
    also = "; ".join(f"{o.kind.replace('_', ' ')} ({o.severity})" for o in others)
    return primary.model_copy(update={"evidence": merged, "summary": f"{primary.summary} Also seen: {also}."})
