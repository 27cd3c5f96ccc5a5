"""Encoder families beyond BERT: score, pooled embedding, profile and a fine-tuning step for each.

Every model is a tiny one built from its config, with a tokenizer trained offline by the ``tokenizers``
library on real review text: WordPiece for BERT and DistilBERT, byte-level BPE for RoBERTa, Unigram
(SentencePiece's model) for XLM-R and DeBERTa-v2. Position tables are small (64 usable positions), so
reading the limit wrongly (RoBERTa's padding_idx offset, DeBERTa-v2's relative positions) breaks a test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from insightloop.deploy import ModelArtifact, family_of, position_limit
from insightloop.retrain import Example, FineTuneSettings, build_profile, fine_tune
from tests.amazon import AMAZON, amazon, needs_amazon

pytestmark = needs_amazon
POSITIONS = 64  # usable positions of every tiny model here


@dataclass(frozen=True)
class Spec:
    model_type: str
    tokenizer: str  # wordpiece | bpe | unigram
    specials: tuple[str, ...]  # in id order: pad first for BERT-like, <s> <pad> for RoBERTa-like
    bos: str
    eos: str
    pad: str
    unk: str


BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
SPECS = {
    "bert": Spec("bert", "wordpiece", BERT_SPECIALS, "[CLS]", "[SEP]", "[PAD]", "[UNK]"),
    "distilbert": Spec("distilbert", "wordpiece", BERT_SPECIALS, "[CLS]", "[SEP]", "[PAD]", "[UNK]"),
    "roberta": Spec("roberta", "bpe", ROBERTA_SPECIALS, "<s>", "</s>", "<pad>", "<unk>"),
    "xlm-roberta": Spec("xlm-roberta", "unigram", ROBERTA_SPECIALS, "<s>", "</s>", "<pad>", "<unk>"),
    "deberta-v2": Spec("deberta-v2", "unigram", BERT_SPECIALS, "[CLS]", "[SEP]", "[PAD]", "[UNK]"),
}


def corpus(n: int = 1500) -> list[str]:
    lines = (AMAZON / "train.jsonl").read_text(encoding="utf-8").splitlines()[::4][:n]
    return [json.loads(line)["text"] for line in lines]


def train_tokenizer(spec: Spec, texts: list[str]) -> Any:
    """A fast tokenizer trained on ``texts`` with the family's kind of vocabulary, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(spec.specials)
    if spec.tokenizer == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=spec.unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer: Any = trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials)
        tok.decoder = decoders.WordPiece()
    elif spec.tokenizer == "bpe":
        tok = Tokenizer(models.BPE(unk_token=spec.unk))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        trainer = trainers.BpeTrainer(
            vocab_size=800, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.decoder = decoders.ByteLevel()
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=800, special_tokens=specials, unk_token=spec.unk)
        tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id(spec.bos), tok.token_to_id(spec.eos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{spec.bos} $A {spec.eos}",
        pair=f"{spec.bos} $A {spec.eos} {spec.eos} $B {spec.eos}",
        special_tokens=[(spec.bos, bos), (spec.eos, eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec.bos,
        eos_token=spec.eos,
        cls_token=spec.bos,
        sep_token=spec.eos,
        pad_token=spec.pad,
        unk_token=spec.unk,
        mask_token=specials[-1],
    )


def tiny_config(spec: Spec, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    common: dict[str, Any] = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    if spec.model_type == "distilbert":
        return AutoConfig.for_model(
            "distilbert", dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=POSITIONS, **common
        )
    sizes: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    sizes["intermediate_size"] = 64
    if spec.model_type in ("roberta", "xlm-roberta"):
        # Positions count from padding_idx + 1: a table of 66 holds 64 tokens.
        return AutoConfig.for_model(
            spec.model_type, max_position_embeddings=POSITIONS + tokenizer.pad_token_id + 1, **sizes, **common
        )
    if spec.model_type == "deberta-v2":
        return AutoConfig.for_model(
            "deberta-v2",
            max_position_embeddings=POSITIONS,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            type_vocab_size=0,
            **sizes,
            **common,
        )
    return AutoConfig.for_model("bert", max_position_embeddings=POSITIONS, **sizes, **common)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    rows = amazon("train", "kitchen", 40, seed=1) + amazon("train", "books", 40, seed=1)
    return [Example(text=r["text"], label=r["label"], id=r["id"], meta=r["meta"]) for r in rows]


def build_base(name: str, texts: list[str], folder: Path) -> Path:
    """A tiny plain encoder of family ``name`` with its offline tokenizer, saved like a hub model."""
    from transformers import AutoModel

    spec = SPECS[name]
    tokenizer = train_tokenizer(spec, texts)
    AutoModel.from_config(tiny_config(spec, tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", sorted(SPECS))
def test_family_scores_embeds_profiles_and_fine_tunes(
    name: str, texts: list[str], examples: list[Example], tmp_path: Path
) -> None:
    base = build_base(name, texts, tmp_path / "base")
    settings = FineTuneSettings(epochs=1, max_length=512, batch_size=16, learning_rate=1e-3, projection_dims=4)
    result = fine_tune(examples, base, settings, progress=False)  # one epoch: a few optimiser steps
    artifact = result.artifact
    assert artifact.family == family_of(artifact.model.config) and artifact.family.name == name
    assert position_limit(artifact.model.config, artifact.tokenizer) == POSITIONS
    assert artifact.max_length == POSITIONS, "max_length is clamped to the positions the model takes"
    assert artifact.labels == ("negative", "positive")

    long_text = " ".join(texts[:3])  # far more than 64 tokens: truncated, never an index error
    batch_texts = ["fine", long_text, "the kettle broke after a week", "great book"]
    batch = artifact.predict(batch_texts, batch_size=4)
    assert batch.probabilities.shape == (4, 2) and np.allclose(batch.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert batch.embeddings.shape == (4, 4) and np.all(np.isfinite(batch.embeddings))
    assert int(batch.token_counts.max()) == POSITIONS
    for i, text in enumerate(batch_texts):  # padding never changes a row's scores or pooled embedding
        alone = artifact.predict([text], batch_size=1)
        assert np.allclose(alone.probabilities[0], batch.probabilities[i], atol=1e-4)
        assert np.allclose(alone.embeddings[0], batch.embeddings[i], atol=1e-3)

    saved = tmp_path / "version"
    artifact.save(saved)
    meta = json.loads((saved / "artifact.json").read_text())
    assert (meta["family"], meta["pooling"], meta["max_length"]) == (name, "mean", POSITIONS)
    loaded = ModelArtifact.load(saved, device="cpu")
    assert np.allclose(loaded.predict(batch_texts).probabilities, batch.probabilities, atol=1e-5)

    profile = build_profile(loaded, examples[:40], [e.text for e in examples[40:]], n_rounds=5)
    assert list(profile.class_names) == ["negative", "positive"] and len(profile.window) == 40
    assert profile.window.embeddings.shape == (40, 4)
