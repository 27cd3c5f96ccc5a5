"""False alarms and detection delay of the real daemon's monitor, at default monitor settings, on real data.

One MiniLM per source (each Amazon domain, SST-2, customer reviews), fine-tuned with the project's own
training (``insightloop train``'s ``train_first_model``: 1 epoch on 1,600 source rows; its validation split
is the reference profile) and registered as production. Then, for each stream, the real daemon runs
(``build_app(config, "monitor")`` against the embedded Kafka-protocol broker, SQLite state store, every
registered detector, monitor settings at their defaults): the bench publishes each text, its prediction and
(100 texts later) its label, and waits for the monitor's count-triggered check after every
``monitor.check_every_records`` texts, so the cadence is exactly the configured one.

The scorer is not run inside the daemon: every text is scored once, beforehand, by the *same* production
model through the scorer's own path (``ModelArtifact.load`` with the scorer's load options,
``predict``, the same rounding of the embedding), and the bench publishes those predictions on the
predictions topic as the scorer would. This keeps the CPU for the monitor (MiniLM scores ~35 texts/s on
2 cores) and lets a second run reuse the scores.

* In-distribution streams (goal: no insight at warning or above): each source against rows of itself
  the model never saw, neither in training nor in its reference (rows may repeat within a stream).
* Shift streams: source rows, then at a change point the target's rows; the delay is the number of
  post-change texts the monitor had seen at the first check that raised a warning-or-above insight
  (goal <= 300). Pairs: the four Amazon cross-domain pairs whose measured accuracy drop (this bench's
  models, target test split) is largest, SST-2 -> movie reviews, SST-2 -> customer reviews.

Models and scores are cached under ``~/.cache/insightloop-bench/alarms-<source>-...``.

    python bench/alarms.py [--quick] [--smoke] [--cache DIR]

``--quick`` is sized for 2 cores (fewer in-distribution texts, same models); ``--smoke`` uses a tiny
BERT and a few hundred texts (for the test suite; figures meaningless). The last line is
``alarms: texts_in_distribution=N false_alarms=N budget_texts=N median_delay=N max_delay=N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMAZON = ("books", "dvd", "electronics", "kitchen")
SOURCES = (*AMAZON, "sst2", "cr")
LABELS_DELAY = 100  # labels arrive this many texts after their text


@dataclass(frozen=True)
class Row:
    """One real labeled row."""

    id: str
    text: str
    label: str
    domain: str


@dataclass(frozen=True)
class Size:
    """How much of everything one run uses."""

    train_rows: int
    epochs: int
    in_distribution: dict[str, int]  # texts per source
    before_change: int  # source texts before the change point of a shift stream
    after_change: int  # target texts after it
    amazon_pairs: int  # Amazon cross-domain pairs run (largest accuracy drop first)
    max_length: int = 128
    profile_rounds: int = 200  # calibration splits of each reference profile (the training default)
    max_distinct: int = 2500  # distinct rows a stream draws from (each scored once; longer streams repeat them)


FULL = Size(
    train_rows=1600,
    epochs=1,
    in_distribution={"sst2": 9000, "kitchen": 9000, "cr": 4000, "books": 3000, "electronics": 3000, "dvd": 3000},
    before_change=550,
    after_change=400,
    amazon_pairs=4,
    max_distinct=1200,
)
# Sized for the 2 cores: two models instead of six (SST-2, and kitchen: the Amazon domain whose shifts cost
# most by the data's own TF-IDF table), still over 20,000 in-distribution texts: rows repeat more (scoring is
# what costs, and each distinct row is scored once).
QUICK = Size(
    train_rows=1600,
    epochs=1,
    in_distribution={"sst2": 9000, "kitchen": 9000},
    before_change=550,
    after_change=400,
    amazon_pairs=3,
    max_distinct=1200,
)
SMOKE = Size(
    train_rows=300,
    epochs=1,
    in_distribution={"books": 300, "sst2": 300},
    before_change=200,
    after_change=100,
    amazon_pairs=1,
    max_length=32,
    profile_rounds=30,
)


def normalised(text: str) -> str:
    """What "the same text" means for keeping streams apart from training rows."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def read_rows(path: Path, domain: str | None = None) -> list[Row]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                r = json.loads(line)
                if domain is None or r.get("domain") == domain:
                    rows.append(Row(str(r["id"]), str(r["text"]), str(r["label"]), str(r.get("domain", ""))))
    return rows


def shuffled(rows: list[Row], seed: int, salt: str) -> list[Row]:
    out = list(rows)
    random.Random(f"{seed}-{salt}").shuffle(out)
    return out


def source_split(name: str, train_rows: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(training rows, rows of the same source the model never sees in training or as reference)."""
    if name in AMAZON:
        train = shuffled(read_rows(DATA / "amazon_multidomain_sentiment" / "train.jsonl", name), seed, name)
        pool = read_rows(DATA / "amazon_multidomain_sentiment" / "test.jsonl", name)
        # Rows of the train split beyond the training sample are unseen too.
        chosen, rest = train[:train_rows], train[train_rows:]
        pool = [*pool, *rest]
    elif name == "sst2":
        folder = DATA / "sst2"
        everything = shuffled(
            [*read_rows(folder / "train.jsonl"), *read_rows(folder / "dev.jsonl"), *read_rows(folder / "test.jsonl")],
            seed,
            name,
        )
        chosen, pool = everything[:train_rows], everything[train_rows:]
    elif name == "cr":
        folder = DATA / "customer_reviews_cr"
        everything = shuffled([*read_rows(folder / "train.jsonl"), *read_rows(folder / "test.jsonl")], seed, name)
        chosen, pool = everything[:train_rows], everything[train_rows:]
    else:
        raise ValueError(f"unknown source {name!r}")
    seen = {normalised(r.text) for r in chosen}
    return chosen, [r for r in pool if normalised(r.text) not in seen]


def target_rows(name: str, source_training: list[Row]) -> list[Row]:
    """Rows of a shift target, none of them in the source model's training rows."""
    if name in AMAZON:
        rows = read_rows(DATA / "amazon_multidomain_sentiment" / "test.jsonl", name)
    elif name == "movies":
        rows = read_rows(DATA / "movie_review_polarity" / "test.jsonl")
    elif name == "cr":
        rows = read_rows(DATA / "customer_reviews_cr" / "test.jsonl")
    else:
        raise ValueError(f"unknown target {name!r}")
    seen = {normalised(r.text) for r in source_training}
    return [r for r in rows if normalised(r.text) not in seen]


def stream_pool(model: SourceModel, size: Size) -> list[Row]:
    """The distinct unseen source rows the streams of ``model`` draw from (at most the texts they need)."""
    need = max(size.in_distribution[model.name], size.before_change)
    return model.pool[: min(need, size.max_distinct)]


def shift_targets(name: str, size: Size, source_training: list[Row], seed: int) -> dict[str, list[Row]]:
    """The candidate shift targets of a source, each at most ``after_change`` rows (shuffled with our seed)."""
    names = [t for t in AMAZON if t != name] if name in AMAZON else (["movies", "cr"] if name == "sst2" else [])
    return {t: shuffled(target_rows(t, source_training), seed, f"target-{t}")[: size.after_change] for t in names}


# -- models and scores ---------------------------------------------------------------------------------------


@dataclass
class SourceModel:
    """A registry whose production version was trained on one source, and the rows it must never see again."""

    name: str
    registry: Path
    version_dir: Path
    training: list[Row]
    pool: list[Row]
    reference_texts: set[str] = field(default_factory=set)


def model_for(name: str, size: Size, cache: Path, base: str, seed: int, tag: str) -> SourceModel:
    """Train (or reuse the cached) first model of a source, with the project's own training."""
    from insightloop.daemon.train import train_first_model
    from insightloop.deploy import PROFILE_DIR, Registry
    from insightloop.retrain import FineTuneSettings, write_jsonl
    from insightloop.retrain.data import Example

    training, pool = source_split(name, size.train_rows, seed)
    root = cache / f"alarms-{name}-{tag}-{size.train_rows}rows-{size.epochs}ep-seed{seed}"
    registry = root / "registry"
    done = root / "trained.json"
    if not done.is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        train_file = write_jsonl(
            root / "train.jsonl",
            [Example(text=r.text, label=r.label, id=r.id, meta={"domain": r.domain}) for r in training],
        )
        settings = FineTuneSettings(epochs=size.epochs, max_length=size.max_length, seed=seed)
        started = time.perf_counter()
        train_first_model(
            train_file, registry, base, settings, promote=True, progress=False, profile_rounds=size.profile_rounds
        )
        done.write_text(json.dumps({"seconds": time.perf_counter() - started, "base": base}), encoding="utf-8")
        print(f"  trained {name} in {time.perf_counter() - started:.0f} s", flush=True)
    version = Registry(registry).production()
    assert version is not None
    version_dir = Registry(registry).path_of(version)
    reference = json.loads((version_dir / PROFILE_DIR / "rows.json").read_text(encoding="utf-8"))
    model = SourceModel(name, registry, version_dir, training, pool, {normalised(t) for t in reference["texts"]})
    # The reference is the model's validation split, a part of the training rows: checked, not assumed.
    leaked = [r for r in pool if normalised(r.text) in model.reference_texts]
    assert not leaked, f"{len(leaked)} stream rows of {name} are in its reference"
    return model


def score(model: SourceModel, rows: list[Row], cache_name: str) -> dict[str, dict[str, Any]]:
    """Predictions of ``model`` for each row id, computed once through the scorer's path and cached."""
    from insightloop.daemon.config import load_config
    from insightloop.daemon.scorer import EMBEDDING_DECIMALS, load_options
    from insightloop.deploy import ModelArtifact

    path = model.registry.parent / f"scores-{cache_name}.jsonl"
    cached: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            cached[item["row"]] = item
    todo = [r for r in {r.id: r for r in rows}.values() if r.id not in cached]
    if todo:
        options = load_options(load_config(None, {}, environ={}))
        artifact = ModelArtifact.load(model.version_dir, **options)
        started = time.perf_counter()
        with open(path, "a", encoding="utf-8") as out:
            for start in range(0, len(todo), 64):
                chunk = todo[start : start + 64]
                batch = artifact.predict([r.text for r in chunk], 32)
                labels = batch.predicted_labels()
                for j, r in enumerate(chunk):
                    item = {
                        "row": r.id,
                        "label": labels[j],
                        "scores": {n: float(p) for n, p in zip(batch.labels, batch.probabilities[j], strict=True)},
                        "embedding": [round(float(x), EMBEDDING_DECIMALS) for x in batch.embeddings[j]],
                        "n_tokens": int(batch.token_counts[j]),
                        "precision": artifact.precision,
                    }
                    cached[r.id] = item
                    out.write(json.dumps(item) + "\n")
        rate = len(todo) / max(time.perf_counter() - started, 1e-9)
        print(f"  scored {len(todo)} texts for {model.name}/{cache_name} ({rate:.0f} texts/s)", flush=True)
    return cached


def accuracy(scores: dict[str, dict[str, Any]], rows: list[Row]) -> float:
    return sum(scores[r.id]["label"] == r.label for r in rows) / len(rows)


# -- streams through the real daemon ----------------------------------------------------------------------------


def draw(pool: list[Row], n: int, seed: int, salt: str) -> list[Row]:
    """``n`` rows of ``pool``: each pass through it in a new order, so rows repeat only after all were used."""
    out: list[Row] = []
    round_ = 0
    while len(out) < n:
        out += shuffled(pool, seed, f"{salt}-{round_}")
        round_ += 1
    return out[:n]


@dataclass
class StreamResult:
    """What one stream through the daemon gave."""

    name: str
    texts: int
    change_at: int | None  # index of the first post-change text (None: in-distribution)
    checks: int = 0
    false_alarms: list[dict[str, Any]] = field(default_factory=list)  # warning-or-above insights before the change
    detection: dict[str, Any] | None = None  # the first warning-or-above insight after it
    delay: int | None = None  # post-change texts seen by the check that raised it
    info_insights: int = 0
    info_delay: int | None = None  # post-change texts at the first info insight (certain, but cheap so far)
    seconds: float = 0.0


def checks_done(app: Any) -> int:
    """Checks the daemon's monitor has finished (its check-duration histogram's count)."""
    return int(
        sum(s.value for m in app.metrics.check_seconds.collect() for s in m.samples if s.name.endswith("_count"))
    )


def run_stream(
    name: str,
    model: SourceModel,
    stream: list[Row],
    scores: dict[str, dict[str, Any]],
    change_at: int | None,
    workdir: Path,
    overrides: dict[str, Any],
) -> StreamResult:
    """Feed ``stream`` through the real daemon's monitor role and follow what it raised, check by check."""
    from insightloop.daemon.broker import EmbeddedBroker, free_port
    from insightloop.daemon.config import load_config
    from insightloop.daemon.kafka import make_producer
    from insightloop.daemon.wiring import build_app
    from insightloop.deploy import Registry

    result = StreamResult(name, len(stream), change_at)
    started = time.perf_counter()
    state = workdir / f"state-{name}"
    shutil.rmtree(state, ignore_errors=True)
    with EmbeddedBroker(port=free_port()) as broker:
        config = load_config(
            None,
            {
                "kafka": {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "session_timeout_ms": 6000,
                    "heartbeat_interval_ms": 1000,
                },
                "registry": {"path": str(model.registry)},
                "state": {"dir": str(state)},
                "api": {"host": "127.0.0.1", "http_port": free_port()},
                "monitor": overrides,
            },
            environ={},
        )
        policy = config.monitor
        app = build_app(config, "monitor")
        app.daemon.start()
        producer = make_producer(config.kafka)
        try:
            deadline = time.monotonic() + 120
            while not app.daemon.readiness()[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not become ready within 120 s")
                time.sleep(0.2)
            version = Registry(model.registry).production()
            seen: dict[str, str] = {}  # insight id -> severity class first seen ("info" / "page")
            ids = [f"{name}-{i:06d}" for i in range(len(stream))]
            topics = config.topics
            every = policy.check_every_records
            checks_before = 0
            finished_before = checks_done(app)
            for start in range(0, len(stream), every):
                end = min(start + every, len(stream))
                now = datetime.now(UTC)
                # Texts first, then their predictions, as in production (the scorer answers a text it read):
                # the check the predictions trigger then sees every text of the batch.
                for i in range(start, end):
                    text = {
                        "id": ids[i],
                        "text": stream[i].text,
                        "ts": now.isoformat(),
                        "meta": {"domain": stream[i].domain},
                    }
                    producer.send(topics.texts, key=ids[i].encode(), value=json.dumps(text).encode())
                producer.flush(timeout=60)
                deadline = time.monotonic() + 300
                while app.store.count_records() < end and time.monotonic() < deadline:
                    time.sleep(0.05)
                for i in range(start, end):
                    item = scores[stream[i].id]
                    prediction = {
                        "id": ids[i],
                        "model_version": version or model.version_dir.name,
                        "label": item["label"],
                        "scores": item["scores"],
                        "embedding": item["embedding"],
                        "n_tokens": item["n_tokens"],
                        "ts": now.isoformat(),
                        "scored_at": datetime.now(UTC).isoformat(),
                        "precision": item["precision"],
                    }
                    producer.send(topics.predictions, key=ids[i].encode(), value=json.dumps(prediction).encode())
                    j = i - LABELS_DELAY
                    if j >= 0:
                        label = {"id": ids[j], "label": stream[j].label}
                        producer.send(topics.labels, key=ids[j].encode(), value=json.dumps(label).encode())
                producer.flush(timeout=60)
                if end - start >= every:
                    # The check is over once the monitor observed its duration (after the insight is stored).
                    while checks_done(app) <= finished_before and time.monotonic() < deadline:
                        time.sleep(0.05)
                finished_before = checks_done(app)
                checks_before = len(app.store.check_history(limit=100_000))
                for insight in app.store.insights(1000):
                    loud = insight["severity"] in ("warning", "critical")
                    if seen.get(insight["id"]) == "page" or (insight["id"] in seen and not loud):
                        continue
                    seen[insight["id"]] = "page" if loud else "info"
                    if not loud:
                        result.info_insights += 1
                        if change_at is not None and end > change_at and result.info_delay is None:
                            result.info_delay = end - change_at
                        continue
                    if change_at is None or end <= change_at:
                        result.false_alarms.append(insight)
                    elif result.detection is None:
                        result.detection, result.delay = insight, end - change_at
            result.checks = checks_before
        finally:
            producer.close(timeout=10)
            app.stop()
    result.seconds = time.perf_counter() - started
    return result


def describe(insight: dict[str, Any]) -> str:
    """The diagnosis and recommendation of an insight, on two lines."""
    recommendation = insight.get("recommendation") or {}
    cost = insight.get("cost")
    cost_text = (
        f"cost {cost['points']:.1f} pts [{cost['low']:.1f}, {cost['high']:.1f}] {cost['source']}"
        if cost
        else "cost unknown"
    )
    return (
        f"      {insight['severity']} {insight['kind']} ({insight['detector']}), {cost_text}:\n"
        f"      {insight['summary'][:400]}\n"
        f"      recommendation: {recommendation.get('action')} — {recommendation.get('because', '')[:300]}"
    )


RANKING_ROWS = 150  # target rows each Amazon pair's accuracy drop is ranked on


def recalibrate(model: SourceModel, seed: int) -> None:
    """Re-calibrate the cached profile's thresholds with this code's detectors (training is what is cached)."""
    from insightloop.deploy import PROFILE_DIR
    from insightloop.detectors import ReferenceProfile, all_detectors

    directory = model.version_dir / PROFILE_DIR
    profile = ReferenceProfile.load(directory)
    profile.calibrate(all_detectors())
    profile.save(directory)


def prepare(
    size: Size, cache: Path, base: str, seed: int, tag: str
) -> tuple[dict[str, SourceModel], list[tuple[str, str, float]]]:
    """Every source's model with its pool scored, and the shift pairs (source, target, accuracy drop) to run."""
    models: dict[str, SourceModel] = {}
    for name in size.in_distribution:
        model = model_for(name, size, cache, base, seed, tag)
        models[name] = model
        score(model, stream_pool(model, size), "pool")
    amazon: list[tuple[str, str, float]] = []
    pairs: list[tuple[str, str, float]] = []
    for name, model in models.items():
        pool = stream_pool(model, size)
        own = accuracy(score(model, pool, "pool"), pool)
        for target, rows in shift_targets(name, size, model.training, seed).items():
            if name in AMAZON:
                ranked = rows[: min(RANKING_ROWS, size.after_change)]
                amazon.append((name, target, own - accuracy(score(model, ranked, f"target-{target}"), ranked)))
            else:
                pairs.append((name, target, own - accuracy(score(model, rows, f"target-{target}"), rows)))
    amazon.sort(key=lambda p: -p[2])
    return models, [*amazon[: size.amazon_pairs], *pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer in-distribution texts (2 cores)")
    parser.add_argument("--smoke", action="store_true", help="tiny BERT, few texts (for tests)")
    parser.add_argument("--prepare", action="store_true", help="only train and score (fills the cache)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "insightloop-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", help="comma-separated subset of the size's sources (e.g. sst2,kitchen)")
    args = parser.parse_args()
    from insightloop.daemon.config import load_config
    from insightloop.detectors import AlarmBudget, all_detectors
    from insightloop.retrain import default_base_model, save_tiny_bert

    size = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.sources:
        wanted = args.sources.split(",")
        unknown = [n for n in wanted if n not in size.in_distribution]
        if unknown:
            raise SystemExit(f"--sources: {unknown} not among {sorted(size.in_distribution)}")
        size = dataclasses.replace(size, in_distribution={n: size.in_distribution[n] for n in wanted})
    scratch = Path(tempfile.mkdtemp(prefix="insightloop-alarms-"))
    started = time.perf_counter()
    try:
        if args.smoke:
            base, tag, cache = str(save_tiny_bert(scratch / "tiny")), "tiny", scratch / "cache"
        else:
            base, tag, cache = default_base_model(), "minilm", args.cache
        models, pairs = prepare(size, cache, base, args.seed, tag)
        if args.prepare:
            print(f"prepared {sorted(models)} under {cache}; pairs {[(s, t, round(d, 3)) for s, t, d in pairs]}")
            return
        for model in models.values():
            recalibrate(model, args.seed)
        # Monitor settings are the defaults, but for min_check_interval_s: the bench sends each batch of
        # check_every_records texts as fast as the broker takes it and waits for its check, so the cadence is
        # the configured one (at a live rate under ~20 texts/s the 5 s minimum never binds either).
        overrides: dict[str, Any] = {"min_check_interval_s": 0.0}
        monitor = load_config(None, {"monitor": overrides}, environ={}).monitor
        budget = AlarmBudget(
            budget_texts=monitor.false_alarm_budget,
            check_every_records=monitor.check_every_records,
            detectors=len(all_detectors()),
        )
        print(
            f"monitor: window_size={monitor.window_size} check_every_records={monitor.check_every_records} "
            f"false_alarm_budget={monitor.false_alarm_budget} texts -> {budget.per_check_rate:.2g} per check, "
            f"{budget.per_detector_rate:.2g} per detector ({budget.detectors} detectors, Bonferroni); "
            f"min_accuracy_cost={monitor.min_accuracy_cost:g} points",
            flush=True,
        )
        results: list[StreamResult] = []
        print("\nin-distribution streams (goal: 0 insights at warning or above)", flush=True)
        for name, model in models.items():
            stream = draw(stream_pool(model, size), size.in_distribution[name], args.seed, f"stream-{name}")
            result = run_stream(f"{name}", model, stream, score(model, stream, "pool"), None, scratch, overrides)
            results.append(result)
            unique = len({r.id for r in stream})
            print(
                f"  {name:<12} texts={result.texts:>6} distinct={unique:>5} checks={result.checks:>4} "
                f"false_alarms={len(result.false_alarms)} info={result.info_insights} ({result.seconds:.0f} s)",
                flush=True,
            )
            for insight in result.false_alarms:
                print(describe(insight), flush=True)
        print("\nshift streams (goal: first warning-or-above insight <= 300 texts after the change)", flush=True)
        delays: list[int] = []
        undetected = 0
        for source, target, drop in pairs:
            model = models[source]
            before = draw(stream_pool(model, size), size.before_change, args.seed, f"before-{target}")
            after = shift_targets(source, size, model.training, args.seed)[target]
            scores = {**score(model, before, "pool"), **score(model, after, f"target-{target}")}
            result = run_stream(
                f"{source}-to-{target}", model, [*before, *after], scores, len(before), scratch, overrides
            )
            results.append(result)
            after_acc = accuracy(scores, after)
            print(
                f"  {source} -> {target:<12} change at text {len(before)}, accuracy drop {100 * drop:.1f} points "
                f"(target accuracy {after_acc:.3f}), checks={result.checks}, false alarms before the change="
                f"{len(result.false_alarms)}, delay={result.delay if result.delay is not None else 'not detected'} "
                f"(first info insight: {result.info_delay if result.info_delay is not None else 'none'}; "
                f"{result.seconds:.0f} s)",
                flush=True,
            )
            if result.detection is not None and result.delay is not None:
                delays.append(result.delay)
                print(describe(result.detection), flush=True)
            else:
                undetected += 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    in_distribution = sum(r.texts if r.change_at is None else r.change_at for r in results)
    false_alarms = sum(len(r.false_alarms) for r in results)
    checks = sum(r.checks for r in results)
    median = int(statistics.median(delays)) if delays else -1
    worst = max(delays) if delays and not undetected else -1
    print(
        f"\n{checks} checks; {in_distribution} in-distribution texts (streams and pre-change parts), "
        f"{false_alarms} false insights at warning or above; {len(delays)} of {len(delays) + undetected} shifts "
        f"detected; {(time.perf_counter() - started) / 60:.1f} min",
        flush=True,
    )
    print(
        f"alarms: texts_in_distribution={in_distribution} false_alarms={false_alarms} "
        f"budget_texts={budget.budget_texts} median_delay={median} max_delay={worst}"
    )


if __name__ == "__main__":
    sys.exit(main())
