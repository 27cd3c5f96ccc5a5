"""The monitor compares like with like: traffic scored in CPU bf16 is checked against reference rows scored in
bf16, not against the float32 scores the profile was built with (which read as prediction drift)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from insightloop.daemon.config import Config, ScorerConfig, load_config
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.monitor import Monitor, window_from_records
from insightloop.daemon.scorer_numerics import load_serving_artifact
from insightloop.daemon.state import PredictionRow, StateStore, TextRow
from insightloop.deploy import ModelArtifact, Registry
from insightloop.detectors import check_all
from insightloop.retrain import load_profile
from tests.synthetic import sentiment_rows, write_jsonl


@pytest.fixture(scope="module")
def registry_2k(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A tiny BERT trained on 2,000 synthetic texts: a 200-row float32 reference profile."""
    from insightloop.daemon.train import train_first_model
    from insightloop.retrain import FineTuneSettings

    folder = tmp_path_factory.mktemp("precision")
    data = write_jsonl(folder / "train.jsonl", sentiment_rows(2000, seed=1))
    settings = FineTuneSettings(epochs=4, learning_rate=2e-3, batch_size=16, max_length=32, projection_dims=8)
    train_first_model(data, folder / "registry", str(tiny_base), settings, promote=True, progress=False)
    return folder / "registry"


def config_for(registry: Path, state: Path, window_size: int | None = None) -> Config:
    monitor: dict[str, Any] = {"min_window": 200}
    if window_size is not None:
        monitor["window_size"] = window_size
    return load_config(
        None, {"registry": {"path": str(registry)}, "state": {"dir": str(state)}, "monitor": monitor}, environ={}
    )


def store_scored(store: StateStore, artifact: ModelArtifact, version: str, rows: list[dict[str, str]]) -> None:
    """Texts and their predictions as the monitor stores them from the topics, with the scorer's precision."""
    now = time.time()
    batch = artifact.predict([r["text"] for r in rows])
    labels = batch.predicted_labels()
    store.add_texts([TextRow(r["id"], r["text"], None, {}) for r in rows], now)
    predictions = []
    for i, row in enumerate(rows):
        scores = {name: float(p) for name, p in zip(batch.labels, batch.probabilities[i], strict=True)}
        embedding = batch.embeddings[i].tolist()
        n_tokens = int(batch.token_counts[i])
        predictions.append(
            PredictionRow(row["id"], version, labels[i], scores, embedding, n_tokens, artifact.precision)
        )
    store.add_predictions(predictions, now)


def predictions_result(result: Any) -> Any:
    return next(r for r in result.results if r.detector == "predictions")


@pytest.mark.parametrize("kind", ["bfloat16", "int8"])
def test_traffic_is_checked_against_a_reference_rescored_at_its_numerics(
    registry_2k: Path, tmp_path: Path, kind: str
) -> None:
    """bf16 autocast and the scorer's int8 path (ONNX Runtime): references re-scored with the scorer's construction."""
    registry = Registry(registry_2k)
    version = registry.production()
    assert version is not None
    profile = load_profile(registry.path_of(version))
    assert profile.precision == "cpu/float32", "`train` on a CPU scores its reference in float32"
    settings = ScorerConfig(device="cpu", cpu_bf16=kind == "bfloat16", quantize=kind == "int8")
    bf16 = load_serving_artifact(registry.path_of(version), settings)  # what the scorer serves with
    assert bf16.precision == f"cpu/{kind}"

    store = StateStore(tmp_path / "state")
    store_scored(store, bf16, version, sentiment_rows(1000, seed=7, prefix="live"))  # unchanged traffic
    records = store.recent_records(1000, model_version=version)
    assert {r.precision for r in records} == {f"cpu/{kind}"}

    # What the monitor did before: bf16 scores against float32 reference rows look like a shift.
    before = predictions_result(check_all(profile, window_from_records(records, profile.class_names), version))
    if kind == "bfloat16":
        # (int8 moves these confidences too, but not in a way this detector reads as drift: measured 0.0.)
        assert before.statistic > before.threshold, "the float32 reference must tell bf16 scores apart here"

    metrics = Metrics()
    monitor = Monitor(config_for(registry_2k, tmp_path / "state"), store, metrics)
    assert monitor.check() == [], "no insight on unchanged traffic"
    after = predictions_result(monitor.last_check)
    assert after.statistic < after.threshold / 2
    cached = tmp_path / "state" / "profiles" / f"{version}--cpu-{kind}"
    assert (cached / "profile.json").is_file(), "the re-scored reference is kept for the next start"

    # The re-scored rows are those the serving numerics give: the cache reloads them on the next start.
    rescored = type(profile).load(cached)
    assert rescored.precision == f"cpu/{kind}"
    assert rescored.window.ids == profile.window.ids and rescored.thresholds == profile.thresholds
    expected = bf16.predict(profile.window.texts).probabilities
    np.testing.assert_allclose(rescored.window.probabilities, expected, atol=1e-6)
    # This model's confidences saturate (0.9975): int8 moves them by less than 1e-6, bf16 by more.
    assert not np.allclose(
        rescored.window.probabilities, profile.window.probabilities, atol=1e-6 if kind == "bfloat16" else 0
    )
    written = (cached / "profile.json").stat().st_mtime_ns
    again = Monitor(config_for(registry_2k, tmp_path / "state"), store, Metrics())
    assert again.check() == []
    assert (cached / "profile.json").stat().st_mtime_ns == written, "read back, not re-scored again"
    store.close()


def test_rescored_references_of_versions_out_of_play_are_dropped(registry_2k: Path, tmp_path: Path) -> None:
    from tests.integration.test_promotion import register_copy

    registry_path = tmp_path / "registry"
    shutil.copytree(registry_2k, registry_path)
    registry = Registry(registry_path)
    version = registry.production()
    assert version is not None
    waiting = register_copy(registry, version)
    rejected = register_copy(registry, version)
    registry.reject(rejected, by="test")
    folder = tmp_path / "state" / "profiles"
    for name in (f"{waiting}--cpu-int8", f"{rejected}--cpu-bfloat16", "v404--cpu-bfloat16"):
        (folder / name).mkdir(parents=True)
        (folder / name / "profile.json").write_text("{}")

    store = StateStore(tmp_path / "state")
    bf16 = ModelArtifact.load(registry.path_of(version), device="cpu", bf16=True)
    store_scored(store, bf16, version, sentiment_rows(1000, seed=7, prefix="live"))
    assert Monitor(config_for(registry_path, tmp_path / "state"), store, Metrics()).check() == []
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted([f"{version}--cpu-bfloat16", f"{waiting}--cpu-int8"]), kept
    store.close()


def test_float32_traffic_uses_the_profile_as_built(registry_2k: Path, tmp_path: Path) -> None:
    registry = Registry(registry_2k)
    version = registry.production()
    assert version is not None
    fp32 = ModelArtifact.load(registry.path_of(version), device="cpu", bf16=False)
    store = StateStore(tmp_path / "state")
    store_scored(store, fp32, version, sentiment_rows(1000, seed=7, prefix="live"))
    monitor = Monitor(config_for(registry_2k, tmp_path / "state"), store, Metrics())
    assert monitor.check() == []
    assert not (tmp_path / "state" / "profiles").exists(), "nothing to re-score when the numerics match"
    store.close()


def test_a_window_of_mixed_numerics_is_checked_on_its_majority_with_one_warning(
    registry_2k: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(registry_2k)
    version = registry.production()
    assert version is not None
    path = registry.path_of(version)
    rows = sentiment_rows(1000, seed=9, prefix="mixed")
    store = StateStore(tmp_path / "state")
    # Scorers on nodes with and without AMX under cpu_bf16: auto, interleaved: 600 in bf16, 400 in float32.
    for start in range(0, 1000, 100):
        bf16 = start % 500 < 300
        artifact = ModelArtifact.load(path, device="cpu", bf16=bf16)
        store_scored(store, artifact, version, rows[start : start + 100])
    # The whole interleaved stream is one window, so its majority is the 600 bf16 records.
    monitor = Monitor(config_for(registry_2k, tmp_path / "state", window_size=1000), store, Metrics())
    with caplog.at_level("WARNING", logger="insightloop.daemon.monitor"):
        assert monitor.check() == [] and monitor.check() == []
    warnings = [r.getMessage() for r in caplog.records if "different numerics" in r.getMessage()]
    assert len(warnings) == 1 and "checking the 600 records scored cpu/bfloat16" in warnings[0]
    assert monitor.last_check is not None and len(monitor.last_check.results) > 0
    store.close()


@pytest.mark.parametrize("precision", ["../../etc/passwd", "cpu", "cpu/float64", "x" * 40 + "/int8"])
def test_predictions_with_a_malformed_precision_are_rejected_at_the_edge(precision: str) -> None:
    from pydantic import ValidationError

    from insightloop.daemon.events import PredictionEvent

    fields: dict[str, Any] = {
        "id": "a",
        "model_version": "v0001",
        "label": "positive",
        "scores": {"positive": 1.0},
        "embedding": [0.0],
        "n_tokens": 1,
    }
    assert PredictionEvent(**fields, precision="cuda/bfloat16").precision == "cuda/bfloat16"
    with pytest.raises(ValidationError):
        PredictionEvent(**fields, precision=precision)


def test_a_purged_reference_is_not_rescored_from_blank_texts(
    trained_registry: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from insightloop.daemon.profiles import ProfileCache

    root = tmp_path / "registry"
    shutil.copytree(trained_registry, root)
    registry = Registry(root)
    version = registry.production() or ""
    registry.purge_texts(version, by="dpo", reason="erasure request")
    built = ProfileCache(registry, tmp_path / "profiles").get(version)
    assert built is not None and not any(built.window.texts)
    other = "cpu/int8" if built.precision != "cpu/int8" else "cpu/float32"
    with caplog.at_level(logging.WARNING, logger="insightloop.daemon.profiles"):
        served = ProfileCache(registry, tmp_path / "profiles").get(version, other)
    assert served is not None and served.precision == built.precision, "blank texts were re-scored"
    assert not (tmp_path / "profiles").exists() or not any((tmp_path / "profiles").iterdir())
    assert any("were purged" in r.getMessage() for r in caplog.records)
