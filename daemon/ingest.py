"""The monitor's ingest: texts, predictions and late labels from their topics into the state store.

A whole poll becomes typed rows in one pass and lands in **one** store transaction
(:meth:`~insightloop.daemon.state.StateStore.add_polled`): a text and its prediction polled together are one
row write. Validation still happens once per record, at the edge, with pydantic's JSON parser straight from
the message bytes (``model_validate_json``; measured faster than ``json.loads`` followed by validation, and
than one ``TypeAdapter`` over the poll as a list, see ``bench/monitor.py``).

Texts and labels are read through the ``input`` mapping (:class:`~insightloop.daemon.mapping.MessageMapping`),
as the scorer reads texts. Bad labels are dead-lettered with a reason: unreadable ones with the path that
failed, and labels outside the production model's label set (which would otherwise become a new class at the
next fine-tune). The scorer dead-letters bad texts, so they are only skipped here. A label whose text has not
arrived waits in the store's bounded ``waiting_labels``. The caller commits the offsets after this returns:
what the store holds is never read again, and nothing is lost on a crash.

With ``monitor.sample_rate`` below 1 only the ids :func:`in_sample` keeps are stored. The decision is a
stable hash of the text id, so a text, its prediction and its label are kept or dropped together, by every
monitor process, across restarts. Labels are still read and checked in full before sampling, so what is
dead-lettered does not depend on the sample.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from insightloop.daemon.config import Config
from insightloop.daemon.events import (
    DeadLetter,
    EntityDetail,
    LabelEvent,
    PredictionEvent,
    RejectedMessage,
    RejectReason,
    TextEvent,
    dead_letter_of,
)
from insightloop.daemon.mapping import MessageMapping
from insightloop.daemon.metrics import MonitorObserver
from insightloop.daemon.state import LabelRow, PredictionRow, StateStore, TextRow
from insightloop.deploy import TOKEN_TASK, DeployError, Registry, TagSequenceError, Task, parse_tag

log = logging.getLogger(__name__)

_HASH_SPACE = 1 << 64


def label_problem(label: LabelEvent, known: frozenset[str] | None, task: Task) -> str | None:
    """Why ``label`` cannot be kept for the production model (its ``known`` labels, its ``task``), or None.

    A text classifier takes a class it knows; a token classifier takes word tags or character entities whose
    types are among its tags' types. The other shapes would train a label the model does not have.
    """
    if known is None:
        return None
    entity = label.entity_label
    if task != TOKEN_TASK:
        if entity is not None:
            return "word tags or entities sent for a text classifier: its labels are classes ('label')"
        if label.label not in known:
            return f"unknown label: {label.label!r} is not in the production model's label set {sorted(known)}"
        return None
    if entity is None:
        return f"a class label {label.label!r} sent for a token classifier: send 'tags' or 'entities'"
    types = {kind for tag in known if (kind := parse_tag(tag, 0)[1]) is not None}
    try:
        found = {kind for i, tag in enumerate(entity.tags or []) if (kind := parse_tag(tag, i)[1]) is not None}
    except TagSequenceError as exc:
        return f"unreadable tags: {exc}"
    found |= {e.type for e in entity.entities or []}
    unknown = sorted(found - types)
    if unknown:
        return f"unknown entity type(s) {unknown}: not among the production model's types {sorted(types)}"
    return None


def in_sample(text_id: str, sample_rate: float) -> bool:
    """True when the records of ``text_id`` are kept at ``sample_rate`` (a share in (0, 1]).

    The first 8 bytes of the id's BLAKE2b digest, read as a number in [0, 2^64), are compared with
    ``sample_rate * 2^64``: the same answer in every process and Python version (``hash()`` is salted per
    process), about ``sample_rate`` of the ids, and an id kept at one rate is kept at every higher rate.

    >>> in_sample("any-id", 1.0)
    True
    >>> in_sample("review-17", 0.5) == in_sample("review-17", 0.5)
    True
    """
    if sample_rate >= 1.0:
        return True
    digest = hashlib.blake2b(text_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < int(sample_rate * _HASH_SPACE)


class _IdOnly(BaseModel):
    """Just the id of a prediction: enough to drop a sampled-out one without validating the rest of it."""

    model_config = ConfigDict(extra="ignore")

    id: str


@dataclass(frozen=True)
class PollCounts:
    """What one poll did: records stored and sampled out, per kind (texts, predictions, labels)."""

    stored: dict[str, int]
    sampled_out: dict[str, int]


class Ingest:
    """Stores what the monitor's consumer polls; ``producer`` (set by the monitor) sends dead letters."""

    def __init__(self, config: Config, store: StateStore, observer: MonitorObserver) -> None:
        self.topics = config.topics
        self.max_message_bytes = config.scorer.max_message_bytes
        self.mapping = MessageMapping.from_config(config.input)
        self.wait_max_rows = config.monitor.waiting_labels_max_rows
        self.wait_max_age_s = config.monitor.waiting_labels_max_age_s
        self.sample_rate = config.monitor.sample_rate
        self.registry = Registry(config.registry.path)
        self.store = store
        self.observer = observer
        self.producer: Any = None
        self.last: PollCounts = PollCounts({}, {})  #: what the latest poll did
        self._label_set: tuple[str | None, frozenset[str] | None] = (None, None)
        self.task: Task = "text-classification"  #: the production model's task (read with its labels)

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
                settings = self.registry.artifact_settings(version)
            except DeployError as exc:
                log.warning("cannot read the labels of %s (%s); labels are not checked this batch", version, exc)
                return None
            self._label_set = (version, frozenset(settings.labels))
            self.task = settings.task
        return self._label_set[1]

    def __call__(self, records: Sequence[Any]) -> int:
        """Store ``records`` (Kafka consumer records of the three topics); returns the predictions stored."""
        texts: list[Any] = []
        predictions: list[Any] = []
        labels: list[Any] = []
        for record in records:
            topic = record.topic
            if topic == self.topics.texts:
                texts.append(record)
            elif topic == self.topics.predictions:
                predictions.append(record)
            else:
                labels.append(record)
        letters: list[DeadLetter] = []
        text_rows, texts_out = self._texts(texts)
        prediction_rows, predictions_out = self._predictions(predictions)
        label_rows, labels_out = self._labels(labels, letters)
        if text_rows or prediction_rows or label_rows:
            self.store.add_polled(
                text_rows, prediction_rows, label_rows, time.time(), self.wait_max_rows, self.wait_max_age_s
            )
        if letters:
            self._dead_letter(letters)
        self.last = PollCounts(
            stored={"texts": len(text_rows), "predictions": len(prediction_rows), "labels": len(label_rows)},
            sampled_out={"texts": texts_out, "predictions": predictions_out, "labels": labels_out},
        )
        for kind, stored in self.last.stored.items():
            if stored or self.last.sampled_out[kind]:
                self.observer.on_ingested(kind, stored, self.last.sampled_out[kind])
        return len(prediction_rows)

    # -- one kind each ------------------------------------------------------------------------
    def _texts(self, records: list[Any]) -> tuple[list[TextRow], int]:
        rows: list[TextRow] = []
        out = 0
        for record in records:
            event = self._text_event(record)
            if event is None:
                continue  # the scorer dead-letters bad texts; one letter per message is enough
            if not in_sample(event.id, self.sample_rate):
                out += 1
                continue
            rows.append(TextRow(event.id, event.text, event.ts.isoformat() if event.ts else None, event.meta))
        return rows, out

    def _text_event(self, record: Any) -> TextEvent | None:
        """The text event of one record, or None when the scorer would have rejected it."""
        value = record.value
        if self.mapping.identity and value is not None and len(value) <= self.max_message_bytes:
            try:
                return TextEvent.model_validate_json(value)
            except ValidationError:
                pass  # read it the scorer's way below, which knows every reason a text is refused
        try:
            return self.mapping.parse_text(value, record.key, self.max_message_bytes)
        except RejectedMessage:
            return None

    def _predictions(self, records: list[Any]) -> tuple[list[PredictionRow], int]:
        rows: list[PredictionRow] = []
        out = 0
        sampling = self.sample_rate < 1.0
        for record in records:
            if sampling:
                try:
                    text_id = _IdOnly.model_validate_json(record.value).id
                except ValidationError:
                    text_id = None  # validated in full below, which says what is wrong with it
                if text_id is not None and not in_sample(text_id, self.sample_rate):
                    out += 1
                    continue
            try:
                p = PredictionEvent.model_validate_json(record.value)
            except ValidationError as exc:
                log.warning("skipping a malformed prediction: %s", str(exc)[:200])
                continue
            detail = EntityDetail.of(p)
            rows.append(
                PredictionRow(
                    p.id,
                    p.model_version,
                    p.label,
                    p.scores,
                    p.embedding,
                    p.n_tokens,
                    p.precision,
                    detail.model_dump_json() if detail is not None else None,
                )
            )
        return rows, out

    def _labels(self, records: list[Any], letters: list[DeadLetter]) -> tuple[list[LabelRow], int]:
        if not records:
            return [], 0
        known = self.label_set()
        rows: list[LabelRow] = []
        out = 0
        for record in records:
            try:
                label = self._label_event(record)
            except RejectedMessage as rejected:
                letters.append(dead_letter_of(record, rejected.reason, rejected.detail))
                continue
            except ValidationError as exc:
                letters.append(dead_letter_of(record, RejectReason.INVALID_FIELDS, str(exc)[:500]))
                continue
            problem = label_problem(label, known, self.task)
            if problem is not None:
                letters.append(dead_letter_of(record, RejectReason.INVALID_FIELDS, problem[:500]))
                continue
            if not in_sample(label.id, self.sample_rate):
                out += 1
                continue
            rows.append(LabelRow(label.id, label.stored()))
        return rows, out

    def _label_event(self, record: Any) -> LabelEvent:
        return self.mapping.parse_label(record.value, record.key, self.max_message_bytes)

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        """Send each letter and wait for the broker (an error propagates: the batch's offsets stay uncommitted)."""
        futures = [self.producer.send(self.topics.deadletter, value=d.model_dump_json().encode()) for d in letters]
        self.producer.flush(timeout=30)
        for future, letter in zip(futures, letters, strict=True):
            future.get(timeout=30)
            self.observer.on_dead_letter(letter.reason.value)
