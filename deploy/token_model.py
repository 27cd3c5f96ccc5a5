"""A token classifier (named-entity recogniser): word-level tags, entity spans and confidences from one pass.

Words are the unit a person labels and reads, so predictions are per word: each word takes the tag of its
first sub-token (the convention of the BERT paper's NER experiments); the other sub-tokens are read, not
scored. One forward pass also gives each word's confidence (its tag's probability) and a pooled embedding
of the sentence (the mean of the last hidden states over its real tokens), which the detectors watch.

Words past ``max_length`` sub-tokens are tagged ``O`` with confidence 0 and counted in ``truncated_words``:
nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from insightloop.deploy.artifact import (
    ARTIFACT_FILE,
    FORMAT_VERSION,
    MODEL_DIR,
    TOKEN_TASK,
    ModelLoadError,
    Task,
    pick_device,
    save_model_files,
)
from insightloop.deploy.entities import EntitySpan, char_spans, spans_from_tags, split_words

IGNORED_LABEL = -100  # the label of sub-tokens that are not scored (torch's cross-entropy ignore_index)


def first_subtokens(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Word index → position of its first sub-token, from a fast tokenizer's ``word_ids()``.

    >>> first_subtokens([None, 0, 0, 1, None])
    {0: 1, 1: 3}
    """
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first


def aligned_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """One training label per sub-token: the word's label on its first sub-token, :data:`IGNORED_LABEL` elsewhere.

    >>> aligned_labels([None, 0, 0, 1, None], [3, 0])
    [-100, 3, -100, 0, -100]
    """
    first = first_subtokens(word_ids)
    labels = [IGNORED_LABEL] * len(word_ids)
    for word, position in first.items():
        labels[position] = word_labels[word]
    return labels


@dataclass(frozen=True)
class TokenPredictions:
    """Outputs of one scoring call, sentences in input order."""

    tags: list[list[str]]  # IOB2, one per word
    confidences: list[NDArray[np.float32]]  # each word's tag probability (0 for truncated words)
    embeddings: NDArray[np.float32]  # (n, hidden) pooled last hidden state
    truncated_words: list[int] = field(default_factory=list)  # words per sentence past max_length

    @property
    def entities(self) -> list[list[EntitySpan]]:
        """Word spans of each sentence's predicted entities."""
        return [spans_from_tags(tags) for tags in self.tags]

    def summary(self, index: int) -> dict[str, float]:
        """Mean and minimum word confidence and the entity count of one sentence."""
        confidences = self.confidences[index]
        return {
            "mean_confidence": float(confidences.mean()) if confidences.size else 0.0,
            "min_confidence": float(confidences.min()) if confidences.size else 0.0,
            "entity_count": float(len(spans_from_tags(self.tags[index]))),
        }


@dataclass(frozen=True)
class FoundEntity:
    """One predicted entity of a raw text: its character span, its string and its confidence (the lowest
    confidence of its words: an entity is only as sure as its weakest word)."""

    span: EntitySpan
    text: str
    confidence: float


@dataclass(frozen=True)
class ScoredText:
    """What one forward pass says about one raw text."""

    entities: list[FoundEntity]
    words: int
    mean_confidence: float
    min_confidence: float
    truncated_words: int
    embedding: NDArray[np.float32]


class TokenClassifier:
    """A fine-tuned token-classification model with its tokenizer and tag set (``labels``, IOB2)."""

    task: Task = TOKEN_TASK

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: Sequence[str],
        max_length: int = 256,
        device: torch.device | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError("a token classifier needs a fast tokenizer (it maps sub-tokens to words)")
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = max_length
        self.device = device or torch.device("cpu")
        self.info = dict(info or {})

    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[dict[str, torch.Tensor], list[list[int | None]]]:
        """Padded sub-token ids of pre-split sentences and each row's sub-token → word map."""
        encoded = self.tokenizer(
            [list(words) for words in sentences],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        word_ids = [encoded.word_ids(row) for row in range(len(sentences))]
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        return batch, word_ids

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sub-token logits and the mean-pooled last hidden state from one forward pass."""
        outputs = self.model(**batch, output_hidden_states=True)
        mask = batch["attention_mask"].unsqueeze(-1).to(outputs.hidden_states[-1].dtype)
        pooled = (outputs.hidden_states[-1] * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return outputs.logits, pooled

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> TokenPredictions:
        """Tags, confidences and embeddings of pre-split sentences (sorted by length into batches)."""
        n = len(sentences)
        tags: list[list[str]] = [[] for _ in range(n)]
        confidences: list[NDArray[np.float32]] = [np.zeros(0, dtype=np.float32) for _ in range(n)]
        truncated = [0] * n
        hidden = int(self.model.config.hidden_size)
        embeddings = np.zeros((n, hidden), dtype=np.float32)
        order = sorted(range(n), key=lambda i: len(sentences[i]))
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                batch, word_ids = self.encode([sentences[i] for i in rows])
                logits, pooled = self.forward({k: v.to(self.device) for k, v in batch.items()})
                probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                embeddings[rows] = pooled.float().cpu().numpy()
                for slot, row in enumerate(rows):
                    first = first_subtokens(word_ids[slot])
                    words = len(sentences[row])
                    row_tags = ["O"] * words
                    row_confidence = np.zeros(words, dtype=np.float32)
                    for word, position in first.items():
                        best = int(probabilities[slot, position].argmax())
                        row_tags[word] = self.labels[best]
                        row_confidence[word] = probabilities[slot, position, best]
                    tags[row], confidences[row], truncated[row] = row_tags, row_confidence, words - len(first)
        return TokenPredictions(tags, confidences, embeddings, truncated)

    def predict_texts(self, texts: Sequence[str], batch_size: int = 32) -> list[list[EntitySpan]]:
        """Entities of raw texts as character spans (words by :func:`split_words`)."""
        return [[found.span for found in text.entities] for text in self.score_texts(texts, batch_size)]

    def score_texts(self, texts: Sequence[str], batch_size: int = 32) -> list[ScoredText]:
        """Entities (character spans with their strings and confidences), confidences and embeddings of raw
        texts, from one forward pass per batch."""
        split = [split_words(text) for text in texts]
        predictions = self.predict([words for words, _ in split], batch_size)
        scored: list[ScoredText] = []
        for row, (text, (words, offsets)) in enumerate(zip(texts, split, strict=True)):
            confidences = predictions.confidences[row]
            word_spans = predictions.entities[row]
            found = [
                FoundEntity(
                    span=character,
                    text=text[character.start : character.end],
                    confidence=float(confidences[span.start : span.end].min()),
                )
                for span, character in zip(word_spans, char_spans(word_spans, offsets), strict=True)
            ]
            summary = predictions.summary(row)
            scored.append(
                ScoredText(
                    entities=found,
                    words=len(words),
                    mean_confidence=summary["mean_confidence"],
                    min_confidence=summary["min_confidence"],
                    truncated_words=predictions.truncated_words[row],
                    embedding=predictions.embeddings[row],
                )
            )
        return scored

    def smoke_test(self) -> None:
        """Score two fixed texts and check the outputs are finite; ModelLoadError if not."""
        scored = self.score_texts(["A short smoke test in Paris .", "Another text , for the smoke test ."])
        for text in scored:
            if not (np.all(np.isfinite(text.embedding)) and 0.0 <= text.min_confidence <= text.mean_confidence <= 1.0):
                raise ModelLoadError(
                    "smoke test failed: the token classifier returned invalid confidences or embeddings"
                )

    def save(self, path: Path | str) -> None:
        """Model, tokenizer and ``artifact.json`` (with ``task``) into ``path``."""
        root = save_model_files(self.model, self.tokenizer, self.labels, path)
        meta = {
            **self.info,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "labels": self.labels,
            "max_length": self.max_length,
            "hidden_size": int(self.model.config.hidden_size),
        }
        (root / ARTIFACT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path | str, device: str = "auto") -> TokenClassifier:
        """A classifier written by :meth:`save`; ModelLoadError for anything else."""
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        root = Path(path)
        try:
            meta = json.loads((root / ARTIFACT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{root} is not a model version: cannot read {ARTIFACT_FILE} ({exc})") from exc
        if meta.get("task") != TOKEN_TASK:
            raise ModelLoadError(f"{root} is a {meta.get('task', 'text-classification')} model, not {TOKEN_TASK}")
        target = pick_device(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(root / MODEL_DIR)
            model = AutoModelForTokenClassification.from_pretrained(root / MODEL_DIR).to(target)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the token classifier in {root}: {exc}") from exc
        info = {k: v for k, v in meta.items() if k not in ("format_version", "task", "labels", "max_length")}
        return cls(model, tokenizer, meta["labels"], int(meta["max_length"]), target, info)
