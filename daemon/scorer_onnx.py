"""int8 scoring on CPU with ONNX Runtime: the model exported at load, its encoder's matrices quantised per channel.

The exported graph is the same forward pass as ``ModelArtifact.forward``: it returns the logits *and* the
pooled last hidden state (pooled as the family wants), so the scorer's scores and the detectors' embeddings
still come from one pass. Only the encoder layers' MatMuls are quantised (dynamic int8, one scale per output
channel of each weight); embeddings, the pooler and the classification head stay in float32, which is what
keeps the accuracy (docs/benchmarks.md measures every candidate). Nothing is written to the registry:
the graph is built in a temporary folder and held in memory.

On a CPU with several cores the graph runs in one single-thread session per core (at most
``MAX_SESSIONS``), and a pass's length-sorted chunks are dealt out to them: small int8 MatMuls split
poorly across threads, so two sessions side by side beat one session on two threads (1.27–1.41× on a
2-core Zen 5, ``bench/int8_candidates.py``), more so with short chunks (256 padded tokens a session).
ONNX Runtime releases the GIL while a session runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from insightloop.deploy import ModelArtifact, length_chunks

log = logging.getLogger(__name__)

OPSET = 17
#: Node-name parts of the encoder's layers (BERT/RoBERTa/XLM-R/DeBERTa: ``encoder``, DistilBERT: ``transformer``).
ENCODER_SCOPES = ("/encoder/", "/transformer/")
#: Most sessions side by side; more cores than this go to the sessions' own intra-op threads (unmeasured).
MAX_SESSIONS = 4
#: Padded tokens per chunk for one single-thread session: 256 ran 13% faster than 1,024 on a 2-core Zen 5
#: (bench/int8_candidates.py); one session on both cores is fastest with the torch path's 2,048.
SESSION_TOKENS_PER_PASS = 256


class OnnxUnavailable(RuntimeError):
    """The model could not be exported or quantised for ONNX Runtime (the torch paths still serve)."""


class _ForwardGraph(torch.nn.Module):
    """What the exported graph computes: ``ModelArtifact.forward`` (logits, pooled last hidden state)."""

    def __init__(self, artifact: ModelArtifact) -> None:
        super().__init__()
        self.artifact = artifact
        self.model = artifact.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.artifact.forward({"input_ids": input_ids, "attention_mask": attention_mask})


def export_float32(artifact: ModelArtifact, path: Path) -> None:
    """Write ``artifact``'s forward pass as an ONNX graph with dynamic batch and sequence axes.

    Traced with the eager attention implementation (explicit MatMul/Softmax, restored afterwards): ONNX
    Runtime runs that graph faster than the one traced through SDPA (int8 on MiniLM: 2.96x torch float32
    against 2.38x, interleaved in one process; docs/benchmarks.md).
    """
    graph = _ForwardGraph(artifact).eval()
    example = (torch.ones((2, 8), dtype=torch.int64), torch.ones((2, 8), dtype=torch.int64))
    with eager_attention(artifact.model), warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            graph,
            example,
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits", "pooled"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "logits": {0: "batch"},
                "pooled": {0: "batch"},
            },
            opset_version=OPSET,
        )


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """``model`` with transformers' eager attention while the block runs (unchanged where it cannot switch)."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    switched = False
    if callable(switch) and before not in (None, "eager"):
        try:
            switch("eager")
            switched = True
        except Exception as exc:  # some architectures have no eager path: export what they have
            log.info("exporting with %s attention (no eager switch: %s)", before, exc)
    try:
        yield
    finally:
        if switched:
            assert switch is not None
            switch(before)


def encoder_matmuls(path: Path) -> tuple[list[str], list[str]]:
    """MatMul/Gemm node names of the graph: (inside the encoder's layers, everything else)."""
    import onnx

    inside: list[str] = []
    outside: list[str] = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            (inside if any(s in node.name for s in ENCODER_SCOPES) else outside).append(node.name)
    return inside, outside


def quantize_encoder(source: Path, target: Path) -> int:
    """Dynamic int8 of the encoder layers' MatMuls, per output channel; returns how many were quantised."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    inside, outside = encoder_matmuls(source)
    if not inside:
        raise OnnxUnavailable("no encoder MatMul found in the exported graph")
    root = logging.getLogger()
    hint = _QuantiserHint()
    root.addFilter(hint)  # the quantiser's advice to pre-process (shape inference) is for image models
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=inside,
            nodes_to_exclude=outside,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(hint)
    return len(inside)


class _QuantiserHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")


def session_of(graph: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``graph`` with ``threads`` intra-op threads (one pass at a time)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def sessions_of(graph: bytes, threads: int) -> list[Any]:
    """Sessions of ``graph`` sharing ``threads`` cores: one per core up to :data:`MAX_SESSIONS`."""
    count = max(1, min(threads, MAX_SESSIONS))
    return [session_of(graph, max(1, threads // count)) for _ in range(count)]


class OnnxArtifact(ModelArtifact):
    """A CPU artifact whose forward pass runs in ONNX Runtime; tokenising, chunking, pooling contract and
        projection are ``ModelArtifact``'s own. It scores but cannot be saved (save the float32 model).

    With several ``sessions``, each takes its share of a pass's chunks on its own core; a chunk is then the
    per-session share of the pass (``batch_size`` and the token budget divided by the sessions), and the
    default budget is :data:`SESSION_TOKENS_PER_PASS` per session."""

    def __init__(self, base: ModelArtifact, sessions: list[Any], kind: str) -> None:
        super().__init__(
            base.model,
            base.tokenizer,
            base.labels,
            base.projection,
            base.max_length,
            base.device,
            base.info,
            bf16=False,
        )
        self.pooling = base.pooling
        self.sessions = sessions
        self.session = self.sessions[0]
        self.kind = kind
        if len(self.sessions) > 1 and self.max_tokens_per_pass is not None:
            self.max_tokens_per_pass = SESSION_TOKENS_PER_PASS * len(self.sessions)

    @property
    def quantized(self) -> bool:
        return self.kind == "int8"

    @property
    def precision(self) -> str:
        return f"cpu/{self.kind}"

    def save(self, path: Path | str) -> None:
        raise ValueError(f"an ONNX Runtime {self.kind} artifact cannot be saved; save the float32 model it came from")

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feed = {name: np.ascontiguousarray(batch[name].cpu().numpy()) for name in ("input_ids", "attention_mask")}
        logits, pooled = self.session.run(["logits", "pooled"], feed)
        return torch.from_numpy(logits), torch.from_numpy(pooled)

    def _forward_rows(
        self, rows: Sequence[Sequence[int]], batch_size: int, max_tokens: int | None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        count = len(self.sessions)
        if count == 1:
            return super()._forward_rows(rows, batch_size, max_tokens)
        lengths = np.array([len(ids) for ids in rows], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        budget = self.token_budget(max_tokens)
        share = max(1, min(math.ceil(batch_size / count), math.ceil(len(rows) / count)))
        chunks = list(length_chunks(lengths, order, share, None if budget is None else max(1, budget // count)))
        probabilities = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        pooled_all = np.zeros((len(rows), int(self.model.config.hidden_size)), dtype=np.float32)

        def run(worker: int) -> None:
            # dealt alternately in length order, so every session gets texts of every length
            for chunk in chunks[worker::count]:
                feed = {name: tensor.numpy() for name, tensor in self._pad([rows[i] for i in chunk]).items()}
                logits, pooled = self.sessions[worker].run(["logits", "pooled"], feed)
                exp = np.exp(logits - logits.max(axis=1, keepdims=True))
                probabilities[chunk] = exp / exp.sum(axis=1, keepdims=True)
                pooled_all[chunk] = pooled

        # threads per pass, not a pool kept alive: nothing outlives the scorer that drains and stops
        # (starting two threads costs microseconds against a pass of milliseconds)
        with concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="onnx-session") as pool:
            for done in [pool.submit(run, worker) for worker in range(min(count, len(chunks)))]:
                done.result()  # re-raises a session's error here
        return probabilities, pooled_all


def onnx_int8_artifact(base: ModelArtifact) -> OnnxArtifact:
    """``base`` (float32 on CPU) exported and quantised for ONNX Runtime; raises :class:`OnnxUnavailable`."""
    if base.device.type != "cpu":
        raise OnnxUnavailable(f"the ONNX Runtime path is for CPUs, not {base.device.type}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="insightloop-onnx-") as tmp:
        exported, quantized = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        try:
            export_float32(base, exported)
            count = quantize_encoder(exported, quantized)
            graph = quantized.read_bytes()
        except OnnxUnavailable:
            raise
        except Exception as exc:  # the exporter and the quantiser raise many types for a graph they cannot take
            raise OnnxUnavailable(f"{type(exc).__name__}: {exc}") from exc
    try:
        sessions = sessions_of(graph, torch.get_num_threads())
    except Exception as exc:
        raise OnnxUnavailable(f"ONNX Runtime cannot run the quantised graph: {exc}") from exc
    log.info(
        "built the ONNX Runtime int8 graph (%d encoder matrices per channel, head in float32) in %.1f s; "
        "%d session(s) of %d thread(s)",
        count,
        time.perf_counter() - started,
        len(sessions),
        max(1, torch.get_num_threads() // len(sessions)),
    )
    return OnnxArtifact(base, sessions, "int8")
