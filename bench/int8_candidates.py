"""Experiment bench: the int8 graphs ONNX Runtime can build for the scorer, timed against each other.

The shipped int8 path (``daemon/scorer_onnx.py``: dynamic int8 of the encoder's MatMuls, one scale per output
channel, graph traced with eager attention, one single-thread session per core taking its share of each
pass's chunks) against the other ways ONNX Runtime offers to quantise the same
exported float32 graph, on the bench's trained MiniLM (``bench/scoring.py``'s cached model; ``--model DIR``
for another version; ``--smoke``: a tiny BERT) and real Amazon test reviews, in one process:

* ``static_qoperator`` / ``static_qdq``: static int8 (QLinearMatMul, or QuantizeLinear/DequantizeLinear
  pairs) of the same MatMuls, activations uint8 with MinMax ranges calibrated on 128 held-out Amazon
  train reviews (the scorer would use the version's reference rows);
* ``fused_attention``: ONNX Runtime's transformer optimizer first (fused Attention in float32, SkipLayerNorm,
  BiasGelu), then dynamic int8 of the remaining MatMuls;
* ``fused_mha``: the optimizer with MultiHeadAttention (Q, K, V projections stay MatMuls and go int8);
* ``fused_qattention``: the optimizer, then Attention quantised too (QAttention);
* ``one_session``: the shipped graph in one session on every core (how the scorer ran it before);
* the shipped graph at other chunk sizes (texts per forward pass / padded-token budget, of the whole pass:
  with several sessions each chunk is its per-session share).

Every candidate graph runs in the shipped sessions, so the graphs compare like for like.

Every candidate scores the same texts, interleaved micro-batch by micro-batch (order alternating) over
``--rounds`` rounds; rates are texts over summed seconds, ratios are to torch float32 in the same process;
label agreement is with torch float32, accuracy on the texts' labels. A share of ONNX Runtime's time per
operator type for the shipped graph (its profiler) is printed too. Last line:
``int8_candidates: shipped_x_fp32=<x> best=<name>@<texts>/<tokens> best_x_fp32=<x> best_agreement=<fraction>``
(best: the fastest int8 run whose labels agree with float32 on at least 98%, the scorer's floor at load).

    python bench/int8_candidates.py [--texts 384] [--rounds 3] [--model VERSION_DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

from insightloop.daemon import scorer_onnx
from insightloop.deploy import ModelArtifact, set_cpu_threads

HERE = Path(__file__).resolve().parent
AMAZON = HERE.parent / ".." / "shared" / "data" / "amazon_multidomain_sentiment"


def scoring_bench() -> Any:
    """``bench/scoring.py`` as a module: its row loader and its cached trained model."""
    spec = importlib.util.spec_from_file_location("scoring_bench", HERE / "scoring.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scoring_bench"] = module
    spec.loader.exec_module(module)
    return module


def padded_feeds(artifact: ModelArtifact, texts: list[str], size: int = 16) -> list[dict[str, np.ndarray]]:
    """Length-sorted batches of ``texts``, padded as the artifact pads a pass, as ONNX feeds (for calibration)."""
    ids = artifact.tokenize(texts)
    order = np.argsort([len(t) for t in ids])
    chunks = [[ids[i] for i in order[start : start + size]] for start in range(0, len(order), size)]
    return [{name: t.numpy() for name, t in artifact._pad(chunk).items()} for chunk in chunks]


def candidates(
    base: ModelArtifact, float32: Path, calibration: list[str], work: Path
) -> Iterator[tuple[str, Callable[[], Path]]]:
    """(name, build) of each int8 graph; ``build`` writes it and returns its path."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    inside, _ = scorer_onnx.encoder_matmuls(float32)
    keep_float = {"DefaultTensorType": onnx.TensorProto.FLOAT}

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = iter(padded_feeds(base, calibration))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    def shipped() -> Path:
        scorer_onnx.quantize_encoder(float32, work / "shipped.onnx")
        return work / "shipped.onnx"

    def static(fmt: Any, name: str) -> Callable[[], Path]:
        def build() -> Path:
            quantize_static(
                str(float32), str(work / name), Reader(), quant_format=fmt, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=inside,
                op_types_to_quantize=["MatMul"], extra_options=keep_float,
            )  # fmt: skip
            return work / name

        return build

    def fused(name: str, op_types: list[str], **flags: bool) -> Callable[[], Path]:
        def build() -> Path:
            options = FusionOptions("bert")
            for key, value in flags.items():
                setattr(options, key, value)
            config = base.model.config
            optimised = optimizer.optimize_model(
                str(float32), model_type="bert", num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size), optimization_options=options, opt_level=0,
            )  # fmt: skip
            fused_path = work / f"{name}.float32.onnx"
            optimised.save_model_to_file(str(fused_path))
            _, outside = scorer_onnx.encoder_matmuls(fused_path)
            graph = onnx.load(str(fused_path)).graph
            nodes = [n.name for n in graph.node if n.op_type in op_types and n.name not in outside]
            quantize_dynamic(
                str(fused_path), str(work / name), per_channel=True, weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes, op_types_to_quantize=op_types, extra_options=keep_float,
            )  # fmt: skip
            return work / name

        return build

    yield "shipped", shipped
    yield "static_qoperator", static(QuantFormat.QOperator, "static_qoperator.onnx")
    yield "static_qdq", static(QuantFormat.QDQ, "static_qdq.onnx")
    yield "fused_attention", fused("fused_attention.onnx", ["MatMul"])
    yield "fused_mha", fused("fused_mha.onnx", ["MatMul"], use_multi_head_attention=True)
    yield "fused_qattention", fused("fused_qattention.onnx", ["MatMul", "Attention"])


def operator_shares(graph: bytes, artifact: ModelArtifact, texts: list[str], threads: int) -> list[tuple[str, float]]:
    """Share of ONNX Runtime's kernel time per operator type, scoring ``texts`` with ``graph``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="insightloop-ort-profile-")) / "ort")
    options.log_severity_level = 3
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    scorer_onnx.OnnxArtifact(artifact, [session], "int8").predict(texts, batch_size=32)
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    spent: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += int(event["dur"])
    total = sum(spent.values()) or 1
    return [(op, us / total) for op, us in spent.most_common(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=384, help="labeled Amazon test reviews every candidate scores")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, help="a version directory (default: bench/scoring.py's cached model)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--smoke", action="store_true", help="a tiny BERT, 32 texts, one round (a check, no figures)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().addFilter(lambda record: "pre-processing" not in str(record.msg))
    threads = set_cpu_threads(None)
    bench = scoring_bench()
    test_rows, _ = bench.load_rows(AMAZON / "test.jsonl", 1000 + args.texts)
    train_rows, _ = bench.load_rows(AMAZON / "train.jsonl", 5128)
    rows = test_rows[1000:]  # not the reviews bench/scoring.py times first
    calibration = [r["text"] for r in train_rows[5000:5128]]  # beyond the 1,200 the bench model trained on
    with tempfile.TemporaryDirectory(prefix="insightloop-int8-") as tmp:
        work = Path(tmp)
        if args.smoke:
            args.texts, args.rounds, calibration = 32, 1, calibration[:32]
            rows = rows[:32]
            base = smoke_artifact(work, [r["text"] for r in rows])
        else:
            base = ModelArtifact.load(args.model or bench.trained_version(AMAZON / "train.jsonl"), device="cpu")
        base.max_length = args.max_length
        texts = [r["text"] for r in rows]
        labels = np.array([list(base.labels).index(str(r["label"])) for r in rows])
        float32 = work / "float32.onnx"
        scorer_onnx.export_float32(base, float32)
        scorers: dict[str, ModelArtifact] = {"torch_float32": base}
        graphs: dict[str, bytes] = {}
        for name, build in candidates(base, float32, calibration, work):
            started = time.perf_counter()
            try:
                graphs[name] = build().read_bytes()
                sessions = scorer_onnx.sessions_of(graphs[name], threads)
                scorers[name] = scorer_onnx.OnnxArtifact(base, sessions, "int8")
            except Exception as exc:  # a candidate ONNX Runtime cannot build is reported, not fatal
                print(f"{name}: not built ({type(exc).__name__}: {str(exc)[:160]})", flush=True)
                continue
            print(f"{name}: built in {time.perf_counter() - started:.1f} s", flush=True)
        if threads > 1:  # the shipped graph in one session on every core, as the scorer ran it before
            single = scorer_onnx.session_of(graphs["shipped"], threads)
            scorers["one_session"] = scorer_onnx.OnnxArtifact(base, [single], "int8")
        runs = [(name, 32, scorer.max_tokens_per_pass or 0) for name, scorer in scorers.items()]
        default = scorers["shipped"].max_tokens_per_pass or 0
        sweep = ((32, 2048), (32, 1024), (16, 1024), (64, 512), (32, 256), (64, 256))
        runs += [("shipped", b, t) for b, t in sweep if (b, t) != (32, default)]
        runs += [("one_session", 32, 512)] if threads > 1 else []
        print("ONNX Runtime kernel time of the shipped graph, by operator type:")
        for op, share in operator_shares(graphs["shipped"], base, texts[:128], threads):
            print(f"  {op:<28} {share:6.1%}")
        report(scorers, runs, texts, labels, args.rounds)


def smoke_artifact(work: Path, texts: list[str]) -> ModelArtifact:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from insightloop.retrain import save_tiny_bert

    tiny = str(save_tiny_bert(work / "tiny"))
    labels = ["negative", "positive"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny, num_labels=2, id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)}
    ).eval()
    return ModelArtifact(model, AutoTokenizer.from_pretrained(tiny), labels, None, 64, torch.device("cpu"))


def report(
    scorers: dict[str, ModelArtifact], runs: list[tuple[str, int, int]], texts: list[str], labels: Any, rounds: int
) -> None:
    """Time every run interleaved per micro-batch of 64 texts; print the table and the last line."""
    for name, size, budget in runs:  # warm: first-call allocations are not the candidate's speed
        scorers[name].predict(texts[:16], batch_size=size, max_tokens=budget)
    seconds = {run: 0.0 for run in runs}
    predicted: dict[tuple[str, int, int], list[np.ndarray]] = {run: [] for run in runs}
    for round_ in range(rounds):
        for index, start in enumerate(range(0, len(texts), 64)):
            batch = texts[start : start + 64]
            for run in runs if (index + round_) % 2 == 0 else runs[::-1]:
                began = time.perf_counter()
                out = scorers[run[0]].predict(batch, batch_size=run[1], max_tokens=run[2])
                seconds[run] += time.perf_counter() - began
                if round_ == 0:
                    predicted[run].append(out.probabilities.argmax(axis=1))
    reference = np.concatenate(predicted[runs[0]])
    base_rate = rounds * len(texts) / seconds[runs[0]]
    print(f"\n{len(texts)} labeled Amazon test reviews, {rounds} round(s), {torch.get_num_threads()} threads")
    print(f"{'candidate':<20} {'chunk':>9} {'texts/s':>8} {'x fp32':>7} {'agree':>7} {'accuracy':>9}")
    results = []
    for run in runs:
        labels_of_run = np.concatenate(predicted[run])
        rate = rounds * len(texts) / seconds[run]
        agreement, accuracy = float(np.mean(labels_of_run == reference)), float(np.mean(labels_of_run == labels))
        results.append((run, rate / base_rate, agreement))
        chunk = f"{run[1]}/{run[2]}"
        print(f"{run[0]:<20} {chunk:>9} {rate:8.1f} {rate / base_rate:7.2f} {agreement:7.2%} {accuracy:9.4f}")
    shipped = next(x for run, x, _ in results if run[0] == "shipped")  # the first: its default chunks
    # the fastest graph whose labels agree as the scorer requires at load (scorer.numerics_min_agreement)
    agreeing = [r for r in results if r[0][0] != "torch_float32" and r[2] >= 0.98] or results
    (best_name, best_size, best_budget), best_x, best_agreement = max(agreeing, key=lambda r: r[1])
    print(
        f"int8_candidates: shipped_x_fp32={shipped:.2f} best={best_name}@{best_size}/{best_budget} "
        f"best_x_fp32={best_x:.2f} best_agreement={best_agreement:.4f}"
    )


if __name__ == "__main__":
    main()
