"""Entity-level scores: a found entity is one whose type and both boundaries match."""

from __future__ import annotations

import random

import pytest

from insightloop.deploy import EntitySpan, spans_from_tags, tags_from_spans
from insightloop.retrain import entity_report, read_conll
from insightloop.retrain.errors import RetrainPermanentError

from .test_ner_data import CONLL, needs_conll

# (gold, predicted, per type {type: (precision, recall, support)}, micro (precision, recall))
CASES = [
    # one right, one with the wrong type, one boundary off by a word: only the first counts
    (
        [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG"]],
        [["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG", "O"]],
        {"LOC": (0.0, 0.0, 1), "ORG": (0.0, 0.0, 1), "PER": (1.0, 1.0, 1)},
        (1 / 3, 1 / 3),
    ),
    # IOB1 gold against IOB2 predictions of the same entities: perfect
    (
        [["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]],
        [["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]],
        {"LOC": (1.0, 1.0, 2), "PER": (1.0, 1.0, 1)},
        (1.0, 1.0),
    ),
    # a stray I- after O is an entity start, as conlleval reads it
    ([["O", "B-MISC", "I-MISC"]], [["O", "I-MISC", "I-MISC"]], {"MISC": (1.0, 1.0, 1)}, (1.0, 1.0)),
    # nothing predicted
    ([["B-PER", "O"], ["B-LOC"]], [["O", "O"], ["O"]], {"LOC": (0.0, 0.0, 1), "PER": (0.0, 0.0, 1)}, (0.0, 0.0)),
]


@pytest.mark.parametrize(("gold", "predicted", "per_type", "micro"), CASES)
def test_entities_count_only_when_type_and_boundaries_match(
    gold: list[list[str]],
    predicted: list[list[str]],
    per_type: dict[str, tuple[float, float, int]],
    micro: tuple[float, float],
) -> None:
    report = entity_report(gold, predicted)
    assert [s.name for s in report.types] == sorted(per_type)
    for score in report.types:
        precision, recall, support = per_type[score.name]
        assert (score.precision, score.recall, score.support) == (
            pytest.approx(precision),
            pytest.approx(recall),
            support,
        )
    assert (report.micro.precision, report.micro.recall) == pytest.approx(micro)
    table = report.table()
    assert table.splitlines()[0].split() == ["precision", "recall", "f1-score", "support"]
    assert [line.split()[0] for line in table.splitlines()[-3:]] == ["micro", "macro", "weighted"]


def test_sentences_must_pair_up() -> None:
    with pytest.raises(RetrainPermanentError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_report([["O", "O"]], [["O"]])
    with pytest.raises(RetrainPermanentError, match="1 gold sentences but 2 predicted"):
        entity_report([["O"]], [["O"], ["O"]])


@needs_conll
def test_on_the_development_file_the_scores_are_the_exact_match_counts() -> None:
    """Damaged predictions of eng.testa (a third of the entities dropped, retyped or cut short), scored two
    ways: by the report, and by counting exact (sentence, start, end, type) matches directly."""
    sentences = read_conll(CONLL / "eng.testa")
    rng = random.Random(7)
    predicted: list[list[str]] = []
    for sentence in sentences:
        kept: list[EntitySpan] = []
        for entity in sentence.entities:
            roll = rng.random()
            if roll < 0.1:
                continue
            if roll < 0.2:
                kept.append(entity.model_copy(update={"type": "ORG" if entity.type != "ORG" else "PER"}))
            elif roll < 0.3 and entity.end - entity.start > 1:
                kept.append(entity.model_copy(update={"end": entity.end - 1}))
            else:
                kept.append(entity)
        predicted.append(tags_from_spans(kept, len(sentence.words), "IOB1"))
    gold_set = {(i, e.start, e.end, e.type) for i, s in enumerate(sentences) for e in s.entities}
    predicted_set = {(i, e.start, e.end, e.type) for i, tags in enumerate(predicted) for e in spans_from_tags(tags)}
    hits = len(gold_set & predicted_set)
    report = entity_report([s.tags for s in sentences], predicted)
    assert report.micro.support == len(gold_set) == 5942
    assert report.micro.precision == pytest.approx(hits / len(predicted_set))
    assert report.micro.recall == pytest.approx(hits / len(gold_set))
    for score in report.types:
        gold_n = sum(1 for g in gold_set if g[3] == score.name)
        hit_n = sum(1 for g in gold_set & predicted_set if g[3] == score.name)
        assert (score.support, score.recall) == (gold_n, pytest.approx(hit_n / gold_n))
    assert 0.6 < report.micro.f1 < 0.8  # about 70% of entities survive intact
    assert entity_report([s.tags for s in sentences], [s.tags for s in sentences]).micro.f1 == 1.0
