"""The scorer role: micro-batches from the texts topic → one forward pass → the predictions topic.

Delivery is at least once: offsets are committed only after every prediction and dead letter of
the batch is acknowledged by the broker. The scorer keeps no state of its own, so replicas in one
consumer group scale out over the topic's partitions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnsupportedForMessageFormatError,
)

from insightloop.daemon.config import Config, ScorerConfig
from insightloop.daemon.errors import NoModelError, TemporaryError
from insightloop.daemon.events import (
    ENTITY_SCHEMA_VERSION,
    DeadLetter,
    PredictedEntity,
    PredictionEvent,
    RejectedMessage,
    RejectReason,
    TextEvent,
    TokenConfidence,
    dead_letter_of,
    encode_dead_letter,
    entity_types_label,
)
from insightloop.daemon.kafka import make_consumer, make_producer
from insightloop.daemon.mapping import mapping_for
from insightloop.daemon.metrics import ObserverSet, ScorerObserver
from insightloop.daemon.scorer_numerics import load_serving_artifact
from insightloop.deploy import (
    TOKEN_TASK,
    ModelArtifact,
    ModelLoadError,
    Registry,
    TokenClassifier,
    cpu_has_native_bf16,
    forward_batch_size,
    set_cpu_threads,
)

log = logging.getLogger(__name__)

EMBEDDING_DECIMALS = 5
ACK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServingModel:
    """A loaded model and the registry version it came from."""

    version: str
    artifact: ModelArtifact | TokenClassifier


def load_options(config: Config) -> dict[str, Any]:
    """Keyword arguments of ``ModelArtifact.load`` for the torch paths alone (no measuring, no ONNX Runtime).

    The scorer itself loads with :func:`load_serving_artifact`, which measures the CPU candidates; this
    stays for callers that want a plain torch artifact close to it (bf16 where the CPU has AMX).
    """
    scorer = config.scorer
    wanted = scorer.cpu_bf16 is True or (scorer.cpu_bf16 == "auto" and cpu_has_native_bf16())
    return {
        "device": scorer.device,
        "quantize": scorer.quantize is True,
        "bf16": True if wanted else None,
    }


def load_serving_artifact_of(
    registry: Registry, version: str, settings: ScorerConfig
) -> ModelArtifact | TokenClassifier:
    """``version`` loaded with the numerics the scorer serves with (measured at load on a CPU), smoke-tested.

    A token classifier serves in float32 on the configured device: the numerics choice is measured for text
    classifiers only.
    """
    path = registry.path_of(version)
    artifact: ModelArtifact | TokenClassifier
    if ModelArtifact.read_settings(path).task == TOKEN_TASK:
        artifact = TokenClassifier.load(path, device=settings.device)
    else:
        artifact = load_serving_artifact(path, settings)
    artifact.smoke_test()
    return artifact


def load_production_model(registry: Registry, settings: ScorerConfig) -> ServingModel:
    """Load and smoke-test the registry's production version."""
    version = registry.production()
    if version is None:
        raise NoModelError(
            f"registry {registry.root} has no production model; "
            "train one with `insightloop train --data TRAIN.jsonl --registry DIR --promote`"
        )
    try:
        artifact = load_serving_artifact_of(registry, version, settings)
    except ModelLoadError as exc:
        raise NoModelError(f"production version {version} cannot serve: {exc}") from exc
    return ServingModel(version, artifact)


#: Produce errors that retrying cannot fix: the record itself is refused (too large, invalid topic or
#: record, a format the broker does not take) or cannot be serialised. Everything else is retried.
_FINAL_PRODUCE_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    InvalidRecordError,
    CorruptRecordError,
    UnsupportedForMessageFormatError,
    TypeError,
    ValueError,
    UnicodeError,
)


def is_final_produce_error(exc: BaseException) -> bool:
    """True when sending the same record again cannot succeed (the broker refused it for what it is)."""
    return isinstance(exc, _FINAL_PRODUCE_ERRORS)


@dataclass(frozen=True)
class _Outgoing:
    """One record to produce, with the consumer record it answers (and its dead letter, if it is one)."""

    topic: str
    key: bytes | None
    value: bytes
    record: Any
    letter: DeadLetter | None = None


@dataclass(frozen=True)
class _InFlight:
    """The batch waiting for the broker: since when, and its first offset on each partition."""

    since: float
    first_offsets: dict[tuple[str, int], int]

    @classmethod
    def of(cls, records: Sequence[Any]) -> _InFlight:
        first: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        return cls(time.monotonic(), first)


def _records_of(predictions: Sequence[PredictionEvent], valid: Sequence[tuple[Any, TextEvent]]) -> list[Any]:
    """The consumer record of each prediction (predictions keep the order of the valid events they score)."""
    remaining: dict[str, list[Any]] = {}
    for record, event in valid:
        remaining.setdefault(event.id, []).append(record)
    return [remaining[p.id].pop(0) for p in predictions]


class Scorer:
    """A named worker that scores texts until asked to stop, then drains its batch and closes."""

    name = "scorer"

    def __init__(self, config: Config, observer: ScorerObserver | None = None) -> None:
        self.config = config
        # Behind the safety net: a failing observer is logged and scoring goes on.
        self.observer = observer if isinstance(observer, ObserverSet) else ObserverSet([observer] if observer else [])
        self.model: ServingModel | None = None
        self.registry = Registry(config.registry.path)
        self._assignment: list[tuple[str, int]] = []
        self._joined = threading.Event()
        # Model swaps: a loader thread prepares the next model while the current one keeps serving.
        self._loader: threading.Thread | None = None
        self._loaded: ServingModel | None = None
        self._refused: set[str] = set()
        self._next_pointer_check = 0.0
        self._check_now = False
        # Set while a batch waits for the broker's acknowledgements (read by /readyz from another thread).
        self._in_flight: _InFlight | None = None

    # -- health ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the model is loaded and the consumer group has assigned partitions, and no batch has
        waited for the broker longer than ``scorer.stuck_batch_s``."""
        return self.model is not None and self._joined.is_set() and not self.stuck

    @property
    def stuck(self) -> bool:
        """True while the batch in flight has waited for its acknowledgements longer than ``scorer.stuck_batch_s``."""
        waited = self.batch_waiting_s
        return waited is not None and waited > self.config.scorer.stuck_batch_s

    @property
    def batch_waiting_s(self) -> float | None:
        """How long the batch in flight has waited for the broker, or None between batches."""
        in_flight = self._in_flight
        return None if in_flight is None else time.monotonic() - in_flight.since

    def status(self) -> dict[str, Any]:
        """What /readyz shows about this worker."""
        waited = self.batch_waiting_s
        return {
            "model_version": self.model.version if self.model else None,
            "assigned_partitions": [f"{t}:{p}" for t, p in sorted(self._assignment)],
            "joined_group": self._joined.is_set(),
            "batch_waiting_s": None if waited is None else round(waited, 1),
            "stuck": self.stuck,
        }

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Score until ``stop`` is set; the batch in flight is finished and committed first."""
        cfg = self.config
        set_cpu_threads(cfg.scorer.torch_threads)
        if self.model is None:  # a re-run after a broker fault keeps the model it already serves
            self.model = load_production_model(self.registry, cfg.scorer)
            self.observer.on_model_loaded(self.model.version)
            log.info("scorer serving model %s", self.model.version)

        from kafka import ConsumerRebalanceListener

        scorer = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))

            def on_partitions_assigned(self, assigned: Any) -> None:
                scorer._assignment = sorted((tp.topic, tp.partition) for tp in assigned)
                scorer._joined.set()
                scorer.observer.on_assigned(scorer._assignment)
                log.info("partitions assigned: %s", scorer._assignment)

        producer = make_producer(cfg.kafka)
        consumer = make_consumer(cfg.kafka, None, cfg.scorer.group_id, max_poll_records=cfg.scorer.max_batch_size)
        consumer.subscribe([cfg.topics.texts], listener=_Listener())
        models = self._follow_models_topic()
        try:
            while not stop.is_set():
                self._maybe_swap(models)
                records = self._collect(consumer, stop)
                self._report_lag(consumer)
                if records:
                    self._handle(records, producer, consumer, stop)
        finally:
            self._joined.clear()
            try:
                producer.flush(timeout=10)
            finally:
                producer.close(timeout=10)
                consumer.close(autocommit=False)
                models.close(autocommit=False)
                if self._loader is not None:
                    self._loader.join(60)
            log.info("scorer stopped")

    # -- model swaps ----------------------------------------------------------------------
    def _follow_models_topic(self) -> Any:
        """A group-less consumer positioned at the end of the models topic (every scorer sees every event)."""
        from kafka import TopicPartition

        consumer = make_consumer(self.config.kafka, None, None)
        partitions = consumer.partitions_for_topic(self.config.topics.models) or set()
        assigned = [TopicPartition(self.config.topics.models, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if assigned:
            consumer.seek_to_end(*assigned)
        return consumer

    def _maybe_swap(self, models: Any) -> None:
        """Between batches: notice promotions, start loading the new version, swap when it is ready."""
        if self._loaded is not None:
            previous, self.model, self._loaded = self.model, self._loaded, None
            self.observer.on_model_loaded(self.model.version)
            log.info(
                "swapped model %s -> %s between batches",
                previous.version if previous else None,
                self.model.version,
            )
        for batch in models.poll(timeout_ms=0).values():
            for record in batch:
                log.info("models event: %s", record.value[:200].decode("utf-8", errors="replace"))
                self._check_now = True
        now = time.monotonic()
        if not self._check_now and now < self._next_pointer_check:
            return
        if self._loader is not None and self._loader.is_alive():
            return
        self._check_now = False
        self._next_pointer_check = now + self.config.scorer.model_poll_s
        self._report_registry_problems()
        wanted = self.registry.production()
        serving = self.model.version if self.model else None
        if wanted is None or wanted == serving or wanted in self._refused:
            return
        self._loader = threading.Thread(target=self._load, args=(wanted,), name=f"model-loader-{wanted}")
        self._loader.start()

    def _report_registry_problems(self) -> None:
        """Unreadable registry entries, per kind, for ``insightloop_registry_unreadable_entries``."""
        try:
            counts = self.registry.problem_counts()
        except OSError as exc:  # the volume is away: the pointer check says the same, nothing to count
            log.warning("cannot look for unreadable registry entries: %s", exc)
            return
        self.observer.on_registry_problems(counts)

    def _load(self, version: str) -> None:
        try:
            artifact = load_serving_artifact_of(self.registry, version, self.config.scorer)
        except Exception as exc:
            self._refused.add(version)
            self.observer.on_model_refused(version, str(exc))
            log.error(
                "refused model %s, %s keeps serving: %s",
                version,
                self.model.version if self.model else None,
                exc,
            )
            return
        self._loaded = ServingModel(version, artifact)

    def _collect(self, consumer: Any, stop: threading.Event) -> list[Any]:
        """Poll until the batch is full or max_wait has passed since its first record."""
        limit = self.config.scorer.max_batch_size
        max_wait = self.config.scorer.max_wait_ms / 1000.0
        records: list[Any] = []
        deadline: float | None = None
        while len(records) < limit:
            if deadline is None:
                if stop.is_set():
                    break
                timeout_ms = 200
            else:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            polled = consumer.poll(timeout_ms=timeout_ms, max_records=limit - len(records))
            for batch in polled.values():
                records.extend(batch)
            if not records:
                return records
            if deadline is None:
                deadline = time.monotonic() + max_wait
            if time.monotonic() >= deadline:
                break
        return records

    def _report_lag(self, consumer: Any) -> None:
        """Messages not yet done per partition: from the batch in flight's first offset while one waits (its
        records are consumed but not committed), else from the consumer's position."""
        in_flight = self._in_flight
        lag = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = in_flight.first_offsets.get((tp.topic, tp.partition)) if in_flight is not None else None
            if done is None:
                done = consumer.position(tp)
            lag[(tp.topic, tp.partition)] = max(0, high - done)
        self.observer.on_lag(lag)

    def _handle(self, records: Sequence[Any], producer: Any, consumer: Any, stop: threading.Event) -> None:
        valid: list[tuple[Any, TextEvent]] = []
        letters: list[tuple[Any, DeadLetter]] = []
        for record in records:
            try:
                event = mapping_for(self.config.input).parse_text(
                    record.value, record.key, self.config.scorer.max_message_bytes
                )
                valid.append((record, event))
            except RejectedMessage as rejected:
                letters.append((record, dead_letter_of(record, rejected.reason, rejected.detail)))
        record_of = {id(event): record for record, event in valid}
        predictions, failed = self._score([event for _, event in valid])
        for event, error in failed:
            record = record_of[id(event)]
            letters.append((record, dead_letter_of(record, RejectReason.SCORING_FAILED, error)))
        outgoing = [
            _Outgoing(self.config.topics.predictions, p.id.encode(), p.model_dump_json().encode("utf-8"), record)
            for p, record in zip(predictions, _records_of(predictions, valid), strict=True)
        ]
        outgoing += [self._letter_out(record, letter) for record, letter in letters]
        self._in_flight = _InFlight.of(records)
        try:
            sent = self._produce_until_acknowledged(producer, outgoing, stop, consumer)
        finally:
            self._in_flight = None
        for letter in sent:
            self.observer.on_dead_letter(letter.reason.value)
            log.warning(
                "dead-lettered %s:%d@%d: %s",
                letter.source_topic,
                letter.partition,
                letter.offset,
                letter.error[:200],
            )
        self._commit(consumer, records)

    def _letter_out(self, record: Any, letter: DeadLetter) -> _Outgoing:
        value = encode_dead_letter(letter, self.config.scorer.max_dead_letter_bytes)
        return _Outgoing(self.config.topics.deadletter, None, value, record, letter)

    def _score(self, events: Sequence[TextEvent]) -> tuple[list[PredictionEvent], list[tuple[TextEvent, str]]]:
        """Score a batch in one go; if that fails, score one by one so one bad text costs only itself."""
        if not events:
            return [], []
        try:
            return self._score_batch(events), []
        except Exception as exc:
            log.warning("batch of %d failed to score (%s); scoring one by one", len(events), exc)
        predictions: list[PredictionEvent] = []
        failed: list[tuple[TextEvent, str]] = []
        for event in events:
            try:
                predictions += self._score_batch([event])
            except Exception as exc:
                failed.append((event, f"{type(exc).__name__}: {exc}"[:500]))
        return predictions, failed

    def _score_batch(self, events: Sequence[TextEvent]) -> list[PredictionEvent]:
        assert self.model is not None
        model = self.model
        if isinstance(model.artifact, TokenClassifier):
            return self._score_entities(model.version, model.artifact, events)
        started = time.perf_counter()
        size = forward_batch_size(model.artifact.device, self.config.scorer.inference_batch_size, len(events))
        batch = model.artifact.predict([e.text for e in events], size)
        seconds = time.perf_counter() - started
        labels = batch.predicted_labels()
        out = []
        for row, event in enumerate(events):
            out.append(
                PredictionEvent(
                    id=event.id,
                    model_version=model.version,
                    label=labels[row],
                    scores={name: float(p) for name, p in zip(batch.labels, batch.probabilities[row], strict=True)},
                    embedding=[round(float(x), EMBEDDING_DECIMALS) for x in batch.embeddings[row]],
                    n_tokens=int(batch.token_counts[row]),
                    ts=event.ts,
                    precision=model.artifact.precision,
                )
            )
        self.observer.on_batch(len(events), seconds)
        return out

    def _score_entities(
        self, version: str, classifier: TokenClassifier, events: Sequence[TextEvent]
    ) -> list[PredictionEvent]:
        """A token classifier's predictions (schema 2): entities with character offsets into each raw text."""
        started = time.perf_counter()
        size = forward_batch_size(classifier.device, self.config.scorer.inference_batch_size, len(events))
        scored = classifier.score_texts([e.text for e in events], size)
        seconds = time.perf_counter() - started
        precision = f"{classifier.device.type}/float32"
        out = []
        for event, text in zip(events, scored, strict=True):
            entities = [
                PredictedEntity(
                    start=e.span.start, end=e.span.end, type=e.span.type, text=e.text, confidence=e.confidence
                )
                for e in text.entities
            ]
            out.append(
                PredictionEvent(
                    schema_version=ENTITY_SCHEMA_VERSION,
                    task=TOKEN_TASK,
                    id=event.id,
                    model_version=version,
                    label=entity_types_label([e.type for e in entities]),
                    scores={},
                    embedding=[round(float(x), EMBEDDING_DECIMALS) for x in text.embedding],
                    n_tokens=text.words,
                    ts=event.ts,
                    precision=precision,
                    entities=entities,
                    token_confidence=TokenConfidence(
                        mean=min(1.0, text.mean_confidence),
                        min=min(1.0, text.min_confidence),
                        words=text.words,
                        entity_count=len(entities),
                        truncated_words=text.truncated_words,
                    ),
                )
            )
        self.observer.on_batch(len(events), seconds)
        return out

    def _produce_until_acknowledged(
        self, producer: Any, outgoing: Sequence[_Outgoing], stop: threading.Event, consumer: Any = None
    ) -> list[DeadLetter]:
        """Send every record and wait for the broker's acknowledgement; return the dead letters that went out.

        Only the records that failed are sent again, so the batch's other outputs go out once. A record the
        broker refuses for good (:func:`is_final_produce_error`) is not retried: a prediction becomes a dead
        letter with the reason, a dead letter is sent again without its raw excerpt, and one refused even so
        is logged and given up (the batch is committed all the same, so one text never stops scoring).
        """
        backoff = self.config.scorer.retry_backoff_s
        drain_deadline: float | None = None
        next_lag = time.monotonic() + self.config.scorer.lag_report_s
        pending = list(outgoing)
        delivered: list[DeadLetter] = []
        while pending:
            sent: list[tuple[_Outgoing, Any]] = []
            retry: list[tuple[_Outgoing, BaseException]] = []
            final: list[tuple[_Outgoing, BaseException]] = []
            for item in pending:
                try:
                    sent.append((item, producer.send(item.topic, key=item.key, value=item.value)))
                except Exception as exc:
                    (final if is_final_produce_error(exc) else retry).append((item, exc))
            if sent:
                try:
                    producer.flush(timeout=ACK_TIMEOUT_S)
                except Exception as exc:  # the futures say which records did not make it
                    log.warning("producer flush failed: %s", exc)
            for item, future in sent:
                if not future.is_done:
                    retry.append((item, TemporaryError("not acknowledged within the flush timeout")))
                    continue
                try:
                    future.get(timeout=0)
                except Exception as exc:
                    (final if is_final_produce_error(exc) else retry).append((item, exc))
                else:
                    if item.letter is not None:
                        delivered.append(item.letter)
            pending = []
            for item, refusal in final:
                replacement = self._replacement(item, refusal)
                if replacement is not None:
                    pending.append(replacement)
            if not retry:
                continue
            self.observer.on_retry("produce")
            error = retry[0][1]
            if stop.is_set():
                drain_deadline = drain_deadline or time.monotonic() + self.config.scorer.drain_timeout_s / 2
                if time.monotonic() > drain_deadline:
                    # Not committed, so the batch is consumed again after restart: nothing lost.
                    raise TemporaryError(f"stopping with an unacknowledged batch: {error}") from error
            log.warning("produce of %d record(s) failed (%s); retrying in %.1f s", len(retry), error, backoff)
            if consumer is not None and time.monotonic() >= next_lag:
                self._report_lag(consumer)
                next_lag = time.monotonic() + self.config.scorer.lag_report_s
            time.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            pending += [item for item, _ in retry]
        return delivered

    def _replacement(self, item: _Outgoing, exc: BaseException) -> _Outgoing | None:
        """What goes out instead of a record the broker refused for good, or None when nothing can."""
        why = f"{type(exc).__name__}: {exc}"
        if item.letter is None:
            letter = dead_letter_of(
                item.record, RejectReason.UNDELIVERABLE, f"the broker refused this text's prediction: {why}"
            )
            letter = letter.model_copy(update={"raw": ""})  # the text itself, not the prediction, went wrong
            log.error(
                "prediction for %s:%d@%d refused for good: %s",
                item.record.topic,
                item.record.partition,
                item.record.offset,
                why,
            )
            return self._letter_out(item.record, letter)
        if item.letter.raw:
            bare = item.letter.model_copy(update={"raw": "", "error": f"{item.letter.error[:300]} [{why[:300]}]"})
            return self._letter_out(item.record, bare)
        log.error(
            "dead letter for %s:%d@%d refused for good, giving it up: %s",
            item.letter.source_topic,
            item.letter.partition,
            item.letter.offset,
            why,
        )
        self.observer.on_dead_letter("undeliverable_dropped")
        return None

    def _commit(self, consumer: Any, records: Sequence[Any]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        offsets: dict[Any, Any] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in offsets or offsets[tp].offset <= record.offset:
                offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
        try:
            consumer.commit(offsets)
        except Exception as exc:
            # A rebalance took the partitions: their new owner re-scores this batch (at least once).
            self.observer.on_retry("commit")
            log.warning("commit failed (%s); the batch may be scored again by the partition's new owner", exc)
