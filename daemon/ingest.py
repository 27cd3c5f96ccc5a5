"""The monitor's ingest: texts, predictions and late labels from their topics into the state store.

Each polled batch becomes typed rows in one pass. Texts and labels are read through the ``input``
mapping (:class:`~insightloop.daemon.mapping.MessageMapping`), as the scorer reads texts. Bad labels are
dead-lettered with a reason: unreadable ones with the path that failed, and labels outside the production
model's label set (which would otherwise become a new class at the next fine-tune). The scorer
dead-letters bad texts, so they are only skipped here. A label whose text has not arrived waits in the
store's bounded ``waiting_labels``. The caller commits the offsets after this returns: what the store
holds is never read again, and nothing is lost on a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from insightloop.daemon.config import Config
from insightloop.daemon.events import DeadLetter, PredictionEvent, RejectedMessage, RejectReason, dead_letter_of
from insightloop.daemon.mapping import MessageMapping
from insightloop.daemon.metrics import MonitorObserver
from insightloop.daemon.state import LabelRow, PredictionRow, StateStore, TextRow
from insightloop.deploy import DeployError, Registry

log = logging.getLogger(__name__)


class Ingest:
    """Stores what the monitor's consumer polls; ``producer`` (set by the monitor) sends dead letters."""

    def __init__(self, config: Config, store: StateStore, observer: MonitorObserver) -> None:
        self.topics = config.topics
        self.max_message_bytes = config.scorer.max_message_bytes
        self.mapping = MessageMapping.from_config(config.input)
        self.wait_max_rows = config.monitor.waiting_labels_max_rows
        self.wait_max_age_s = config.monitor.waiting_labels_max_age_s
        self.registry = Registry(config.registry.path)
        self.store = store
        self.observer = observer
        self.producer: Any = None
        self._label_set: tuple[str | None, frozenset[str] | None] = (None, None)

    def label_set(self) -> frozenset[str] | None:
        """The production model's labels (None while no version serves: then every label is kept)."""
        try:
            version = self.registry.production()
        except DeployError as exc:
            log.warning("cannot read the production pointer (%s); labels are not checked this batch", exc)
            return None
        if version is None:
            return None
        if self._label_set[0] != version:
            try:
                labels = frozenset(self.registry.artifact_settings(version).labels)
            except DeployError as exc:
                log.warning("cannot read the labels of %s (%s); labels are not checked this batch", version, exc)
                return None
            self._label_set = (version, labels)
        return self._label_set[1]

    def __call__(self, records: Sequence[Any]) -> int:
        """Store ``records`` (Kafka consumer records of the three topics); returns the predictions stored."""
        texts: list[TextRow] = []
        predictions: list[PredictionRow] = []
        labels: list[LabelRow] = []
        letters: list[DeadLetter] = []
        known = self.label_set() if any(r.topic == self.topics.labels for r in records) else None
        for record in records:
            if record.topic == self.topics.texts:
                try:
                    event = self.mapping.parse_text(record.value, record.key, self.max_message_bytes)
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
                    label = self.mapping.parse_label(record.value, record.key, self.max_message_bytes)
                except RejectedMessage as rejected:
                    letters.append(dead_letter_of(record, rejected.reason, rejected.detail))
                    continue
                except ValidationError as exc:
                    letters.append(dead_letter_of(record, RejectReason.INVALID_FIELDS, str(exc)[:500]))
                    continue
                if known is not None and label.label not in known:
                    error = f"unknown label: {label.label!r} is not in the production model's label set {sorted(known)}"
                    letters.append(dead_letter_of(record, RejectReason.INVALID_FIELDS, error[:500]))
                    continue
                labels.append(LabelRow(label.id, label.label))
        now = time.time()
        if texts:
            self.store.add_texts(texts, now)
        if predictions:
            self.store.add_predictions(predictions, now)
        if labels:
            self.store.add_labels(labels, now, self.wait_max_rows, self.wait_max_age_s)
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
