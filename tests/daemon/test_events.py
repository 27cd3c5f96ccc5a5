"""Validation at the Kafka edge: each kind of bad message gets its reason, nothing else escapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insightloop.daemon.events import (
    RAW_KEEP_BYTES,
    RejectedMessage,
    RejectReason,
    dead_letter_for,
    parse_text_message,
)


def test_valid_message_with_optional_fields() -> None:
    event = parse_text_message(
        json.dumps(
            {"id": "a", "text": "hello", "ts": 1_700_000_000_000, "meta": {"domain": "books"}, "unknown": [1]}
        ).encode(),
        10_000,
    )
    assert event.id == "a" and event.text == "hello" and event.meta == {"domain": "books"}
    assert event.ts == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    rfc = parse_text_message(b'{"id": "b", "text": "x", "ts": "2024-01-02T03:04:05Z"}', 10_000)
    assert rfc.ts == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"x" * 101, RejectReason.TOO_LARGE),
        (b"\xc3\x28", RejectReason.NOT_UTF8),
        (b"{", RejectReason.NOT_JSON),
        (b'"just a string"', RejectReason.NOT_OBJECT),
        (b'{"id": "a"}', RejectReason.INVALID_FIELDS),
        (b'{"id": "a", "text": 5}', RejectReason.INVALID_FIELDS),
        (b'{"id": "a", "text": "t", "ts": "yesterday"}', RejectReason.INVALID_FIELDS),
        (b'{"id": "a", "text": "t", "meta": {"nested": {"no": 1}}}', RejectReason.INVALID_FIELDS),
        (None, RejectReason.NOT_JSON),
    ],
)
def test_each_bad_shape_has_its_reason(value: bytes | None, reason: RejectReason) -> None:
    with pytest.raises(RejectedMessage) as rejected:
        parse_text_message(value, 100)
    assert rejected.value.reason == reason
    assert rejected.value.detail


def test_dead_letter_keeps_a_truncated_printable_copy() -> None:
    value = b"\xff" + b"a" * 5000
    letter = dead_letter_for(value, "t", 1, 7, RejectReason.NOT_UTF8, "bad byte")
    assert letter.raw_bytes == len(value)
    assert letter.raw.startswith("\\xff")
    assert len(letter.raw) <= RAW_KEEP_BYTES + 3
    assert json.loads(letter.model_dump_json())["reason"] == "not_utf8"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_bytes_are_accepted_or_rejected_with_a_reason(value: bytes) -> None:
    try:
        event = parse_text_message(value, 1000)
    except RejectedMessage as rejected:
        assert isinstance(rejected.reason, RejectReason)
    else:
        assert event.id and event.text
