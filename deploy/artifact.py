"""The model artifact: a sequence classifier, its tokenizer, label set and embedding projection.

One forward pass gives both the class probabilities and a pooled embedding (mean of the last
hidden layer over real tokens), so scoring and drift monitoring never pay for the model twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from insightloop.deploy.projection import Projection

ARTIFACT_FILE = "artifact.json"
MODEL_DIR = "model"
PROJECTION_FILE = "projection.npz"
FORMAT_VERSION = 1


class ModelLoadError(Exception):
    """A model directory is missing, incomplete or unreadable."""


@dataclass(frozen=True)
class PredictionBatch:
    """Outputs of one scoring call, rows in the order of the input texts."""

    labels: tuple[str, ...]
    probabilities: NDArray[np.float32]  # (n, n_labels)
    embeddings: NDArray[np.float32]  # (n, projection dims)
    token_counts: NDArray[np.int64]  # tokens per text after truncation

    def predicted_labels(self) -> list[str]:
        """The most probable label of each row."""
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]


def pick_device(requested: str = "auto") -> torch.device:
    """Resolve 'auto' to CUDA when present, otherwise CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def set_cpu_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads, or as many CPUs as this process may run on; return the count."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, threads))
    return threads


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over real (non-padding) tokens."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


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
    ) -> None:
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        self.model = model
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.projection = projection
        self.max_length = max_length
        self.device = device or next(model.parameters()).device
        self.info = dict(info or {})

    # -- loading and saving -------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str, device: str = "auto") -> ModelArtifact:
        """Load an artifact written by :meth:`save` from a version directory."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        root = Path(path)
        meta_path = root / ARTIFACT_FILE
        if not meta_path.is_file():
            raise ModelLoadError(f"{root} is not a model version: {ARTIFACT_FILE} is missing")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
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
        return cls(
            model=model,
            tokenizer=tokenizer,
            labels=meta["labels"],
            projection=projection,
            max_length=int(meta["max_length"]),
            device=target,
            info=meta,
        )

    def save(self, path: Path | str) -> None:
        """Write model, tokenizer, label set and projection into ``path``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.model.config.id2label = dict(enumerate(self.labels))
        self.model.config.label2id = {label: i for i, label in enumerate(self.labels)}
        self.model.save_pretrained(root / MODEL_DIR)
        self.tokenizer.save_pretrained(root / MODEL_DIR)
        if self.projection is not None:
            self.projection.save(root / PROJECTION_FILE)
        meta = {
            **self.info,
            "format_version": FORMAT_VERSION,
            "labels": list(self.labels),
            "max_length": self.max_length,
            "hidden_size": int(self.model.config.hidden_size),
            "embedding_dim": self.embedding_dim,
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
        """Token ids of each text, truncated to ``max_length``, without padding."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [list(ids) for ids in encoded["input_ids"]]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and mean-pooled last hidden state from one forward pass."""
        outputs = self.model(**batch, output_hidden_states=True)
        pooled = mean_pool(outputs.hidden_states[-1], batch["attention_mask"])
        return outputs.logits, pooled

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> PredictionBatch:
        """Class probabilities and projected embeddings for ``texts``.

        Texts are sorted by token count and cut into chunks of ``batch_size`` so each chunk is
        padded only to its own longest text; results come back in input order.
        """
        token_ids = self.tokenize(texts)
        return self.predict_tokenized(token_ids, batch_size)

    def predict_tokenized(self, token_ids: Sequence[Sequence[int]], batch_size: int = 32) -> PredictionBatch:
        """Like :meth:`predict`, for texts tokenised already (e.g. off the critical path)."""
        n = len(token_ids)
        hidden = int(self.model.config.hidden_size)
        probabilities = np.zeros((n, len(self.labels)), dtype=np.float32)
        pooled_all = np.zeros((n, hidden), dtype=np.float32)
        lengths = np.array([len(ids) for ids in token_ids], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                padded = self.tokenizer.pad({"input_ids": [list(token_ids[i]) for i in rows]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in padded.items()}
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits, pooled = self.forward(batch)
                probabilities[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                pooled_all[rows] = pooled.float().cpu().numpy()
        embeddings = self.projection.transform(pooled_all) if self.projection is not None else pooled_all
        return PredictionBatch(self.labels, probabilities, embeddings, lengths)

    def smoke_test(self) -> None:
        """Score two fixed texts and check the outputs are finite probabilities; raise if not."""
        batch = self.predict(["a short smoke test", "another, slightly longer text for the smoke test"])
        sums = batch.probabilities.sum(axis=1)
        if not np.all(np.isfinite(batch.probabilities)) or not np.allclose(sums, 1.0, atol=1e-3):
            raise ModelLoadError("smoke test failed: the model returned invalid probabilities")
        if not np.all(np.isfinite(batch.embeddings)):
            raise ModelLoadError("smoke test failed: the model returned non-finite embeddings")
