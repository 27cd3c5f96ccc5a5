"""The monitor role: join texts, predictions and late labels by id; check windows on a schedule; raise insights.

Records land in the state store before their offsets are committed. Checks run on an APScheduler
interval and after every K newly scored texts; each check compares the newest window scored by the
production version with that version's reference profile. Ongoing conditions are tracked with
hysteresis, so one drift is one insight (updated in the store), not a page per check.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from insightloop.daemon.kafka import make_consumer, make_producer
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.state import LabelRow, PredictionRow, StateStore, StoredRecord, TextRow
from insightloop.deploy import ModelArtifact, ModelLoadError, Registry
from insightloop.detectors import (
    CheckResult,
    ConditionTracker,
    Insight,
    ReferenceProfile,
    TrackerState,
    Transition,
    Window,
    check_all,
    write_reports,
)
from insightloop.retrain.profile import load_profile, rescore_profile

log = logging.getLogger(__name__)
TRACKER_KEY = "tracker"


def window_from_records(records: list[StoredRecord], class_names: tuple[str, ...]) -> Window:
    """A detectors Window from joined records (columns in the profile's class order)."""
    probabilities = np.array([[r.scores.get(c, 0.0) for c in class_names] for r in records], dtype=np.float64)
    embeddings = np.vstack([r.embedding for r in records]).astype(np.float64)
    timestamps: list[datetime | None] = []
    for r in records:
        try:
            timestamps.append(datetime.fromisoformat(r.ts) if r.ts else None)
        except ValueError:
            timestamps.append(None)
    return Window(
        ids=[r.id for r in records],
        texts=[r.text for r in records],
        class_names=class_names,
        probabilities=probabilities,
        embeddings=embeddings,
        token_counts=np.array([r.n_tokens for r in records], dtype=np.int64),
        labels=[r.label for r in records],
        meta=[r.meta for r in records],
        timestamps=timestamps,
    )


def merge_insights(insights: list[Insight]) -> Insight:
    """One insight for one check: the strongest finding, with every other detector's evidence folded in.

    Several detectors usually see the same shift (inputs, predictions, quality); people and the controller
    need one finding about it, not one page per detector.
    """
    ordered = sorted(insights, key=lambda i: (i.severity_rank, i.ratio), reverse=True)
    primary, others = ordered[0], ordered[1:]
    if not others:
        return primary
    evidence = primary.evidence
    descriptors = {d.name: d for d in evidence.descriptors}
    slices = {s.key: s for s in evidence.slices}
    metrics = dict(evidence.metrics)
    for other in others:
        for d in other.evidence.descriptors:
            descriptors.setdefault(d.name, d)
        for s in other.evidence.slices:
            slices.setdefault(s.key, s)
        metrics.update({f"{other.detector}.{k}": v for k, v in other.evidence.metrics.items()})
        metrics[f"{other.detector}.ratio"] = min(other.ratio, 1e6)
    merged = evidence.model_copy(
        update={
            "descriptors": list(descriptors.values()),
            "slices": list(slices.values()),
            "classes": evidence.classes or next((o.evidence.classes for o in others if o.evidence.classes), []),
            "metrics": metrics,
        }
    )
    also = "; ".join(f"{o.kind.replace('_', ' ')} ({o.severity})" for o in others)
    return primary.model_copy(update={"evidence": merged, "summary": f"{primary.summary} Also seen: {also}."})


class Monitor:
    """A named worker: consumes texts, predictions and labels; runs checks; publishes insights."""

    name = "monitor"

    def __init__(self, config: Config, store: StateStore, metrics: Metrics) -> None:
        self.config = config
        self.policy = config.monitor
        self.store = store
        self.metrics = metrics
        self.registry = Registry(config.registry.path)
        self.reports_dir = config.state.dir / "reports"
        self._profiles: dict[tuple[str, str], ReferenceProfile] = {}
        self._warned_mixed: set[str] = set()  # versions
        self._producer: Any = None
        self._scheduler: Any = None
        self._check_lock = threading.Lock()
        self._since_check = 0
        self._ready = threading.Event()
        self._unpublished: dict[str, Insight] = {}  # raised while Kafka was away: sent with the next check
        self.last_check: CheckResult | None = None
        saved = store.conditions().get(TRACKER_KEY)
        self.tracker = (
            ConditionTracker.from_state(TrackerState.model_validate(saved))
            if saved
            else ConditionTracker(raise_level=1.0, clear_level=0.8, clear_after=2)
        )

    @property
    def ready(self) -> bool:
        """True once consuming and the scheduler runs."""
        return self._ready.is_set()

    def status(self) -> dict[str, Any]:
        """What /readyz shows."""
        return {"active_conditions": sorted(self.tracker.active), "records": self.store.count_records()}

    def run(self, stop: threading.Event) -> None:
        """Consume and check until ``stop``."""
        from apscheduler.schedulers.background import BackgroundScheduler

        topics = self.config.topics
        consumer = make_consumer(
            self.config.kafka, [topics.texts, topics.predictions, topics.labels], self.policy.group_id
        )
        try:
            self._producer = make_producer(self.config.kafka)
        except BaseException:
            consumer.close(autocommit=False)
            raise
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._scheduler.add_job(
            self.check,
            "interval",
            seconds=self.policy.check_interval_s,
            id="interval-check",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.start()
        self._ready.set()
        try:
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=500, max_records=2000)
                if polled:
                    self._ingest([r for batch in polled.values() for r in batch])
                    consumer.commit()  # after the store transaction: nothing is lost on a crash
                if self._since_check >= self.policy.check_every_records and not self._check_lock.locked():
                    self._since_check = 0
                    self._scheduler.add_job(
                        self.check, id="count-check", replace_existing=True, max_instances=1, coalesce=True
                    )
        finally:
            # Also the way out when the broker went away (the daemon then runs this worker again):
            # every client is closed even if flushing fails, so no client thread outlives the loop.
            self._ready.clear()
            self._scheduler.shutdown(wait=True)
            try:
                consumer.close(autocommit=False)
                self._producer.flush(timeout=10)
            finally:
                self._producer.close(timeout=10)

    # -- ingest ---------------------------------------------------------------------------
    def _ingest(self, records: list[Any]) -> None:
        topics = self.config.topics
        texts: list[TextRow] = []
        predictions: list[PredictionRow] = []
        labels: list[LabelRow] = []
        letters: list[DeadLetter] = []
        for record in records:
            if record.topic == topics.texts:
                try:
                    event = parse_text_message(record.value, self.config.scorer.max_message_bytes)
                except RejectedMessage:
                    continue  # the scorer dead-letters bad texts; one letter per message is enough
                texts.append(TextRow(event.id, event.text, event.ts.isoformat() if event.ts else None, event.meta))
            elif record.topic == topics.predictions:
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
            self._since_check += len(predictions)
        if labels:
            self.store.add_labels(labels, now)
        if letters:
            futures = [
                self._producer.send(self.config.topics.deadletter, value=d.model_dump_json().encode()) for d in letters
            ]
            self._producer.flush(timeout=30)
            for future, letter in zip(futures, letters, strict=True):
                future.get(timeout=30)
                self.metrics.dead_letters.labels(reason=letter.reason.value).inc()

    # -- checks ---------------------------------------------------------------------------
    def _one_precision(self, version: str, records: list[StoredRecord]) -> tuple[str | None, list[StoredRecord]]:
        """The records of the numerics most of the window was scored with (ties: the newest)."""
        counts = Counter(r.precision for r in records)
        if len(counts) <= 1:
            return (records[-1].precision if records else None), records
        newest = {r.precision: n for n, r in enumerate(records)}
        precision = max(counts, key=lambda p: (counts[p], newest[p]))
        # A change of scorer settings passes in one window; scorers that keep disagreeing (cpu_bf16: auto on
        # nodes with and without AMX) shrink every window, which a person should hear about once.
        if version not in self._warned_mixed:
            self._warned_mixed.add(version)
            log.warning(
                "scorers serve %s with different numerics %s: checking the %d records scored %s; if this lasts, "
                "set scorer.cpu_bf16 to true or false so that every scorer computes alike",
                version,
                dict(counts),
                counts[precision],
                precision,
            )
        return precision, [r for r in records if r.precision == precision]

    def _profile(self, version: str, precision: str | None = None) -> ReferenceProfile | None:
        """The reference profile of ``version`` as scored with ``precision`` (the numerics serving it)."""
        key = (version, precision or "")
        if key in self._profiles:
            return self._profiles[key]
        try:
            profile = load_profile(self.registry.path_of(version))
        except (FileNotFoundError, OSError, ValueError) as exc:
            log.error("version %s has no usable reference profile (%s); checks are off", version, exc)
            return None
        if precision and precision != profile.precision:
            profile = self._rescored(version, profile, precision)
        self._profiles[key] = profile
        return profile

    def _rescored(self, version: str, profile: ReferenceProfile, precision: str) -> ReferenceProfile:
        """``profile`` re-scored with the numerics that serve ``version``; kept on disk for the next start.

        A version trained on a GPU (bf16) and served on a CPU (float32), or served in CPU bf16 or int8,
        scores the same texts slightly differently; compared with rows scored otherwise, prediction drift
        would read that difference as drift on unchanged traffic.
        """
        device, kind = precision.split("/", 1)
        if device != "cpu" and (device != "cuda" or not torch.cuda.is_available()):
            device = "cpu"  # the nearest numerics this process has, e.g. bf16 on the CPU for CUDA bf16
        cached = self.config.state.dir / "profiles" / f"{version}--{precision.replace('/', '-')}"
        try:
            stored = ReferenceProfile.load(cached)
            if stored.precision == f"{device}/{kind}" and stored.window.ids == profile.window.ids:
                return stored
        except (FileNotFoundError, OSError, ValueError):
            pass
        started = time.perf_counter()
        try:
            artifact = ModelArtifact.load(
                self.registry.path_of(version), device=device, quantize=kind == "int8", bf16=kind == "bfloat16"
            )
            rescored = rescore_profile(profile, artifact)
        except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
            log.error(
                "cannot re-score the reference of %s at %s (%s); checking against its %s scores",
                version,
                precision,
                exc,
                profile.precision,
            )
            return profile
        log.info(
            "re-scored the %d reference rows of %s at %s (profile built at %s) in %.1f s",
            len(profile.window),
            version,
            precision,
            profile.precision,
            time.perf_counter() - started,
        )
        try:
            rescored.save(cached)
        except OSError as exc:
            log.warning("could not keep the re-scored reference at %s: %s", cached, exc)
        self._prune_rescored(cached.parent)
        return rescored

    def _prune_rescored(self, folder: Path) -> None:
        """Drop re-scored references of versions that can no longer serve without a new decision.

        Kept: production, the default rollback target, and candidates; a version rolled back to later
        is simply re-scored again. This bounds ``state/profiles`` by the versions in play.
        """
        live = {self.registry.production(), self.registry.previous_production()}
        live |= {r.version for r in self.registry.pending_candidates()}
        for entry in folder.iterdir():
            if entry.is_dir() and entry.name.split("--", 1)[0] not in live:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("dropped the re-scored reference %s: its version no longer serves", entry.name)

    def check(self) -> list[Insight]:
        """One check of the newest window; returns the insights published."""
        with self._check_lock:
            started = time.perf_counter()
            try:
                self._publish_unpublished()
                return self._check()
            finally:
                self.metrics.checks.inc()
                self.metrics.check_seconds.observe(time.perf_counter() - started)

    def _check(self) -> list[Insight]:
        version = self.registry.production()
        if version is None:
            return []
        self.store.apply_retention(
            self.policy.retention_max_age_s,
            self.policy.retention_max_rows,
            time.time(),
            keep_text=self.policy.keep_text,
        )
        records = [r for r in self.store.recent_records(self.policy.window_size, model_version=version) if r.text]
        precision, records = self._one_precision(version, records)
        profile = self._profile(version, precision)
        if profile is None or len(records) < self.policy.min_window:
            return []
        window = window_from_records(records, profile.class_names)
        result = check_all(profile, window, version)
        self.last_check = result
        published: list[Insight] = []
        for outcome in result.results:
            self.metrics.drift_statistic.labels(detector=outcome.detector).set(outcome.statistic)
            for name, gauge in (
                ("accuracy", self.metrics.labeled_accuracy),
                ("estimated_accuracy", self.metrics.estimated_accuracy),
            ):
                if name in outcome.metrics:
                    gauge.set(outcome.metrics[name])
            # Per-detector conditions drive the drifted flags (with hysteresis).
            self.tracker.observe(f"{version}:{outcome.detector}", outcome.statistic, outcome.threshold)
            self.metrics.drift_detected.labels(detector=outcome.detector).set(
                1 if f"{version}:{outcome.detector}" in self.tracker.active else 0
            )
        # One condition per production version: "its traffic has moved away from what it was trained for".
        key = f"{version}:traffic"
        if result.insights:
            merged = merge_insights(result.insights)
            transition, merged = self.tracker.follow(merged, key=key)
            paths = self._write_reports(profile, window)
            html = next((p for p in paths if p.suffix == ".html"), None)
            merged = merged.model_copy(update={"report": str(html) if html else None})
            self.store.upsert_insight(
                merged.id,
                merged.detector,
                merged.kind,
                merged.severity,
                transition.value,
                json.loads(merged.model_dump_json()),
            )
            if transition is Transition.NEW and merged.at_least(self.policy.min_severity) and self._publish(merged):
                published.append(merged)
        else:
            previous = self.tracker.active.get(key)
            strongest = max((r for r in result.results if r.applicable), key=lambda r: r.ratio, default=None)
            transition = self.tracker.observe(
                key, strongest.statistic if strongest else 0.0, strongest.threshold if strongest else 1.0
            )
            if transition is Transition.CLEARED and previous and previous.insight_id:
                self._mark(previous.insight_id, "cleared")
        self.store.save_condition(TRACKER_KEY, json.loads(self.tracker.state().model_dump_json()))
        return published

    def _mark(self, insight_id: str, state: str) -> None:
        if not self.store.set_insight_state(insight_id, state):
            log.warning("insight %s is no longer in the state store; cannot mark it %s", insight_id, state)

    def _publish(self, insight: Insight) -> bool:
        """Publish a new insight. One that cannot be sent now (Kafka is away) is kept and sent with the next
        check: the tracker already counts it as raised, so it would never be new again, and the controller
        would never hear of it."""
        try:
            future = self._producer.send(
                self.config.topics.insights, key=insight.id.encode(), value=insight.model_dump_json().encode()
            )
            future.get(timeout=30)
        except Exception as exc:
            self._unpublished[insight.id] = insight
            log.error("could not publish insight %s (%s); it is sent with the next check", insight.id, exc)
            return False
        self._unpublished.pop(insight.id, None)
        self.metrics.insights.labels(kind=insight.kind, severity=insight.severity).inc()
        log.warning("insight %s (%s, %s): %s", insight.id, insight.kind, insight.severity, insight.summary)
        return True

    def _publish_unpublished(self) -> None:
        for insight in list(self._unpublished.values()):
            if not self._publish(insight):
                return

    def _write_reports(self, profile: ReferenceProfile, window: Window) -> list[Path]:
        stem = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        try:
            paths = write_reports(profile, window, self.reports_dir, stem)
        except Exception:
            log.exception("could not write the Evidently reports")
            return []
        reports = sorted(self.reports_dir.glob("*.html"), key=lambda p: p.stat().st_mtime)
        for old in reports[: max(0, len(reports) - self.policy.reports_keep)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return paths
