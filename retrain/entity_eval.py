"""Entity-level scores as seqeval computes them: per type, then micro, macro and weighted averages.

An entity counts as found only when its type and both of its boundaries match (the CoNLL evaluation's rule).
Both sides are read leniently and rewritten as IOB2 first (:func:`convert_tags`), so a model's stray
``I-TYPE`` after ``O`` is an entity start, as conlleval reads it, whatever scheme the labels came in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from insightloop.deploy import convert_tags
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
