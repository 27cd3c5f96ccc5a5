"""Labels for ids never seen wait in a bounded table of their own; labels outside the model's set are dead-lettered."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.config import Config
from insightloop.daemon.ingest import Ingest
from insightloop.daemon.kafka import common_settings, ensure_topics, make_producer
from insightloop.daemon.metrics import Metrics, observers_of
from insightloop.daemon.state import LabelRow, PredictionRow, StateStore, TextRow
from tests.kafka_helpers import produce_raw, read_topic

DAY = 86400.0


def scored(store: StateStore, ids: list[str], at: float) -> None:
    store.add_texts([TextRow(i, f"text of {i}", None, {}) for i in ids], at)
    scores = {"positive": 0.9, "negative": 0.1}
    store.add_predictions([PredictionRow(i, "v0001", "positive", scores, [0.0] * 8, 4) for i in ids], at)


@pytest.fixture
def store(state_store: StateStore) -> StateStore:
    """The store on each backend (SQLite, PostgreSQL): tests/conftest.py's state_store."""
    return state_store


def test_a_thousand_labels_for_unseen_ids_evict_no_scored_record(store: StateStore) -> None:
    now = time.time()
    kept = [f"scored-{n:04d}" for n in range(1000)]
    scored(store, kept, now - 60)
    store.add_labels([LabelRow(f"unseen-{n:04d}", "positive") for n in range(1000)], now)
    assert store.apply_retention(7 * DAY, 1000, now) == 0
    assert {r.id for r in store.recent_records(5000)} == set(kept)
    assert store.count_records() == 1000 and store.count_waiting_labels() == 1000


def test_a_waiting_label_joins_its_text_when_it_arrives(store: StateStore) -> None:
    now = time.time()
    store.add_labels([LabelRow("late-text", "negative")], now)
    assert store.count_records() == 0
    scored(store, ["late-text"], now + 1)
    [record] = store.recent_records(10)
    assert (record.id, record.label) == ("late-text", "negative")
    assert store.count_waiting_labels() == 0


def test_waiting_labels_are_bounded_by_count_and_age(store: StateStore) -> None:
    now = time.time()
    store.add_labels([LabelRow(f"old-{n}", "positive") for n in range(5)], now - 2 * DAY, 100, DAY)
    assert store.count_waiting_labels() == 5
    store.add_labels([LabelRow(f"new-{n}", "positive") for n in range(30)], now, 20, DAY)
    assert store.count_waiting_labels() == 20  # the old ones aged out, then only the newest 20 stayed
    scored(store, ["old-1", "new-29"], now)
    labels = {r.id: r.label for r in store.recent_records(10)}
    assert labels == {"old-1": None, "new-29": "positive"}


def consume_records(config: Config, topic: str, count: int, timeout_s: float = 30.0) -> list[Any]:
    """Raw consumer records of ``topic`` from the beginning, as the monitor's consumer hands them over."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**common_settings(config.kafka), enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        found = None
        while not found and time.monotonic() < deadline:
            found = consumer.partitions_for_topic(topic)
            time.sleep(0.1)
        assert found, f"topic {topic} does not exist"
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


def test_labels_outside_the_model_set_and_unreadable_ones_go_to_the_dead_letter_topic(
    make_config: Any, tmp_path: Path
) -> None:
    config = make_config(input={"label_id": "fb.ref", "label": "fb.verdict"})
    ensure_topics(config.kafka, config.topics.all())
    produce_raw(
        config,
        config.topics.labels,
        [
            json.dumps({"fb": {"ref": "a", "verdict": "positive"}}).encode(),
            json.dumps({"fb": {"ref": "b", "verdict": "sarcastic"}}).encode(),
            json.dumps({"fb": {"ref": "c"}}).encode(),
        ],
    )
    records = consume_records(config, config.topics.labels, 3)
    assert len(records) == 3
    store = StateStore(tmp_path / "ingest-state")
    ingest = Ingest(config, store, observers_of(Metrics()))
    ingest.producer = make_producer(config.kafka)
    try:
        ingest(records)
    finally:
        ingest.producer.close(timeout=10)
        store.close()
    letters = read_topic(config, config.topics.deadletter, lambda m: len(m) >= 2, settle_s=1.0)
    errors = sorted(letter["error"] for letter in letters)
    assert len(errors) == 2, errors
    assert "input.label: path 'fb.verdict' not found" in errors[0]
    assert errors[1].startswith("unknown label: 'sarcastic' is not in the production model's label set")
    reopened = StateStore(tmp_path / "ingest-state")
    try:
        assert reopened.count_waiting_labels() == 1  # 'a' waits for its text
    finally:
        reopened.close()
