"""Benchmark: the records per second the real monitor ingests and checks, at default monitor settings.

Real texts (the Amazon reviews in ../shared/data, cycled, each with a unique id) and their predictions are
produced straight to the topics of an embedded Tansu broker, so the scorer is not the limit. The predictions
are real too: every distinct text is scored once, beforehand, by the registered production version (a tiny
BERT, 2 layers of width 32 with the packaged MiniLM tokenizer, fine-tuned on real reviews in seconds; only
the monitor is timed, so the model's size does not matter, but its reference profile is what the checks
compare with). Labels arrive late, as in production: the labels topic carries the labels of texts the
monitor stored earlier (the state store starts with those texts, copied in before each run and not timed),
so every label joins a stored record.

Each run is the real :class:`~insightloop.daemon.monitor.Monitor` (its consumer group, its checks on their
schedule, the SQLite state store) draining the same topics from the start with a fresh group and a fresh
store: records/s is the records of the three topics ingested from the first poll to the last. The
baseline is the monitor as it was before the ingest was batched, in the same process, interleaved with
ours: three store transactions per poll and a text's row written once per topic (the old
``Ingest.__call__``, kept verbatim below), and a check after every ``check_every_records`` with no time cap
(``min_check_interval_s: 0``). After each pair of runs the two stores are compared row by row (same texts,
predictions, scores and labels), so the speed-up changes nothing that is stored. ``--sample-rates 0.1``
adds runs of ours with ``monitor.sample_rate`` below 1 (what a monitor behind a scorer fleet would use).

    python bench/monitor.py [--texts 30000] [--rounds 2] [--sample-rates 0.25,0.1] [--smoke]

Last line: ``monitor: records=N records_per_s=X checks=N check_ms_p50=X check_ms_p95=X sample_rate=X
texts_per_s=X baseline_records_per_s=X ratio=X`` (ours at defaults; medians over the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon_multidomain_sentiment"


def load_rows(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in ("train.jsonl", "test.jsonl"):
        if (folder / name).is_file():
            with open(folder / name, encoding="utf-8") as handle:
                rows += [json.loads(line) for line in handle if line.strip()]
    return [r for r in rows if isinstance(r.get("text"), str) and r.get("label") is not None]


def train_tiny(rows: list[dict[str, Any]], workdir: Path) -> Path:
    """A registry whose production version is a tiny BERT fine-tuned on ``rows``, with its reference profile."""
    from insightloop.daemon.train import train_first_model
    from insightloop.retrain import FineTuneSettings, save_tiny_bert

    base = save_tiny_bert(workdir / "tiny-bert")
    train = workdir / "train.jsonl"
    with open(train, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"text": row["text"], "label": row["label"], "domain": row.get("domain")}) + "\n")
    registry = workdir / "registry"
    # projection_dims at its default (32): prediction messages as large as production's.
    settings = FineTuneSettings(epochs=1, learning_rate=2e-3, batch_size=16, max_length=64)
    train_first_model(train, registry, str(base), settings, promote=True, progress=False, profile_rounds=20)
    return registry


@dataclass(frozen=True)
class Scored:
    """One distinct text as the scorer would publish it (without its id)."""

    text: str
    label: str
    domain: str | None
    predicted: str
    scores: dict[str, float]
    embedding: list[float]
    n_tokens: int


def score_rows(registry: Path, rows: list[dict[str, Any]]) -> tuple[str, str, list[Scored]]:
    """Every row scored once by the production version, as the scorer scores (same load options, rounding)."""
    from insightloop.daemon.scorer import EMBEDDING_DECIMALS
    from insightloop.deploy import ModelArtifact, Registry

    version = Registry(registry).production()
    assert version is not None
    artifact = ModelArtifact.load(Registry(registry).path_of(version), device="cpu", bf16=False)
    batch = artifact.predict([r["text"] for r in rows], batch_size=64)
    labels = batch.predicted_labels()
    scored = [
        Scored(
            text=r["text"],
            label=str(r["label"]),
            domain=r.get("domain"),
            predicted=labels[i],
            scores={name: float(p) for name, p in zip(batch.labels, batch.probabilities[i], strict=True)},
            embedding=[round(float(x), EMBEDDING_DECIMALS) for x in batch.embeddings[i]],
            n_tokens=int(batch.token_counts[i]),
        )
        for i, r in enumerate(rows)
    ]
    return version, artifact.precision, scored


def text_message(text_id: str, s: Scored) -> bytes:
    return json.dumps({"id": text_id, "text": s.text, "meta": {"domain": s.domain}}).encode("utf-8")


def prediction_message(text_id: str, s: Scored, version: str, precision: str) -> bytes:
    from insightloop.daemon.events import PredictionEvent

    event = PredictionEvent(
        id=text_id,
        model_version=version,
        label=s.predicted,
        scores=s.scores,
        embedding=s.embedding,
        n_tokens=s.n_tokens,
        precision=precision,
    )
    return event.model_dump_json().encode("utf-8")


def produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> float:
    """Produce (topic, key, value) messages; returns the seconds it took."""
    from kafka import KafkaProducer

    started = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=(2, 5), linger_ms=20, batch_size=1 << 20)
    try:
        futures = [producer.send(topic, key=key, value=value) for topic, key, value in messages]
        producer.flush(timeout=120)
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close(timeout=10)
    return time.perf_counter() - started


def legacy_ingest_class() -> type:
    """The monitor's ingest before batching: its ``__call__`` verbatim (three store transactions per poll)."""
    from pydantic import ValidationError

    from insightloop.daemon.events import PredictionEvent, RejectedMessage, RejectReason, dead_letter_of
    from insightloop.daemon.ingest import Ingest, log
    from insightloop.daemon.state import LabelRow, PredictionRow, TextRow

    class LegacyIngest(Ingest):
        def __call__(self, records: Sequence[Any]) -> int:
            texts: list[TextRow] = []
            predictions: list[PredictionRow] = []
            labels: list[LabelRow] = []
            letters: list[Any] = []
            known = self.label_set() if any(r.topic == self.topics.labels for r in records) else None
            for record in records:
                if record.topic == self.topics.texts:
                    try:
                        event = self.mapping.parse_text(record.value, record.key, self.max_message_bytes)
                    except RejectedMessage:
                        continue
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
                        error = f"unknown label: {label.label!r} is not in the production model's label set"
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

    return LegacyIngest


@dataclass
class RunResult:
    name: str
    sample_rate: float
    records: int
    seconds: float
    check_seconds: list[float] = field(default_factory=list)
    stored: int = 0
    labeled: int = 0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")

    @property
    def check_ms_mean(self) -> float:
        return 1000 * statistics.fmean(self.check_seconds) if self.check_seconds else float("nan")

    def check_ms(self, q: float) -> float:
        if not self.check_seconds:
            return float("nan")
        ordered = sorted(self.check_seconds)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Counting:
    """Wraps the monitor's ingest: counts the records it is handed and when the first and the last came."""

    def __init__(self, ingest: Callable[[Sequence[Any]], int], expected: int, done: threading.Event) -> None:
        self.ingest = ingest
        self.expected = expected
        self.done = done
        self.seen = 0
        self.first: float | None = None
        self.last = 0.0

    def __call__(self, records: Sequence[Any]) -> int:
        if self.first is None:
            self.first = time.perf_counter()
        stored = self.ingest(records)
        self.seen += len(records)
        self.last = time.perf_counter()
        if self.seen >= self.expected:
            self.done.set()
        return stored

    def __getattr__(self, name: str) -> Any:  # producer, label_set, ... of the wrapped ingest
        return getattr(self.ingest, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "producer":
            setattr(self.ingest, name, value)
        else:
            super().__setattr__(name, value)


def run_monitor(
    name: str,
    base_config: dict[str, Any],
    prepared_db: Path,
    workdir: Path,
    expected: int,
    legacy: bool,
    sample_rate: float,
    timeout_s: float,
) -> tuple[RunResult, Path]:
    """One drain of the topics by the real monitor; returns its figures and its state directory."""
    from insightloop.daemon.config import load_config
    from insightloop.daemon.metrics import Metrics
    from insightloop.daemon.monitor import Monitor
    from insightloop.daemon.state import DB_FILE, StateStore

    state = workdir / f"state-{name}"
    state.mkdir()
    shutil.copy(prepared_db, state / DB_FILE)
    monitor_section: dict[str, Any] = {"group_id": f"bench-{name}", "sample_rate": sample_rate}
    if legacy:
        monitor_section["min_check_interval_s"] = 0.0  # the count alone decided, as before
    sections = {**base_config, "state": {"dir": str(state)}, "monitor": monitor_section}
    config = load_config(None, sections, environ={})
    store = StateStore(config.state.dir)
    monitor = Monitor(config, store, Metrics())
    # The reference profile is read (and cached) before the clock starts, as in a monitor that has run a while.
    version = monitor.registry.production()
    assert version is not None
    done = threading.Event()
    if legacy:
        monitor.ingest = legacy_ingest_class()(config, store, monitor.observer)
    counting = Counting(monitor.ingest, expected, done)
    monitor.ingest = counting  # type: ignore[assignment]
    checks: list[float] = []
    check = monitor.check

    def timed_check() -> Any:
        # Checks that start once the records flow count (one that starts as the last poll lands too).
        during_run = counting.first is not None
        started = time.perf_counter()
        try:
            return check()
        finally:
            if during_run:
                checks.append(time.perf_counter() - started)

    monitor.check = timed_check  # type: ignore[method-assign]
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            monitor.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"monitor-{name}")
    thread.start()
    finished = done.wait(timeout_s)
    deadline = time.monotonic() + 60
    while finished and not checks and time.monotonic() < deadline:
        time.sleep(0.05)  # a drain faster than the first check: its time is still what a check costs
    stop.set()
    thread.join(120)
    if errors:
        raise errors[0]
    if not finished:
        raise RuntimeError(f"{name}: {counting.seen} of {expected} records after {timeout_s:.0f} s")
    assert counting.first is not None
    with store.transaction() as conn:
        stored = int(conn.execute("SELECT COUNT(*) FROM records WHERE id LIKE 'n-%'").fetchone()[0])
        labeled = int(
            conn.execute("SELECT COUNT(*) FROM records WHERE id LIKE 'h-%' AND label IS NOT NULL").fetchone()[0]
        )
    store.close()
    result = RunResult(name, sample_rate, counting.seen, counting.last - counting.first, checks, stored, labeled)
    return result, state


def stored_rows(state: Path) -> list[tuple[Any, ...]]:
    """What a run stored, comparable across runs (times left out)."""
    import sqlite3

    from insightloop.daemon.state import DB_FILE

    with sqlite3.connect(state / DB_FILE) as conn:
        return conn.execute(
            "SELECT id, text, meta, model_version, predicted, scores, embedding, n_tokens, precision, label "
            "FROM records ORDER BY id"
        ).fetchall()


def bare_consumer_rate(bootstrap: str, topics: list[str], expected: int) -> float:
    """Records/s a kafka-python consumer alone drains the same topics at (the ceiling of any monitor here)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        api_version=(2, 5),
        group_id=f"bench-bare-{time.time_ns()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    consumer.subscribe(topics)
    seen, first = 0, None
    try:
        deadline = time.monotonic() + 300
        while seen < expected and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=2000)
            if polled and first is None:
                first = time.perf_counter()
            seen += sum(len(batch) for batch in polled.values())
            if polled:
                consumer.commit()
    finally:
        consumer.close(autocommit=False)
    return seen / (time.perf_counter() - first) if first else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=30_000, help="new texts (each with a prediction) per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved baseline/ours pairs")
    parser.add_argument("--sample-rates", default="", help="extra runs of ours at these monitor.sample_rate values")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train.jsonl / test.jsonl")
    parser.add_argument("--smoke", action="store_true", help="1,500 texts, one round (for tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.texts, args.rounds = 1500, 1
    extra_rates = [float(x) for x in args.sample_rates.split(",") if x.strip()]
    rows = load_rows(args.data)
    if not rows:
        print(f"no data under {args.data}; pass --data FOLDER", file=sys.stderr)
        return 2

    import kafka.record.util

    from insightloop.daemon.broker import EmbeddedBroker, free_port
    from insightloop.daemon.config import load_config
    from insightloop.daemon.kafka import ensure_topics
    from insightloop.daemon.state import DB_FILE, PredictionRow, StateStore, TextRow

    crc = "C extension (crc32c)" if getattr(kafka.record.util, "crc32c_c", None) is not None else "pure Python"
    print(f"kafka-python CRC32C: {crc}; {os.cpu_count()} CPUs")
    n = args.texts
    with tempfile.TemporaryDirectory(prefix="insightloop-monitor-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        n_train = 200 if args.smoke else 400
        registry = train_tiny(rows[:: max(1, len(rows) // n_train)][:n_train], workdir)
        # Each distinct text is scored once (at most every row of the data; the stream cycles through them).
        version, precision, scored = score_rows(registry, rows[: min(len(rows), 2 * n)])
        print(f"tiny model trained and {len(scored)} real texts scored in {time.perf_counter() - started:.1f} s")

        with EmbeddedBroker(port=free_port()) as broker:
            base: dict[str, Any] = {
                "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                "registry": {"path": str(registry)},
                "api": {"host": "127.0.0.1", "http_port": 0},
            }
            config = load_config(None, {**base, "state": {"dir": str(workdir / "unused")}}, environ={})
            topics = config.topics
            ensure_topics(config.kafka, topics.all())
            # The store every run starts from: n texts stored earlier, scored, not yet labeled ("h-" ids).
            prepared = workdir / "prepared"
            store = StateStore(prepared)
            now = time.time()
            for start in range(0, n, 2000):
                chunk = [(f"h-{i}", scored[i % len(scored)]) for i in range(start, min(n, start + 2000))]
                store.add_polled(
                    [TextRow(i, s.text, None, {"domain": s.domain}) for i, s in chunk],
                    [
                        PredictionRow(i, version, s.predicted, s.scores, s.embedding, s.n_tokens, precision)
                        for i, s in chunk
                    ],
                    [],
                    now,
                )
            store.close()
            messages: list[tuple[str, bytes, bytes]] = []
            for i in range(n):
                s = scored[i % len(scored)]
                key = f"n-{i}".encode()
                messages.append((topics.texts, key, text_message(f"n-{i}", s)))
                messages.append((topics.predictions, key, prediction_message(f"n-{i}", s, version, precision)))
                late = scored[i % len(scored)]
                messages.append(
                    (topics.labels, f"h-{i}".encode(), json.dumps({"id": f"h-{i}", "label": late.label}).encode())
                )
            seconds = produce(broker.bootstrap_servers, messages)
            expected = len(messages)
            print(f"produced {expected} records ({n} texts, {n} predictions, {n} late labels) in {seconds:.1f} s")
            bare = bare_consumer_rate(
                broker.bootstrap_servers, [topics.texts, topics.predictions, topics.labels], expected
            )
            print(f"a bare kafka-python consumer drains them at {bare:,.0f} records/s (the ceiling here)")

            timeout_s = 600.0
            results: dict[str, list[RunResult]] = {}
            print(
                f"\n{'run':<22} {'records/s':>10} {'texts/s':>9} {'checks':>6} {'check ms mean':>13} "
                f"{'p50':>6} {'p95':>6} {'stored':>7} {'labeled':>7}"
            )

            def show(r: RunResult) -> None:
                print(
                    f"{r.name:<22} {r.records_per_s:>10,.0f} {r.records_per_s / 3:>9,.0f} {len(r.check_seconds):>6} "
                    f"{r.check_ms_mean:>13.0f} {r.check_ms(0.5):>6.0f} {r.check_ms(0.95):>6.0f} "
                    f"{r.stored:>7} {r.labeled:>7}",
                    flush=True,
                )

            identical = True
            for round_no in range(args.rounds):
                states = {}
                for variant, legacy in (("baseline", True), ("ours", False)):
                    name = f"{variant}-{round_no}"
                    result, state = run_monitor(
                        name, base, prepared / DB_FILE, workdir, expected, legacy, 1.0, timeout_s
                    )
                    results.setdefault(variant, []).append(result)
                    states[variant] = state
                    show(result)
                same = stored_rows(states["baseline"]) == stored_rows(states["ours"])
                identical &= same
                for state in states.values():
                    shutil.rmtree(state)
            for rate in extra_rates:
                result, state = run_monitor(
                    f"ours-sample-{rate:g}", base, prepared / DB_FILE, workdir, expected, False, rate, timeout_s
                )
                results.setdefault(f"sample-{rate:g}", []).append(result)
                show(result)
                kept = {row[0] for row in stored_rows(state) if row[0].startswith("n-")}
                print(f"  kept {len(kept)} of {n} new texts ({len(kept) / n:.3f}; sample_rate {rate:g})")
                shutil.rmtree(state)

    ours, baseline = results["ours"], results["baseline"]
    ours_rate = statistics.median(r.records_per_s for r in ours)
    base_rate = statistics.median(r.records_per_s for r in baseline)
    checks = [c for r in ours for c in r.check_seconds]
    pooled = RunResult("ours", 1.0, 0, 0.0, checks)
    print(f"\nstored records identical between baseline and ours: {'yes' if identical else 'NO'}")
    print(
        f"ours {ours_rate:,.0f} records/s vs baseline {base_rate:,.0f} records/s: {ours_rate / base_rate:.2f}x "
        f"(medians of {len(ours)} interleaved rounds; a bare consumer: {bare:,.0f} records/s)"
    )
    if not identical:
        print("the batched ingest stored something else than the baseline", file=sys.stderr)
        return 1
    print(
        f"monitor: records={ours[0].records} records_per_s={ours_rate:.0f} checks={len(checks) // len(ours)} "
        f"check_ms_p50={pooled.check_ms(0.5):.0f} check_ms_p95={pooled.check_ms(0.95):.0f} sample_rate=1 "
        f"texts_per_s={ours_rate / 3:.0f} baseline_records_per_s={base_rate:.0f} ratio={ours_rate / base_rate:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
