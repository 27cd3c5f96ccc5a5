"""Reading and writing topics directly in tests (no consumer group, from the beginning)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from insightloop.daemon.config import Config
from insightloop.daemon.kafka import common_settings, make_producer


def read_topic(
    config: Config,
    topic: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 60.0,
    settle_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Read every JSON message of ``topic`` until ``until(messages)`` holds (then ``settle_s`` more)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **common_settings(config.kafka), enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            found = consumer.partitions_for_topic(topic)
            partitions = [TopicPartition(topic, p) for p in sorted(found)] if found else None
            if partitions is None:
                time.sleep(0.2)
        assert partitions, f"topic {topic} does not exist"
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        messages: list[dict[str, Any]] = []
        satisfied_at: float | None = None
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                messages.extend(json.loads(record.value) for record in batch)
            if satisfied_at is None and until(messages):
                satisfied_at = time.monotonic()
            if satisfied_at is not None and time.monotonic() - satisfied_at >= settle_s:
                return messages
        return messages
    finally:
        consumer.close(autocommit=False)


def produce_raw(config: Config, topic: str, values: list[bytes | None], key: bytes | None = None) -> None:
    """Produce raw message values and wait for the broker's acknowledgements."""
    producer = make_producer(config.kafka)
    try:
        futures = [producer.send(topic, key=key, value=value) for value in values]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)
