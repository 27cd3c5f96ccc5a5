"""The one version writer: every piece in its place, counted and checksummed, committed atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from insightloop.deploy import (
    Lineage,
    ModelArtifact,
    Registry,
    SourceFile,
    VersionDraft,
    VersionRecord,
    VersionStatus,
    VersionWriteError,
    utc_now,
)


@pytest.fixture
def registry(trained_registry: Path, tmp_path: Path) -> Registry:
    shutil.copytree(trained_registry, tmp_path / "registry")
    return Registry(tmp_path / "registry")


def draft_from(registry: Registry, source: Path, labels: list[str] | None = None) -> VersionDraft:
    champion = registry.production() or ""
    artifact = ModelArtifact.load(registry.path_of(champion), device="cpu")
    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=champion,
        base_model=str(registry.path_of(champion)),
        labels=labels or list(artifact.labels),
        lineage=Lineage(action="fine_tune", plan_id="plan-1", job_id="job-1"),
    )

    def save_profile(folder: Path) -> None:
        shutil.copytree(registry.path_of(champion) / "reference", folder)

    def save_evaluation(folder: Path) -> None:
        (folder / "recent.txt").write_text("precision recall\n")

    return VersionDraft(
        record=record,
        save_artifact=artifact.save,
        save_profile=save_profile,
        save_training_data=lambda path: shutil.copyfile(source, path),
        plan_json='{"id": "plan-1"}',
        save_evaluation=save_evaluation,
        sources=[SourceFile(role="reference", path=str(source), rows=3, train_rows=2, holdout_rows=1)],
        validation_rows=1,
    )


def test_a_version_holds_every_piece_and_a_checksummed_training_record(registry: Registry, tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    source.write_text(
        '{"text": "good", "label": "positive"}\n{"text": "bad", "label": "negative"}\n\n'
        '{"text": "fine", "label": "positive"}\n'
    )
    created = registry.write_version(draft_from(registry, source), by="trainer", reason="test")
    path = registry.path_of(created.version)
    for piece in ("artifact.json", "model", "projection.npz", "reference", "plan.json", "evaluation/recent.txt"):
        assert (path / piece).exists(), piece
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    stored = registry.get(created.version)
    assert stored.training is not None and stored.training.file == "data/train.jsonl"
    assert stored.training.sha256 == digest and stored.training.rows == 3
    assert stored.training.label_counts == {"negative": 1, "positive": 2}
    assert stored.training.sources[0].sha256 == digest, "the source file is checksummed as it was"
    assert stored.lineage.job_id == "job-1" and stored.parent == registry.production()
    assert registry.training_data_file(created.version) == path / "data" / "train.jsonl"
    assert registry.artifact_settings(created.version).max_length == 32
    assert json.loads((path / "plan.json").read_text()) == {"id": "plan-1"}
    assert registry.audit_log()[-1].action == "register"


def test_a_draft_that_contradicts_its_artifact_leaves_nothing(registry: Registry, tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    source.write_text('{"text": "good", "label": "positive"}\n')
    before = registry.names()
    with pytest.raises(VersionWriteError, match="labels"):
        registry.write_version(draft_from(registry, source, labels=["x", "y"]), by="trainer")
    assert registry.names() == before
    assert not list(registry.root.glob(".incoming-*"))


def test_interrupted_writes_are_never_versions_and_stale_ones_are_cleaned(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    dead = tmp_path / ".incoming-dead"
    (dead / "model").mkdir(parents=True)
    (dead / "version.json").write_text('{"version": "v0001"}')
    (dead / "model" / "weights.bin").write_bytes(b"\0" * 10)
    live = tmp_path / ".incoming-live"
    live.mkdir()
    (live / "part").write_text("being written")
    hour_ago = time.time() - 3600
    for item in (dead / "model" / "weights.bin", dead / "model", dead / "version.json", dead):
        os.utime(item, (hour_ago, hour_ago))
    assert registry.names() == []
    assert registry.clean_incoming(older_than_s=600) == [".incoming-dead"]
    assert not dead.exists() and live.is_dir(), "a write in progress elsewhere is spared"
    assert registry.remove_incomplete() == [".incoming-live"]


def test_a_recently_touched_file_keeps_an_old_staging_folder(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    folder = tmp_path / ".incoming-busy"
    (folder / "data").mkdir(parents=True)
    hour_ago = time.time() - 3600
    os.utime(folder, (hour_ago, hour_ago))
    (folder / "data" / "train.jsonl").write_text("{}\n")  # a writer still adds files deep inside
    os.utime(folder / "data", (hour_ago, hour_ago))
    assert registry.clean_incoming(older_than_s=600) == []
