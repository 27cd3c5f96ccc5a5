"""Fine-tuning: stratified split, determinism, and that training learns."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from insightloop.retrain import (
    DataFileError,
    Example,
    FineTuneSettings,
    fine_tune,
    read_jsonl,
    stratified_split,
)
from tests.synthetic import sentiment_rows, write_jsonl


def test_stratified_split_keeps_label_shares() -> None:
    examples = [Example(text=f"t{i}", label="a" if i % 4 else "b") for i in range(200)]
    train, validation = stratified_split(examples, 0.1, seed=1)
    assert len(train) + len(validation) == 200
    assert Counter(e.label for e in validation) == {"a": 15, "b": 5}
    assert not {e.text for e in train} & {e.text for e in validation}
    assert stratified_split(examples, 0.1, seed=1) == (train, validation)


def test_same_seed_same_model(tiny_base: Path, tmp_path: Path) -> None:
    examples = read_jsonl(write_jsonl(tmp_path / "d.jsonl", sentiment_rows(64, seed=2)), require_label=True)
    settings = FineTuneSettings(
        epochs=1, batch_size=16, max_length=16, learning_rate=1e-3, projection_dims=4, device="cpu"
    )
    one = fine_tune(examples, tiny_base, settings, progress=False)
    two = fine_tune(examples, tiny_base, settings, progress=False)
    probe = ["great product", "awful item"]
    assert np.allclose(one.artifact.predict(probe).probabilities, two.artifact.predict(probe).probabilities)
    assert one.metrics["validation_accuracy"] == two.metrics["validation_accuracy"]


def test_training_learns_the_task(trained_registry: Path) -> None:
    from insightloop.deploy import Registry

    registry = Registry(trained_registry)
    record = registry.get(registry.production() or "")
    assert record.metrics["validation_accuracy"] >= 0.8, record.metrics
    assert record.training is not None and record.training.label_counts == {"negative": 200, "positive": 200}
    assert record.training.rows == 400 and record.lineage.action == "train"
    assert registry.training_data_file(record.version) == registry.path_of(record.version) / "data" / "train.jsonl"


def test_bad_training_files_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    with pytest.raises(DataFileError, match=r"bad.jsonl:2: 'label' is missing"):
        read_jsonl(path, require_label=True)
    path.write_text('{"text": "fine", "label": "a"}\nnot json\n')
    with pytest.raises(DataFileError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(path)
    path.write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(DataFileError, match="not UTF-8"):
        read_jsonl(path)
    with pytest.raises(ValueError, match="two labels"):
        fine_tune([Example("a", "x"), Example("b", "x")], "unused")
