"""GPU benchmark (run through ``bench/gpu.sh``): bf16 scoring throughput by batch size, one retraining epoch.

On a machine with an NVIDIA GPU and torch with CUDA (after ``pip install -e .``), from the repository root:

    bench/gpu.sh                 # about 1-3 minutes on a data-centre GPU
    bench/gpu.sh --quick         # fewer texts; also what runs on a CPU-only machine in reasonable time

1. Scoring: ``ModelArtifact.predict`` (one forward pass for probabilities and the pooled embedding) on
   ``--texts`` real Amazon reviews (``max_length`` 256), float32 and bf16 autocast, at several forward batch
   sizes; texts/s, milliseconds per batch and peak device memory. On a GPU a chunk is limited by the batch
   size only; on a CPU by the CPU token budget too, as in production.
2. Retraining: one epoch of ``insightloop.retrain.fine_tune`` on ``--train-texts`` labeled reviews from
   the Amazon train split (bf16 autocast on CUDA), with its validation accuracy.

The table's last line is ``gpu: device=<name> best_bf16_tps=<x> best_batch=<n> epoch_s=<x> train_tps=<x>``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

from insightloop.deploy import ModelArtifact, pick_device, set_cpu_threads
from insightloop.deploy.artifact import cpu_has_native_bf16, forward_batch_size

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon_multidomain_sentiment"


def load_rows(path: Path, n: int, seed: int) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    began = time.perf_counter()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few texts: for a CPU-only check")
    parser.add_argument("--smoke", action="store_true", help="tiny model and a handful of texts (for tests)")
    parser.add_argument("--base", help="model to score and fine-tune (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--texts", type=int, default=4096, help="texts scored per batch size")
    parser.add_argument("--batch-sizes", default="32,64,128,256,512")
    parser.add_argument("--train-texts", type=int, default=2000)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train.jsonl and test.jsonl")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.batch_sizes, args.train_texts = 256, "16,64", 256
    if args.smoke:
        args.texts, args.batch_sizes, args.train_texts, args.max_length = 64, "8,32", 64, 64

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from insightloop.retrain import FineTuneSettings, default_base_model, fine_tune, save_tiny_bert
    from insightloop.retrain.data import Example

    device = pick_device(args.device)
    threads = set_cpu_threads(None)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        bf16_ok = torch.cuda.is_bf16_supported()
    else:
        name = f"CPU ({threads} threads{', AMX' if cpu_has_native_bf16() else ''})"
        bf16_ok = cpu_has_native_bf16()
    print(f"device: {name}; torch {torch.__version__}; CUDA {torch.version.cuda or 'none'}")
    if device.type != "cuda":
        print("no CUDA device: running on the CPU (use --quick; figures are not GPU figures)")

    import tempfile

    with tempfile.TemporaryDirectory(prefix="insightloop-gpu-") as tmp:
        base = args.base or (str(save_tiny_bert(Path(tmp) / "tiny")) if args.smoke else default_base_model())
        test_rows = load_rows(args.data / "test.jsonl", args.texts, seed=0)
        texts = [r["text"] for r in test_rows]
        while len(texts) < args.texts:
            texts += texts[: args.texts - len(texts)]
        labels = ["negative", "positive"]
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=2, id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)}
        )
        model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(base)
        fp32 = ModelArtifact(model, tokenizer, labels, None, args.max_length, device, bf16=False)
        bf16 = ModelArtifact(model, tokenizer, labels, None, args.max_length, device, bf16=True)
        token_ids = fp32.tokenize(texts)
        mean_tokens = sum(len(t) for t in token_ids) / len(token_ids)
        print(f"scoring {len(texts)} Amazon reviews, {mean_tokens:.0f} tokens on average, max_length {args.max_length}")

        rows: list[tuple[str, int, float, float, float]] = []
        variants = [("fp32", fp32)] + ([("bf16", bf16)] if bf16_ok else [])
        for size in [int(x) for x in args.batch_sizes.split(",")]:
            for precision, artifact in variants:
                artifact.predict_tokenized(token_ids[: min(len(token_ids), size)], size)  # warm-up
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                started = time.perf_counter()
                artifact.predict_tokenized(token_ids, size)
                sync(device)
                seconds = time.perf_counter() - started
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                batches = -(-len(token_ids) // size)
                rows.append((precision, size, len(texts) / seconds, seconds / batches * 1000, peak))
                print(f"  {precision} batch {size}: {len(texts) / seconds:.0f} texts/s", flush=True)

        print()
        print(f"{'scoring':<10} {'batch':>6} {'texts/s':>10} {'ms/batch':>9} {'peak MB':>9} {'vs fp32':>8}")
        fp32_rate = {size: tps for precision, size, tps, _, _ in rows if precision == "fp32"}
        for precision, size, tps, ms, peak in rows:
            print(f"{precision:<10} {size:>6} {tps:10.0f} {ms:9.1f} {peak:9.0f} {tps / fp32_rate[size]:8.2f}")
        best = max((r for r in rows if r[0] == ("bf16" if bf16_ok else "fp32")), key=lambda r: r[2])

        # The scorer's own path: micro-batches as Kafka hands them over, cut into forward passes by its rule.
        from insightloop.daemon.config import ScorerConfig

        defaults = ScorerConfig()
        serving = bf16 if bf16_ok else fp32
        print(f"\n{'scorer settings':<52} {'texts/s':>10}")
        default_micro = defaults.max_batch_size
        for micro, size, rule in (
            (default_micro, defaults.inference_batch_size, "passes of inference_batch_size"),
            (
                default_micro,
                forward_batch_size(device, defaults.inference_batch_size, default_micro),
                "forward_batch_size",
            ),
            (512, forward_batch_size(device, defaults.inference_batch_size, 512), "forward_batch_size"),
        ):
            serving.predict_tokenized(token_ids[:micro], size)  # warm-up
            sync(device)
            started = time.perf_counter()
            for at in range(0, len(token_ids), micro):
                serving.predict_tokenized(token_ids[at : at + micro], size)
            sync(device)
            label = f"micro-batch {micro}, {rule} ({size})"
            print(f"{label:<52} {len(token_ids) / (time.perf_counter() - started):10.0f}", flush=True)

        train_rows = load_rows(args.data / "train.jsonl", args.train_texts, seed=1)
        examples = [Example(text=r["text"], label=str(r["label"])) for r in train_rows]
        settings = FineTuneSettings(
            epochs=1,
            max_length=args.max_length,
            batch_size=args.train_batch_size,
            learning_rate=5e-5,
            projection_dims=32,
            device=device.type,
        )
        print(f"\nretraining: one epoch of fine_tune on {len(examples)} reviews (max_length {args.max_length})")
        sync(device)
        started = time.perf_counter()
        result = fine_tune(examples, base, settings, progress=False)
        sync(device)
        total = time.perf_counter() - started
        metrics = result.metrics
        print(f"{'training':<26} {'value':>10}")
        print(f"{'epoch seconds (training)':<26} {metrics['train_seconds']:10.1f}")
        print(f"{'texts/s (training)':<26} {metrics['train_texts_per_second']:10.1f}")
        print(f"{'whole call seconds':<26} {total:10.1f}")
        print(f"{'validation accuracy':<26} {metrics.get('validation_accuracy', float('nan')):10.4f}")
        print(f"{'bench seconds (all)':<26} {time.perf_counter() - began:10.1f}")
        print(
            f"gpu: device={name.replace(' ', '_')} best_bf16_tps={best[2]:.0f} best_batch={best[1]} "
            f"epoch_s={metrics['train_seconds']:.1f} train_tps={metrics['train_texts_per_second']:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
