"""`models import` of a token classifier: an outside recogniser registered as it is (its tags in its head's
order, its tokenizer), profiled on a tagged reference, and retrained with its tag set kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from insightloop.daemon.cli import main
from insightloop.daemon.entity_scenario import news
from insightloop.daemon.errors import ExitCode
from insightloop.deploy import TOKEN_TASK, Registry, TokenClassifier
from insightloop.detectors import EntityProfile, entity_key
from insightloop.retrain import FineTuneSettings, LabelSetError, TaggedSentence, fine_tune_tokens, read_tagged

# The head's order is the model's own, not insightloop's sorted one (which puts LOC before PER).
OWN_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[TaggedSentence], Path]:
    """World-desk sentences to fit the outside model on, and a disjoint tagged reference file."""
    folder = tmp_path_factory.mktemp("world")
    fit = read_tagged(write_rows(folder / "fit.jsonl", news("world", 240, seed=11, prefix="fit")))
    return fit, write_rows(folder / "reference.jsonl", news("world", 120, seed=12, prefix="ref"))


@pytest.fixture(scope="module")
def outside_tagger(tiny_base: Path, world: tuple[list[TaggedSentence], Path], tmp_path_factory: Any) -> Path:
    """A token classifier trained with plain torch (not by insightloop) and saved with save_pretrained."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForTokenClassification.from_pretrained(
        tiny_base,
        num_labels=len(OWN_TAGS),
        id2label=dict(enumerate(OWN_TAGS)),
        label2id={tag: i for i, tag in enumerate(OWN_TAGS)},
    )
    sentences = world[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for start in [s for _ in range(6) for s in range(0, len(sentences), 16)]:
        chunk = sentences[start : start + 16]
        batch = tokenizer(
            [s.words for s in chunk], is_split_into_words=True, padding=True, truncation=True, return_tensors="pt"
        )
        target = torch.full(batch["input_ids"].shape, -100)
        for row, sentence in enumerate(chunk):
            previous = None
            for position, word in enumerate(batch.word_ids(row)):
                if word is not None and word != previous:
                    target[row, position] = OWN_TAGS.index(sentence.tags[word])
                previous = word
        model(**batch, labels=target).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("outside-tagger")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def run_cli(*argv: str) -> int:
    return main(["models", "import", *argv, "--rounds", "20"])


def test_a_token_classifier_is_imported_as_it_is_with_its_own_tags(
    outside_tagger: Path, world: tuple[list[TaggedSentence], Path], tmp_path: Path, capsys: Any
) -> None:
    reference = world[1]
    registry_dir = tmp_path / "registry"
    # No --task: the task is read from the model's architecture.
    assert run_cli("--model", str(outside_tagger), "--reference", str(reference), "--registry", str(registry_dir)) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    registry = Registry(registry_dir)
    record = registry.get(version.name)
    assert registry.artifact_settings(version.name).task == TOKEN_TASK
    assert record.labels == OWN_TAGS and record.lineage.action == "import"
    assert record.lineage.settings["task"] == TOKEN_TASK
    assert 0.0 < record.metrics["reference_entity_micro_f1"] <= 1.0
    assert {"reference_f1_PER", "reference_f1_LOC"} <= set(record.metrics)

    imported = TokenClassifier.load(version)
    assert imported.labels == OWN_TAGS
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    raw = TokenClassifier(
        AutoModelForTokenClassification.from_pretrained(outside_tagger).eval(),
        AutoTokenizer.from_pretrained(outside_tagger),
        OWN_TAGS,
        imported.max_length,
    )
    words = [s.words for s in read_tagged(reference)[:8]]
    assert imported.predict(words).tags == raw.predict(words).tags, "no fine-tuning happened"

    # Known names come from the reference sentences outside the profile's window, never from the window.
    sentences = read_tagged(reference)
    profile = EntityProfile.load(version / "reference")
    assert profile.window.ids == [s.id for s in sentences[0::2]]

    def names(rows: list[TaggedSentence]) -> set[str]:
        return {entity_key(" ".join(s.words[e.start : e.end])) for s in rows for e in s.entities}

    assert profile.known_entities == names(sentences[1::2])
    assert names(sentences[0::2]) - names(sentences[1::2]), "the window has names of its own to miss"

    # A retraining job starts from it and keeps its tags, in its head's order; a new type is refused.
    settings = FineTuneSettings(epochs=1, max_length=32, batch_size=16, learning_rate=1e-3, device="cpu")
    result = fine_tune_tokens(sentences, version, settings, validation=sentences[:10], progress=False)
    assert result.classifier.labels == OWN_TAGS
    food = TaggedSentence(id="food", words=["Pasta", "is", "good"], tags=["B-FOOD", "O", "O"])
    with pytest.raises(LabelSetError, match="B-FOOD"):
        fine_tune_tokens([*sentences, food], version, settings, validation=sentences[:10], progress=False)


def test_a_tagger_is_refused_where_it_is_not_what_was_asked_or_its_tags_are_not_iob(
    outside_tagger: Path, tiny_base: Path, world: tuple[list[TaggedSentence], Path], tmp_path: Path, capsys: Any
) -> None:
    from transformers import AutoModelForTokenClassification

    reference = world[1]
    registry_dir = tmp_path / "registry"
    code = run_cli(
        "--model", str(outside_tagger), "--reference", str(reference), "--registry", str(registry_dir),
        "--task", "text-classification",
    )  # fmt: skip
    assert code == ExitCode.NO_MODEL and "is not a sequence classifier" in capsys.readouterr().err
    unnamed = tmp_path / "unnamed-tags"
    AutoModelForTokenClassification.from_pretrained(tiny_base, num_labels=3).save_pretrained(unnamed)
    code = run_cli("--model", str(unnamed), "--reference", str(reference), "--registry", str(registry_dir))
    assert code == ExitCode.NO_MODEL and "must be distinct IOB tags" in capsys.readouterr().err
    code = run_cli("--model", str(tiny_base), "--reference", str(reference), "--registry", str(registry_dir))
    assert (
        code == ExitCode.NO_MODEL and "is not a sequence classifier nor a token classifier" in capsys.readouterr().err
    )

    rows = news("world", 60, seed=13, prefix="food")
    rows[0] = {
        "id": "food-0",
        "text": "Pasta Night is on Friday.",
        "entities": [{"start": 0, "end": 11, "type": "FOOD"}],
    }
    wrong = write_rows(tmp_path / "food.jsonl", rows)
    code = run_cli("--model", str(outside_tagger), "--reference", str(wrong), "--registry", str(registry_dir))
    assert code == ExitCode.DATA_ERROR
    assert "entity types ['FOOD'] are not in the model's types" in capsys.readouterr().err
    assert not registry_dir.exists() or not list(registry_dir.glob("v*")), "a refused import writes nothing"
