"""Benchmark: insightloop's scorer path vs the transformers ``pipeline("text-classification")`` baseline.

Both score the same real review texts (default: ../shared/data/amazon_multidomain_sentiment/test.jsonl,
shuffled with seed 0; ``--data FILE.jsonl`` picks others) with the same model object and the same
``max_length`` (256), in one process, on the CPUs this process may use:

* baseline: ``pipeline("text-classification")`` fed the same micro-batches the scorer gets, with the
  best of a few pipeline batch sizes (``--batch-sizes``, searched first on ``--search-texts`` texts);
* ours: ``ModelArtifact.predict`` with the production settings of ``ScorerConfig`` (micro-batches of
  ``max_batch_size`` texts, sorted by length and cut into forward chunks of at most
  ``inference_batch_size`` texts and the artifact's CPU token budget; threads from ``set_cpu_threads``):
  class probabilities *and* the projected embedding from one forward pass, with the numerics the scorer
  chooses at load with the defaults (``load_serving_artifact``: float32, bf16 autocast, or ONNX Runtime
  int8, whichever measured fastest with labels agreeing). Variants (``--variants``): fp32; bf16
  (``scorer.cpu_bf16``); int8 (``scorer.quantize``: ONNX Runtime, per-channel encoder matrices);
  int8-torch (torch's dynamic int8 of every encoder linear layer, the earlier path). ``--ours`` overrides
  the variant the last line reports; each variant's label agreement with fp32 and accuracy are printed;
* like for like: the pipeline under ours' numerics as torch gives them to a pipeline user (bf16
  autocast, or torch's dynamic int8), at the baseline's batch size;
* end to end: the embedded broker and ``build_app(config, "scorer")`` in this process; once the scorer is
  ready, ``--pairs`` times: a bare run of the end-to-end texts in this thread, then the same texts sent to
  the texts topic, timed from the first send until every prediction is on the predictions topic.
  ``e2e_share`` is the median over the pairs of end-to-end texts/s over the bare run's (pairs side by side:
  the same work varies by up to 2x over minutes on a shared machine). The share of the scorer's own model
  time in the same interval (its scoring-latency histogram) is printed too.

Every round scores ``--texts`` texts of its own, so three rounds cover three times as many reviews; the
end-to-end pairs score one more set, bare and through the broker alike (the same length mix; scoring texts a
second time was not measurably faster). Within a round, methods are interleaved
micro-batch by micro-batch (order rotating) so that load from other processes falls on all of them alike; a
round's rate is its texts over its summed seconds and the figures are medians over ``--rounds``. Latency is
per micro-batch. Peak RSS is the highest resident set size sampled while a method ran (all methods share
the model's weights; int8 holds its own copy).

The model is a MiniLM fine-tuned by ``insightloop train`` on 1,200 Amazon train reviews (trained once and
cached under ``~/.cache/insightloop-bench/``), a version directory (``--model DIR``), or the packaged
all-MiniLM-L6-v2 with a fresh seeded head (``--untrained``; ``--smoke``: a tiny BERT). The CPU's features
are printed. Last line: ``scoring: baseline_tps=<x> ours_tps=<x> ratio=<x> e2e_share=<fraction>
ratio_like=<x> acc_delta_points=<points>``.

    python bench/scoring.py [--model VERSION_DIR | --untrained] [--data FILE.jsonl] [--texts N] [--rounds R] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch

from insightloop.daemon.config import ScorerConfig
from insightloop.daemon.scorer_numerics import CpuFeatures, Kind, build_candidate, load_serving_artifact
from insightloop.deploy import ModelArtifact, Projection, set_cpu_threads
from insightloop.deploy.artifact import quantize_int8

AMAZON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon_multidomain_sentiment"
DATA = AMAZON / "test.jsonl"
PROJECTION_DIMS = 32
#: Where the trained MiniLM lives between runs (trained once by `insightloop train`, about 3 minutes on 2 cores).
CACHE = Path.home() / ".cache" / "insightloop-bench"
TRAIN_ROWS = 1200
#: Bench variant names and the scorer numerics they stand for ("int8-torch" is torch's dynamic int8 of every
#: encoder linear layer, the earlier opt-in path, kept to compare with).
KINDS: dict[str, Kind] = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}


# -- measuring ------------------------------------------------------------------------------------
def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB (from /proc)."""
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Samples this process's RSS in a thread; ``phase()`` gives the peak seen while a block ran."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_mb())

    @contextmanager
    def phase(self, into: list[float]) -> Any:
        self.peak = rss_mb()
        try:
            yield
        finally:
            into.append(max(self.peak, rss_mb()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Method:
    """One way of scoring a micro-batch, and what it measured."""

    name: str
    batch: str
    score: Callable[[list[str]], list[str]]  # micro-batch -> predicted labels
    seconds: list[float] = field(default_factory=list)  # per round
    texts: list[int] = field(default_factory=list)  # per round
    cpu_seconds: float = 0.0  # process CPU time (all threads) while this method ran
    latencies_ms: list[float] = field(default_factory=list)
    peak_rss: list[float] = field(default_factory=list)
    labels: dict[int, list[str]] = field(default_factory=dict)  # micro-batch index -> labels

    def run_chunk(self, index: int, chunk: list[str], sampler: RssSampler) -> float:
        """Score one micro-batch; return its seconds (added to the current round)."""
        with sampler.phase(self.peak_rss):
            started, cpu_started = time.perf_counter(), time.process_time()
            self.labels[index] = self.score(chunk)
            seconds = time.perf_counter() - started
            self.cpu_seconds += time.process_time() - cpu_started
        self.latencies_ms.append(seconds * 1000)
        self.seconds[-1] += seconds
        self.texts[-1] += len(chunk)
        return seconds

    def new_round(self) -> None:
        self.seconds.append(0.0)
        self.texts.append(0)

    def run(self, chunks: Sequence[list[str]], sampler: RssSampler) -> float:
        """Score all micro-batches as one round; return its texts/s."""
        self.new_round()
        for index, chunk in enumerate(chunks):
            self.run_chunk(index, chunk, sampler)
        return self.tps[-1]

    @property
    def tps(self) -> list[float]:
        return [n / s for n, s in zip(self.texts, self.seconds, strict=True) if s > 0]

    @property
    def cpu_rate(self) -> float:
        """Texts per CPU-second (all threads): the work a text costs, less sensitive to other load."""
        return sum(self.texts) / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")

    @property
    def median_tps(self) -> float:
        return statistics.median(self.tps)

    def all_labels(self) -> list[str]:
        return [label for index in sorted(self.labels) for label in self.labels[index]]


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- data and models ------------------------------------------------------------------------------
def load_rows(path: Path, limit: int) -> tuple[list[dict[str, Any]], int]:
    """``limit`` rows shuffled with seed 0 (repeated if the file has fewer), and how many are distinct."""
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows = [r for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
    random.Random(0).shuffle(rows)
    distinct = min(len(rows), limit)
    if len(rows) < limit:
        rows = (rows * (limit // max(1, len(rows)) + 1))[:limit]
    return rows[:limit], distinct


def trained_version(train_data: Path, cache: Path = CACHE) -> Path:
    """A MiniLM fine-tuned by ``insightloop train`` on ``TRAIN_ROWS`` Amazon train reviews (shuffled with seed 0),
    cached under ``cache``: 1 epoch, max_length 128, the packaged all-MiniLM-L6-v2 as base."""
    import subprocess

    registry = cache / "registry"
    pointer = registry / "PRODUCTION"
    if pointer.is_file():
        return registry / pointer.read_text().strip()
    cache.mkdir(parents=True, exist_ok=True)
    rows, _ = load_rows(train_data, TRAIN_ROWS)
    subset = cache / f"amazon_train{TRAIN_ROWS}.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"training the bench model on {TRAIN_ROWS} reviews of {train_data} into {registry} (once)", flush=True)
    command = [sys.executable, "-m", "insightloop.daemon.cli", "train", "--data", str(subset), "--registry"]
    command += [str(registry), "--epochs", "1", "--max-length", "128", "--promote", "--no-progress"]
    subprocess.run(command, check=True)
    return registry / pointer.read_text().strip()


def build_artifact(args: argparse.Namespace, texts: list[str], workdir: Path) -> tuple[ModelArtifact, Path, str]:
    """The fp32 artifact both paths score with, its version directory, and a description of it."""
    if args.model is not None or not (args.smoke or args.untrained):
        version_dir = args.model or trained_version(args.train_data)
        artifact = ModelArtifact.load(version_dir, device="cpu")
        artifact.max_length = args.max_length
        return artifact, version_dir, f"{version_dir} (trained version, labels {list(artifact.labels)})"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from insightloop.retrain import default_base_model, save_tiny_bert

    base = str(save_tiny_bert(workdir / "tiny")) if args.smoke else default_base_model()
    labels = ["negative", "positive"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)}
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    artifact = ModelArtifact(model, tokenizer, labels, None, args.max_length, torch.device("cpu"))
    # The scorer projects pooled embeddings with a PCA saved with the version: fit one the same way.
    pooled = artifact.predict(texts[:128], batch_size=32).embeddings
    artifact.projection = Projection.fit(pooled, PROJECTION_DIMS)
    version_dir = workdir / "untrained"
    artifact.save(version_dir)
    what = "tiny BERT (smoke)" if args.smoke else "packaged all-MiniLM-L6-v2"
    return artifact, version_dir, f"{what} as a sequence classifier with a fresh seeded head (untrained)"


# -- end to end through the embedded broker -------------------------------------------------------
def end_to_end(
    artifact: ModelArtifact,
    texts: list[str],
    workdir: Path,
    scorer_overrides: dict[str, Any],
    bare: Callable[[], float],
    pairs: int,
) -> dict[str, list[float]]:
    """The scorer role in this process, fed ``texts`` ``pairs`` times, each right after a bare run of them.

    Each end-to-end run is timed from the first text sent to the texts topic until every prediction is on
    the predictions topic; ``bare()`` scores the same texts in this thread while the daemon idles. Pairs
    side by side keep the machine's drift (the same work varies by up to 2x over minutes here) out of the
    share.
    """
    from kafka import KafkaConsumer, TopicPartition

    from insightloop.daemon.broker import EmbeddedBroker, free_port
    from insightloop.daemon.config import load_config
    from insightloop.daemon.events import TextEvent
    from insightloop.daemon.kafka import common_settings, ensure_topics, make_producer
    from insightloop.daemon.wiring import build_app
    from insightloop.deploy import Registry, VersionRecord, VersionStatus
    from insightloop.deploy.events import utc_now

    registry = Registry(workdir / "registry")
    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        base_model="bench",
        labels=list(artifact.labels),
    )
    created = registry.create_version(artifact.save, record, by="bench", reason="scoring benchmark")
    registry.approve(created.version, by="bench")
    registry.promote(created.version, by="bench")
    out: dict[str, list[float]] = {"tps": [], "model_tps": [], "bare_tps": []}

    with EmbeddedBroker(port=free_port()) as broker:
        scorer: dict[str, Any] = {"group_id": "bench-scorer", **scorer_overrides}
        config = load_config(
            None,
            {
                "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                "scorer": scorer,
                "registry": {"path": str(registry.root)},
                "state": {"dir": str(workdir / "state")},
                "api": {"host": "127.0.0.1", "http_port": 0},
            },
            environ={},
        )
        ensure_topics(config.kafka, config.topics.all())
        producer = make_producer(config.kafka)
        # Count the predictions by reading the topic (end offsets of the embedded broker are not exact).
        counter = KafkaConsumer(
            **common_settings(config.kafka), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        found: set[int] = set()
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found = counter.partitions_for_topic(config.topics.predictions) or set()
            if not found:
                time.sleep(0.1)
        if not found:
            raise RuntimeError(f"topic {config.topics.predictions} has no partitions")
        counter.assign([TopicPartition(config.topics.predictions, p) for p in sorted(found)])
        counter.seek_to_beginning()
        seen: set[bytes] = set()

        def produced(timeout_ms: int = 50) -> int:
            # The key is the text's id: counting keys keeps this thread from decoding every prediction's
            # JSON, which took the GIL from the scorer (the bench's own cost, not the scorer's).
            for batch in counter.poll(timeout_ms=timeout_ms).values():
                seen.update(record.key for record in batch)
            return len(seen)

        app = build_app(config, "scorer")
        app.daemon.start()
        try:
            url = f"http://127.0.0.1:{app.api.port}/readyz"
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the scorer did not become ready within 120 s")
                time.sleep(0.02)
            registry_metrics = app.metrics.registry

            def scored() -> tuple[float, float]:
                texts_done = registry_metrics.get_sample_value("insightloop_texts_scored_total") or 0.0
                busy = registry_metrics.get_sample_value("insightloop_scoring_latency_seconds_sum") or 0.0
                return texts_done, busy

            for pair in range(pairs):
                out["bare_tps"].append(bare())
                target = len(seen) + len(texts)
                texts0, busy0 = scored()
                started = time.perf_counter()
                for i, text in enumerate(texts):
                    event = TextEvent(id=f"e2e-{pair}-{i}", text=text)
                    producer.send(config.topics.texts, key=event.id.encode(), value=event.model_dump_json().encode())
                producer.flush(timeout=30)
                last, last_change = len(seen), time.monotonic()
                while (done := produced()) < target:
                    if done != last:
                        last, last_change = done, time.monotonic()
                    elif time.monotonic() - last_change > 120:
                        raise RuntimeError(f"only {done} of {target} predictions arrived (none for 120 s)")
                seconds = time.perf_counter() - started
                texts1, busy1 = scored()
                out["tps"].append(len(texts) / seconds)
                # The scorer's own model time in the same interval: wall time vs model time.
                out["model_tps"].append((texts1 - texts0) / (busy1 - busy0) if busy1 > busy0 else float("nan"))
        finally:
            app.daemon.request_stop()
            app.daemon.wait()
            counter.close()
            producer.close(timeout=10)
    return out


# -- main ---------------------------------------------------------------------------------------
def variant(artifact: ModelArtifact, name: str) -> ModelArtifact:
    """The artifact scored as ``name``: what the scorer builds for that numerics, or torch's dynamic int8."""
    if name == "int8-torch":
        model = quantize_int8(copy.deepcopy(artifact.model))
        return ModelArtifact(
            model, artifact.tokenizer, artifact.labels, artifact.projection, artifact.max_length, torch.device("cpu")
        )
    return build_candidate(artifact, KINDS[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="JSON Lines with `text` (and `label`)")
    parser.add_argument(
        "--model", type=Path, help="a version directory from `insightloop train` (default: the cached bench model)"
    )
    parser.add_argument(
        "--untrained", action="store_true", help="the packaged MiniLM with a fresh head instead of a trained model"
    )
    parser.add_argument(
        "--train-data", type=Path, default=AMAZON / "train.jsonl", help="what the cached bench model is trained on"
    )
    parser.add_argument("--texts", type=int, default=256, help="texts per round (and for the end-to-end run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-sizes", default="1,8,32,64", help="pipeline batch sizes to try")
    parser.add_argument("--search-texts", type=int, default=192, help="texts for the pipeline batch-size search")
    parser.add_argument(
        "--variants",
        default="auto",
        help="comma-separated insightloop variants among fp32,bf16,int8,int8-torch (auto: fp32,int8 and bf16 "
        "where the CPU has native bf16)",
    )
    parser.add_argument(
        "--ours",
        choices=("fp32", "bf16", "int8"),
        help="the variant reported as ours_tps on the last line (default: what the scorer chooses at load with "
        "ScorerConfig's defaults, measured on this machine)",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run through the broker")
    parser.add_argument("--pairs", type=int, default=3, help="end-to-end runs, each after a bare run of its texts")
    parser.add_argument("--smoke", action="store_true", help="tiny model and few texts (for tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.texts, args.rounds, args.search_texts, args.batch_sizes, args.pairs = 64, 1, 32, "8,32", 1
    if not args.data.is_file():
        print(f"no data: {args.data} is missing; pass --data FILE.jsonl", file=sys.stderr)
        return 2
    # The scorer's load-time decision, with every candidate's figures, as the daemon logs it.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("insightloop.daemon.scorer_numerics").setLevel(logging.INFO)
    features = CpuFeatures.read()
    if args.variants == "auto":
        names = ["fp32", "bf16", "int8"] if features.native_bf16 else ["fp32", "int8"]
    else:
        names = [x.strip() for x in args.variants.split(",") if x.strip()]
    unknown = set(names) - {*KINDS, "int8-torch"}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if "fp32" not in names:
        names.insert(0, "fp32")
    # The daemon scores in a worker thread; so does the benchmark (a thread that has done no other work
    # measures differently from the main thread that imported and loaded everything, by up to 2x here).
    outcome: list[int] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(measure(args, names, features))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=work, name="bench-scorer")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def measure(args: argparse.Namespace, names: list[str], features: CpuFeatures) -> int:
    """Everything measured, run in one worker thread."""
    settings = ScorerConfig()
    threads = set_cpu_threads(settings.torch_threads)
    micro, inference = settings.max_batch_size, settings.inference_batch_size
    # Texts of its own for every round (a wider sample); one more set for the end-to-end pairs, scored bare
    # and through the broker alike so that both sides of a pair have the same length mix.
    sets = args.rounds + (0 if args.no_e2e else 1)
    rows, distinct = load_rows(args.data, args.texts * sets)
    texts = [r["text"] for r in rows[: args.texts * args.rounds]]  # the rounds'
    truth = [str(r["label"]) if r.get("label") is not None else None for r in rows[: len(texts)]]

    def chunks_of(set_no: int) -> list[list[str]]:
        part = [r["text"] for r in rows[set_no * args.texts : (set_no + 1) * args.texts]]
        return [part[i : i + micro] for i in range(0, len(part), micro)]

    round_chunks = [chunks_of(r) for r in range(args.rounds)]

    with tempfile.TemporaryDirectory(prefix="insightloop-bench-") as tmp:
        workdir = Path(tmp)
        artifact, version_dir, model_desc = build_artifact(args, texts, workdir)
        tokens = np.array([len(ids) for ids in artifact.tokenize(texts)])
        print(
            f"data: {args.data.resolve()} (shuffled with seed 0): {args.texts} texts of its own for each of "
            f"{args.rounds} rounds"
            + ("" if args.no_e2e else ", and as many more for the end-to-end pairs")
            + ("" if distinct == len(rows) else f"; the file has only {distinct}, so texts repeat")
        )
        print(f"model: {model_desc}; max_length {args.max_length}")
        print(
            f"tokens per text: mean {tokens.mean():.0f}, median {np.median(tokens):.0f}, "
            f"{np.mean(tokens >= args.max_length):.0%} truncated at {args.max_length}"
        )
        print(
            f"machine: {os.cpu_count()} CPUs, {threads} torch threads (interop {torch.get_num_interop_threads()}), "
            f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at start"
        )
        print(f"CPU: {cpu_model()}; features: {features.describe()}")
        if args.ours is None:
            # What the scorer does at load with the defaults: measure its candidates on the version's reference
            # texts (the same construction as the variants below).
            chosen = load_serving_artifact(version_dir, ScorerConfig(device="cpu"), features)
            args.ours = {kind: name for name, kind in KINDS.items()}[chosen.precision.split("/")[1]]
            sessions = getattr(chosen, "sessions", None)
            how = f"; {len(sessions)} ONNX Runtime session(s), <= {chosen.max_tokens_per_pass} padded tokens a pass"
            how = how if sessions else ""
            print(f"the scorer's choice at load with the defaults: {chosen.precision} ({args.ours}{how})")
            del chosen
        if args.ours not in names:
            names.append(args.ours)
        print(
            f"scorer settings: micro-batch {micro} texts, forward chunks of <= {inference} texts and "
            f"<= {artifact.max_tokens_per_pass} padded tokens (the torch paths; int8's sessions split a pass)"
        )

        from transformers import pipeline

        pipe = pipeline("text-classification", model=artifact.model, tokenizer=artifact.tokenizer, device=-1)

        def pipeline_scorer(
            batch_size: int, runner: Any = pipe, bf16: bool = False
        ) -> Callable[[list[str]], list[str]]:
            def score(chunk: list[str]) -> list[str]:
                with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = runner(chunk, batch_size=batch_size, truncation=True, max_length=args.max_length)
                return [str(item["label"]) for item in out]

            return score

        tokenize_s: dict[str, float] = {}

        def artifact_scorer(art: ModelArtifact, name: str) -> Callable[[list[str]], list[str]]:
            def score(chunk: list[str]) -> list[str]:
                t0 = time.perf_counter()
                ids = art.tokenize(chunk)  # what ModelArtifact.predict does, timed in two parts
                tokenize_s[name] = tokenize_s.get(name, 0.0) + time.perf_counter() - t0
                return art.predict_tokenized(ids, inference).predicted_labels()

            return score

        sampler = RssSampler()
        # Warm up, then pick the pipeline's best batch size on a small subset.
        search_chunks = [texts[i : i + micro] for i in range(0, min(args.search_texts, args.texts), micro)]
        pipeline_scorer(8)(search_chunks[0][:8])
        trials = [Method("pipeline", x.strip(), pipeline_scorer(int(x))) for x in args.batch_sizes.split(",")]
        for trial in trials:
            trial.new_round()
        for index, chunk in enumerate(search_chunks):  # interleaved, like the rounds below
            for trial in trials[index % len(trials) :] + trials[: index % len(trials)]:
                trial.run_chunk(index, chunk, sampler)
        search = {int(trial.batch): trial.tps[-1] for trial in trials}
        best = max(search, key=lambda k: search[k])
        print(
            f"pipeline batch-size search on {sum(len(c) for c in search_chunks)} texts: "
            + ", ".join(f"bs={k}: {v:.1f} texts/s" for k, v in search.items())
            + f" -> best {best}"
        )

        baseline = Method("pipeline (baseline)", str(best), pipeline_scorer(best))
        methods = [baseline]
        # Like for like: the pipeline under the numerics ours uses, as torch gives them to a pipeline user
        # (bf16 autocast; int8: torch's dynamic int8 of the encoder's linear layers), same batch size.
        like = baseline
        if args.ours != "fp32":
            like_model = quantize_int8(copy.deepcopy(artifact.model)) if args.ours == "int8" else artifact.model
            like_pipe = pipeline("text-classification", model=like_model, tokenizer=artifact.tokenizer, device=-1)
            like_score = pipeline_scorer(best, like_pipe, bf16=args.ours == "bf16")
            like_score(search_chunks[0][:8])
            like = Method(f"pipeline {args.ours}", str(best), like_score)
            methods.append(like)
        by_name: dict[str, Method] = {}
        arts: dict[str, ModelArtifact] = {}
        for name in names:
            art = arts[name] = variant(artifact, name)
            artifact_scorer(art, "warm-up")(search_chunks[0][:8])
            by_name[name] = Method(f"insightloop {name}", f"{micro}/{inference}", artifact_scorer(art, name))
            methods.append(by_name[name])
        ours, fp32 = by_name[args.ours], by_name["fp32"]
        print(f"ours: insightloop {args.ours} ({arts[args.ours].precision}); like for like: {like.name}")

        # The scorer end to end runs the same variant that stands for ours.
        e2e_variant = args.ours
        e2e_overrides: dict[str, Any] = {
            "quantize": args.ours == "int8",
            "cpu_bf16": args.ours == "bf16",
            "device": "cpu",
        }
        e2e: dict[str, list[float]] | None = None
        e2e_shares: list[float] = []
        for round_no in range(args.rounds):
            # Interleave at micro-batch granularity (order rotating) so that load from other processes
            # falls on every method alike; a round's rate is its texts over its summed seconds.
            for method in methods:
                method.new_round()
            chunks = round_chunks[round_no]
            for index, chunk in enumerate(chunks):
                shift = (round_no * len(chunks) + index) % len(methods)
                for method in methods[shift:] + methods[:shift]:
                    method.run_chunk(round_no * len(chunks) + index, chunk, sampler)
            print(
                f"  round {round_no + 1}: "
                + ", ".join(f"{m.name} {m.tps[-1]:.1f}" for m in methods)
                + f" texts/s (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            if not args.no_e2e and e2e is None and round_no >= (args.rounds - 1) // 2:
                # Pairs: a bare run of the same texts right before each run through the broker.
                probe = Method("probe", "", artifact_scorer(arts[e2e_variant], "probe"))
                e2e_chunks = chunks_of(args.rounds)
                e2e = end_to_end(
                    artifact,
                    [text for chunk in e2e_chunks for text in chunk],
                    workdir,
                    e2e_overrides,
                    functools.partial(probe.run, e2e_chunks, sampler),
                    args.pairs,
                )
                e2e_shares = [e / b for e, b in zip(e2e["tps"], e2e["bare_tps"], strict=True)]
                for n, (e, b, m) in enumerate(zip(e2e["tps"], e2e["bare_tps"], e2e["model_tps"], strict=True)):
                    print(
                        f"  end to end through the broker ({e2e_variant}), pair {n + 1}: bare {b:.1f} texts/s, then "
                        f"end to end {e:.1f} ({e / b:.0%}); the scorer's model time alone {m:.1f} ({e / m:.0%})",
                        flush=True,
                    )
        sampler.close()

        print()
        header = (
            f"{'method':<22} {'batch':>7} {'texts/s':>9} {'x base':>7} {'p50 ms':>9} {'p99 ms':>9} "
            f"{'peak RSS MB':>12} {'texts/CPU-s':>12} {'x base':>7}"
        )
        print(header)
        print("-" * len(header))
        for method in methods:
            print(
                f"{method.name:<22} {method.batch:>7} {method.median_tps:9.1f} "
                f"{method.median_tps / baseline.median_tps:7.2f} {percentile(method.latencies_ms, 50):9.0f} "
                f"{percentile(method.latencies_ms, 99):9.0f} {max(method.peak_rss):12.0f} "
                f"{method.cpu_rate:12.1f} {method.cpu_rate / baseline.cpu_rate:7.2f}"
            )
        if e2e is not None:
            e2e_tps = statistics.median(e2e["tps"])
            in_interval = statistics.median(e / m for e, m in zip(e2e["tps"], e2e["model_tps"], strict=True))
            print(
                f"{'end to end (' + e2e_variant + ')':<22} {micro:>7} {e2e_tps:9.1f} "
                f"{e2e_tps / baseline.median_tps:7.2f}   = {statistics.median(e2e_shares):.0%} of a bare run of the "
                f"same texts just before (median of {len(e2e_shares)} pairs: "
                f"{', '.join(f'{x:.0%}' for x in e2e_shares)}); {in_interval:.0%} of the scorer's own model time"
            )
        print()
        print("per-round texts/s: " + "; ".join(f"{m.name}: {', '.join(f'{x:.1f}' for x in m.tps)}" for m in methods))
        for method in methods[1:]:
            ratios = [o / b for o, b in zip(method.tps, baseline.tps, strict=True)]
            print(f"{method.name} / baseline per round: {', '.join(f'{r:.2f}' for r in ratios)}")
        print(f"tokenisation share of the fp32 path: {tokenize_s.get('fp32', 0.0) / sum(fp32.seconds):.1%} of its time")
        agree = np.mean([a == b for a, b in zip(baseline.all_labels(), fp32.all_labels(), strict=True)])
        print(f"label agreement pipeline vs insightloop fp32: {agree:.2%} (same model and weights)")
        labeled = [i for i, t in enumerate(truth) if t is not None and t in artifact.labels]

        def accuracy(method: Method) -> float:
            found = method.all_labels()
            return float(np.mean([found[i] == truth[i] for i in labeled])) if labeled else float("nan")

        trained = "" if args.model is not None or not (args.smoke or args.untrained) else " (untrained head)"
        acc32 = accuracy(fp32)
        print(f"accuracy fp32 on {len(labeled)} labeled texts: {acc32:.4f}{trained}")
        for name in [n for n in names if n != "fp32"]:
            other = by_name[name]
            agree_v = np.mean([a == b for a, b in zip(fp32.all_labels(), other.all_labels(), strict=True)])
            line = f"{name} vs fp32: label agreement {agree_v:.2%} on {len(texts)} texts"
            if labeled:
                acc_v = accuracy(other)
                line += f", accuracy {acc_v:.4f} ({(acc_v - acc32) * 100:+.2f} points{trained})"
            line += f"; speed {other.median_tps / fp32.median_tps:.2f}x fp32"
            print(line)
        if like is not baseline:
            like_delta = (accuracy(like) - accuracy(baseline)) * 100
            print(
                f"{like.name} vs fp32 pipeline: accuracy {accuracy(like):.4f} ({like_delta:+.2f} points); "
                f"ours is {ours.median_tps / like.median_tps:.2f}x it"
            )
        print(f"process peak RSS (ru_maxrss): {peak_rss_mb():.0f} MB; load average now {os.getloadavg()[0]:.1f}")
        share = statistics.median(e2e_shares) if e2e_shares else float("nan")
        delta = (accuracy(ours) - acc32) * 100 if labeled else float("nan")
        print(
            f"scoring: baseline_tps={baseline.median_tps:.1f} ours_tps={ours.median_tps:.1f} "
            f"ratio={ours.median_tps / baseline.median_tps:.2f} e2e_share={share:.2f} "
            f"ratio_like={ours.median_tps / like.median_tps:.2f} acc_delta_points={delta:.2f}"
        )
    return 0


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    sys.exit(main())
