"""The model artifact: a sequence classifier, its tokenizer, label set and embedding projection.

One forward pass gives both the class probabilities and a pooled embedding (from the last hidden
layer, pooled as the encoder family wants), so scoring and drift monitoring never pay for the model
twice. The encoder families (BERT, DistilBERT, RoBERTa, XLM-R, DeBERTa-v2) differ in how many
positions they can take and how their sentence vector is pooled: :func:`family_of` knows each.

A text longer than ``max_length`` is cut by the version's truncation policy, or, with ``chunks``, read
whole as overlapping windows whose scores are pooled; training, scoring, the reference profile and the
evaluation all go through this artifact, so every room applies the same policy.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from insightloop.deploy.errors import DeployPermanentError
from insightloop.deploy.projection import Projection

ARTIFACT_FILE = "artifact.json"
MODEL_DIR = "model"
PROJECTION_FILE = "projection.npz"
FORMAT_VERSION = 1
QUANTIZED_INT8 = "dynamic-int8"
#: What a model version does: one label per text, or one tag per word (named entities). Recorded in
#: ``artifact.json`` as ``task``; versions written before it existed are text classifiers.
Task = Literal["text-classification", "token-classification"]
TASKS: tuple[Task, ...] = ("text-classification", "token-classification")
TOKEN_TASK: Task = "token-classification"
CPU_TOKENS_PER_PASS = 2048

log = logging.getLogger(__name__)


#: How a text longer than ``max_length`` is cut: ``head`` keeps its beginning; ``head_tail`` keeps the
#: first quarter of the budget and the rest from its end (Sun et al., 2019, "How to Fine-Tune BERT for Text
#: Classification?": head+tail beat head-only on long reviews, whose verdict is often at the end);
#: ``chunks`` cuts nothing: the text is scored as overlapping windows of ``max_length`` tokens (at most
#: ``MAX_WINDOWS``, evenly spread) and their probabilities and embeddings are averaged.
Truncation = Literal["head", "head_tail", "chunks"]
TRUNCATIONS: tuple[Truncation, ...] = ("head", "head_tail", "chunks")
HEAD_SHARE = 0.25
#: Windows per text under ``chunks``: a text's cost is bounded at this many forward rows.
MAX_WINDOWS = 8


def head_tail(ids: Sequence[int], budget: int, head_share: float = HEAD_SHARE) -> list[int]:
    """The first ``head_share`` of ``budget`` tokens and the rest from the end (all of ``ids`` if they fit).

    >>> head_tail(list(range(10)), 4)
    [0, 7, 8, 9]
    >>> head_tail([1, 2, 3], 4)
    [1, 2, 3]
    """
    if budget < 1:
        raise ValueError("budget must be at least 1 token")
    if len(ids) <= budget:
        return list(ids)
    head = int(budget * head_share)
    return [*ids[:head], *ids[len(ids) - (budget - head) :]]


def windows(length: int, window: int, max_windows: int = MAX_WINDOWS) -> list[tuple[int, int]]:
    """(start, end) of the windows of ``window`` tokens that read a text of ``length`` tokens.

    Windows overlap by half, the first starts at the text's beginning and the last ends at its end;
    past ``max_windows`` windows they are spread evenly (and may no longer overlap).

    >>> windows(10, 4)
    [(0, 4), (2, 6), (4, 8), (6, 10)]
    >>> windows(3, 4)
    [(0, 3)]
    >>> windows(100, 10, max_windows=3)
    [(0, 10), (45, 55), (90, 100)]
    """
    if window < 1 or max_windows < 1:
        raise ValueError("a window needs at least 1 token and a text at least 1 window")
    if length <= window:
        return [(0, length)]
    stride = max(1, window // 2)
    count = min(max_windows, math.ceil((length - window) / stride) + 1)
    starts = np.linspace(0, length - window, count).round().astype(int) if count > 1 else np.zeros(1, dtype=int)
    return [(int(s), int(s) + window) for s in starts]


class ModelLoadError(DeployPermanentError):
    """A model directory is missing, incomplete or unreadable."""


class ArtifactSettings(BaseModel):
    """What ``artifact.json`` says about a saved model: read without loading any weights."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format_version: int = FORMAT_VERSION
    task: Task = "text-classification"
    labels: list[str] = Field(min_length=2)
    max_length: int = Field(ge=1)
    truncation: Truncation = "head"  # versions saved before the policy existed kept the beginning
    max_windows: int = Field(default=MAX_WINDOWS, ge=1)  # windows per text under ``chunks``
    hidden_size: int | None = None
    embedding_dim: int | None = None
    prior_correction: dict[str, float] | None = None  # set by a recalibration job
    plan_id: str | None = None
    parent: str | None = None


@dataclass(frozen=True)
class PredictionBatch:
    """Outputs of one scoring call, rows in the order of the input texts."""

    labels: tuple[str, ...]
    probabilities: NDArray[np.float32]  # (n, n_labels)
    embeddings: NDArray[np.float32]  # (n, projection dims)
    token_counts: NDArray[np.int64]  # tokens per text after truncation (whole texts under ``chunks``)

    def predicted_labels(self) -> list[str]:
        """The most probable label of each row."""
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]


def save_model_files(model: Any, tokenizer: Any, labels: Sequence[str], path: Path | str) -> Path:
    """The transformers model (its label names set) and tokenizer under ``path/MODEL_DIR``; returns ``path``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.save_pretrained(root / MODEL_DIR)
    tokenizer.save_pretrained(root / MODEL_DIR)
    return root


def pick_device(requested: str = "auto") -> torch.device:
    """Resolve 'auto' to CUDA when present, otherwise CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def cpu_quota() -> float | None:
    """CPUs granted by the container's cgroup CPU quota (v2 ``cpu.max`` or v1 CFS), or None if unlimited."""
    candidates = (
        (Path("/sys/fs/cgroup/cpu.max"), None),
        (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")),
        (Path("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us")),
    )
    for quota_path, period_path in candidates:
        try:
            if period_path is None:
                quota_text, _, period_text = quota_path.read_text().strip().partition(" ")
            else:
                quota_text, period_text = quota_path.read_text().strip(), period_path.read_text().strip()
        except OSError:
            continue
        if quota_text in ("max", "-1", ""):
            return None
        try:
            quota, period = float(quota_text), float(period_text or 100_000)
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus() -> int:
    """CPUs this process may really use: its CPU affinity, capped by the container's CPU quota.

    A pod limited to 2 CPUs on a 64-core node still sees 64 CPUs in its affinity mask; running 64
    intra-op threads there is throttled by the quota and much slower than running 2.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def set_cpu_threads(threads: int | None) -> int:
    """Use ``threads`` intra-op CPU threads (None: :func:`available_cpus`); return the count.

    Inference runs one forward pass at a time, so inter-op parallelism only adds threads that
    compete with the intra-op pool: it is set to one thread where torch still allows it.
    """
    if threads is None:
        threads = available_cpus()
    threads = max(1, threads)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        # Only possible before the first inter-op parallel work of the process; later it raises.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    return threads


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices natively (AMX), where bf16 autocast beats float32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except Exception:  # a private torch helper: fall back to the kernel's CPU flags
            pass
    try:
        return " amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Attention kernels for ``device``: on CUDA, every SDPA backend but cuDNN's.

    With a padding mask, torch 2.11 sends bf16 attention on Hopper to cuDNN first, which builds an
    execution plan for every new (batch, padded length) shape: measured on an H200, 40-75 ms per batch
    and bf16 scoring 10x slower than float32 at batch 32. Length-sorted chunks make a new shape for
    nearly every batch, so the plan is never reused.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def forward_batch_size(device: torch.device, inference_batch_size: int, micro_batch: int) -> int:
    """Texts per forward pass for a micro-batch: ``inference_batch_size`` on a CPU; on CUDA the whole micro-batch.

    A GPU waits on Python and kernel launches below a few hundred texts per pass (H200, MiniLM, bf16:
    4,131 texts/s in passes of 32, 6,956 in 64, 25,985 in 512), while the padding that smaller
    length-sorted passes save costs it little.
    """
    if device.type == "cuda":
        return max(inference_batch_size, micro_batch)
    return inference_batch_size


def quantize_int8(model: Any) -> Any:
    """Convert the encoder's ``nn.Linear`` layers to dynamic int8 in place (CPU inference only).

    Weights are stored as int8 and activations quantised per batch on the fly; the classification
    head stays in float32. Returns ``model``.
    """
    encoder = getattr(model, "base_model", model)
    with warnings.catch_warnings():
        # torch.ao eager quantisation warns that it is moving to torchao; the API still works.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return model


def length_chunks(
    lengths: NDArray[np.int64], order: NDArray[np.int64], batch_size: int, max_tokens: int | None
) -> list[NDArray[np.int64]]:
    """Cut rows sorted by length (``order``, shortest first) into forward-pass chunks.

    A chunk holds at most ``batch_size`` rows and, when ``max_tokens`` is set, at most that many
    tokens once padded (rows × its longest row) — so short texts travel in wide chunks and long ones in
    narrow chunks, and little compute is spent on padding. A single row longer than the budget is
    its own chunk.
    """
    batch_size = max(1, batch_size)
    chunks: list[NDArray[np.int64]] = []
    start, n = 0, len(order)
    while start < n:
        end = min(n, start + batch_size)
        if max_tokens is not None:
            fits = start + 1
            while fits < end and (fits - start + 1) * int(lengths[order[fits]]) <= max_tokens:
                fits += 1
            end = fits
        chunks.append(order[start:end])
        start = end
    return chunks


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over real (non-padding) tokens."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def first_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The vector of each row's first real token (``[CLS]``/``<s>``), wherever left padding put it."""
    first = attention_mask.to(torch.int64).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


Pooling = Literal["mean", "first"]
POOLERS = {"mean": mean_pool, "first": first_token_pool}
#: What a tokenizer reports as ``model_max_length`` when it was saved without one (transformers' VERY_LARGE_INTEGER).
UNSET_MODEL_MAX_LENGTH = 1_000_000


@dataclass(frozen=True)
class Family:
    """How one encoder family pools a sentence vector and where its position limit comes from.

    ``position_offset``: positions a family reserves before the first token. RoBERTa and XLM-R number
    positions from ``padding_idx + 1``, so of ``max_position_embeddings`` (514) only 512 hold tokens.
    ``relative``: DeBERTa-v2 without ``position_biased_input`` has no absolute position table; its
    attention uses relative buckets, and the length it was trained for is ``max_position_embeddings``.
    """

    name: str
    pooling: Pooling = "mean"
    position_offset: Literal["none", "padding_idx"] = "none"
    relative: bool = False

    def position_limit(self, config: Any) -> int:
        """Most tokens one text may have, from a model's config."""
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
        limit = int(positions)
        if self.position_offset == "padding_idx":
            limit -= int(getattr(config, "pad_token_id", None) or 1) + 1
        return max(1, limit)


# Mean pooling over real tokens for every family: the first-token vector of RoBERTa/DeBERTa is trained
# only through their head's dense layer and summarises a text's content worse for drift than the mean.
FAMILIES: dict[str, Family] = {
    "bert": Family("bert"),
    "distilbert": Family("distilbert"),
    "roberta": Family("roberta", position_offset="padding_idx"),
    "xlm-roberta": Family("xlm-roberta", position_offset="padding_idx"),
    "camembert": Family("camembert", position_offset="padding_idx"),
    "deberta-v2": Family("deberta-v2", relative=True),
}


def family_of(config: Any) -> Family:
    """The family of a transformers config (by ``model_type``); unknown types pool by mean, limit by their table."""
    model_type = str(getattr(config, "model_type", "") or "")
    return FAMILIES.get(model_type, Family(model_type or "unknown"))


def position_limit(config: Any, tokenizer: Any = None) -> int:
    """Most tokens per text a model takes: its family's limit, lowered by the tokenizer's ``model_max_length``."""
    limit = family_of(config).position_limit(config)
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < UNSET_MODEL_MAX_LENGTH:
        limit = min(limit, declared)
    return limit


def _sum_by(owners: NDArray[np.int64], values: NDArray[np.float32], n: int) -> NDArray[np.float32]:
    """Rows of ``values`` summed per owner: ``n`` rows out."""
    total = np.zeros((n, values.shape[1]), dtype=np.float32)
    np.add.at(total, owners, values)
    return total


class ModelArtifact:
    """A loaded classifier ready to score, or freshly trained and ready to save."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: Sequence[str],
        projection: Projection | None,
        max_length: int,
        device: torch.device | None = None,
        info: dict[str, Any] | None = None,
        bf16: bool | None = None,
        truncation: Truncation | None = None,
    ) -> None:
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        self.model = model
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.projection = projection
        self.family = family_of(model.config)
        limit = position_limit(model.config, tokenizer)
        if max_length > limit:
            log.warning("max_length %d exceeds what this %s model takes; using %d", max_length, self.family.name, limit)
        self.max_length = min(max_length, limit)
        self.device = device or next(model.parameters()).device
        self.info = dict(info or {})
        saved_pooling = self.info.get("pooling")  # a saved version keeps the pooling its profile was built with
        self.pooling: Pooling = saved_pooling if saved_pooling in POOLERS else self.family.pooling
        # Training, scoring, the reference profile and the evaluation all tokenise through this artifact,
        # so the policy a version was validated with is the one it serves with.
        saved_truncation = self.info.get("truncation")
        chosen = truncation or (saved_truncation if saved_truncation in TRUNCATIONS else "head")
        if chosen not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, not {chosen!r}")
        self.truncation: Truncation = chosen
        saved_windows = self.info.get("max_windows")
        self.max_windows = int(saved_windows) if isinstance(saved_windows, int) and saved_windows > 0 else MAX_WINDOWS
        # Padded tokens per forward pass: on CPU, narrow chunks of long texts waste less on padding;
        # a GPU wants wide batches, so there only ``batch_size`` limits a chunk.
        self.max_tokens_per_pass: int | None = CPU_TOKENS_PER_PASS if self.device.type == "cpu" else None
        # bf16 autocast: by default on CUDA devices that support it; on CPU only when asked (it pays off
        # on CPUs with AMX, see cpu_has_native_bf16, and changes scores slightly).
        cuda_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.bf16 = cuda_bf16 if bf16 is None else bool(bf16) and (self.device.type == "cpu" or cuda_bf16)

    # -- loading and saving -------------------------------------------------------------------
    @staticmethod
    def read_settings(path: Path | str) -> ArtifactSettings:
        """Labels, ``max_length`` and widths of the artifact saved in ``path`` (cheap: no weights are loaded)."""
        meta_path = Path(path) / ARTIFACT_FILE
        try:
            return ArtifactSettings.model_validate_json(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{path} is not a model version: {ARTIFACT_FILE} is missing") from exc
        except (OSError, ValidationError) as exc:
            raise ModelLoadError(f"cannot read {meta_path}: {exc}") from exc

    @classmethod
    def load(
        cls, path: Path | str, device: str = "auto", quantize: bool = False, bf16: bool | None = None
    ) -> ModelArtifact:
        """Load an artifact written by :meth:`save` from a version directory.

        ``quantize`` converts the encoder's linear layers to dynamic int8 (CPU only; ignored with a
        warning on CUDA): faster CPU scoring for a small accuracy change that ``bench/scoring.py``
        measures. A quantized artifact scores but cannot be saved. ``bf16`` turns bf16 autocast on or
        off (None: on for CUDA devices that support it, off on CPU); on CPU it pays off only where
        :func:`cpu_has_native_bf16`. Quantisation takes precedence over CPU bf16.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        root = Path(path)
        meta_path = root / ARTIFACT_FILE
        if not meta_path.is_file():
            raise ModelLoadError(f"{root} is not a model version: {ARTIFACT_FILE} is missing")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("task", "text-classification") != "text-classification":
                raise ModelLoadError(
                    f"{root} is a {meta['task']} model: load it with TokenClassifier, not as a text classifier"
                )
            target = pick_device(device)
            tokenizer = AutoTokenizer.from_pretrained(root / MODEL_DIR)
            model = AutoModelForSequenceClassification.from_pretrained(root / MODEL_DIR)
            projection = Projection.load(root / PROJECTION_FILE) if (root / PROJECTION_FILE).is_file() else None
        except ModelLoadError:
            raise
        except Exception as exc:  # transformers raises many types for a broken directory
            raise ModelLoadError(f"cannot load model from {root}: {exc}") from exc
        model.to(target)
        model.eval()
        if quantize:
            if target.type == "cpu":
                quantize_int8(model)
                meta = {**meta, "quantized": QUANTIZED_INT8}
                bf16 = False
            else:
                log.warning("int8 quantisation is a CPU path; %s scores unquantised on %s", root, target)
        if bf16 and target.type == "cpu" and not cpu_has_native_bf16():
            log.warning("bf16 on a CPU without AMX is emulated and slower than float32; scoring %s in bf16", root)
        return cls(
            model=model,
            tokenizer=tokenizer,
            labels=meta["labels"],
            projection=projection,
            max_length=int(meta["max_length"]),
            device=target,
            info=meta,
            bf16=bf16,
        )

    @property
    def quantized(self) -> bool:
        """True when the model's linear layers were converted to dynamic int8."""
        return self.info.get("quantized") == QUANTIZED_INT8

    @property
    def precision(self) -> str:
        """Where and how this artifact computes, e.g. ``cpu/float32``, ``cpu/bfloat16``, ``cuda/bfloat16``.

        Scores from different numerics differ slightly; drift checks compare like with like by it.
        """
        kind = "int8" if self.quantized else "bfloat16" if self.bf16 else "float32"
        return f"{self.device.type}/{kind}"

    def save(self, path: Path | str) -> None:
        """Write model, tokenizer, label set and projection into ``path``."""
        if self.quantized:
            raise ValueError("a quantized artifact cannot be saved; save the fp32 model it was loaded from")
        root = save_model_files(self.model, self.tokenizer, self.labels, path)
        if self.projection is not None:
            self.projection.save(root / PROJECTION_FILE)
        meta = {
            **self.info,
            "format_version": FORMAT_VERSION,
            "task": "text-classification",
            "labels": list(self.labels),
            "max_length": self.max_length,
            "truncation": self.truncation,
            "max_windows": self.max_windows,
            "hidden_size": int(self.model.config.hidden_size),
            "embedding_dim": self.embedding_dim,
            "family": self.family.name,
            "pooling": self.pooling,
        }
        (root / ARTIFACT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @property
    def embedding_dim(self) -> int:
        """Width of the embeddings :meth:`predict` returns."""
        if self.projection is not None:
            return self.projection.output_dim
        return int(self.model.config.hidden_size)

    # -- inference ----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, cut to ``max_length`` by :attr:`truncation` (whole under ``chunks``), unpadded."""
        if self.truncation == "head":
            encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
            return [list(ids) for ids in encoded["input_ids"]]
        # Whole texts, then cut (the tokenizer's own truncation keeps a head or a tail, not both); verbose=False:
        # a text longer than the model takes is expected here, not the mistake the tokenizer warns about.
        encoded = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        if self.truncation == "chunks":
            return [list(ids) for ids in encoded]
        before, after = self._special_tokens_around
        budget = self.max_length - before - after
        return [
            [*ids[:before], *head_tail(ids[before : len(ids) - after], budget), *ids[len(ids) - after :]]
            for ids in encoded
        ]

    def split_windows(self, token_ids: Sequence[Sequence[int]]) -> tuple[list[list[int]], NDArray[np.int64]]:
        """The forward rows for tokenised texts and the text each row belongs to.

        Under ``chunks`` a text longer than ``max_length`` becomes its :func:`windows`, each wrapped in the
        tokenizer's special tokens; otherwise each text is one row as it is.
        """
        if self.truncation != "chunks":
            return [list(ids) for ids in token_ids], np.arange(len(token_ids), dtype=np.int64)
        before, after = self._special_tokens_around
        budget = max(1, self.max_length - before - after)
        rows: list[list[int]] = []
        owners: list[int] = []
        for owner, ids in enumerate(token_ids):
            if len(ids) <= self.max_length:
                rows.append(list(ids))
                owners.append(owner)
                continue
            head, body, tail = ids[:before], ids[before : len(ids) - after], ids[len(ids) - after :]
            for start, end in windows(len(body), budget, self.max_windows):
                rows.append([*head, *body[start:end], *tail])
                owners.append(owner)
        return rows, np.asarray(owners, dtype=np.int64)

    @functools.cached_property
    def _special_tokens_around(self) -> tuple[int, int]:
        """How many special tokens the tokenizer puts before and after a single text ([CLS] … [SEP]: 1, 1)."""
        plain = list(self.tokenizer("a", add_special_tokens=False)["input_ids"])
        marked = list(self.tokenizer("a")["input_ids"])
        starts = (i for i in range(len(marked) - len(plain) + 1) if marked[i : i + len(plain)] == plain)
        before = next(starts, 0)
        return before, max(0, len(marked) - before - len(plain))

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the pooled last hidden state (pooled as :attr:`family` wants) from one forward pass."""
        with attention_kernels(self.device):
            outputs = self.model(**batch, output_hidden_states=True)
        pooled = POOLERS[self.pooling](outputs.hidden_states[-1], batch["attention_mask"])
        return outputs.logits, pooled

    def predict(self, texts: Sequence[str], batch_size: int = 32, max_tokens: int | None = None) -> PredictionBatch:
        """Class probabilities and projected embeddings for ``texts``.

        Texts are sorted by token count and cut into chunks of at most ``batch_size`` texts and
        ``max_tokens`` padded tokens (None: :attr:`max_tokens_per_pass`; 0: no token limit), so each
        chunk is padded only to its own longest text; results come back in input order.
        """
        token_ids = self.tokenize(texts)
        return self.predict_tokenized(token_ids, batch_size, max_tokens)

    def predict_tokenized(
        self, token_ids: Sequence[Sequence[int]], batch_size: int = 32, max_tokens: int | None = None
    ) -> PredictionBatch:
        """Like :meth:`predict`, for texts tokenised already (e.g. off the critical path).

        Under ``chunks`` a text's probabilities and pooled vector are the means over its windows.
        """
        rows, owners = self.split_windows(token_ids)
        probabilities, pooled = self._forward_rows(rows, batch_size, max_tokens)
        n = len(token_ids)
        if len(rows) != n:
            counts = np.bincount(owners, minlength=n).astype(np.float32)[:, None]
            probabilities = _sum_by(owners, probabilities, n) / counts
            pooled = _sum_by(owners, pooled, n) / counts
        embeddings = self.projection.transform(pooled) if self.projection is not None else pooled
        lengths = np.array([len(ids) for ids in token_ids], dtype=np.int64)
        return PredictionBatch(self.labels, probabilities, embeddings, lengths)

    def token_budget(self, max_tokens: int | None) -> int | None:
        """Padded tokens a pass may hold: ``max_tokens``, None for :attr:`max_tokens_per_pass`, 0 for no limit."""
        return self.max_tokens_per_pass if max_tokens is None else max_tokens if max_tokens > 0 else None

    def _forward_rows(
        self, rows: Sequence[Sequence[int]], batch_size: int, max_tokens: int | None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Probabilities and pooled last hidden states of forward rows, in length-sorted chunks."""
        n = len(rows)
        hidden = int(self.model.config.hidden_size)
        probabilities = np.zeros((n, len(self.labels)), dtype=np.float32)
        pooled_all = np.zeros((n, hidden), dtype=np.float32)
        lengths = np.array([len(ids) for ids in rows], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        use_bf16 = self.bf16
        budget = self.token_budget(max_tokens)
        with torch.inference_mode():
            for chunk in length_chunks(lengths, order, batch_size, budget):
                batch = {k: v.to(self.device) for k, v in self._pad([rows[i] for i in chunk]).items()}
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits, pooled = self.forward(batch)
                probabilities[chunk] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                pooled_all[chunk] = pooled.float().cpu().numpy()
        return probabilities, pooled_all

    def _pad(self, sequences: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` padded to the longest sequence (what ``tokenizer.pad`` makes,
        without its per-call Python overhead and warning)."""
        width = max((len(ids) for ids in sequences), default=0)
        pad_id = self.tokenizer.pad_token_id
        input_ids = np.full((len(sequences), width), 0 if pad_id is None else int(pad_id), dtype=np.int64)
        attention = np.zeros((len(sequences), width), dtype=np.int64)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, ids in enumerate(sequences):
            span = slice(width - len(ids), width) if left else slice(0, len(ids))
            input_ids[row, span] = ids
            attention[row, span] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention)}

    def smoke_test(self) -> None:
        """Score two fixed texts and check the outputs are finite probabilities; raise if not."""
        batch = self.predict(["a short smoke test", "another, slightly longer text for the smoke test"])
        sums = batch.probabilities.sum(axis=1)
        if not np.all(np.isfinite(batch.probabilities)) or not np.allclose(sums, 1.0, atol=1e-3):
            raise ModelLoadError("smoke test failed: the model returned invalid probabilities")
        if not np.all(np.isfinite(batch.embeddings)):
            raise ModelLoadError("smoke test failed: the model returned non-finite embeddings")
