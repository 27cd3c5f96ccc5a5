"""Champion vs candidate on the same texts: metrics with paired-bootstrap intervals, per-class tables in
the style of sklearn's ``classification_report``, Evidently classification reports, and the gate."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from insightloop.deploy import EvaluationSection, GateVerdict, MetricComparison, ModelArtifact
from insightloop.detectors import macro_f1_batch

log = logging.getLogger(__name__)

RECENT = "recent production (held out by time)"
REFERENCE = "reference holdout"
#: A recalibration's reference: the reference holdout resampled to the class mix it corrects to. On the old
#: mix a prior correction must lose (that is what it is for); at the new mix it must not.
REFERENCE_AT_MIX = "reference holdout at the current class mix"


class GateSettings(BaseModel):
    """When a candidate may replace the champion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_improvement: float = Field(
        0.01, ge=0, description="Accuracy gain on recent production data the candidate must show."
    )
    max_regression: float = Field(0.03, ge=0, description="Largest accuracy loss allowed on the reference holdout.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence of the interval on the gain.")
    bootstrap_rounds: int = Field(1000, ge=100)
    min_recent: int = Field(30, ge=1, description="Fewest held-out production texts to decide on.")


@dataclass(frozen=True)
class Predictions:
    """One model's predicted labels for a labeled set."""

    predicted: list[str]

    @classmethod
    def of(cls, artifact: ModelArtifact, texts: Sequence[str], batch_size: int = 32) -> Predictions:
        """Score ``texts`` with ``artifact``."""
        if not texts:
            return cls([])
        return cls(artifact.predict(list(texts), batch_size=batch_size).predicted_labels())


def _macro_f1(truth: NDArray[np.int64], pred: NDArray[np.int64], k: int) -> NDArray[np.float64]:
    """The detectors' macro-F1 (classes with support in ``truth``) along the last axis: one value for
    one set of rows, one per resample for a batch of them."""
    scores = macro_f1_batch(np.atleast_2d(truth), np.atleast_2d(pred), k)
    return scores if truth.ndim > 1 else scores.reshape(())


def compare(
    name: str,
    truth: Sequence[str],
    champion: Predictions,
    candidate: Predictions,
    labels: Sequence[str],
    rounds: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> EvaluationSection:
    """Accuracy and macro-F1 of both models with a paired-bootstrap interval on the difference, and per-class
    precision/recall/F1."""
    n = len(truth)
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    t = np.array([index.get(x, -1) for x in truth], dtype=np.int64)
    a = np.array([index.get(x, -1) for x in champion.predicted], dtype=np.int64)
    b = np.array([index.get(x, -1) for x in candidate.predicted], dtype=np.int64)
    if n == 0:
        return EvaluationSection(name=name)
    rng = np.random.default_rng(seed)
    sample = rng.integers(0, n, size=(rounds, n))
    tail = (1 - confidence) / 2
    rows = []
    for metric, fn in (
        ("accuracy", lambda tt, pp: (tt == pp).mean(axis=-1)),
        ("macro_f1", lambda tt, pp: _macro_f1(tt, pp, k)),
    ):
        champion_value = float(fn(t, a))
        candidate_value = float(fn(t, b))
        deltas = fn(t[sample], b[sample]) - fn(t[sample], a[sample])
        rows.append(
            MetricComparison(
                metric=metric,
                champion=champion_value,
                candidate=candidate_value,
                delta=candidate_value - champion_value,
                ci_low=float(np.quantile(deltas, tail)),
                ci_high=float(np.quantile(deltas, 1 - tail)),
                n=n,
            )
        )
    per_class = []
    for label, c in index.items():
        support = int((t == c).sum())
        hits = [int(((t == c) & (p == c)).sum()) for p in (a, b)]
        predicted = [int((p == c).sum()) for p in (a, b)]
        precision = [h / n if n else 0.0 for h, n in zip(hits, predicted, strict=True)]
        recall = [h / support if support else 0.0 for h in hits]
        f1 = [2 * pr * rc / (pr + rc) if pr + rc else 0.0 for pr, rc in zip(precision, recall, strict=True)]
        for metric, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            per_class.append(
                MetricComparison(
                    metric=f"{metric}[{label}]",
                    champion=values[0],
                    candidate=values[1],
                    delta=values[1] - values[0],
                    n=support,
                )
            )
    return EvaluationSection(name=name, rows=rows, per_class=per_class)


def classification_report_text(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> str:
    """sklearn's classification_report for one model on one set."""
    from sklearn.metrics import classification_report

    text: str = classification_report(list(truth), list(predicted), labels=list(labels), digits=4, zero_division=0)
    return text


def evidently_classification_report(
    truth: Sequence[str],
    predicted: Sequence[str],
    labels: Sequence[str],
    path: Path,
    reference: tuple[Sequence[str], Sequence[str]] | None = None,
) -> Path:
    """An Evidently classification report (HTML, and JSON beside it) for one model on one set."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
        from evidently.presets import ClassificationPreset

        task = (
            BinaryClassification(target="target", prediction_labels="prediction", pos_label=labels[-1])
            if len(labels) == 2
            else MulticlassClassification(target="target", prediction_labels="prediction")
        )
        definition = DataDefinition(classification=[task], categorical_columns=["target", "prediction"])

        def dataset(t: Sequence[str], p: Sequence[str]) -> object:
            return Dataset.from_pandas(
                pd.DataFrame({"target": list(t), "prediction": list(p)}), data_definition=definition
            )

        snapshot = Report([ClassificationPreset()]).run(
            dataset(truth, predicted), dataset(*reference) if reference else None
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(path))
        snapshot.save_json(str(path.with_suffix(".json")))
    return path


def resample_to_mix(labels: Sequence[str], mix: Mapping[str, float], seed: int = 0) -> list[int]:
    """Indices of a subsample of rows with ``labels`` whose class shares are ``mix`` (as large as the rows
    allow, drawn without replacement, in their original order); classes missing from ``mix`` are left out.

    >>> len(resample_to_mix(["a", "b", "a", "b", "a", "b"], {"a": 0.75, "b": 0.25}))  # all three a, one b
    4
    """
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    wanted = {c: share for c, share in mix.items() if share > 0 and c in by_class}
    if not wanted:
        return []
    total = sum(wanted.values())
    size = min(len(by_class[c]) / (share / total) for c, share in wanted.items())
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c, share in wanted.items():
        rows = by_class[c]
        take = min(len(rows), max(1, round(size * share / total)))
        chosen += [rows[i] for i in sorted(rng.permutation(len(rows))[:take])] if take < len(rows) else rows
    return sorted(chosen)


def decide(sections: Sequence[EvaluationSection], settings: GateSettings, metric: str = "accuracy") -> GateVerdict:
    """The gate: recent production must improve by the margin with confidence; the reference must not
    regress beyond the bound. Reasons say which test passed or failed, with the numbers.

    ``metric`` is the row it judges: a text classifier's ``accuracy``, a token classifier's ``entity_micro_f1``.
    """
    by_name = {s.name: s for s in sections}
    reasons: list[str] = []
    passed = True
    recent = by_name.get(RECENT)
    judged = next((r for r in recent.rows if r.metric == metric), None) if recent else None
    if judged is None or (judged.n or 0) < settings.min_recent:
        passed = False
        reasons.append(f"{RECENT}: fewer than {settings.min_recent} labeled texts to decide on")
    else:
        assert judged.delta is not None and judged.ci_low is not None
        ok = judged.delta >= settings.min_improvement and judged.ci_low > 0
        passed &= ok
        reasons.append(
            f"{RECENT}: {metric} {judged.champion:.4f} → {judged.candidate:.4f} (Δ {judged.delta:+.4f}, "
            f"{settings.confidence:.0%} CI [{judged.ci_low:+.4f}, {judged.ci_high:+.4f}], n={judged.n}) "
            f"{'meets' if ok else 'misses'} the required gain of {settings.min_improvement:+.4f} with CI above 0"
        )
    reference = by_name.get(REFERENCE_AT_MIX) or by_name.get(REFERENCE)
    ref_row = next((r for r in reference.rows if r.metric == metric), None) if reference else None
    if reference is not None and ref_row is not None and ref_row.delta is not None:
        ok = ref_row.delta >= -settings.max_regression
        passed &= ok
        reasons.append(
            f"{reference.name}: {metric} {ref_row.champion:.4f} → {ref_row.candidate:.4f} "
            f"(Δ {ref_row.delta:+.4f}) {'within' if ok else 'beyond'} the allowed loss of "
            f"{settings.max_regression:.4f}"
        )
    return GateVerdict(passed=bool(passed), reasons=reasons)
