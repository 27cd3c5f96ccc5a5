"""Benchmark: label-free accuracy estimates against the accuracy the labels show, on every real shift.

One MiniLM per source (each Amazon domain, SST-2), fine-tuned with the project's own training
(``retrain.fine_tune``, 3 epochs as in production, 64 tokens) on 1,200 source training rows; its held-out
source rows (the validation split ``fine_tune`` keeps plus 400 rows it never saw) are the labeled
reference every estimator is fitted on. Each estimator in ``detectors.estimators.ESTIMATORS`` then
estimates the accuracy of every target without its labels, and the labels say how far off it was:

* Amazon: each domain → each other domain (12 real domain shifts) and → its own test split (control);
* SST-2 → movie_review_polarity (full reviews), SST-2 → customer_reviews_cr (products), and → its
  own test split (control).

A target takes up to 1,000 rows its model never saw (another data set's test and train splits; a
control's own test split: 400 rows for an Amazon domain), so the labels' own sampling error stays near
1.7 points; the ``sampling`` column prints what an estimator that knew the true accuracy would still err
from the two samples alone. ``--seed`` trains with another seed on other draws of every sample.

Models and scores are cached under ``~/.cache/insightloop-bench/estimates-<source>`` (a second run only
re-computes the estimates). The detectors' own path (``EstimatedQualityDrop``'s ``estimated_quality``
on a profile) is checked against the shipped estimator on each shift. The last line is
``estimates: shipped=<name> mae_points=<its mean absolute error, accuracy points> shifts=<N>``.

    python bench/estimates.py [--seed N] [--quick] [--smoke] [--cache DIR]

About 12 minutes on two quiet CPU cores (five trainings of ~2 minutes, 20,000 texts scored). ``--quick``:
the books and SST-2 sources only, 400 training rows, 200-row targets. ``--smoke``: a tiny BERT on a few
dozen rows (seconds; for the test suite, figures meaningless).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")


@dataclass(frozen=True)
class Rows:
    """Labeled texts of one data set part."""

    name: str
    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class Source:
    """What one model is trained on, its held-out reference, and the targets it is estimated on."""

    name: str
    train: Rows
    extra_reference: Rows  # source rows never trained on, beside fine_tune's own validation split
    targets: list[tuple[str, Rows]]  # (shift name, rows); the in-domain control is named "<src> → <src>"


def read(path: Path, domain: str | None = None) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [r for r in rows if domain is None or r.get("domain") == domain]


def sample(name: str, rows: list[dict[str, Any]], n: int, seed: int, skip: int = 0) -> Rows:
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    picked = shuffled[skip : skip + n]
    return Rows(name, [r["text"] for r in picked], [str(r["label"]) for r in picked])


def sources(
    train_rows: int, reference_rows: int, target_rows: int, names: tuple[str, ...], seed: int = 0
) -> list[Source]:
    """Each source's training sample, held-out reference and targets; no row is in two of them.

    A target takes up to ``target_rows`` rows its model never saw: for another data set, its test and
    train splits together (the source model trained on neither); for the in-domain control, the
    source's own test split. ``seed`` draws other samples of each.
    """
    out = []
    pick, draw = 1 + 10 * seed, 2 + 10 * seed  # seed 0: the samples of the runs in docs/benchmarks.md
    amazon = DATA / "amazon_multidomain_sentiment"

    def unseen(*paths: Path, domain: str | None = None) -> list[dict[str, Any]]:
        return [row for path in paths for row in read(path, domain)]

    for domain in names:
        if domain not in AMAZON_DOMAINS:
            continue
        pool = read(amazon / "train.jsonl", domain)
        targets = [
            (f"{domain} → {domain}", sample(domain, read(amazon / "test.jsonl", domain), target_rows, seed=draw))
        ]
        targets += [
            (
                f"{domain} → {other}",
                sample(
                    other, unseen(amazon / "test.jsonl", amazon / "train.jsonl", domain=other), target_rows, seed=draw
                ),
            )
            for other in AMAZON_DOMAINS
            if other != domain
        ]
        out.append(
            Source(
                name=domain,
                train=sample(domain, pool, train_rows, seed=pick),
                # Held out: the train-split rows beyond the training sample.
                extra_reference=sample(domain, pool, reference_rows, seed=pick, skip=train_rows),
                targets=targets,
            )
        )
    if "sst2" in names:
        sst2 = DATA / "sst2"

        def other(name: str, folder: str) -> Rows:
            rows = unseen(DATA / folder / "test.jsonl", DATA / folder / "train.jsonl")
            return sample(name, rows, target_rows, seed=draw)

        out.append(
            Source(
                name="sst2",
                train=sample("sst2", read(sst2 / "train.jsonl"), train_rows, seed=pick),
                extra_reference=sample("sst2", read(sst2 / "dev.jsonl"), reference_rows, seed=pick),
                targets=[
                    ("sst2 → sst2", sample("sst2", read(sst2 / "test.jsonl"), target_rows, seed=draw)),
                    ("sst2 → movie_reviews", other("mr", "movie_review_polarity")),
                    ("sst2 → customer_reviews", other("cr", "customer_reviews_cr")),
                ],
            )
        )
    return out


def sampling_error(accuracy: float, n_target: int, reference_accuracy: float, n_reference: int) -> float:
    """The absolute error, in accuracy points, that an estimator which knew both populations' accuracies
    would still be expected to show from sampling alone: the target's labeled accuracy and the reference
    it is fitted on are each one binomial sample (``E|N(0, σ)| = σ·√(2/π)``).

    >>> round(sampling_error(0.8, 300, 0.8, 380), 2)
    2.47
    """
    variance = accuracy * (1 - accuracy) / max(n_target, 1)
    variance += reference_accuracy * (1 - reference_accuracy) / max(n_reference, 1)
    return 100 * math.sqrt(variance) * math.sqrt(2 / math.pi)


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scored_source(
    source: Source, base: str, settings: Any, cache: Path, reuse: Path | None = None
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The model's classes and, per part ("reference" and each target), (probabilities, correct); cached."""
    from insightloop.deploy import ModelArtifact
    from insightloop.retrain import Example, fine_tune

    folder = cache / f"estimates-{source.name}"
    key = digest(base, repr(settings), source.train.texts[:5], len(source.train.texts))
    model_dir = folder / f"model-{key}"
    started = time.perf_counter()
    if reuse is not None:
        return reused_source(source, reuse, folder)
    if (model_dir / "validation.json").is_file():
        artifact = ModelArtifact.load(model_dir, device="cpu")
        validation = Rows(**json.loads((model_dir / "validation.json").read_text(encoding="utf-8")))
        print(f"[{source.name}] model from the cache ({model_dir})", flush=True)
    else:
        examples = [Example(text=t, label=y) for t, y in zip(source.train.texts, source.train.labels, strict=True)]
        result = fine_tune(examples, base, settings, progress=False)
        artifact = result.artifact
        validation = Rows("validation", [e.text for e in result.validation], [str(e.label) for e in result.validation])
        artifact.save(model_dir)
        (model_dir / "validation.json").write_text(json.dumps(validation.__dict__), encoding="utf-8")
        print(
            f"[{source.name}] fine-tuned on {result.train_size} rows in {time.perf_counter() - started:.0f} s "
            f"(validation accuracy {result.metrics.get('validation_accuracy', float('nan')):.3f})",
            flush=True,
        )
    reference = Rows(
        "reference",
        validation.texts + source.extra_reference.texts,
        validation.labels + source.extra_reference.labels,
    )
    parts = [("reference", reference), *source.targets]
    out = {}
    for name, rows in parts:
        path = model_dir / f"scores-{digest(name, rows.texts)}.npz"
        if path.is_file():
            loaded = np.load(path, allow_pickle=False)
            probabilities = loaded["probabilities"]
        else:
            t0 = time.perf_counter()
            probabilities = artifact.predict(rows.texts, batch_size=32).probabilities.astype(np.float64)
            np.savez(path, probabilities=probabilities)
            print(f"[{source.name}] scored {len(rows.texts)} rows of {name} in {time.perf_counter() - t0:.0f} s")
        index = {label: i for i, label in enumerate(artifact.labels)}
        truth = np.array([index.get(y, -1) for y in rows.labels])
        out[name] = (probabilities, probabilities.argmax(axis=1) == truth)
    return list(artifact.labels), out


def reused_source(
    source: Source, version_dir: Path, folder: Path
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Like :func:`scored_source` for a version ``insightloop train`` already made from this source.

    The reference is the version's own profile (its validation split, labeled and scored when it was
    built) plus the source's extra held-out rows; every row the version trained on (its training file
    less its validation split) is taken out of the reference and the targets, so nothing seen is scored.
    """
    from insightloop.deploy import PROFILE_DIR, TRAINING_DATA, ModelArtifact
    from insightloop.detectors import normalise_text, texts_without

    artifact = ModelArtifact.load(version_dir, device="cpu")
    rows = json.loads((version_dir / PROFILE_DIR / "rows.json").read_text(encoding="utf-8"))
    profile_p = np.load(version_dir / PROFILE_DIR / "probabilities.npy", allow_pickle=False).astype(np.float64)
    with open(version_dir / TRAINING_DATA, encoding="utf-8") as handle:
        in_file = [json.loads(line)["text"] for line in handle if line.strip()]
    trained = {normalise_text(t) for t in texts_without(in_file, rows["texts"])}
    print(f"[{source.name}] reusing {version_dir} (trained on {len(trained)} texts)", flush=True)

    def unseen(part: Rows) -> Rows:
        kept = [(t, y) for t, y in zip(part.texts, part.labels, strict=True) if normalise_text(t) not in trained]
        return Rows(part.name, [t for t, _ in kept], [y for _, y in kept])

    index = {label: i for i, label in enumerate(artifact.labels)}
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    in_profile = {normalise_text(t) for t in rows["texts"]}
    extra = unseen(source.extra_reference)
    # The version's validation rows are in the reference already (its profile): not twice.
    extra = Rows(
        extra.name,
        [t for t in extra.texts if normalise_text(t) not in in_profile],
        [y for t, y in zip(extra.texts, extra.labels, strict=True) if normalise_text(t) not in in_profile],
    )
    parts = [("extra", extra), *[(name, unseen(rows_)) for name, rows_ in source.targets]]
    scored: dict[str, tuple[Rows, np.ndarray]] = {}
    for name, part in parts:
        path = folder / f"reuse-{digest(str(version_dir.resolve()), name, part.texts)}.npz"
        if path.is_file():
            probabilities = np.load(path, allow_pickle=False)["probabilities"]
        else:
            t0 = time.perf_counter()
            probabilities = artifact.predict(part.texts, batch_size=32).probabilities.astype(np.float64)
            np.savez(path, probabilities=probabilities)
            print(f"[{source.name}] scored {len(part.texts)} rows of {name} in {time.perf_counter() - t0:.0f} s")
        scored[name] = (part, probabilities)
    for name, (part, probabilities) in scored.items():
        if name == "extra":
            continue
        truth = np.array([index.get(y, -1) for y in part.labels])
        out[name] = (probabilities, probabilities.argmax(axis=1) == truth)
    extra_rows, extra_p = scored["extra"]
    ref_labels = [*rows["labels"], *extra_rows.labels]
    ref_p = np.concatenate([profile_p, extra_p]) if len(extra_p) else profile_p
    truth = np.array([index.get(str(y), -1) for y in ref_labels])
    out["reference"] = (ref_p, ref_p.argmax(axis=1) == truth)
    print(f"[{source.name}] reference: {len(rows['texts'])} validation + {len(extra_rows.texts)} held-out rows")
    return list(artifact.labels), out


def detector_estimate(reference: tuple[np.ndarray, np.ndarray], current: np.ndarray, labels: list[str]) -> float:
    """What ``EstimatedQualityDrop`` reports for ``current`` against a profile of ``reference``."""
    from insightloop.detectors import ReferenceProfile, Window
    from insightloop.detectors.quality_stats import estimated_quality

    ref_p, ref_correct = reference
    predicted = ref_p.argmax(axis=1)
    ref_labels = [labels[int(p)] if ok else labels[1 - int(p)] for p, ok in zip(predicted, ref_correct, strict=True)]

    def window(p: np.ndarray, y: list[str] | None) -> Window:
        n = len(p)
        return Window(
            ids=[str(i) for i in range(n)],
            texts=["x"] * n,
            class_names=tuple(labels),
            probabilities=p,
            embeddings=np.zeros((n, 1)),
            token_counts=np.ones(n, dtype=np.int64),
            labels=y or [],
        )

    profile = ReferenceProfile.build(window(ref_p, ref_labels), ["x"], [], n_rounds=0)
    est = estimated_quality(profile, window(current, None))
    return est.current_estimate if est is not None else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="books and SST-2 sources only, fewer rows")
    parser.add_argument("--smoke", action="store_true", help="a tiny BERT on a few dozen rows (for tests)")
    parser.add_argument(
        "--sources",
        nargs="+",
        default=("books", "sst2", "electronics", "kitchen", "dvd"),
        choices=(*AMAZON_DOMAINS, "sst2"),
        help="which source models to train and estimate from (default: all five)",
    )
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="SOURCE=VERSION_DIR",
        help="use a version `insightloop train` already made from SOURCE instead of training one",
    )
    parser.add_argument("--cache", type=Path, help="model and score cache (default ~/.cache/insightloop-bench)")
    parser.add_argument(
        "--train-rows",
        type=int,
        default=1200,
        help="source rows per trained model (an Amazon domain has 1,600 train-split rows, less the reference)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trained model")
    parser.add_argument(
        "--reference-rows",
        type=int,
        default=400,
        help="held-out source rows in the reference, beside the validation split",
    )
    parser.add_argument("--target-rows", type=int, default=1000, help="labeled rows per target, at most")
    parser.add_argument("--seed", type=int, default=0, help="training seed and the draw of every sample")
    args = parser.parse_args(argv)

    if not (DATA / "amazon_multidomain_sentiment" / "train.jsonl").is_file():
        print(f"no data: {DATA.resolve()} is missing", file=sys.stderr)
        return 2
    import torch

    from insightloop.detectors.estimators import ESTIMATORS, SHIPPED_ESTIMATOR
    from insightloop.retrain import FineTuneSettings, default_base_model, save_tiny_bert

    torch.manual_seed(args.seed)
    if args.smoke:
        scratch = Path(tempfile.mkdtemp(prefix="insightloop-estimates-"))
        base = str(save_tiny_bert(scratch / "tiny"))
        cache = args.cache or scratch
        settings = FineTuneSettings(epochs=1, learning_rate=2e-3, batch_size=16, max_length=64, projection_dims=4)
        chosen = sources(80, 40, 40, ("books", "sst2"))
    else:
        base = default_base_model()
        cache = args.cache or Path.home() / ".cache" / "insightloop-bench"
        # Sized for two CPU cores: 64 tokens (Amazon reviews are cut; SST-2 sentences mostly fit).
        settings = FineTuneSettings(
            epochs=args.epochs, learning_rate=5e-5, batch_size=16, max_length=64, projection_dims=8, seed=args.seed
        )
        quick = args.quick
        chosen = (
            sources(400, 200, 200, ("books", "sst2"), args.seed)
            if quick
            else sources(
                min(args.train_rows, 1600 - args.reference_rows),
                args.reference_rows,
                args.target_rows,
                args.sources,
                args.seed,
            )
        )
    cache.mkdir(parents=True, exist_ok=True)
    reuse = {name: Path(path) for name, _, path in (item.partition("=") for item in args.reuse)}
    print(
        f"model: {'tiny BERT' if args.smoke else 'all-MiniLM-L6-v2'}, {settings.epochs} epoch(s), "
        f"max_length {settings.max_length}; {torch.get_num_threads()} threads; cache {cache}"
    )

    names = list(ESTIMATORS)
    errors: dict[str, list[float]] = {name: [] for name in names}
    header = f"{'shift':<28} {'rows':>5} {'accuracy':>8} {'sampling':>8}  " + "  ".join(f"{n:>21}" for n in names)
    noise: list[float] = []
    lines: list[str] = []
    controls: list[int] = []
    mismatches = []
    for source in chosen:
        labels, scored = scored_source(source, base, settings, cache, reuse.get(source.name))
        ref_p, ref_correct = scored["reference"]
        for shift, _ in source.targets:
            cur_p, cur_correct = scored[shift]
            accuracy = float(cur_correct.mean())
            noise.append(sampling_error(accuracy, len(cur_p), float(ref_correct.mean()), len(ref_p)))
            cells = []
            for name in names:
                estimate = ESTIMATORS[name](ref_p, ref_correct, cur_p)
                error = abs(estimate - accuracy) * 100
                errors[name].append(error)
                cells.append(f"{estimate:>6.3f} (err {error:>5.1f})")
            shipped = ESTIMATORS[SHIPPED_ESTIMATOR](ref_p, ref_correct, cur_p)
            from_detector = detector_estimate((ref_p, ref_correct), cur_p, labels)
            if not abs(from_detector - shipped) < 1e-9:
                mismatches.append(f"{shift}: detector {from_detector:.4f} vs {SHIPPED_ESTIMATOR} {shipped:.4f}")
            if shift == f"{source.name} → {source.name}":
                controls.append(len(lines))
            lines.append(f"{shift:<28} {len(cur_p):>5} {accuracy:>8.3f} {noise[-1]:>8.1f}  " + "  ".join(cells))
            print(lines[-1], flush=True)
    print()
    print(
        "estimate (absolute error in accuracy points) per shift; reference = held-out source rows; sampling = the\n"
        "error expected from the label and reference samples alone (an estimator that knew the true accuracy)"
    )
    print(header)
    print("-" * len(header))
    for line in lines:
        print(line)
    print("-" * len(header))
    shifted = [i for i in range(len(lines)) if i not in controls]
    groups = (("MAE, all", range(len(lines))), ("MAE, real shifts", shifted), ("MAE, controls", controls))
    for label, rows_idx in groups:
        cells = "  ".join(f"{statistics.fmean([errors[n][i] for i in rows_idx]):>21.2f}" for n in names)
        floor = statistics.fmean([noise[i] for i in rows_idx])
        print(f"{label:<28} {'':>5} {'':>8} {floor:>8.2f}  {cells}")
    best = min(names, key=lambda n: statistics.fmean(errors[n]))
    print(f"best measured: {best}; shipped: {SHIPPED_ESTIMATOR}")
    if mismatches:
        print("the detectors' estimate differs from the shipped estimator:", *mismatches, sep="\n  ")
        return 1
    print(
        f"estimates: shipped={SHIPPED_ESTIMATOR} mae_points={statistics.fmean(errors[SHIPPED_ESTIMATOR]):.2f} "
        f"shifts={len(lines)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
