"""Replay a JSON Lines file (or tagged sentences) into the texts topic, with its labels following N records later.

Rows are read through the ``input`` mapping. With the default mapping each row becomes insightloop's own
text event; with another, the row is sent in the user's own shape (the daemon maps it as it maps live
traffic) and each label in the user's label shape.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from insightloop.daemon.config import Config
from insightloop.daemon.errors import UsageError
from insightloop.daemon.events import LabelEvent, TextEvent, utc_now
from insightloop.daemon.kafka import make_producer
from insightloop.daemon.mapping import MessageMapping
from insightloop.deploy import TOKEN_TASK, Registry, Task
from insightloop.retrain import read_tagged, sentence_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """How many texts and labels were produced (and acknowledged)."""

    texts: int
    labels: int
    seconds: float


def _mapped_rows(mapping: MessageMapping, path: Path) -> Iterator[tuple[str, str, LabelEvent | None]]:
    """(id, text message, label) of each row of a text classifier's file, through the ``input`` mapping."""
    for row, (example, raw) in enumerate(mapping.iter_examples(path)):
        text_id = example.id or f"{path.stem}-{row}"
        if mapping.identity:
            event = TextEvent(
                id=text_id,
                text=example.text,
                ts=utc_now(),
                meta={k: v for k, v in example.meta.items() if not isinstance(v, dict | list)},
            )
            payload = event.model_dump_json()
        else:  # the user's own shape, keyed by its id (the key is the id where the row has none)
            payload = json.dumps(mapping.with_id(raw, text_id), ensure_ascii=False)
        label = LabelEvent(id=text_id, label=example.label) if example.label is not None else None
        yield text_id, payload, label


def _tagged_rows(path: Path) -> Iterator[tuple[str, str, LabelEvent | None]]:
    """(id, text message, label) of each sentence of a CoNLL or NER JSON Lines file: the raw text as production
    sends it, and its entities as character spans of that text."""
    for sentence in read_tagged(path):
        text, spans = sentence_text(sentence)
        event = TextEvent(id=sentence.id, text=text, ts=utc_now())
        label = LabelEvent(id=sentence.id, entities=spans) if sentence.tags else None
        yield sentence.id, event.model_dump_json(), label


def production_task(config: Config) -> Task:
    """The task of the registry's production version: what the daemon serves, so what a replay feeds it
    (text-classification when there is no registry or no production version yet)."""
    root = config.registry.path
    version = Registry(root).production() if root.is_dir() else None
    return Registry(root).artifact_settings(version).task if version else "text-classification"


def replay(
    config: Config,
    path: Path,
    rate: float | None = None,
    labels_delay: int = 0,
    limit: int | None = None,
    progress: bool = True,
    skip: int = 0,
    task: Task = "text-classification",
) -> ReplayResult:
    """Produce ``path`` into the texts topic; ids default to ``<file stem>-<row>``.

    With ``task="token-classification"`` the file is CoNLL or NER JSON Lines (the default ``input`` mapping
    only): each sentence goes out as raw text, its label as character ``entities``.
    """
    if rate is not None and rate <= 0:
        raise UsageError("rate must be positive")
    if labels_delay < 0:
        raise UsageError("labels_delay must be zero or more")
    mapping = MessageMapping.from_config(config.input)
    if task == TOKEN_TASK and not mapping.identity:
        raise UsageError("replaying tagged sentences needs the default input mapping (insightloop's own events)")
    rows = _tagged_rows(path) if task == TOKEN_TASK else _mapped_rows(mapping, path)
    producer = make_producer(config.kafka)
    pending_labels: deque[tuple[int, LabelEvent]] = deque()
    futures: list[Any] = []
    texts = labels = 0
    started = time.monotonic()
    bar = tqdm(desc="replay", unit="text", disable=not progress)

    def send(topic: str, key: str, payload: str | bytes) -> None:
        value = payload.encode("utf-8") if isinstance(payload, str) else payload
        futures.append(producer.send(topic, key=key.encode(), value=value))
        if len(futures) >= 1000:
            _wait_for_acks(producer, futures)

    def send_label(label: LabelEvent) -> None:
        payload = (
            label.model_dump_json(exclude_none=True)
            if mapping.identity
            else mapping.label_message(label.id, label.stored())
        )
        send(config.topics.labels, label.id, payload)

    try:
        for row, (text_id, payload, label) in enumerate(rows):
            if row < skip:
                continue
            if limit is not None and texts >= limit:
                break
            if rate is not None:
                due = started + texts / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            send(config.topics.texts, text_id, payload)
            texts += 1
            bar.update(1)
            if label is not None:
                pending_labels.append((texts + labels_delay, label))
            while pending_labels and pending_labels[0][0] <= texts:
                _, due_label = pending_labels.popleft()
                send_label(due_label)
                labels += 1
        while pending_labels:
            _, due_label = pending_labels.popleft()
            send_label(due_label)
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
