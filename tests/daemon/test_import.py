"""`models import`: an existing classifier registered as it is, with its own labels; refusals with named exit codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from insightloop.daemon.cli import main
from insightloop.daemon.errors import ExitCode
from insightloop.deploy import ModelArtifact, Registry
from insightloop.retrain import Example, FineTuneSettings, LabelSetError, fine_tune, load_profile, read_jsonl
from tests.synthetic import sentiment_rows, write_jsonl

# The head's order is the model's, not sorted: "good" is class 0.
OWN_LABELS = {0: "good", 1: "bad"}
RENAME = {"positive": "good", "negative": "bad"}


def own_rows(n: int, seed: int, prefix: str) -> list[dict[str, str]]:
    return [{**r, "label": RENAME[r["label"]]} for r in sentiment_rows(n, seed=seed, prefix=prefix)]


@pytest.fixture(scope="module")
def outside_model(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier trained with plain torch (not by insightloop) and saved with save_pretrained."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_base, num_labels=2, id2label=OWN_LABELS, label2id={v: k for k, v in OWN_LABELS.items()}
    )
    rows = own_rows(160, seed=3, prefix="fit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for start in [s for _ in range(4) for s in range(0, len(rows), 16)]:
        chunk = rows[start : start + 16]
        batch = tokenizer([r["text"] for r in chunk], padding=True, truncation=True, max_length=32, return_tensors="pt")
        target = torch.tensor([0 if r["label"] == "good" else 1 for r in chunk])
        loss = model(**batch, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("outside-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("ref") / "reference.jsonl", own_rows(120, seed=5, prefix="ref"))


def run_cli(*argv: str) -> int:
    return main(["models", "import", *argv, "--rounds", "20", "--projection-dims", "4"])


def test_import_keeps_the_model_labels_and_tokenizer_and_promotes_through_the_audited_path(
    outside_model: Path, reference: Path, tmp_path: Path, capsys: Any, broker: Any
) -> None:
    registry_dir = tmp_path / "registry"
    code = run_cli("--model", str(outside_model), "--reference", str(reference), "--registry", str(registry_dir))
    code2 = run_cli(
        "--model", str(outside_model), "--reference", str(reference), "--registry", str(registry_dir), "--promote",
        "--by", "ada", "--max-length", "24", "--bootstrap-servers", broker.bootstrap_servers,
    )  # fmt: skip
    assert (code, code2) == (0, 0)
    printed = capsys.readouterr().out.strip().splitlines()
    first, second = Path(printed[-2]), Path(printed[-1])
    registry = Registry(registry_dir)
    record = registry.get(second.name)
    assert record.labels == ["good", "bad"]
    assert record.lineage.action == "import"
    assert record.lineage.imported_from == str(outside_model.resolve())
    weights = hashlib.sha256((outside_model / "model.safetensors").read_bytes()).hexdigest()
    assert record.lineage.imported_sha256 == weights
    assert record.training is not None and record.training.source("reference") is not None
    assert record.training.source("reference").sha256 == hashlib.sha256(reference.read_bytes()).hexdigest()  # type: ignore[union-attr]
    assert record.metrics["reference_accuracy"] > 0.5
    assert registry.production() == second.name and registry.get(first.name).status.value == "candidate"
    audit = [(e.version, e.action, e.by) for e in registry.audit_log() if e.version == second.name]
    assert ("approve" in {a for _, a, _ in audit}) and all(by == "ada" for _, a, by in audit if a != "create")
    artifact = ModelArtifact.load(second)
    assert artifact.labels == ("good", "bad") and artifact.max_length == 24
    original = ModelArtifact(
        *_raw(outside_model), labels=("good", "bad"), projection=None, max_length=24, device=torch.device("cpu")
    )
    texts = ["good great fine", "bad awful poor thing"]
    assert torch.allclose(
        torch.from_numpy(artifact.predict(texts).probabilities), torch.from_numpy(original.predict(texts).probabilities)
    ), "the imported version scores as the model did: no fine-tuning happened"
    profile = load_profile(second)
    assert list(profile.class_names) == ["good", "bad"] and len(profile.window) == 60


def _raw(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_an_unlabeled_reference_is_enough(outside_model: Path, tmp_path: Path, capsys: Any) -> None:
    rows = [{"id": r["id"], "text": r["text"]} for r in own_rows(60, seed=8, prefix="u")]
    unlabeled = write_jsonl(tmp_path / "unlabeled.jsonl", rows)
    registry_dir = tmp_path / "registry"
    assert run_cli("--model", str(outside_model), "--reference", str(unlabeled), "--registry", str(registry_dir)) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    record = Registry(registry_dir).get(version.name)
    assert record.metrics == {} and Registry(registry_dir).training_data_file(version.name) != version / "data"
    assert all(label is None for label in load_profile(version).window.labels)


def test_a_model_without_a_sequence_classification_head_is_refused(
    tiny_base: Path, reference: Path, tmp_path: Path, capsys: Any
) -> None:
    from transformers import AutoModelForTokenClassification

    token_model = tmp_path / "token-model"
    AutoModelForTokenClassification.from_pretrained(tiny_base, num_labels=3).save_pretrained(token_model)
    for model in (tiny_base, token_model):
        code = run_cli("--model", str(model), "--reference", str(reference), "--registry", str(tmp_path / "r"))
        assert code == ExitCode.NO_MODEL
        assert "is not a sequence classifier" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("v*"))


def test_reference_labels_outside_the_model_set_are_refused(outside_model: Path, tmp_path: Path, capsys: Any) -> None:
    rows = sentiment_rows(60, seed=9)  # 'positive'/'negative': not the model's names
    wrong = write_jsonl(tmp_path / "wrong.jsonl", rows)
    code = run_cli("--model", str(outside_model), "--reference", str(wrong), "--registry", str(tmp_path / "r"))
    assert code == ExitCode.DATA_ERROR
    err = capsys.readouterr().err
    assert "labels ['negative', 'positive'] are not in the model's label set ['good', 'bad']" in err


def test_retraining_starts_from_the_imported_model_and_keeps_its_label_set(
    outside_model: Path, reference: Path, tmp_path: Path, capsys: Any
) -> None:
    registry_dir = tmp_path / "registry"
    assert run_cli("--model", str(outside_model), "--reference", str(reference), "--registry", str(registry_dir)) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    settings = FineTuneSettings(epochs=1, max_length=32, batch_size=16, learning_rate=1e-3, projection_dims=4)
    only_bad = [e for e in read_jsonl(reference) if e.label == "bad"] + [e for e in read_jsonl(reference)][:4]
    result = fine_tune(only_bad, version, settings, progress=False)
    assert result.artifact.labels == ("good", "bad"), "the head keeps the imported classes, in their order"
    before = ModelArtifact.load(version).model.classifier.weight
    assert result.artifact.model.classifier.weight.shape == before.shape
    with pytest.raises(LabelSetError, match="'neutral'"):
        fine_tune(
            [*only_bad, *[Example(text="meh so so", label="neutral") for _ in range(4)]],
            version,
            settings,
            progress=False,
        )
    assert json.loads((version / "artifact.json").read_text())["labels"] == ["good", "bad"]
