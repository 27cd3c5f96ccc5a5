"""Entity-level scores as seqeval computes them: per type, then micro, macro and weighted averages.

An entity counts as found only when its type and both of its boundaries match (the CoNLL evaluation's rule).
Both sides are read leniently and rewritten as IOB2 first (:func:`convert_tags`), so a model's stray
``I-TYPE`` after ``O`` is an entity start, as conlleval reads it, whatever scheme the labels came in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from insightloop.deploy import EvaluationSection, MetricComparison, convert_tags
from insightloop.retrain.errors import RetrainPermanentError

AVERAGES = ("micro avg", "macro avg", "weighted avg")


class EntityScore(BaseModel):
    """Precision, recall and F1 of one entity type (or one average) and how many gold entities it covers."""

    model_config = ConfigDict(frozen=True)

    name: str
    precision: float
    recall: float
    f1: float
    support: int


class EntityReport(BaseModel):
    """The per-type table and its three averages."""

    model_config = ConfigDict(frozen=True)

    types: list[EntityScore]
    micro: EntityScore
    macro: EntityScore
    weighted: EntityScore

    def metrics(self, prefix: str) -> dict[str, float]:
        """The F1s as a version's metrics: ``<prefix>_entity_{micro,macro,weighted}_f1`` and ``<prefix>_f1_<TYPE>``."""
        return {
            f"{prefix}_entity_micro_f1": self.micro.f1,
            f"{prefix}_entity_macro_f1": self.macro.f1,
            f"{prefix}_entity_weighted_f1": self.weighted.f1,
            **{f"{prefix}_f1_{score.name}": score.f1 for score in self.types},
        }

    def table(self, digits: int = 4) -> str:
        """The report in seqeval's (and scikit-learn's) layout."""
        names = [s.name for s in self.types] + list(AVERAGES)
        width = max(len(n) for n in names)
        head = f"{'':>{width}}  {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"

        def row(score: EntityScore) -> str:
            return (
                f"{score.name:>{width}}  {score.precision:>9.{digits}f} {score.recall:>9.{digits}f} "
                f"{score.f1:>9.{digits}f} {score.support:>9}"
            )

        lines = [head, "", *(row(s) for s in self.types), "", row(self.micro), row(self.macro), row(self.weighted)]
        return "\n".join(lines)


def entity_report(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> EntityReport:
    """Entity-level scores of ``predicted`` against ``gold``, sentence by sentence (tags in either scheme)."""
    from seqeval.metrics import classification_report

    if len(gold) != len(predicted):
        raise RetrainPermanentError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    for index, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise RetrainPermanentError(f"sentence {index}: {len(g)} gold tags but {len(p)} predicted")
    gold_iob2 = [convert_tags(tags, "IOB2") for tags in gold]
    predicted_iob2 = [convert_tags(tags, "IOB2") for tags in predicted]
    with warnings.catch_warnings():  # a type never predicted has precision 0 by definition, not a surprise
        warnings.simplefilter("ignore")
        report = classification_report(gold_iob2, predicted_iob2, output_dict=True, zero_division=0)

    def score(name: str) -> EntityScore:
        values = report[name]
        return EntityScore(
            name=name,
            precision=float(values["precision"]),
            recall=float(values["recall"]),
            f1=float(values["f1-score"]),
            support=int(values["support"]),
        )

    types = [score(name) for name in sorted(report) if name not in AVERAGES]
    return EntityReport(types=types, micro=score("micro avg"), macro=score("macro avg"), weighted=score("weighted avg"))


def _counts(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], kind: str | None) -> NDArray[np.float64]:
    """(true positives, predicted, gold) entities per sentence (of one type, or all): what micro F1 sums."""
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for g, p in zip(gold, predicted, strict=True):
        gold_spans = {s for s in get_entities(convert_tags(g, "IOB2")) if kind is None or s[0] == kind}
        predicted_spans = {s for s in get_entities(convert_tags(p, "IOB2")) if kind is None or s[0] == kind}
        rows.append((len(gold_spans & predicted_spans), len(predicted_spans), len(gold_spans)))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _f1(sums: NDArray[np.float64]) -> NDArray[np.float64]:
    """Micro F1 of summed counts (last axis: tp, predicted, gold); 1 where neither side has an entity."""
    denominator = sums[..., 1] + sums[..., 2]
    return np.where(denominator > 0, 2 * sums[..., 0] / np.maximum(denominator, 1e-12), 1.0)


def compare_entities(
    name: str,
    gold: Sequence[Sequence[str]],
    champion: Sequence[Sequence[str]],
    candidate: Sequence[Sequence[str]],
    rounds: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> EvaluationSection:
    """Champion against candidate on labeled sentences: entity micro, macro and weighted F1 overall and F1 per
    type, each with a paired-bootstrap interval on the difference (sentences resampled, both models alike)."""
    n = len(gold)
    if n == 0:
        return EvaluationSection(name=name)
    types = sorted({kind for tags in gold for kind, _, _ in _spans_of(tags)})
    rng = np.random.default_rng(seed)
    sample = rng.integers(0, n, size=(rounds, n))
    tail = (1 - confidence) / 2
    per_type: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    for kind in types:
        a, b = _counts(gold, champion, kind), _counts(gold, candidate, kind)
        per_type[kind] = (a, b)

    def row(metric: str, a_value: float, b_value: float, deltas: NDArray[np.float64], support: int) -> MetricComparison:
        return MetricComparison(
            metric=metric,
            champion=a_value,
            candidate=b_value,
            delta=b_value - a_value,
            ci_low=float(np.quantile(deltas, tail)),
            ci_high=float(np.quantile(deltas, 1 - tail)),
            n=support,
        )

    a_all, b_all = _counts(gold, champion, None), _counts(gold, candidate, None)
    micro_deltas = _f1(b_all[sample].sum(axis=1)) - _f1(a_all[sample].sum(axis=1))
    rows = [row("entity_micro_f1", float(_f1(a_all.sum(axis=0))), float(_f1(b_all.sum(axis=0))), micro_deltas, n)]
    if types:
        # Macro and weighted averages over types, resampled with the same sentences.
        a_types = np.stack([_f1(per_type[k][0][sample].sum(axis=1)) for k in types])
        b_types = np.stack([_f1(per_type[k][1][sample].sum(axis=1)) for k in types])
        support = np.array([per_type[k][0][:, 2].sum() for k in types])
        weights = support / max(support.sum(), 1.0)
        a_point = np.array([float(_f1(per_type[k][0].sum(axis=0))) for k in types])
        b_point = np.array([float(_f1(per_type[k][1].sum(axis=0))) for k in types])
        rows.append(
            row("entity_macro_f1", float(a_point.mean()), float(b_point.mean()), (b_types - a_types).mean(axis=0), n)
        )
        rows.append(
            row(
                "entity_weighted_f1",
                float(weights @ a_point),
                float(weights @ b_point),
                weights @ (b_types - a_types),
                n,
            )
        )
    per_class = [
        row(f"f1 {kind}", float(a_point[i]), float(b_point[i]), b_types[i] - a_types[i], int(support[i]))
        for i, kind in enumerate(types)
    ]
    return EvaluationSection(name=name, rows=rows, per_class=per_class)


def _spans_of(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return [(kind, start, end) for kind, start, end in get_entities(convert_tags(tags, "IOB2"))]
