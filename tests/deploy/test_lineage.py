"""Typed lineage and training data: version.json files of the first release still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from insightloop.deploy import ModelArtifact, ModelLoadError, Registry, VersionRecord, VersionStatus

# version.json files exactly as the previous release wrote them (`insightloop train`, then a retraining job).
FIRST_RELEASE_TRAIN = {
    "version": "v0001",
    "created_at": "2025-11-20T09:12:44.120391Z",
    "status": "production",
    "parent": None,
    "base_model": "/opt/models/all-MiniLM-L6-v2",
    "labels": ["negative", "positive"],
    "metrics": {"validation_accuracy": 0.9125, "validation_macro_f1": 0.9121},
    "data": {
        "train_file": "/data/kitchen.jsonl",
        "examples": 400,
        "train_size": 360,
        "validation_size": 40,
        "label_counts": {"negative": 200, "positive": 200},
        "settings": {"epochs": 4, "max_length": 32, "learning_rate": 0.002, "device": "auto"},
    },
    "insights": [],
    "evaluation": None,
    "gate": None,
}
FIRST_RELEASE_JOB = {
    "version": "v0002",
    "created_at": "2025-11-21T14:02:10.000000Z",
    "status": "candidate",
    "parent": "v0001",
    "base_model": "/registry/v0001",
    "labels": ["negative", "positive"],
    "metrics": {"recent_accuracy": 0.88},
    "data": {
        "reference_file": "/registry/v0001/data/train.jsonl",
        "production_file": "/registry/jobs/retrain-1/production.jsonl",
        "reference_train": 360,
        "reference_holdout": 40,
        "production_train": 210,
        "production_holdout": 90,
        "plan_id": "3f2a9c1b7d4e",
        "action": "fine_tune",
        "job_id": "retrain-20251121140000-ab12cd",
        "max_length": 64,
    },
    "insights": [{"id": "ins-1", "kind": "text_drift", "severity": "warning", "summary": "kitchen words"}],
    "evaluation": {"champion_version": "v0001", "sections": []},
    "gate": {"passed": True, "reasons": ["recent: meets the required gain"]},
}


def test_a_first_release_training_record_converts_to_typed_fields() -> None:
    record = VersionRecord.model_validate_json(json.dumps(FIRST_RELEASE_TRAIN))
    assert record.lineage.action == "train" and record.lineage.settings["max_length"] == 32
    training = record.training
    assert training is not None and training.file is None, "the first release did not record a stored copy"
    assert training.rows == 400 and training.validation_rows == 40
    assert training.label_counts == {"negative": 200, "positive": 200}
    source = training.source("train")
    assert source is not None and source.path == "/data/kitchen.jsonl"
    assert (source.rows, source.train_rows, source.holdout_rows) == (400, 360, 40)
    assert "data" not in record.model_dump(), "a converted record is written back in the typed form"
    assert VersionRecord.model_validate_json(record.model_dump_json()) == record


def test_a_first_release_job_record_converts_to_typed_fields() -> None:
    record = VersionRecord.model_validate_json(json.dumps(FIRST_RELEASE_JOB))
    assert (record.lineage.action, record.lineage.plan_id, record.lineage.job_id) == (
        "fine_tune",
        "3f2a9c1b7d4e",
        "retrain-20251121140000-ab12cd",
    )
    assert record.training is not None
    reference, production = record.training.source("reference"), record.training.source("production")
    assert reference is not None and reference.path == "/registry/v0001/data/train.jsonl" and reference.rows == 400
    assert production is not None and (production.train_rows, production.holdout_rows) == (210, 90)
    assert not hasattr(record, "data"), "the untyped dict is gone; lineage and training replace it"


def _old_registry(root: Path, train_file: Path | None) -> Registry:
    version = root / "v0001"
    version.mkdir(parents=True)
    raw = json.loads(json.dumps(FIRST_RELEASE_TRAIN))
    if train_file is not None:
        raw["data"]["train_file"] = str(train_file)
    (version / "version.json").write_text(json.dumps(raw, indent=2))
    (version / "status").write_text("production\n")
    (root / "PRODUCTION").write_text("v0001\n")
    return Registry(root)


def test_an_old_registry_lists_and_finds_its_training_data(tmp_path: Path) -> None:
    outside = tmp_path / "kitchen.jsonl"
    outside.write_text('{"text": "a", "label": "negative"}\n')
    registry = _old_registry(tmp_path / "reg", outside)
    assert registry.production() == "v0001" and registry.get("v0001").status == VersionStatus.PRODUCTION
    assert registry.training_data_file("v0001") == outside, "no stored copy: the recorded source file"
    stored = registry.path_of("v0001") / "data" / "train.jsonl"
    stored.parent.mkdir()
    stored.write_text('{"text": "a", "label": "negative"}\n')
    assert registry.training_data_file("v0001") == stored, "the stored copy comes first"


def test_no_training_data_anywhere_is_none(tmp_path: Path) -> None:
    registry = _old_registry(tmp_path / "reg", tmp_path / "gone.jsonl")
    assert registry.training_data_file("v0001") is None


def test_artifact_settings_are_read_without_weights(tmp_path: Path) -> None:
    (tmp_path / "artifact.json").write_text(
        json.dumps({"format_version": 1, "labels": ["a", "b"], "max_length": 48, "prior_correction": {"a": 0.1}})
    )
    settings = ModelArtifact.read_settings(tmp_path)
    assert settings.max_length == 48 and settings.labels == ["a", "b"] and settings.prior_correction == {"a": 0.1}
    (tmp_path / "artifact.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ModelLoadError, match="max_length"):
        ModelArtifact.read_settings(tmp_path)
    with pytest.raises(ModelLoadError, match=r"artifact\.json is missing"):
        ModelArtifact.read_settings(tmp_path / "nowhere")
