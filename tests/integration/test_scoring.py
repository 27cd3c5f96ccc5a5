"""Scoring over the real broker: every id predicted once, bad input dead-lettered, metrics true."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from insightloop.daemon.events import PredictionEvent
from insightloop.daemon.replay import replay
from tests.integration.daemon_process import InProcessDaemon, http_get
from tests.kafka_helpers import produce_raw, read_topic
from tests.synthetic import sentiment_rows, write_jsonl

pytestmark = pytest.mark.integration


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a /metrics page keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_thousand_texts_become_thousand_predictions(make_config, tmp_path: Path) -> None:
    config = make_config()
    rows = sentiment_rows(1000, seed=7, prefix="k")
    source = write_jsonl(tmp_path / "stream.jsonl", rows)
    with InProcessDaemon(config) as daemon:
        result = replay(config, source, labels_delay=10, progress=False)
        assert (result.texts, result.labels) == (1000, 1000)
        predictions = read_topic(
            config,
            config.topics.predictions,
            until=lambda got: len({p["id"] for p in got}) >= 1000,
            settle_s=1.0,
        )
        status, metrics_text = http_get(daemon.url + "/metrics")
    assert daemon.exit_code == 0
    ids = [p["id"] for p in predictions]
    assert set(ids) == {row["id"] for row in rows}
    assert len(ids) == 1000, "a text was scored twice in a clean run"
    version = (config.registry.path / "PRODUCTION").read_text().strip()
    for payload in predictions:
        event = PredictionEvent.model_validate(payload)
        assert event.model_version == version
        assert set(event.scores) == {"negative", "positive"}
        assert abs(sum(event.scores.values()) - 1.0) < 1e-4
        assert event.label == max(event.scores, key=lambda k: event.scores[k])
        assert len(event.embedding) == 8
    truth = {row["id"]: row["label"] for row in rows}
    accuracy = sum(p["label"] == truth[p["id"]] for p in predictions) / len(predictions)
    assert accuracy > 0.8, f"the trained tiny model should separate the synthetic classes, got {accuracy}"
    assert status == 200
    samples = metric_values(metrics_text)
    assert samples[("insightloop_texts_scored_total", ())] == 1000
    assert samples[("insightloop_batch_size_sum", ())] == 1000
    assert samples[("insightloop_model_version_info", (("version", version),))] == 1


MALFORMED: list[tuple[bytes | None, str]] = [
    (b"this is not json", "not_json"),
    (b'\xff\xfe{"id": "x"}', "not_utf8"),
    (b"[1, 2, 3]", "not_object"),
    (json.dumps({"text": "no id here"}).encode(), "invalid_fields"),
    (json.dumps({"id": "no-text"}).encode(), "invalid_fields"),
    (json.dumps({"id": 17, "text": "id of the wrong type"}).encode(), "invalid_fields"),
    (json.dumps({"id": "empty", "text": ""}).encode(), "invalid_fields"),
    (json.dumps({"id": "big", "text": "x" * 5000}).encode(), "too_large"),
    (None, "not_json"),
]


def test_malformed_messages_are_dead_lettered_and_scoring_goes_on(make_config) -> None:
    config = make_config(scorer={"max_message_bytes": 4096})
    good_before = [json.dumps({"id": f"good-{i}", "text": "great product"}).encode() for i in range(5)]
    good_after = [
        json.dumps({"id": f"after-{i}", "text": "awful broken item", "extra": {"x": 1}}).encode() for i in range(5)
    ]
    with InProcessDaemon(config) as daemon:
        produce_raw(
            config,
            config.topics.texts,
            good_before + [value for value, _ in MALFORMED] + good_after,
            key=b"raw",
        )
        letters = read_topic(
            config, config.topics.deadletter, until=lambda got: len(got) >= len(MALFORMED), settle_s=0.5
        )
        predictions = read_topic(config, config.topics.predictions, until=lambda got: len(got) >= 10)
        _, metrics_text = http_get(daemon.url + "/metrics")
    assert sorted(d["reason"] for d in letters) == sorted(reason for _, reason in MALFORMED)
    for letter in letters:
        assert letter["source_topic"] == config.topics.texts
        assert letter["error"], "a dead letter must say why"
        assert letter["offset"] >= 0
    big = next(d for d in letters if d["reason"] == "too_large")
    assert big["raw_bytes"] > 4096 and len(big["raw"]) <= 2048
    assert {p["id"] for p in predictions} == {f"good-{i}" for i in range(5)} | {f"after-{i}" for i in range(5)}
    samples = metric_values(metrics_text)
    for reason in {r for _, r in MALFORMED}:
        expected = sum(1 for _, r in MALFORMED if r == reason)
        assert samples[("insightloop_dead_letters_total", (("reason", reason),))] == expected
    assert samples[("insightloop_texts_scored_total", ())] == 10


def test_a_message_whose_dead_letter_would_be_huge_does_not_stop_scoring(make_config) -> None:
    """Issue 17, finding 1: a 269 KB text message with 20,000 invalid meta fields made a 3.98 MB dead letter that
    the producer refused (MessageSizeTooLargeError); the scorer retried it for ever, re-sending the predictions
    batched with it, and the 50 texts after it were never predicted."""
    config = make_config(scorer={"max_batch_size": 64, "max_wait_ms": 200})
    meta = {f"k{i}": [] for i in range(20_000)}
    poison = json.dumps({"id": "p", "text": "hi", "meta": meta}).encode()
    assert 260_000 < len(poison) < config.scorer.max_message_bytes
    before = [json.dumps({"id": f"before-{i}", "text": "great product"}).encode() for i in range(10)]
    after = [json.dumps({"id": f"after-{i}", "text": "awful broken item"}).encode() for i in range(50)]
    wanted = {f"before-{i}" for i in range(10)} | {f"after-{i}" for i in range(50)}
    with InProcessDaemon(config, role="scorer") as daemon:
        produce_raw(config, config.topics.texts, [*before, poison, *after], key=b"one-partition")
        predictions = read_topic(
            config,
            config.topics.predictions,
            until=lambda got: {p["id"] for p in got} >= wanted,
            timeout_s=60,
            settle_s=2,
        )
        letters = read_topic(config, config.topics.deadletter, until=lambda got: len(got) >= 1, settle_s=1)
        status, _ = http_get(daemon.url + "/readyz")
    assert daemon.exit_code == 0 and status == 200
    counts = Counter(p["id"] for p in predictions)
    assert set(counts) == wanted, f"{len(wanted - set(counts))} texts after the poison message got no prediction"
    assert all(n == 1 for n in counts.values()), f"predictions sent more than once: {counts.most_common(3)}"
    assert len(letters) == 1, letters
    (letter,) = letters
    size = len(json.dumps(letter).encode())
    assert letter["reason"] == "invalid_fields" and letter["offset"] == 10
    assert size <= config.scorer.max_dead_letter_bytes, f"dead letter of {size} bytes"
    assert len(letter["error"]) <= 1000 and "more invalid field" in letter["error"]
    assert letter["raw_bytes"] == len(poison) and len(letter["raw"]) <= 2048
