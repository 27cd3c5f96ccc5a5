"""The monitor's ingest: texts, predictions and late labels from their topics into the state store.

Each polled batch becomes typed rows in one pass; bad labels are dead-lettered with a reason (the scorer
dead-letters bad texts, so they are only skipped here). The caller commits the offsets after this returns:
what the store holds is never read again, and nothing is lost on a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from insightloop.daemon.config import Config
from insightloop.daemon.events import (
    DeadLetter,
    LabelEvent,
    PredictionEvent,
    RejectedMessage,
    RejectReason,
    dead_letter_of,
    parse_text_message,
)
from insightloop.daemon.metrics import MonitorObserver
from insightloop.daemon.state import LabelRow, PredictionRow, StateStore, TextRow

log = logging.getLogger(__name__)


class Ingest:
    """Stores what the monitor's consumer polls; ``producer`` (set by the monitor) sends dead letters."""

    def __init__(self, config: Config, store: StateStore, observer: MonitorObserver) -> None:
        self.topics = config.topics
        self.max_message_bytes = config.scorer.max_message_bytes
        self.store = store
        self.observer = observer
        self.producer: Any = None

    def __call__(self, records: Sequence[Any]) -> int:
        """Store ``records`` (Kafka consumer records of the three topics); returns the predictions stored."""
        texts: list[TextRow] = []
        predictions: list[PredictionRow] = []
        labels: list[LabelRow] = []
        letters: list[DeadLetter] = []
        for record in records:
            if record.topic == self.topics.texts:
                try:
                    event = parse_text_message(record.value, self.max_message_bytes)
                except RejectedMessage:
                    continue  # the scorer dead-letters bad texts; one letter per message is enough
                texts.append(TextRow(event.id, event.text, event.ts.isoformat() if event.ts else None, event.meta))
            elif record.topic == self.topics.predictions:
                try:
                    p = PredictionEvent.model_validate_json(record.value)
                except ValidationError as exc:
                    log.warning("skipping a malformed prediction: %s", str(exc)[:200])
                    continue
                predictions.append(
                    PredictionRow(p.id, p.model_version, p.label, p.scores, p.embedding, p.n_tokens, p.precision)
                )
            else:
                try:
                    label = LabelEvent.model_validate_json(record.value or b"")
                except ValidationError as exc:
                    letters.append(dead_letter_of(record, RejectReason.INVALID_FIELDS, str(exc)[:500]))
                    continue
                labels.append(LabelRow(label.id, label.label))
        now = time.time()
        if texts:
            self.store.add_texts(texts, now)
        if predictions:
            self.store.add_predictions(predictions, now)
        if labels:
            self.store.add_labels(labels, now)
        if letters:
            self._dead_letter(letters)
        return len(predictions)

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        """Send each letter and wait for the broker (an error propagates: the batch's offsets stay uncommitted)."""
        futures = [self.producer.send(self.topics.deadletter, value=d.model_dump_json().encode()) for d in letters]
        self.producer.flush(timeout=30)
        for future, letter in zip(futures, letters, strict=True):
            future.get(timeout=30)
            self.observer.on_dead_letter(letter.reason.value)
