"""Word-level tags from sub-tokens: the first sub-token of each word trains and scores it."""

from __future__ import annotations

import pytest

from insightloop.deploy import IGNORED_LABEL, aligned_labels, first_subtokens

X = IGNORED_LABEL  # a sub-token the loss skips

# (word_ids of a fast tokenizer, word labels, sub-token labels)
ALIGNMENTS = [
    ([None, 0, 1, None], [2, 0], [X, 2, 0, X]),
    ([None, 0, 0, 0, 1, None], [1, 0], [X, 1, X, X, 0, X]),  # a word of three pieces: only its first counts
    ([None, 0, 1, 1, None, None], [0, 3], [X, 0, 3, X, X, X]),  # padding after the sentence
    ([None, 0, None], [4, 1], [X, 4, X]),  # the second word was cut by max_length: no position carries it
]


@pytest.mark.parametrize(("word_ids", "word_labels", "expected"), ALIGNMENTS)
def test_each_word_trains_its_first_subtoken(
    word_ids: list[int | None], word_labels: list[int], expected: list[int]
) -> None:
    assert aligned_labels(word_ids, word_labels) == expected
    assert sorted(first_subtokens(word_ids)) == sorted({w for w in word_ids if w is not None})


def test_the_packaged_tokenizer_maps_subtokens_back_to_words() -> None:
    from transformers import AutoTokenizer

    from insightloop.retrain import default_base_model

    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    words = ["Kournikova", "visited", "Nijmegen", "."]
    encoded = tokenizer([words], is_split_into_words=True)
    word_ids = encoded.word_ids(0)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    first = first_subtokens(word_ids)
    assert [pieces[first[i]] for i in range(len(words))][1] == "visited"
    assert word_ids.count(0) == 4 and word_ids.count(2) == 4  # "ko ##urn ##iko ##va", "ni ##jm ##ege ##n"
    labels = aligned_labels(word_ids, [1, 0, 2, 0])
    assert [label for label in labels if label != IGNORED_LABEL] == [1, 0, 2, 0]
