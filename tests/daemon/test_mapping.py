"""The input mapping: paths, ids from keys, meta by path, timestamps, and the errors that name the failed path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.config import ConfigError, InputConfig, load_config
from insightloop.daemon.events import RejectedMessage, RejectReason
from insightloop.daemon.mapping import FieldPath, MappingError, MessageMapping
from insightloop.retrain import DataFileError

SHOP = MessageMapping.from_config(
    InputConfig(
        text="event.body",
        id="/event/uid",
        id_from_key=True,
        ts="event.at",
        ts_format="epoch_s",
        meta_object=None,
        meta=["ctx.shop", "/ctx/lang"],
        label_id="fb.ref",
        label="/fb/verdict",
    )
)


def raw(payload: Any) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("text", {"text": "hi"}, "hi"),
        ("payload.body", {"payload": {"body": "b"}}, "b"),
        ("/data/text", {"data": {"text": "t"}}, "t"),
        ("/a~1b/c~0d", {"a/b": {"c~d": 1}}, 1),
        ("items.1.text", {"items": [{"text": "x"}, {"text": "y"}]}, "y"),
        ("/items/0", {"items": ["first"]}, "first"),
    ],
)
def test_paths_find_values(path: str, value: Any, expected: Any) -> None:
    assert FieldPath.parse(path).find(value) == expected


@pytest.mark.parametrize("path", ["", "a..b", "/", "/a//b", ".a"])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(MappingError):
        FieldPath.parse(path)


def test_bad_paths_in_the_config_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"input\.meta"):
        load_config(overrides={"input": {"meta": ["ctx..shop"]}})
    with pytest.raises(ConfigError, match=r"input\.ts_format"):
        load_config(overrides={"input": {"ts_format": "yesterday"}})


def test_default_mapping_is_the_identity_and_passes_bytes_through() -> None:
    mapping = MessageMapping.from_config(InputConfig())
    assert mapping.identity
    value = b'{"id": "a", "text": "t", "meta": {"x": 1}}'
    assert mapping.canonical_text(value, b"k", 10_000) is value
    assert mapping.parse_text(value, None, 10_000).meta == {"x": 1}


def test_a_nested_message_becomes_a_text_event() -> None:
    event = SHOP.parse_text(
        raw({"event": {"uid": 7, "body": "great kettle", "at": 1_700_000_000}, "ctx": {"shop": "k1", "lang": "en"}}),
        None,
        10_000,
    )
    assert (event.id, event.text) == ("7", "great kettle")
    assert event.meta == {"ctx.shop": "k1", "ctx.lang": "en"}
    assert event.ts is not None and int(event.ts.timestamp()) == 1_700_000_000


def test_the_id_comes_from_the_key_when_the_value_has_none() -> None:
    event = SHOP.parse_text(raw({"event": {"body": "no id here"}}), b"key-9", 10_000)
    assert event.id == "key-9"


@pytest.mark.parametrize(
    ("value", "key", "reason", "detail"),
    [
        (raw({"event": {"uid": "1"}}), None, RejectReason.INVALID_FIELDS, "input.text: path 'event.body' not found"),
        (raw({"event": {"uid": "1", "body": 3}}), None, RejectReason.INVALID_FIELDS, "'event.body' must be a string"),
        (raw({"event": {"body": "x"}}), None, RejectReason.INVALID_FIELDS, "input.id: path '/event/uid' not found"),
        (raw({"event": {"uid": [1], "body": "x"}}), None, RejectReason.INVALID_FIELDS, "'/event/uid' must be"),
        (
            raw({"event": {"uid": "1", "body": "x", "at": "noon"}}),
            None,
            RejectReason.INVALID_FIELDS,
            "input.ts: path 'event.at' not a epoch_s timestamp",
        ),
        (
            raw({"event": {"uid": "1", "body": "x"}, "ctx": {"shop": {"nested": 1}}}),
            None,
            RejectReason.INVALID_FIELDS,
            "input.meta: path 'ctx.shop' must be a scalar",
        ),
        (raw({"event": {"uid": "1", "body": ""}}), None, RejectReason.INVALID_FIELDS, "text"),
        (b"[1, 2]", None, RejectReason.NOT_OBJECT, "JSON object"),
        (b"{not json", None, RejectReason.NOT_JSON, ""),
        (b"\xff\xfe", None, RejectReason.NOT_UTF8, ""),
        (None, None, RejectReason.NOT_JSON, "empty"),
        (b"{" + b" " * 200 + b"}", None, RejectReason.TOO_LARGE, "exceeds"),
    ],
)
def test_unreadable_messages_are_rejected_with_the_failed_path(
    value: bytes | None, key: bytes | None, reason: RejectReason, detail: str
) -> None:
    with pytest.raises(RejectedMessage) as caught:
        SHOP.parse_text(value, key, 128)
    assert caught.value.reason == reason
    assert detail in caught.value.detail


@pytest.mark.parametrize(
    ("ts_format", "value", "epoch_s"),
    [
        ("auto", "2024-01-02T03:04:05Z", 1704164645),
        ("auto", 1704164645000, 1704164645),
        ("rfc3339", "2024-01-02T03:04:05+00:00", 1704164645),
        ("epoch_ms", "1704164645000", 1704164645),
        ("epoch_s", 1704164645, 1704164645),
        ("%d/%m/%Y %H:%M:%S", "02/01/2024 03:04:05", 1704164645),
    ],
)
def test_timestamp_formats(ts_format: str, value: Any, epoch_s: int) -> None:
    mapping = MessageMapping.from_config(InputConfig(text="body", ts="when", ts_format=ts_format))
    event = mapping.parse_text(raw({"id": "a", "body": "x", "when": value}), None, 10_000)
    assert event.ts is not None and int(event.ts.timestamp()) == epoch_s


def test_labels_under_another_shape() -> None:
    label = SHOP.parse_label(raw({"fb": {"ref": "7", "verdict": "neg"}}), None, 10_000)
    assert (label.id, label.label) == ("7", "neg")
    assert SHOP.parse_label(raw({"fb": {"verdict": "pos"}}), b"k", 10_000).id == "k"
    with pytest.raises(RejectedMessage, match=r"input\.label: path '/fb/verdict' not found"):
        SHOP.parse_label(raw({"fb": {"ref": "7"}}), None, 10_000)
    with pytest.raises(RejectedMessage, match="invalid_fields: a label message must be a JSON object"):
        SHOP.parse_label(b'"neg"', None, 10_000)
    round_trip = SHOP.parse_label(SHOP.label_message("9", "pos"), None, 10_000)
    assert (round_trip.id, round_trip.label) == ("9", "pos")


def test_files_read_through_the_mapping(tmp_path: Path) -> None:
    rows = [
        {"event": {"uid": "a", "body": "one"}, "ctx": {"shop": "s1"}, "fb": {"verdict": "pos"}},
        {"event": {"body": "two"}, "ctx": {"shop": "s2"}},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    examples = SHOP.read_examples(path)
    assert [(e.id, e.text, e.label, e.meta) for e in examples] == [
        ("a", "one", "pos", {"ctx.shop": "s1"}),
        (None, "two", None, {"ctx.shop": "s2"}),
    ]
    with pytest.raises(DataFileError, match=r"rows.jsonl:2: input.label: path '/fb/verdict' not found"):
        SHOP.read_examples(path, require_label=True)
    path.write_text(json.dumps({"event": {"uid": "x"}}) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"rows.jsonl:1: input.text: path 'event.body' not found"):
        SHOP.read_examples(path)


def shop_rows(n: int) -> list[dict[str, Any]]:
    from tests.synthetic import sentiment_rows

    return [
        {"event": {"uid": r["id"], "body": r["text"]}, "ctx": {"shop": f"s{i % 2}"}, "fb": {"verdict": r["label"]}}
        for i, r in enumerate(sentiment_rows(n, seed=11))
    ]


SHOP_INPUT = {"text": "event.body", "id": "event.uid", "meta_object": None, "meta": ["ctx.shop"]}
SHOP_LABELS = {"label_id": "fb.ref", "label": "fb.verdict"}


def test_check_reads_both_files_through_the_mapping(trained_registry: Path, tmp_path: Path, capsys: Any) -> None:
    from insightloop.daemon.cli import main
    from insightloop.deploy import Registry

    config = tmp_path / "insightloop.yaml"
    config.write_text(json.dumps({"input": {**SHOP_INPUT, "label": "fb.verdict"}}), encoding="utf-8")
    rows = shop_rows(160)
    for name, part in (("ref", rows[:80]), ("cur", rows[80:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    version = Registry(trained_registry).production()
    assert version is not None
    argv = ["check", "--reference", str(tmp_path / "ref.jsonl"), "--current", str(tmp_path / "cur.jsonl")]
    argv += ["--model", str(trained_registry / version), "--json", "--rounds", "10", "--state-dir", str(tmp_path)]
    assert main([*argv, "--config", str(config)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"insights", "reports"}
    assert main(argv) != 0  # without the mapping the rows have no 'text'
    assert "'text' must be a non-empty string" in capsys.readouterr().err


def test_replay_sends_rows_in_the_users_shape_and_labels_in_theirs(make_config: Any, tmp_path: Path) -> None:
    from insightloop.daemon.kafka import ensure_topics
    from insightloop.daemon.replay import replay
    from tests.kafka_helpers import read_topic

    config = make_config(input={**SHOP_INPUT, **SHOP_LABELS})
    ensure_topics(config.kafka, config.topics.all())
    rows = shop_rows(6)
    del rows[0]["event"]["uid"]  # no id: replay names it <stem>-<row> at the id path
    path = tmp_path / "shop.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = replay(config, path, progress=False)
    assert (result.texts, result.labels) == (6, 6)
    mapping = MessageMapping.from_config(config.input)
    texts = read_topic(config, config.topics.texts, lambda m: len(m) >= 6)
    labels = read_topic(config, config.topics.labels, lambda m: len(m) >= 6)
    events = {e.id: e for e in (mapping.parse_text(raw(m), None, 10_000) for m in texts)}
    assert "shop-0" in events and events["shop-0"].meta == {"ctx.shop": "s0"}
    assert all("event" in m for m in texts), "rows keep the user's shape"
    parsed = {lab.id: lab.label for lab in (mapping.parse_label(raw(m), None, 10_000) for m in labels)}
    assert parsed == {r["event"].get("uid", "shop-0"): r["fb"]["verdict"] for r in rows}
