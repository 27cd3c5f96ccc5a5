"""A token classifier fine-tuned on real CoNLL sentences: it learns entities, and the saved one serves the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from insightloop.deploy import ModelArtifact, ModelLoadError, TokenClassifier
from insightloop.retrain import (
    FineTuneSettings,
    entity_report,
    evaluate_tagger,
    fine_tune_tokens,
    read_conll,
    save_tiny_bert,
    tag_set,
)

from .test_ner_data import CONLL, needs_conll

# A tiny BERT learns the entities of a few hundred sentences in seconds: what it shows is that tags, their
# alignment to word pieces and the loss fit together (a wrong alignment leaves F1 near zero).
SENTENCES = 400
EPOCHS = 8
LEARNING_RATE = 5e-3
MIN_F1 = 0.5


@needs_conll
def test_a_fine_tuned_tagger_finds_entities_and_serves_them_as_saved(tmp_path: Path) -> None:
    train = read_conll(CONLL / "eng.train", limit=SENTENCES)
    base = save_tiny_bert(tmp_path / "tiny")
    settings = FineTuneSettings(
        epochs=EPOCHS,
        learning_rate=LEARNING_RATE,
        max_length=64,
        batch_size=16,
        device="cpu",
        early_stopping_patience=EPOCHS,
    )
    result = fine_tune_tokens(train, base, settings, validation=train, progress=False)
    assert (
        result.classifier.labels
        == tag_set(train)
        == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    )
    assert len(result.epoch_seconds) == result.epochs_run >= 1
    # Before training the head finds almost nothing (the test below); after it, most entities are found exactly.
    report = evaluate_tagger(result.classifier, train, 64)
    assert report.micro.f1 >= MIN_F1, report.table()
    assert report == result.report  # the kept epoch's validation report is what it scores now

    result.classifier.save(tmp_path / "v1")
    loaded = TokenClassifier.load(tmp_path / "v1", device="cpu")
    words = [s.words for s in train[:50]]
    again, first = loaded.predict(words), result.classifier.predict(words)
    assert again.tags == first.tags
    assert np.allclose(again.embeddings, first.embeddings, atol=1e-5)
    summary = again.summary(0)
    assert 0 < summary["min_confidence"] <= summary["mean_confidence"] <= 1
    assert summary["entity_count"] == len(again.entities[0])

    text = " ".join(train[0].words)
    spans = loaded.predict_texts([text])[0]
    assert all(text[s.start : s.end].strip() == text[s.start : s.end] != "" for s in spans)

    with pytest.raises(ModelLoadError, match="token-classification model"):
        ModelArtifact.load(tmp_path / "v1", device="cpu")


@needs_conll
def test_the_untrained_head_finds_almost_nothing(tmp_path: Path) -> None:
    """The bar the test above clears: the same tiny model, its head fresh, on the same sentences."""
    train = read_conll(CONLL / "eng.train", limit=SENTENCES)
    base = save_tiny_bert(tmp_path / "tiny")
    settings = FineTuneSettings(epochs=1, learning_rate=1e-9, max_length=64, batch_size=16, device="cpu")
    result = fine_tune_tokens(train, base, settings, validation=train, progress=False)
    assert (
        entity_report([s.tags for s in train], result.classifier.predict([s.words for s in train]).tags).micro.f1 < 0.05
    )
