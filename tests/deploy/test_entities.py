"""Entity spans and the tag schemes that write them: conversions lose nothing, bad sequences say where."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from insightloop.deploy import (
    EntitySpan,
    TagSequenceError,
    char_spans,
    convert_tags,
    spans_from_tags,
    split_words,
    tags_from_spans,
    word_offsets,
    word_spans,
)


def span(start: int, end: int, kind: str) -> EntitySpan:
    return EntitySpan(start=start, end=end, type=kind)


# (tags as read, the entities in them); both schemes and the lenient readings conlleval makes.
READINGS = [
    (["O", "O"], []),
    (["I-PER", "I-PER", "O", "I-LOC"], [span(0, 2, "PER"), span(3, 4, "LOC")]),  # IOB1
    (["B-PER", "I-PER", "O", "B-LOC"], [span(0, 2, "PER"), span(3, 4, "LOC")]),  # IOB2
    (["I-LOC", "B-LOC", "I-LOC"], [span(0, 1, "LOC"), span(1, 3, "LOC")]),  # IOB1: B- splits two LOCs
    (["B-LOC", "B-LOC"], [span(0, 1, "LOC"), span(1, 2, "LOC")]),  # IOB2: two one-word LOCs
    (["I-PER", "I-ORG"], [span(0, 1, "PER"), span(1, 2, "ORG")]),  # a type change starts an entity
    (["O", "I-MISC", "I-MISC"], [span(1, 3, "MISC")]),  # lenient IOB2: I- after O starts one
    (["B-GPE-LOC", "I-GPE-LOC"], [span(0, 2, "GPE-LOC")]),  # a type may hold a dash
]


@pytest.mark.parametrize(("tags", "entities"), READINGS)
def test_entities_are_read_from_either_scheme(tags: list[str], entities: list[EntitySpan]) -> None:
    assert spans_from_tags(tags) == entities


# (entities, words, IOB1, IOB2)
WRITINGS = [
    ([span(0, 2, "PER"), span(3, 4, "LOC")], 4, ["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    ([span(1, 3, "LOC"), span(0, 1, "LOC")], 3, ["I-LOC", "B-LOC", "I-LOC"], ["B-LOC", "B-LOC", "I-LOC"]),
    ([span(0, 1, "PER"), span(1, 2, "ORG")], 2, ["I-PER", "I-ORG"], ["B-PER", "B-ORG"]),
    ([], 2, ["O", "O"], ["O", "O"]),
]


@pytest.mark.parametrize(("entities", "length", "iob1", "iob2"), WRITINGS)
def test_entities_are_written_in_each_scheme(
    entities: list[EntitySpan], length: int, iob1: list[str], iob2: list[str]
) -> None:
    assert tags_from_spans(entities, length, "IOB1") == iob1
    assert tags_from_spans(entities, length, "IOB2") == iob2
    assert convert_tags(iob1, "IOB2") == iob2
    assert convert_tags(iob2, "IOB1") == iob1


@st.composite
def entity_lists(draw: st.DrawFn) -> tuple[list[EntitySpan], int]:
    """Non-overlapping entities over a sentence, same-type neighbours included."""
    length = draw(st.integers(min_value=1, max_value=30))
    spans: list[EntitySpan] = []
    position = 0
    while position < length:
        gap = draw(st.integers(min_value=0, max_value=2))
        start = position + gap
        if start >= length:
            break
        end = draw(st.integers(min_value=start + 1, max_value=min(length, start + 4)))
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            spans.append(EntitySpan(start=start, end=end, type=draw(st.sampled_from(["PER", "LOC", "ORG"]))))
        position = end
    return spans, length


@given(entity_lists())
def test_spans_iob1_and_iob2_convert_losslessly(case: tuple[list[EntitySpan], int]) -> None:
    spans, length = case
    iob1 = tags_from_spans(spans, length, "IOB1")
    iob2 = tags_from_spans(spans, length, "IOB2")
    assert spans_from_tags(iob1) == spans
    assert spans_from_tags(iob2) == spans
    assert convert_tags(iob1, "IOB2") == iob2
    assert convert_tags(iob2, "IOB1") == iob1
    assert convert_tags(convert_tags(iob1, "IOB2"), "IOB1") == iob1


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (["O", "PER"], "tag 1: 'PER'"),
        (["B-"], "tag 0: 'B-'"),
        (["X-LOC"], "tag 0: 'X-LOC'"),
        (["o"], "tag 0: 'o'"),
    ],
)
def test_a_tag_that_is_no_tag_is_refused_with_its_position(tags: list[str], message: str) -> None:
    with pytest.raises(TagSequenceError, match=message):
        spans_from_tags(tags)


def test_spans_that_overlap_or_run_past_the_sentence_are_refused() -> None:
    with pytest.raises(TagSequenceError, match="overlap"):
        tags_from_spans([span(0, 2, "PER"), span(1, 3, "LOC")], 3)
    with pytest.raises(TagSequenceError, match="past the 2 words"):
        tags_from_spans([span(1, 3, "PER")], 2)
    with pytest.raises(ValueError, match="ends after it starts"):
        span(2, 2, "PER")


def test_raw_text_is_split_into_words_with_offsets_and_entities_map_both_ways() -> None:
    text = "EU rejects German call to boycott British lamb. Peter O'Neil, co-founder of A.B., said so."
    words, offsets = split_words(text)
    assert words[:8] == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb"]
    assert "O'Neil" in words and "co-founder" in words and "." in words
    assert all(text[a:b] == w for w, (a, b) in zip(words, offsets, strict=True))
    entities = [span(0, 1, "ORG"), span(2, 3, "MISC"), span(9, 11, "PER")]
    in_chars = char_spans(entities, offsets)
    assert [text[s.start : s.end] for s in in_chars] == ["EU", "German", "Peter O'Neil"]
    assert word_spans(in_chars, offsets) == entities


def test_a_character_span_off_word_boundaries_is_refused() -> None:
    _, offsets = split_words("Peter Blackburn spoke")
    with pytest.raises(TagSequenceError, match="word boundaries"):
        word_spans([span(0, 3, "PER")], offsets)


def test_words_are_found_in_their_text_in_order() -> None:
    assert word_offsets("EU  rejects\tGerman", ["EU", "rejects", "German"]) == [(0, 2), (4, 11), (12, 18)]
    with pytest.raises(TagSequenceError, match="word 1 'German'"):
        word_offsets("EU rejects German", ["EU", "German"])
