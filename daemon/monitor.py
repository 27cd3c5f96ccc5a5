"""The monitor role: join texts, predictions and late labels by id; check windows on a schedule; raise insights.

A thin shell around four parts: :class:`~insightloop.daemon.ingest.Ingest` (topics to the state store),
:class:`~insightloop.daemon.profiles.ProfileCache` (each version's reference, re-scored with the serving
numerics), the pure check step (:func:`insightloop.detectors.check_step`) and
:class:`~insightloop.daemon.publisher.Publisher` (the outbox in the store to the insights topic).

Records land in the state store before their offsets are committed, one transaction per poll. Checks run
on an APScheduler interval and after every K newly stored predictions, but no sooner than
``min_check_interval_s`` after the previous check ended (:func:`count_check_due`), so that at a scorer
fleet's rate checks take a bounded share of the monitor's time instead of running back to back. Each check
compares the newest window scored by the production version with that version's reference profile.
Ongoing conditions are tracked with hysteresis, so one drift is one insight (updated in the store), not a
page per check. A new insight is put in the outbox in the transaction that saves the tracker state counting
it as raised, and leaves it when the broker acknowledges it: raised while Kafka is away, it still goes out
after a restart.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from insightloop.daemon.config import Config
from insightloop.daemon.events import EntityDetail, EntityLabel
from insightloop.daemon.ingest import Ingest
from insightloop.daemon.kafka import make_consumer, make_producer
from insightloop.daemon.metrics import Metrics, observers_of
from insightloop.daemon.profiles import ProfileCache
from insightloop.daemon.publisher import Publisher
from insightloop.daemon.state import CheckPoint, DetectorPoint, StateStore, StoredRecord
from insightloop.deploy import PROFILE_DIR, TOKEN_TASK, DeployError, Registry, Task
from insightloop.detectors import (
    AlarmBudget,
    CheckResult,
    ConditionTracker,
    DetectorGauge,
    EntityProfile,
    EntityWindow,
    Insight,
    ReferenceProfile,
    SeverityRule,
    StepOutcome,
    TrackerState,
    Window,
    all_detectors,
    check_step,
    entity_check_step,
    write_entity_report,
    write_reports,
)
from insightloop.retrain import EntityRow, ScoredEntity, entity_window

log = logging.getLogger(__name__)
TRACKER_KEY = "tracker"
#: The tracker of a first start: raise at the alarm level, clear below 0.8 of it twice in a row.
INITIAL_TRACKER = TrackerState(raise_level=1.0, clear_level=0.8, clear_after=2)
#: Records one consumer poll returns at most: one store transaction and one offset commit each.
POLL_MAX_RECORDS = 2000


@dataclass(frozen=True)
class CheckDecision:
    """Whether a count-triggered check starts now, and why (or why not)."""

    run: bool
    reason: str


def count_check_due(
    new_records: int,
    seconds_since_check: float,
    every_records: int,
    min_interval_s: float,
    check_running: bool = False,
) -> CheckDecision:
    """A count-triggered check is due once ``every_records`` new records arrived *and* ``min_interval_s``
    passed since the previous check ended (and none is running).

    The count alone would ask for a check every ``check_every_records`` (100 by default): 120 a second at
    12,000 texts/s, so checks would run back to back and take the CPU the ingest needs. The interval bounds
    their share; at low rates the count decides, as before.

    >>> count_check_due(500, 60.0, 500, 5.0)
    CheckDecision(run=True, reason='due')
    >>> count_check_due(500, 1.0, 500, 5.0).reason
    'waits 4.0 s more (min_check_interval_s)'
    """
    if new_records < every_records:
        return CheckDecision(False, f"waits for {every_records - new_records} more records (check_every_records)")
    if check_running:
        return CheckDecision(False, "a check is running")
    if seconds_since_check < min_interval_s:
        return CheckDecision(False, f"waits {min_interval_s - seconds_since_check:.1f} s more (min_check_interval_s)")
    return CheckDecision(True, "due")


def unchecked_since(scored_at: Sequence[float], checked_through: float | None) -> float | None:
    """From when rows count as unseen by an earlier check: just after ``checked_through`` (the newest
    ``scored_at`` the previous check saw), or the window's oldest row before the first check.

    A job for an insight learns from labels on rows scored from then on. Not the insight's wall-clock time:
    a backlog stored in one poll was scored before the check that found its drift, and rows beyond the
    window count too. With nothing new, the newest row stands for the window.

    >>> unchecked_since([1.0, 2.0, 3.0], None)
    1.0
    >>> unchecked_since([1.0, 2.0], 5.0)
    2.0
    """
    if not scored_at:
        return None
    if checked_through is None:
        return min(scored_at)
    if max(scored_at) <= checked_through:
        return max(scored_at)
    return math.nextafter(checked_through, math.inf)  # count_scored_since is inclusive


def entity_window_from_records(records: list[StoredRecord]) -> EntityWindow:
    """A token classifier's window from joined records; a record without entities counts as finding none."""
    rows = []
    for r in records:
        detail = EntityDetail.model_validate_json(r.entities) if r.entities else None
        gold = None
        if r.label:
            try:
                gold = EntityLabel.decode(r.label)
            except ValueError:
                gold = None  # a class label stored before the version changed task: not this model's
        rows.append(
            EntityRow(
                id=r.id,
                text=r.text,
                entities=[
                    ScoredEntity(e.start, e.end, e.type, e.text, e.confidence)
                    for e in (detail.entities if detail else [])
                ],
                mean_confidence=detail.token_confidence.mean if detail else 0.0,
                embedding=r.embedding.tolist(),
                gold_tags=gold.tags if gold else None,
                gold_spans=gold.entities if gold else None,
                meta=r.meta,
                ts=_timestamp(r.ts),
            )
        )
    return entity_window(rows)


def _timestamp(ts: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(ts) if ts else None
    except ValueError:
        return None


def window_from_records(records: list[StoredRecord], class_names: tuple[str, ...]) -> Window:
    """A detectors Window from joined records (columns in the profile's class order)."""
    probabilities = np.array([[r.scores.get(c, 0.0) for c in class_names] for r in records], dtype=np.float64)
    embeddings = np.vstack([r.embedding for r in records]).astype(np.float64)
    timestamps = [_timestamp(r.ts) for r in records]
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


class Monitor:
    """A named worker: consumes texts, predictions and labels; runs checks; publishes insights."""

    name = "monitor"

    def __init__(self, config: Config, store: StateStore, metrics: Metrics) -> None:
        self.config = config
        self.policy = config.monitor
        self.store = store
        self.observer = observers_of(metrics)
        self._metrics = metrics
        self.registry = Registry(config.registry.path)
        self.reports_dir = config.state.dir / "reports"
        self.profiles = ProfileCache(self.registry, config.state.dir / "profiles")
        self.ingest = Ingest(config, store, self.observer)
        # One request timeout per acknowledgement: a broker that is away stalls a check that long, no longer.
        self.publisher = Publisher(
            store, config.topics.insights, self.observer, ack_timeout_s=config.kafka.request_timeout_ms / 1000
        )
        self._warned_mixed: set[str] = set()  # versions
        self._tasks: dict[str, Task] = {}
        self._entity_profiles: dict[str, EntityProfile | None] = {}
        self._scheduler: Any = None
        self._check_lock = threading.Lock()
        self._since_check = 0
        self._last_check_ended = float("-inf")  # monotonic seconds; none yet
        self._checked_through: float | None = None  # newest scored_at the previous check saw
        # Where the previous check left the counts the history reports as deltas (scored-at time, dead letters).
        self._history_mark: tuple[float, float] = (time.time(), self._dead_letters_so_far())
        self._ready = threading.Event()
        self.last_check: CheckResult | None = None
        # The whole monitor's false-alarm budget, spent over its checks and detectors (see AlarmBudget), and
        # the accuracy costs that make a certain change a warning or critical rather than info.
        self.budget = AlarmBudget(
            budget_texts=self.policy.false_alarm_budget,
            check_every_records=self.policy.check_every_records,
            detectors=len(all_detectors()),
        )
        self.severity_rule = SeverityRule(
            min_accuracy_cost=self.policy.min_accuracy_cost, critical_accuracy_cost=self.policy.critical_accuracy_cost
        )
        saved = store.conditions().get(TRACKER_KEY)
        self.tracker = ConditionTracker.from_state(TrackerState.model_validate(saved) if saved else INITIAL_TRACKER)

    @property
    def ready(self) -> bool:
        """True once consuming and the scheduler runs."""
        return self._ready.is_set()

    @property
    def _producer(self) -> Any:
        """The producer that ingest (dead letters) and the publisher (insights) send with."""
        return self.publisher.producer

    @_producer.setter
    def _producer(self, producer: Any) -> None:
        self.publisher.producer = producer
        self.ingest.producer = producer

    def status(self) -> dict[str, Any]:
        """What /readyz shows."""
        return {
            "active_conditions": sorted(self.tracker.active),
            "records": self.store.count_records(),
            "unpublished_insights": self.publisher.pending(),
            "false_alarm_budget": {
                "texts": self.budget.budget_texts,
                "check_every_records": self.budget.check_every_records,
                "detectors": self.budget.detectors,
                "per_check_rate": self.budget.per_check_rate,
                "per_detector_rate": self.budget.per_detector_rate,
                "method": "Bonferroni over detectors; thresholds from reference-split nulls, never below the nominal "
                "level; a false insight is one at warning or above",
            },
            "severity": {
                "min_accuracy_cost_points": self.severity_rule.min_accuracy_cost,
                "critical_accuracy_cost_points": self.severity_rule.critical_accuracy_cost,
            },
        }

    def run(self, stop: threading.Event) -> None:
        """Consume and check until ``stop``."""
        from apscheduler.schedulers.background import BackgroundScheduler

        topics = self.config.topics
        consumer = make_consumer(
            self.config.kafka, [topics.texts, topics.predictions, topics.labels], self.policy.group_id
        )
        try:
            # A send to a topic whose partitions are unknown blocks at most one request timeout.
            self._producer = make_producer(self.config.kafka, max_block_ms=self.config.kafka.request_timeout_ms)
        except BaseException:
            consumer.close(autocommit=False)
            raise
        with self._check_lock:
            self.publisher.flush()  # what an earlier run raised and could not send
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
                polled = consumer.poll(timeout_ms=500, max_records=POLL_MAX_RECORDS)
                if polled:
                    self._since_check += self.ingest([r for batch in polled.values() for r in batch])
                    consumer.commit()  # after the store transaction: nothing is lost on a crash
                due = count_check_due(
                    self._since_check,
                    time.monotonic() - self._last_check_ended,
                    self.policy.check_every_records,
                    self.policy.min_check_interval_s,
                    self._check_lock.locked(),
                )
                if due.run:
                    self._since_check = 0
                    self._scheduler.add_job(
                        self.check, id="count-check", replace_existing=True, max_instances=1, coalesce=True
                    )
        finally:
            # Also the way out when the broker went away (the daemon then runs this worker again):
            # every client is closed even if flushing fails, so no client thread outlives the loop.
            self._ready.clear()
            self._scheduler.shutdown(wait=True)
            producer = self._producer
            try:
                consumer.close(autocommit=False)
                producer.flush(timeout=10)
            finally:
                producer.close(timeout=10)

    # -- checks ---------------------------------------------------------------------------
    def check(self) -> list[Insight]:
        """One check of the newest window; returns the insights the broker acknowledged during it (those left
        in the outbox by earlier checks first)."""
        with self._check_lock:
            started = time.perf_counter()
            try:
                published = self.publisher.flush()
                stalled = self.publisher.stalled
                if self._check() and not stalled:
                    published += self.publisher.flush()
                return published
            finally:
                self._last_check_ended = time.monotonic()
                self.observer.on_check(time.perf_counter() - started)

    def _check(self) -> bool:
        """Run the check step on the newest window and persist its outcome; True if it filled the outbox."""
        version = self.registry.production()
        if version is None:
            return False
        self.store.apply_retention(
            self.policy.retention_max_age_s,
            self.policy.retention_max_rows,
            time.time(),
            keep_text=self.policy.keep_text,
        )
        records = [r for r in self.store.recent_records(self.policy.window_size, model_version=version) if r.text]
        precision, records = self._one_precision(version, records)
        write_reports: Callable[[], list[Path]]
        if self._task_of(version) == TOKEN_TASK:
            entity_profile = self._entity_profile(version)
            if entity_profile is None or len(records) < self.policy.min_window:
                return False
            entity_window = entity_window_from_records(records)
            step = entity_check_step(
                entity_profile,
                entity_window,
                version,
                self.tracker.state(),
                min_severity=self.policy.min_severity,
                budget=self.budget,
                rule=self.severity_rule,
            )
            write_reports = lambda: self._write_entity_report(step, entity_profile, entity_window)  # noqa: E731
        else:
            profile = self.profiles.get(version, precision)
            if profile is None or len(records) < self.policy.min_window:
                return False
            window = window_from_records(records, profile.class_names)
            step = check_step(
                profile,
                window,
                version,
                self.tracker.state(),
                min_severity=self.policy.min_severity,
                budget=self.budget,
                rule=self.severity_rule,
            )
            write_reports = lambda: self._write_reports(profile, window)  # noqa: E731
        self.last_check = step.result
        thresholds = {r.detector: r.threshold for r in step.result.results}
        for gauge in step.gauges:
            self.observer.on_detector(gauge.detector, gauge.statistic, gauge.drifted, thresholds.get(gauge.detector))
        self.observer.on_accuracy(step.labeled_accuracy, step.estimated_accuracy)
        self._record_history(version, step.labeled_accuracy, step.estimated_accuracy, step.gauges, thresholds)
        to_send: list[Insight] = []
        scored_at = [r.scored_at for r in records]
        since = unchecked_since(scored_at, self._checked_through)
        self._checked_through = max(scored_at)
        if step.insight is not None:
            paths = write_reports()
            html = next((p for p in paths if p.suffix == ".html"), None)
            span = step.insight.window.model_copy(
                update={"unchecked_since": datetime.fromtimestamp(since, UTC) if since is not None else None}
            )
            insight = step.insight.model_copy(update={"report": str(html) if html else None, "window": span})
            self.store.upsert_insight(
                insight.id,
                insight.detector,
                insight.kind,
                insight.severity,
                step.transition.value,
                json.loads(insight.model_dump_json()),
            )
            if step.publish:
                to_send.append(insight)
        elif step.cleared:
            self._mark(step.cleared, "cleared")
        self.store.save_condition_and_outbox(TRACKER_KEY, json.loads(step.tracker.model_dump_json()), to_send)
        self.tracker = ConditionTracker.from_state(step.tracker)
        return bool(to_send)

    def _task_of(self, version: str) -> Task:
        """The version's task (read once per version; a text classifier when it cannot be read)."""
        if version not in self._tasks:
            try:
                self._tasks[version] = self.registry.artifact_settings(version).task
            except DeployError as exc:
                log.warning("cannot read the task of %s (%s); checking it as a text classifier", version, exc)
                return "text-classification"
        return self._tasks[version]

    def _entity_profile(self, version: str) -> EntityProfile | None:
        """A token classifier version's entity reference (None, logged once, when it has none usable)."""
        if version not in self._entity_profiles:
            try:
                self._entity_profiles[version] = EntityProfile.load(self.registry.path_of(version) / PROFILE_DIR)
            except (OSError, ValueError, KeyError) as exc:
                log.error("version %s has no usable entity reference (%s); checks are off", version, exc)
                self._entity_profiles[version] = None
        return self._entity_profiles[version]

    def _write_entity_report(self, step: StepOutcome, profile: EntityProfile, window: EntityWindow) -> list[Path]:
        """The project's page of an entity insight, and Evidently's drift report of the entity descriptors."""
        if step.insight is None:
            return []
        stem = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        try:
            paths = write_entity_report(
                step.insight, step.result, self.reports_dir / f"entities-{stem}.html", profile, window
            )
        except OSError:
            log.exception("could not write the entity report")
            return []
        self._prune_reports()
        return paths

    def _dead_letters_so_far(self) -> float:
        """Dead letters this process has sent (the scorer's and the monitor's, all reasons)."""
        return sum(
            s.value for m in self._metrics.dead_letters.collect() for s in m.samples if s.name.endswith("_total")
        )

    def _record_history(
        self,
        version: str,
        labeled: float | None,
        estimated: float | None,
        gauges: Sequence[DetectorGauge],
        thresholds: Mapping[str, float | None],
    ) -> None:
        """One row of the per-check history (the console's trends), pruned with the records' retention age."""
        now, dead = time.time(), self._dead_letters_so_far()
        since, dead_before = self._history_mark
        point = CheckPoint(
            at=now,
            model_version=version,
            labeled_accuracy=labeled,
            estimated_accuracy=estimated,
            detectors=[
                DetectorPoint(
                    detector=g.detector, statistic=g.statistic, threshold=thresholds.get(g.detector), drifted=g.drifted
                )
                for g in gauges
            ],
            texts_scored=self.store.count_scored_since(since),
            dead_letters=max(0, int(dead - dead_before)),
        )
        self.store.add_check_history(point, max_age_s=self.policy.retention_max_age_s)
        self._history_mark = (now, dead)

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

    def _mark(self, insight_id: str, state: str) -> None:
        if not self.store.set_insight_state(insight_id, state):
            log.warning("insight %s is no longer in the state store; cannot mark it %s", insight_id, state)

    def _publish(self, insight: Insight) -> bool:
        """Keep ``insight`` in the outbox and send what the outbox holds; True if ``insight`` went out."""
        self.store.add_to_outbox(insight)
        return any(sent.id == insight.id for sent in self.publisher.flush())

    def _write_reports(self, profile: ReferenceProfile, window: Window) -> list[Path]:
        stem = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        try:
            paths = write_reports(profile, window, self.reports_dir, stem)
        except Exception:
            log.exception("could not write the Evidently reports")
            return []
        self._prune_reports()
        return paths

    def _prune_reports(self) -> None:
        """Keep the newest ``reports_keep`` HTML reports (with their JSON)."""
        reports = sorted(self.reports_dir.glob("*.html"), key=lambda p: p.stat().st_mtime)
        for old in reports[: max(0, len(reports) - self.policy.reports_keep)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
