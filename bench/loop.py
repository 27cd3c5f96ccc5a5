"""The loop on real drift, against an upper bound and a practical anchor, over seeds.

For each case and seed, in one process: a first model is trained on the source data, the real daemon (default
monitor, controller and gate settings) watches a stream of source texts and then target texts, labels
arriving late, and its retraining job's candidate is approved once the gate passes it (the bench acts as the
person who approves). Four arms are scored on the last 30% of the post-change texts, whose labels the loop never
sees:

* ``acc_none``: the first model, no retraining;
* ``acc_loop``: what serves at the end (the first model when the loop promoted nothing);
* ``acc_oracle``: the upper bound: the loop's own recipe (its job's plan, or the controller's default plan when
  no job ran) trained on the source data plus every post-change label the stream carried, plus the rows of
  ``--oracle-train``, nothing held out;
* ``acc_tfidf``: TF-IDF (word 1-2 grams) + logistic regression trained on exactly the labels the loop's job had
  (the source data alone when no job ran).

``gap_closed = (loop − none) / (oracle − none)`` from the seed means; ``nan`` with the reason when the upper
bound does not beat no retraining.

Cases: ``books-kitchen`` and ``kitchen-books`` (Amazon reviews across domains), ``sst2-movie`` (one-sentence
snippets, then full movie reviews of about 700 words: the long-text case), or your own files with
``--reference/--before/--after[/--oracle-train]``. ``--quick`` (the default on a machine without a GPU) fits
2 CPU cores; ``--full`` uses every row the cases have; ``--smoke`` runs the plumbing on few rows and 64 tokens
(for tests: its figures mean little).

    python bench/loop.py --quick                       # all three cases, 3 seeds
    python bench/loop.py --case sst2-movie --seeds 5
    python bench/loop.py --case sst2-movie --seeds 1 --first-seed 2   # one more seed for an earlier run
    python bench/loop.py --reference REF.jsonl --before B.jsonl --after A.jsonl --oracle-train T.jsonl

One line per case, then a summary, all beginning ``loop:``; the case lines read
``loop: case=C seeds=N delay=D false_alarms=F acc_none=X acc_loop=X acc_oracle=X acc_tfidf=X gap_closed=G
deviations=...`` (means over seeds; ``delay`` and ``false_alarms`` are their mean and total).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASES = ("books-kitchen", "kitchen-books", "sst2-movie")
#: Rows per case part: (source training, stream before the change, stream after it, extra target rows for the
#: upper bound). The last 30% of "after" is the evaluation set.
SIZES = {"smoke": (300, 250, 900, 100), "quick": (1000, 300, 800, 400), "full": (1600, 400, 1200, 800)}
#: What the bench sets that a deployment would not: anything of the monitor, controller or gate is listed here.
DEVIATIONS = ("approval=bench_approves_what_the_gate_passed",)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
Row = dict[str, str]


def read_rows(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shuffled(rows: list[Row], seed: int) -> list[Row]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def amazon(split: str, domain: str, seed: int) -> list[Row]:
    rows = read_rows(DATA / "amazon_multidomain_sentiment" / f"{split}.jsonl")
    return shuffled([r for r in rows if r.get("domain") == domain], seed)


@dataclass(frozen=True)
class CaseData:
    """One case for one seed: the source training rows, the stream before and after the change, extra target rows."""

    reference: list[Row]
    before: list[Row]
    after: list[Row]
    oracle_extra: list[Row]


def case_data(case: str, seed: int, size: str) -> CaseData:
    """The rows of a built-in case, shuffled by ``seed`` and cut to ``size``; no row in two parts."""
    n_ref, n_before, n_after, n_extra = SIZES[size]
    if case in ("books-kitchen", "kitchen-books"):
        source, target = case.split("-")
        reference, before = amazon("train", source, seed), amazon("test", source, seed)
        pool = shuffled([*amazon("test", target, seed), *amazon("train", target, seed)], seed)
    elif case == "sst2-movie":
        reference = shuffled(read_rows(DATA / "sst2" / "train.jsonl"), seed)
        before = shuffled(read_rows(DATA / "sst2" / "dev.jsonl"), seed)
        movie = DATA / "movie_review_polarity"
        pool = shuffled([*read_rows(movie / "test.jsonl"), *read_rows(movie / "train.jsonl")], seed)
    else:
        raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    return CaseData(reference[:n_ref], before[:n_before], pool[:n_after], pool[n_after : n_after + n_extra])


def own_files(args: argparse.Namespace) -> CaseData:
    limit = args.limit

    def part(path: Path | None) -> list[Row]:
        rows = read_rows(path) if path is not None else []
        return rows[:limit] if limit else rows

    return CaseData(part(args.reference), part(args.before), part(args.after), part(args.oracle_train))


def write_rows(path: Path, rows: Sequence[Row]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def accuracy_of(artifact: Any, rows: Sequence[Row]) -> float:
    predicted = artifact.predict([r["text"] for r in rows], batch_size=32).predicted_labels()
    return sum(p == r["label"] for p, r in zip(predicted, rows, strict=True)) / len(rows)


def tfidf_accuracy(train: Sequence[Row], evaluation: Sequence[Row]) -> float:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression at scikit-learn's defaults otherwise."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    features = vectorizer.fit_transform([r["text"] for r in train])
    model = LogisticRegression(max_iter=2000).fit(features, [r["label"] for r in train])
    predicted = model.predict(vectorizer.transform([r["text"] for r in evaluation]))
    return float(sum(p == r["label"] for p, r in zip(predicted, evaluation, strict=True)) / len(evaluation))


@dataclass
class RunResult:
    """One seed of one case."""

    delay: int
    false_alarms: int
    acc_none: float
    acc_loop: float
    acc_oracle: float
    acc_tfidf: float
    notes: list[str] = field(default_factory=list)


def run_once(data: CaseData, seed: int, args: argparse.Namespace, work: Path) -> RunResult:
    """The first model, the daemon on the stream, the upper bound and the anchor, for one seed."""
    from insightloop.daemon.broker import EmbeddedBroker, free_port
    from insightloop.daemon.config import load_config
    from insightloop.daemon.jobs import write_spec
    from insightloop.daemon.replay import replay
    from insightloop.daemon.train import train_first_model
    from insightloop.daemon.wiring import build_app
    from insightloop.deploy import Registry
    from insightloop.retrain import FineTuneSettings, JobSpec, default_base_model, train_upper_bound

    cut = int(len(data.after) * 0.7)
    streamed_after, evaluation = data.after[:cut], data.after[cut:]
    reference = write_rows(work / "reference.jsonl", data.reference)
    before_file = write_rows(work / "before.jsonl", data.before)
    after_file = write_rows(work / "after.jsonl", streamed_after)
    settings = FineTuneSettings(
        epochs=args.epochs, max_length=args.max_length, learning_rate=args.learning_rate, seed=seed
    )
    base = args.base or default_base_model()
    first = train_first_model(reference, work / "registry", base, settings, promote=True, progress=False)
    registry = Registry(work / "registry")
    v1 = registry.production()
    notes: list[str] = []
    with EmbeddedBroker(port=free_port()) as broker:
        config = load_config(
            None,
            {
                "kafka": {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "session_timeout_ms": 6000,
                    "heartbeat_interval_ms": 1000,
                },
                "registry": {"path": str(work / "registry")},
                "state": {"dir": str(work / "state")},
                "api": {"host": "127.0.0.1", "http_port": free_port()},
            },
            environ={},
        )
        app = build_app(config, "all")
        app.daemon.start()
        try:
            while not app.daemon.readiness()[0]:
                time.sleep(0.3)
            after_ids = {r.get("id") or f"after-{i}" for i, r in enumerate(streamed_after)}
            seen: dict[str, int] = {}  # insight id -> post-change texts scored when it first appeared

            def watch() -> None:
                while not app.daemon.stop_event.is_set():
                    for insight in app.store.insights(50):
                        if insight["severity"] in ("warning", "critical") and insight["id"] not in seen:
                            records = app.store.recent_records(100_000)
                            seen[insight["id"]] = sum(r.id in after_ids for r in records)
                            print(f"  insight after {seen[insight['id']]} post-change texts: {insight['summary']}")
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch, name="bench-watch")
            watcher.start()
            # The model has served a while before the change: the monitor has checked the source traffic once
            # (loading and re-scoring its reference first) before the first target text arrives.
            replay(config, before_file, rate=args.rate, labels_delay=args.labels_delay, progress=False)
            if len(data.before) >= config.monitor.min_window:
                settled = time.monotonic() + 600
                while not app.store.check_history(limit=1) and time.monotonic() < settled:
                    time.sleep(0.5)
            else:
                notes.append(
                    f"{len(data.before)} texts before the change are fewer than monitor.min_window "
                    f"({config.monitor.min_window}): no check of the source traffic before the change"
                )
            replay(config, after_file, rate=args.rate, labels_delay=args.labels_delay, progress=False)
            replayed = time.monotonic()
            start_wait_s = min(180.0, args.wait_s)  # a job starts within minutes of its insight, or not at all
            while time.monotonic() < replayed + args.wait_s:
                jobs = app.store.jobs(5)
                job = jobs[0] if jobs else None
                if job is not None and job.state == "succeeded":
                    if job.gate_passed and job.version and registry.production() != job.version:
                        app.models.approve(job.version, by="bench", note="the gate passed it")
                    elif not job.gate_passed:
                        notes.append(f"the gate refused {job.version}: {'; '.join(job.gate_reasons)}")
                    break
                if job is not None and job.state == "failed":
                    notes.append(f"job {job.id} failed: {job.error}")
                    break
                if job is None and time.monotonic() > replayed + start_wait_s:
                    notes.append(f"no retraining job started within {start_wait_s:.0f} s of the stream")
                    break
                time.sleep(2)
            app.daemon.stop_event.set()
            watcher.join()
            job_spec_path = next((Path(j.spec_path) for j in app.store.jobs(5) if j.spec_path), None)
            if job_spec_path is not None:
                spec = JobSpec.model_validate_json(job_spec_path.read_text(encoding="utf-8"))
                for adjustment in spec.plan.adjustments:
                    notes.append(f"plan: {adjustment.kind} {adjustment.target} {adjustment.value:g}")
            else:  # no job: the plan the controller writes for a champion with no insight behind it
                spec, _ = write_spec(work / "oracle-job", "oracle", registry, config.controller, [], v1 or "", [])
        finally:
            app.stop()
    loop_version = registry.production()
    for record in registry.records():
        if record.version != v1 and record.lineage is not None:
            for test in record.lineage.experiments:
                notes.append(f"{record.version} tested {test.describe()}")
    # The upper bound: the same plan given every post-change label the stream carried (and the extra rows).
    job_production = next(d.path for d in spec.plan.data if d.role == "production")
    job_reference = next(d.path for d in spec.plan.data if d.role == "reference")
    job_labels = [*read_rows(Path(job_reference)), *(read_rows(Path(job_production)) if job_spec_path else [])]
    everything = write_rows(work / "oracle-production.jsonl", [*streamed_after, *data.oracle_extra])
    oracle_plan = spec.plan.model_copy(
        update={
            "data": [
                d.model_copy(update={"path": str(everything)}) if d.role == "production" else d for d in spec.plan.data
            ]
        }
    )
    oracle = train_upper_bound(spec.model_copy(update={"plan": oracle_plan}))
    from insightloop.deploy import ModelArtifact

    none_model = ModelArtifact.load(first, device="auto")
    acc_none = accuracy_of(none_model, evaluation)
    acc_loop = (
        accuracy_of(ModelArtifact.load(registry.path_of(loop_version or ""), device="auto"), evaluation)
        if loop_version != v1
        else acc_none
    )
    false_alarms = sum(1 for n in seen.values() if n == 0)
    delay = min((n for n in seen.values() if n > 0), default=-1)
    return RunResult(
        delay=delay,
        false_alarms=false_alarms,
        acc_none=acc_none,
        acc_loop=acc_loop,
        acc_oracle=accuracy_of(oracle, evaluation),
        acc_tfidf=tfidf_accuracy(job_labels, evaluation),
        notes=notes,
    )


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and a 95% t-interval over seeds (the mean alone, twice, for one seed).

    >>> [round(v, 3) for v in interval([0.7, 0.8, 0.9])]
    [0.8, 0.552, 1.048]
    """
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def gap_closed(none: float, loop: float, oracle: float) -> tuple[float, str]:
    """(loop − none) / (oracle − none), or nan with the reason when the upper bound does not beat no retraining.

    >>> gap_closed(0.5, 0.75, 1.0)
    (0.5, '')
    >>> gap_closed(0.6, 0.7, 0.6)[1]
    'the upper bound (0.6000) does not beat no retraining (0.6000)'
    """
    if oracle - none <= 0:
        return math.nan, f"the upper bound ({oracle:.4f}) does not beat no retraining ({none:.4f})"
    return (loop - none) / (oracle - none), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=CASES, help="a built-in case (repeatable; default: all)")
    parser.add_argument("--reference", type=Path, help="training data of the first model (your own case)")
    parser.add_argument("--before", type=Path, help="stream before the change (labeled)")
    parser.add_argument("--after", type=Path, help="stream after the change (labeled)")
    parser.add_argument("--oracle-train", type=Path, help="more target rows the upper bound trains on")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=f"rows per part {SIZES['quick']} (2 CPU cores)")
    size.add_argument("--full", action="store_true", help=f"rows per part {SIZES['full']} (a GPU)")
    size.add_argument("--smoke", action="store_true", help=f"rows per part {SIZES['smoke']}, 64 tokens (for tests)")
    parser.add_argument("--seeds", type=int, default=3, help="repeats per case (at least 3 for an interval)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds run from this one on (to add seeds to an earlier run)"
    )
    parser.add_argument("--base", help="base model (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs of the first model (the job's: controller.epochs)"
    )
    parser.add_argument("--max-length", type=int, help="max_length of the first model (128; 64 for --smoke)")
    parser.add_argument(
        "--learning-rate", type=float, help="learning rate of the first model (5e-5; 1e-4 for --smoke's few rows)"
    )
    parser.add_argument("--limit", type=int, help="at most this many rows per file of your own case")
    parser.add_argument("--labels-delay", type=int, default=100, help="labels arrive this many texts late")
    parser.add_argument(
        "--rate",
        type=float,
        default=25.0,
        help="texts per second the stream is produced at (the delay counts texts, and a check waits at least "
        "monitor.min_check_interval_s after the last)",
    )
    parser.add_argument(
        "--wait-s", type=float, help="most seconds to wait for the job after the stream (3600; 600 for --smoke)"
    )
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    import torch

    sized = (
        "smoke" if args.smoke else "full" if args.full or (not args.quick and torch.cuda.is_available()) else "quick"
    )
    own = args.reference is not None
    if own and (args.before is None or args.after is None):
        parser.error("your own case needs --reference, --before and --after")
    cases = ["own"] if own else (args.case or list(CASES))
    root = args.workdir or Path(tempfile.mkdtemp(prefix="insightloop-loop-"))
    smoke_defaults = (("max_length", 64, 128), ("learning_rate", 1e-4, 5e-5), ("wait_s", 600.0, 3600.0))
    for name, smoke, otherwise in smoke_defaults:
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else otherwise)
    lines = []
    closed_all: list[float] = []
    for case in cases:
        runs: list[RunResult] = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            work = root / case / f"seed{seed}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            data = own_files(args) if own else case_data(case, seed, sized)
            started = time.perf_counter()
            print(
                f"== {case}, seed {seed}: {len(data.reference)} source, {len(data.before)} before, "
                f"{len(data.after)} after ({len(data.after) - int(len(data.after) * 0.7)} scored), "
                f"{len(data.oracle_extra)} extra target rows",
                flush=True,
            )
            run = run_once(data, seed, args, work)
            runs.append(run)
            for note in run.notes:
                print(f"  {note}")
            print(
                f"  delay {run.delay}, false alarms {run.false_alarms}; accuracy none {run.acc_none:.4f} "
                f"loop {run.acc_loop:.4f} upper bound {run.acc_oracle:.4f} tf-idf {run.acc_tfidf:.4f} "
                f"({(time.perf_counter() - started) / 60:.1f} min)",
                flush=True,
            )
            shutil.rmtree(work / "state" / "reports", ignore_errors=True)
        arms = {
            name: interval([getattr(r, name) for r in runs])
            for name in ("acc_none", "acc_loop", "acc_oracle", "acc_tfidf")
        }
        closed, why = gap_closed(arms["acc_none"][0], arms["acc_loop"][0], arms["acc_oracle"][0])
        closed_all.append(closed)
        print(f"\n{case}: {len(runs)} seeds, {sized} size; mean and 95% interval over seeds")
        for name, (mean, low, high) in arms.items():
            print(f"  {name:<11} {mean:.4f}  [{low:.4f}, {high:.4f}]")
        print(f"  gap closed {closed:.2f}" + (f" (undefined: {why})" if why else ""))
        delays = [r.delay for r in runs if r.delay >= 0]
        delay = round(statistics.fmean(delays)) if delays else -1
        lines.append(
            f"loop: case={case} seeds={len(runs)} size={sized} delay={delay} "
            f"false_alarms={sum(r.false_alarms for r in runs)} "
            + " ".join(f"{name}={mean:.4f}" for name, (mean, _, _) in arms.items())
            + f" gap_closed={closed:.4f} rate={args.rate:g} deviations={','.join(DEVIATIONS)}"
        )
    print()
    for line in lines:
        print(line)
    defined = [c for c in closed_all if not math.isnan(c)]
    print(f"loop: cases={len(cases)} seeds={args.seeds} min_gap_closed={min(defined) if defined else math.nan:.4f}")


if __name__ == "__main__":
    main()
