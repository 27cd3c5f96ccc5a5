"""Fine-tuning a token classifier on entity-tagged sentences, the best epoch kept by entity-level micro F1.

Sub-word alignment: each word's tag trains its first sub-token; the other sub-tokens are ignored by the
loss (:func:`insightloop.deploy.aligned_labels`), and prediction reads the same sub-token, so what is trained
is what is scored.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from insightloop.deploy import IGNORED_LABEL, TokenClassifier, aligned_labels, pick_device
from insightloop.retrain.entity_eval import EntityReport, entity_report
from insightloop.retrain.errors import RetrainPermanentError
from insightloop.retrain.finetune import (
    FineTuneSettings,
    LabelSetError,
    base_label_set,
    resolve_base,
    seed_everything,
)
from insightloop.retrain.ner_data import TaggedSentence

log = logging.getLogger(__name__)


@dataclass
class TokenFineTuneResult:
    """The classifier of the best epoch, its validation report, and how long each epoch took."""

    classifier: TokenClassifier
    report: EntityReport
    epoch_seconds: list[float] = field(default_factory=list)
    epochs_run: int = 0
    train_sentences: int = 0


def tag_set(sentences: Sequence[TaggedSentence]) -> list[str]:
    """The IOB2 tags of the training data: ``O`` first, then ``B-``/``I-`` of each type, types sorted."""
    types = sorted({span.type for s in sentences for span in s.entities})
    if not types:
        raise RetrainPermanentError("the training sentences hold no entities")
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I"))]


def training_tags(sentences: Sequence[TaggedSentence], base_path: str) -> list[str]:
    """The tag set a fine-tune trains: a base token classifier's own, in its head's order (so a retrained
    champion, ours or imported, keeps every head row's meaning), else :func:`tag_set` of the data.

    A tag the base lacks is refused rather than given a new, untrained head row.
    """
    found = tag_set(sentences)
    own = base_label_set(base_path, head="ForTokenClassification")
    if own is None:
        return found
    needed = sorted({tag for s in sentences for tag in s.tags} - set(own))
    if needed:
        raise LabelSetError(
            f"training data has tags {needed} that the base model's tag set {own} lacks; "
            "a fine-tune keeps the base's tags (train a new head from a plain encoder instead)"
        )
    return own


def split_sentences(
    sentences: Sequence[TaggedSentence], share: float, seed: int
) -> tuple[list[TaggedSentence], list[TaggedSentence]]:
    """A seeded split into training and validation (about ``share`` of the sentences, at least one).

    Sentences that name their document (CoNLL's) are held out by whole documents: a sentence shares names
    with its neighbours, so validation on held-out sentences of seen documents overrates the model on the
    new documents production sends (and a reference built from it would read new documents as drift).
    """
    groups: dict[str, list[int]] = {}
    for index, sentence in enumerate(sentences):
        groups.setdefault(sentence.document or f"sentence-{index}", []).append(index)
    names = list(groups)
    random.Random(seed).shuffle(names)
    wanted = max(1, round(len(sentences) * share))
    held: set[int] = set()
    for name in names:
        if len(held) >= wanted or (held and len(groups) > 1 and len(held) + len(groups[name]) > 1.5 * wanted):
            continue
        held.update(groups[name])
    if len(held) == len(sentences):  # one document: fall back to a split by sentence
        order = list(range(len(sentences)))
        random.Random(seed).shuffle(order)
        held = set(order[:wanted])
    return [s for i, s in enumerate(sentences) if i not in held], [s for i, s in enumerate(sentences) if i in held]


def evaluate_tagger(classifier: TokenClassifier, sentences: Sequence[TaggedSentence], batch_size: int) -> EntityReport:
    """Entity-level scores of the classifier's predictions on labeled sentences."""
    predicted = classifier.predict([s.words for s in sentences], batch_size).tags
    return entity_report([s.tags for s in sentences], predicted)


def fine_tune_tokens(
    sentences: Sequence[TaggedSentence],
    base: str | Path,
    settings: FineTuneSettings | None = None,
    validation: Sequence[TaggedSentence] | None = None,
    progress: bool = True,
) -> TokenFineTuneResult:
    """Fine-tune ``base`` on labeled sentences; ``validation`` (default: a ``validation_share`` split) picks the
    best epoch by entity-level micro F1 and stops early after ``early_stopping_patience`` epochs without gain."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup

    settings = settings or FineTuneSettings(max_length=256)
    labeled = [s for s in sentences if s.tags]
    if not labeled:
        raise RetrainPermanentError("no labeled sentences to train on")
    seed_everything(settings.seed)
    if validation is None:
        train, held = split_sentences(labeled, settings.validation_share, settings.seed)
    else:
        train, held = labeled, [s for s in validation if s.tags]
    device = pick_device(settings.device)
    base_path = resolve_base(base)
    labels = training_tags(train, base_path)
    unknown = sorted({t for s in held for t in s.tags} - set(labels))
    if unknown:
        log.warning("validation tags the training data lacks (scored as misses): %s", unknown)
    index = {tag: i for i, tag in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForTokenClassification.from_pretrained(
        base_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=index,
        ignore_mismatched_sizes=True,
    ).to(device)
    classifier = TokenClassifier(model, tokenizer, labels, settings.max_length, device, {"base_model": str(base)})

    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(total_steps * settings.warmup_share), total_steps
    )
    generator = torch.Generator().manual_seed(settings.seed)
    best: tuple[float, dict[str, torch.Tensor], EntityReport] | None = None
    epoch_seconds: list[float] = []
    stale = 0
    epochs_run = 0
    for epoch in range(settings.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{settings.epochs}", unit="sentence", disable=not progress)
        for start in range(0, len(order), settings.batch_size):
            rows = [train[i] for i in order[start : start + settings.batch_size]]
            batch, word_ids = classifier.encode([s.words for s in rows])
            targets = [
                aligned_labels(ids, [index.get(tag, IGNORED_LABEL) for tag in s.tags])
                for ids, s in zip(word_ids, rows, strict=True)
            ]
            target = torch.tensor(targets, device=device)
            logits, _ = classifier.forward({k: v.to(device) for k, v in batch.items()})
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, len(labels)), target.reshape(-1), ignore_index=IGNORED_LABEL
            )
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bar.update(len(rows))
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        epoch_seconds.append(time.perf_counter() - started)
        epochs_run += 1
        report = evaluate_tagger(classifier, held, settings.batch_size * 2)
        log.info(
            "epoch %d/%d: %.1f s (%.1f sentences/s), validation entity micro F1 %.4f on %d sentences",
            epoch + 1,
            settings.epochs,
            epoch_seconds[-1],
            len(train) / max(epoch_seconds[-1], 1e-9),
            report.micro.f1,
            len(held),
        )
        if best is None or report.micro.f1 > best[0]:
            best = (report.micro.f1, {k: v.detach().clone() for k, v in model.state_dict().items()}, report)
            stale = 0
        else:
            stale += 1
            if stale >= settings.early_stopping_patience:
                log.info("early stop: no validation gain for %d epoch(s)", stale)
                break
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    classifier.info.update({"device": device.type, "seed": settings.seed, "epochs_run": epochs_run})
    return TokenFineTuneResult(classifier, best[2], epoch_seconds, epochs_run, len(train))
