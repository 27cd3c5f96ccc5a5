"""Replay a JSON Lines file into the texts topic, with its labels following N records later."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from insightloop.daemon.config import Config
from insightloop.daemon.errors import UsageError
from insightloop.daemon.events import LabelEvent, TextEvent, utc_now
from insightloop.daemon.kafka import make_producer
from insightloop.retrain import iter_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """How many texts and labels were produced (and acknowledged)."""

    texts: int
    labels: int
    seconds: float


def replay(
    config: Config,
    path: Path,
    rate: float | None = None,
    labels_delay: int = 0,
    limit: int | None = None,
    progress: bool = True,
    skip: int = 0,
) -> ReplayResult:
    """Produce ``path`` into the texts topic; ids default to ``<file stem>-<row>``."""
    if rate is not None and rate <= 0:
        raise UsageError("rate must be positive")
    if labels_delay < 0:
        raise UsageError("labels_delay must be zero or more")
    producer = make_producer(config.kafka)
    pending_labels: deque[tuple[int, LabelEvent]] = deque()
    futures: list[Any] = []
    texts = labels = 0
    started = time.monotonic()
    bar = tqdm(desc="replay", unit="text", disable=not progress)

    def send(topic: str, key: str, payload: str) -> None:
        futures.append(producer.send(topic, key=key.encode(), value=payload.encode("utf-8")))
        if len(futures) >= 1000:
            _wait_for_acks(producer, futures)

    try:
        for row, example in enumerate(iter_jsonl(path)):
            if row < skip:
                continue
            if limit is not None and texts >= limit:
                break
            if rate is not None:
                due = started + texts / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            text_id = example.id or f"{path.stem}-{row}"
            event = TextEvent(
                id=text_id,
                text=example.text,
                ts=utc_now(),
                meta={k: v for k, v in example.meta.items() if not isinstance(v, dict | list)},
            )
            send(config.topics.texts, text_id, event.model_dump_json())
            texts += 1
            bar.update(1)
            if example.label is not None:
                pending_labels.append((texts + labels_delay, LabelEvent(id=text_id, label=example.label)))
            while pending_labels and pending_labels[0][0] <= texts:
                _, label = pending_labels.popleft()
                send(config.topics.labels, label.id, label.model_dump_json())
                labels += 1
        while pending_labels:
            _, label = pending_labels.popleft()
            send(config.topics.labels, label.id, label.model_dump_json())
            labels += 1
        _wait_for_acks(producer, futures)
    finally:
        bar.close()
        producer.close(timeout=10)
    seconds = time.monotonic() - started
    log.info("replayed %d texts and %d labels in %.1f s", texts, labels, seconds)
    return ReplayResult(texts, labels, seconds)


def _wait_for_acks(producer: Any, futures: list[Any]) -> None:
    producer.flush(timeout=60)
    for future in futures:
        future.get(timeout=60)
    futures.clear()
