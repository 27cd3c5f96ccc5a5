"""A token classifier in the daemon over the real broker, on real CoNLL-2003 sentences: raw texts in, entity
spans out, late tag labels joined; a stream whose entity mix turns to organisations (business news and sports
results, the type the model knows worst) raises an insight naming the entity types and slices behind it, and
the retraining job's candidate is evaluated per entity type against the champion."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from insightloop.daemon.events import ENTITY_SCHEMA_VERSION
from insightloop.deploy import TOKEN_TASK, Registry, VersionStatus, split_words
from insightloop.detectors import line_shape
from insightloop.retrain import TaggedSentence, read_conll, sentence_text, write_tagged_jsonl
from tests.integration.daemon_process import InProcessDaemon
from tests.integration.test_loop import FAST_JOBS, wait_for
from tests.kafka_helpers import produce_raw, read_topic
from tests.retrain.test_ner_data import CONLL, needs_conll

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900), needs_conll]

STREAM = 200


def shape(sentence: TaggedSentence) -> str:
    """The line shape the monitor sees: of the words the joined text splits into."""
    return line_shape(split_words(sentence_text(sentence)[0])[0])


@pytest.fixture(scope="module")
def conll_split() -> tuple[list[TaggedSentence], list[TaggedSentence], list[TaggedSentence]]:
    """Training prose from 60% of the documents; from the other documents, prose as it comes and sentences
    whose entities are mostly organisations as the two streams."""
    sentences = read_conll(CONLL / "eng.train", limit=9000)
    documents = sorted({s.document or "" for s in sentences})
    random.Random(7).shuffle(documents)
    trained = set(documents[: int(0.6 * len(documents))])
    train = [s for s in sentences if s.document in trained and shape(s) == "prose"][:1500]
    others = [s for s in sentences if s.document not in trained]
    prose = [s for s in others if shape(s) == "prose" and s.entities]
    organisations = [s for s in others if 2 * sum(e.type == "ORG" for e in s.entities) > len(s.entities)]
    random.Random(8).shuffle(prose)
    random.Random(9).shuffle(organisations)
    assert len(prose) >= STREAM and len(organisations) >= STREAM
    return train, prose[:STREAM], organisations[:STREAM]


@pytest.fixture(scope="module")
def tagger_registry(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, conll_split) -> Path:
    """A tiny BERT token classifier trained with `insightloop train --task token-classification`'s code."""
    from insightloop.daemon.train import train_first_tagger
    from insightloop.retrain import FineTuneSettings

    root = tmp_path_factory.mktemp("tagger")
    write_tagged_jsonl(root / "train.jsonl", conll_split[0])
    settings = FineTuneSettings(
        epochs=10,
        learning_rate=5e-3,
        max_length=64,
        batch_size=16,
        device="cpu",
        early_stopping_patience=10,
        validation_share=0.25,
    )
    train_first_tagger(
        root / "train.jsonl", root / "registry", str(tiny_base), settings, True, progress=False, profile_rounds=100
    )
    return root / "registry"


def text_message(prefix: str, index: int, sentence: TaggedSentence) -> bytes:
    text, _ = sentence_text(sentence)
    return json.dumps({"id": f"{prefix}-{index}", "text": text, "meta": {"desk": prefix}}).encode()


def label_message(prefix: str, index: int, sentence: TaggedSentence) -> bytes:
    _, spans = sentence_text(sentence)
    entities = [s.model_dump() for s in spans]
    return json.dumps({"id": f"{prefix}-{index}", "entities": entities}).encode()


def test_entities_are_served_joined_and_an_entity_shift_raises_an_insight(
    make_config, tagger_registry: Path, conll_split, tmp_path: Path
) -> None:
    _, prose, shifted = conll_split
    registry_root = tmp_path / "registry"
    shutil.copytree(tagger_registry, registry_root)
    version = Registry(registry_root).production()
    assert version is not None and Registry(registry_root).artifact_settings(version).task == TOKEN_TASK
    config = make_config(
        registry={"path": str(registry_root)},
        monitor={
            "window_size": STREAM,
            "min_window": 150,
            "check_every_records": 150,
            "check_interval_s": 3600,
            "min_check_interval_s": 0,
            "min_severity": "info",
        },
        # A real job of the tiny tagger; it acts on info insights too (the tiny model's cost may be small).
        controller={**FAST_JOBS, "min_severity": "info", "epochs": 3, "learning_rate": 5e-3, "batch_size": 16},
    )
    topics = config.topics
    with InProcessDaemon(config) as daemon:
        monitor = next(w for w in daemon.app.daemon.workers if w.name == "monitor")
        produce_raw(config, topics.texts, [text_message("p", i, s) for i, s in enumerate(prose)])
        # Late labels for half of the texts, in both label shapes, and two the model cannot use.
        tag_label = {"id": "p-1", "tags": split_words_tags(prose[1])}
        produce_raw(
            config,
            topics.labels,
            [label_message("p", i, s) for i, s in enumerate(prose[: STREAM // 2]) if i != 1]
            + [
                json.dumps(tag_label).encode(),
                json.dumps({"id": "p-150", "tags": ["B-FOOD"] + ["O"] * 5}).encode(),
                json.dumps({"id": "p-151", "label": "positive"}).encode(),
            ],
        )
        predictions = read_topic(config, topics.predictions, until=lambda got: len(got) >= STREAM, timeout_s=180)
        assert len(predictions) >= STREAM
        texts = {f"p-{i}": sentence_text(s)[0] for i, s in enumerate(prose)}
        spans = 0
        for prediction in predictions:
            assert prediction["schema_version"] == ENTITY_SCHEMA_VERSION and prediction["task"] == TOKEN_TASK
            assert prediction["token_confidence"]["entity_count"] == len(prediction["entities"])
            for entity in prediction["entities"]:
                assert texts[prediction["id"]][entity["start"] : entity["end"]] == entity["text"]
                spans += 1
        assert spans >= STREAM // 2, "the tagger finds entities in news sentences"

        letters = read_topic(config, topics.deadletter, until=lambda got: len(got) >= 2, timeout_s=60)
        reasons = " ".join(letter["error"] for letter in letters)
        assert "FOOD" in reasons and "token classifier" in reasons, reasons

        def labeled_check() -> bool:
            check = monitor.last_check
            return check is not None and any(r.detector == "entity_f1_drop" and r.applicable for r in check.results)

        wait_for(labeled_check, 120, "a check with the joined labels")
        quiet = read_topic(config, topics.insights, until=lambda got: False, timeout_s=2)
        assert quiet == [], f"false alarm on news like the training data: {[i['summary'] for i in quiet]}"

        # The stream turns to organisations; their labels follow the texts, so the check prices the shift on them
        # and the controller's job fine-tunes the champion on them and evaluates it per type.
        produce_raw(config, topics.texts, [text_message("t", i, s) for i, s in enumerate(shifted)])
        produce_raw(config, topics.labels, [label_message("t", i, s) for i, s in enumerate(shifted)])
        # A check that ran before the labels joined may publish the insight at info first; priced on the
        # labels, it is published again at the severity it rose to.
        insights = read_topic(
            config, topics.insights, until=lambda got: any(i["severity"] != "info" for i in got), timeout_s=180
        )
        insights = [i for i in insights if i["severity"] != "info"]
        assert insights, "the shift to organisations raised no insight worth a job"
        registry = Registry(registry_root)
        candidate = wait_for(
            lambda: next((r.version for r in registry.records() if r.status == VersionStatus.CANDIDATE), None),
            400,
            "a candidate from the token classifier's job",
        )
    insight = insights[0]
    types = {c["name"] for c in insight["evidence"]["classes"]}
    assert {"LOC", "ORG", "PER"} <= types, insight["evidence"]["classes"]
    slices = [f["key"] for f in insight["evidence"]["slices"]]
    assert slices, "the insight names the slices that grew"
    assert insight["evidence"]["classes"][0]["name"] == "ORG", "the type that moved most comes first"
    assert any(e["id"].startswith("t-") for e in insight["evidence"]["examples"])
    assert "ORG" in insight["summary"] and slices[0] in insight["summary"]
    report = Path(insight["report"])
    assert report.is_file() and slices[0] in report.read_text(encoding="utf-8")
    assert insight["severity"] in ("warning", "critical") and insight["cost"]["source"] == "labeled"
    assert insight["recommendation"]["action"] == "retrain"
    check_candidate(Registry(registry_root), candidate, version, insight["id"], slices[0])


def split_words_tags(sentence: TaggedSentence) -> list[str]:
    """IOB1 tags over the words the sentence's joined text splits into (CoNLL's own scheme)."""
    from insightloop.deploy import convert_tags
    from insightloop.retrain import text_tags

    text, spans = sentence_text(sentence)
    return convert_tags(text_tags(text, spans), "IOB1")


def check_candidate(registry: Registry, candidate: str, champion: str, insight_id: str, named: str) -> None:
    """The candidate of the job: lineage to the insight, per-type evaluation against the champion, the gate."""
    record = registry.get(candidate)
    assert record.parent == champion and record.insights[0].id == insight_id
    assert registry.artifact_settings(candidate).task == TOKEN_TASK
    kinds = {a.kind for a in record.lineage.adjustments}
    assert "slice_weight" in kinds and "recent_data_weight" in kinds, record.lineage.adjustments
    assert record.evaluation is not None and record.gate is not None
    sections = {s.name: s for s in record.evaluation.sections}
    recent = sections["recent production (held out by time)"]
    micro = next(r for r in recent.rows if r.metric == "entity_micro_f1")
    assert record.training is not None
    held_out = next(source.holdout_rows for source in record.training.sources if source.role == "production")
    assert micro.n == held_out >= 30, "the newest labeled production sentences, held out by time, are judged"
    assert micro.ci_low is not None and micro.ci_low <= micro.delta <= micro.ci_high
    assert {r.metric for r in recent.per_class} >= {"f1 LOC", "f1 ORG", "f1 PER"}
    assert f"slice {named}" in sections, list(sections)
    assert any("entity_micro_f1" in reason for reason in record.gate.reasons), record.gate.reasons
    evaluation = registry.path_of(candidate) / "evaluation"
    table = (evaluation / "recent_production.txt").read_text(encoding="utf-8")
    assert "champion" in table and "candidate" in table and "micro avg" in table and "ORG" in table
    assert (evaluation / "entities.html").is_file()


def test_tagged_sentences_replay_as_raw_texts_with_character_entities(
    make_config, conll_split, tagger_registry: Path, tmp_path: Path
) -> None:
    from insightloop.daemon.replay import production_task, replay

    sentences = conll_split[1][:20]
    path = tmp_path / "sentences.jsonl"
    write_tagged_jsonl(path, sentences)
    config = make_config(registry={"path": str(tagger_registry)})
    # Without --task, replay feeds what the registry's production version serves.
    assert production_task(config) == TOKEN_TASK
    assert production_task(make_config(registry={"path": str(tmp_path / "none")})) == "text-classification"
    result = replay(config, path, labels_delay=5, progress=False, task=production_task(config))
    assert (result.texts, result.labels) == (20, 20)
    texts = {m["id"]: m["text"] for m in read_topic(config, config.topics.texts, until=lambda got: len(got) >= 20)}
    labels = {m["id"]: m for m in read_topic(config, config.topics.labels, until=lambda got: len(got) >= 20)}
    assert set(labels) == set(texts) == {s.id for s in sentences}
    for sentence in sentences:
        label = labels[sentence.id]
        assert "tags" not in label
        found = [texts[sentence.id][e["start"] : e["end"]] for e in label["entities"]]
        assert found == [" ".join(sentence.words[s.start : s.end]) for s in sentence.entities]


def test_check_compares_tagged_files_offline(tagger_registry: Path, conll_split, tmp_path: Path, capsys) -> None:
    from insightloop.daemon.cli import main
    from insightloop.daemon.errors import ExitCode

    _, prose, shifted = conll_split
    reference, current = tmp_path / "reference.jsonl", tmp_path / "current.jsonl"
    write_tagged_jsonl(reference, prose)
    write_tagged_jsonl(current, shifted)
    model = tagger_registry / "v0001"
    common = ["check", "--reference", str(reference), "--model", str(model), "--state-dir", str(tmp_path / "state")]
    code = main([*common, "--current", str(current), "--json", "--fail-on", "warning", "--rounds", "50"])
    assert code == int(ExitCode.CHECK_FAILED)
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["insights"] and Path(payload["reports"][0]).is_file()
    assert any(c["name"] == "ORG" for c in payload["insights"][0]["evidence"]["classes"])
    assert main([*common, "--current", str(current), "--task", "text-classification"]) == int(ExitCode.DATA_ERROR)
    assert "token-classification model" in capsys.readouterr().err
