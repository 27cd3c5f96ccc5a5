"""A token classifier's labels at the edge: the three shapes a label event takes, what the store keeps, and
which labels the production model can use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from insightloop.daemon.events import EntityLabel, LabelEvent, entity_types_label
from insightloop.daemon.ingest import label_problem

TAGS = frozenset(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
CLASSES = frozenset(["positive", "negative"])


@pytest.mark.parametrize(
    ("payload", "stored"),
    [
        ({"id": "a", "label": "positive"}, "positive"),
        ({"id": "a", "tags": ["B-PER", "O"]}, '{"tags":["B-PER","O"]}'),
        (
            {"id": "a", "entities": [{"start": 0, "end": 5, "type": "LOC"}]},
            '{"entities":[{"start":0,"end":5,"type":"LOC"}]}',
        ),
    ],
)
def test_each_label_shape_is_stored_in_one_column(payload: dict[str, object], stored: str) -> None:
    event = LabelEvent.model_validate(payload)
    assert event.stored() == stored
    if "label" not in payload:
        assert EntityLabel.decode(stored) == event.entity_label


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "a"},
        {"id": "a", "label": "positive", "tags": ["O"]},
        {"id": "a", "tags": ["O"], "entities": []},
        {"id": "a", "tags": []},
        {"id": "a", "entities": [{"start": 3, "end": 3, "type": "LOC"}]},
        {"id": "a", "entities": [{"start": 0, "end": 2, "type": "NEW YORK"}]},
    ],
)
def test_a_label_has_exactly_one_usable_shape(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LabelEvent.model_validate(payload)


def test_a_class_label_is_not_an_entity_label() -> None:
    with pytest.raises(ValueError):
        EntityLabel.decode("positive")


# (label event, the production model's labels, its task, a word the problem names or None)
PROBLEMS = [
    ({"id": "a", "label": "positive"}, CLASSES, "text-classification", None),
    ({"id": "a", "label": "neutral"}, CLASSES, "text-classification", "neutral"),
    ({"id": "a", "tags": ["B-LOC"]}, CLASSES, "text-classification", "text classifier"),
    ({"id": "a", "tags": ["I-LOC", "O", "B-PER"]}, TAGS, "token-classification", None),
    ({"id": "a", "entities": [{"start": 0, "end": 4, "type": "PER"}]}, TAGS, "token-classification", None),
    ({"id": "a", "tags": ["B-ORG"]}, TAGS, "token-classification", "ORG"),
    ({"id": "a", "entities": [{"start": 0, "end": 4, "type": "FOOD"}]}, TAGS, "token-classification", "FOOD"),
    ({"id": "a", "tags": ["X-LOC"]}, TAGS, "token-classification", "X-LOC"),
    ({"id": "a", "label": "LOC"}, TAGS, "token-classification", "token classifier"),
    ({"id": "a", "tags": ["B-ORG"]}, None, "token-classification", None),  # no production model yet: kept
]


@pytest.mark.parametrize(("payload", "known", "task", "named"), PROBLEMS)
def test_labels_the_production_model_cannot_use_are_named(
    payload: dict[str, object], known: frozenset[str] | None, task: str, named: str | None
) -> None:
    problem = label_problem(LabelEvent.model_validate(payload), known, task)  # type: ignore[arg-type]
    if named is None:
        assert problem is None
    else:
        assert problem is not None and named in problem


@pytest.mark.parametrize(
    ("types", "label"), [([], "O"), (["PER"], "PER"), (["PER", "LOC", "PER"], "LOC+PER"), (["ORG", "MISC"], "MISC+ORG")]
)
def test_a_token_prediction_reads_as_its_entity_types(types: list[str], label: str) -> None:
    assert entity_types_label(types) == label
