"""The slice key: parse/format round trips, malformed keys, the case rule, and membership tables."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from insightloop.detectors import (
    DetectorPermanentError,
    SliceKey,
    SliceKeyError,
    meta_value_str,
)

_numbers = st.integers(min_value=0, max_value=10**6)


@st.composite
def _length_keys(draw: st.DrawFn) -> SliceKey:
    lower = draw(_numbers)
    if draw(st.booleans()):
        return SliceKey.length(lower)
    return SliceKey.length(lower, lower + 1 + draw(_numbers))


_meta_names = st.text(min_size=1).filter(lambda s: "=" not in s)
_meta_keys = st.builds(lambda name, value: SliceKey.meta(name, value), _meta_names, st.text())
_keys = st.one_of(_length_keys(), _meta_keys, st.just(SliceKey.new_vocabulary()))


@given(_keys)
def test_parse_of_format_is_the_key(key: SliceKey) -> None:
    assert SliceKey.parse(key.format()) == key
    assert str(key) == key.format()


@given(st.text())
def test_a_text_that_parses_formats_back_to_itself(text: str) -> None:
    try:
        key = SliceKey.parse(text)
    except SliceKeyError:
        return
    assert key.format() == text


@pytest.mark.parametrize(
    ("text", "kind", "lower", "upper"),
    [
        ("length_tokens=0-31", "length", 0, 32),
        ("length_tokens=128-255", "length", 128, 256),
        ("length_tokens=7-7", "length", 7, 8),
        ("length_tokens=512+", "length", 512, None),
        ("meta.domain=kitchen", "meta", None, None),
        ("meta.a.b=x=y", "meta", None, None),  # a value may hold '=' and a name '.'
        ("meta.domain=", "meta", None, None),  # an empty value is a value
        ("new_vocabulary=high", "vocabulary", None, None),
    ],
)
def test_parse_reads_kind_and_bounds(text: str, kind: str, lower: int | None, upper: int | None) -> None:
    key = SliceKey.parse(text)
    assert (key.kind, key.lower, key.upper) == (kind, lower, upper)
    assert key.format() == text


def test_meta_key_splits_at_the_first_equals_sign() -> None:
    key = SliceKey.parse("meta.a.b=x=y")
    assert (key.field, key.meta_name, key.value) == ("meta.a.b", "a.b", "x=y")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "length_tokens",
        "length_tokens=",
        "length_tokens=12",
        "length_tokens=12-",
        "length_tokens=-12",
        "length_tokens=012+",
        "length_tokens=20-10",
        "length_tokens=1.5+",
        "length_tokens=١٢+",  # non-ASCII digits
        "length_tokens= 12+",
        "LENGTH_TOKENS=12+",  # case-sensitive: not a synonym
        "Meta.domain=kitchen",
        "meta.=kitchen",
        "meta=kitchen",
        "new_vocabulary=low",
        "new_vocabulary=HIGH",
        "domain=kitchen",
        "=x",
    ],
)
def test_malformed_keys_raise_a_clear_error(text: str) -> None:
    with pytest.raises(SliceKeyError, match="slice key"):
        SliceKey.parse(text)


def test_the_error_is_a_permanent_detector_error_and_a_value_error() -> None:
    with pytest.raises(DetectorPermanentError):
        SliceKey.parse("nope")
    with pytest.raises(ValueError, match="slice key"):
        SliceKey("meta.a=b", "c")  # a name with '=' could not be parsed back


def test_case_rule_is_exact() -> None:
    """Field and value compare case-sensitively: 'Kitchen' and 'kitchen' are two slices."""
    assert SliceKey.parse("meta.domain=Kitchen") != SliceKey.parse("meta.domain=kitchen")
    key = SliceKey.parse("meta.domain=kitchen")
    assert key.contains(meta={"domain": "kitchen"})
    assert not key.contains(meta={"domain": "Kitchen"})
    assert not key.contains(meta={"Domain": "kitchen"})


M = {"domain": "kitchen", "flag": True, "year": 2024.0, "score": 0.5, "n": 3, "none": None}


@pytest.mark.parametrize(
    ("text", "meta", "n_tokens", "new_vocabulary", "expected"),
    [
        # length buckets: [lo, hi] inclusive, 'lo+' open
        ("length_tokens=0-31", {}, 0, None, True),
        ("length_tokens=0-31", {}, 31, None, True),
        ("length_tokens=0-31", {}, 32, None, False),
        ("length_tokens=32-63", {}, 31, None, False),
        ("length_tokens=128+", {}, 127, None, False),
        ("length_tokens=128+", {}, 128, None, True),
        ("length_tokens=128+", {}, 10_000, None, True),
        ("length_tokens=128+", {}, None, None, False),  # unknown length: not shown to belong
        # meta values, compared as meta_value_str writes them
        ("meta.domain=kitchen", M, None, None, True),
        ("meta.domain=books", M, None, None, False),
        ("meta.domain=kitchen", {}, None, None, False),
        ("meta.domain=kitchen", None, None, None, False),
        ("meta.flag=true", M, None, None, True),
        ("meta.flag=True", M, None, None, False),
        ("meta.year=2024", M, None, None, True),
        ("meta.year=2024.0", M, None, None, False),
        ("meta.score=0.5", M, None, None, True),
        ("meta.n=3", M, None, None, True),
        ("meta.none=None", M, None, None, False),  # an absent value is in no slice
        # new vocabulary needs the reference's cut: known only where the caller passes it
        ("new_vocabulary=high", M, 50, True, True),
        ("new_vocabulary=high", M, 50, False, False),
        ("new_vocabulary=high", M, 50, None, False),
    ],
)
def test_membership(
    text: str,
    meta: dict[str, object] | None,
    n_tokens: int | None,
    new_vocabulary: bool | None,
    expected: bool,
) -> None:
    key = SliceKey.parse(text)
    assert key.contains(meta=meta, n_tokens=n_tokens, new_vocabulary=new_vocabulary) is expected


@given(_length_keys(), st.lists(st.integers(min_value=0, max_value=2 * 10**6), max_size=30))
def test_length_mask_agrees_with_contains(key: SliceKey, counts: list[int]) -> None:
    mask = key.mask(token_counts=np.array(counts, dtype=np.int64))
    assert mask.tolist() == [key.contains(n_tokens=n) for n in counts]


@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([1.0, 2.5]), st.text())))
def test_meta_mask_agrees_with_contains(values: list[object]) -> None:
    column = np.array([None if v is None else meta_value_str(v) for v in values] + [None], dtype=object)[:-1]
    for value in {meta_value_str(v) for v in values if v is not None}:
        key = SliceKey.meta("f", value)
        assert key.mask(meta_values=column).tolist() == [key.contains(meta={"f": v}) for v in values]


def test_mask_needs_the_column_its_kind_reads() -> None:
    with pytest.raises(DetectorPermanentError, match="token counts"):
        SliceKey.length(0, 32).mask(meta_values=np.array(["a"], dtype=object))
    flags = np.array([True, False])
    assert SliceKey.new_vocabulary().mask(new_vocabulary=flags).tolist() == [True, False]
