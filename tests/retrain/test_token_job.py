"""A token classifier's job: sentence weights from the plan, the per-type comparison with paired-bootstrap
intervals, validation held out by whole documents, and each adjustment of the plan tested by experiment."""

from __future__ import annotations

from pathlib import Path

import pytest

from insightloop.detectors import Adjustments
from insightloop.retrain import TaggedSentence, TrainingPlan, compare_entities, split_sentences
from insightloop.retrain.plan import DataSource
from insightloop.retrain.token_job import sentence_weight

PROSE = TaggedSentence(
    id="p", words=["Kohl", "met", "Yeltsin", "in", "Bonn", "."], tags=["B-PER", "O", "B-PER", "O", "B-LOC", "O"]
)
TABLE = TaggedSentence(id="t", words=["Chelsea", "3", "Arsenal", "2"], tags=["B-ORG", "O", "B-ORG", "O"])
NONE = TaggedSentence(id="n", words=["It", "rained", "."], tags=["O", "O", "O"])


def plan(**weights: object) -> TrainingPlan:
    return TrainingPlan(
        action="fine_tune",
        base_version="v1",
        base_model="/nowhere",
        data=[DataSource(path="r.jsonl", role="reference"), DataSource(path="p.jsonl", role="production", weight=3.0)],
        **weights,  # type: ignore[arg-type]
    )


# (plan weights, sentence, from production, weight)
WEIGHTS = [
    ({}, PROSE, False, 1.0),
    ({}, PROSE, True, 3.0),
    ({"class_weights": {"ORG": 2.0}}, TABLE, False, 2.0),
    ({"class_weights": {"ORG": 2.0}}, PROSE, False, 1.0),
    ({"slice_weights": {"line_shape=table": 2.0}}, TABLE, True, 6.0),
    ({"slice_weights": {"line_shape=table": 2.0}}, PROSE, True, 3.0),
    ({"slice_weights": {"entity_type=PER": 1.5, "length_tokens=1-9": 2.0}}, PROSE, False, 2.0),  # the largest slice
    ({"slice_weights": {"entity_type=PER": 1.5}, "class_weights": {"LOC": 2.0}}, PROSE, False, 3.0),
    ({"class_weights": {"ORG": 2.0}}, NONE, True, 3.0),
]


@pytest.mark.parametrize(("weights", "sentence", "production", "expected"), WEIGHTS)
def test_a_sentence_weighs_what_the_plan_says(
    weights: dict[str, object], sentence: TaggedSentence, production: bool, expected: float
) -> None:
    assert sentence_weight(plan(**weights), sentence, production) == pytest.approx(expected)


def test_the_comparison_is_per_type_with_intervals_that_cover_the_difference() -> None:
    gold = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "B-PER", "O"]] * 20
    champion = [["B-PER", "O", "O"], ["B-ORG", "O", "O"], ["O", "B-PER", "O"]] * 20  # misses LOC, cuts ORG short
    candidate = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "O", "O"]] * 20  # misses one PER
    section = compare_entities("recent", gold, champion, candidate, rounds=300)
    rows = {r.metric: r for r in section.rows}
    per_type = {r.metric: r for r in section.per_class}
    # champion finds 2 of 4 entities per block (PER twice), predicts 3: F1 = 4/7; candidate finds 3 of 4, predicts 3
    assert rows["entity_micro_f1"].champion == pytest.approx(4 / 7)
    assert rows["entity_micro_f1"].candidate == pytest.approx(6 / 7)
    assert per_type["f1 LOC"].champion == 0.0 and per_type["f1 LOC"].candidate == 1.0
    assert per_type["f1 PER"].candidate == pytest.approx(2 / 3) and per_type["f1 PER"].n == 40
    for row in [*section.rows, *section.per_class]:
        assert row.ci_low is not None and row.ci_high is not None and row.delta is not None
        assert row.ci_low <= row.delta <= row.ci_high
    assert rows["entity_micro_f1"].ci_low > 0  # every resample favours the candidate
    assert per_type["f1 PER"].ci_high < 0
    assert compare_entities("empty", [], [], []).rows == []


def test_validation_holds_out_whole_documents() -> None:
    sentences = [
        TaggedSentence(id=f"{d}-{i}", words=["w"], tags=["O"], document=f"doc{d}") for d in range(20) for i in range(5)
    ]
    train, held = split_sentences(sentences, 0.2, seed=3)
    held_docs = {s.document for s in held}
    assert held_docs and not held_docs & {s.document for s in train}
    assert 15 <= len(held) <= 30 and len(train) + len(held) == 100
    loose = [TaggedSentence(id=str(i), words=["w"], tags=["O"]) for i in range(50)]
    train, held = split_sentences(loose, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_recogniser_job_tests_each_adjustment_by_experiment(tiny_base, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The plan weights organisations and results tables up; the job also trains the plan with each left out
    and records, per adjustment, entity micro F1 with and without it on the sentences it is about."""
    import json

    from insightloop.daemon.entity_scenario import news
    from insightloop.daemon.pages import render_approvals
    from insightloop.daemon.train import train_first_tagger
    from insightloop.deploy import Registry
    from insightloop.retrain import RECENT, FineTuneSettings, GateSettings, HyperParameters, plan_from_insights
    from insightloop.retrain.job import JobSpec, run_job
    from tests.retrain.test_job import insight

    def write(name: str, rows: list[dict[str, object]]) -> str:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    reference = write("reference.jsonl", news("world", 300, seed=1, prefix="ref"))
    production = write("production.jsonl", news("markets-sports", 240, seed=2, prefix="prod"))
    settings = FineTuneSettings(
        epochs=8, learning_rate=5e-3, max_length=48, batch_size=16, device="cpu", early_stopping_patience=8
    )
    train_first_tagger(
        Path(reference), tmp_path / "registry", str(tiny_base), settings, True, progress=False, profile_rounds=20
    )
    registry = Registry(tmp_path / "registry")
    champion = registry.production() or ""
    # Weights that stay under the repetition cap, so that leaving either out changes what is trained.
    adjust = Adjustments(class_weights={"ORG": 2.0}, slice_weights={"line_shape=table": 2.0})
    hyper = HyperParameters(epochs=4, learning_rate=5e-3, batch_size=16, max_length=48)
    plan = plan_from_insights(
        [insight("retrain", adjust, kind="prediction_drift")],
        champion,
        str(registry.path_of(champion)),
        48,
        reference,
        production,
        hyper=hyper,
    )
    spec = JobSpec(
        job_id="job-ner",
        registry=str(registry.root),
        plan=plan,
        device="cpu",
        progress=False,
        profile_rounds=20,
        ablations=True,
        max_ablations=2,
        gate=GateSettings(min_improvement=0.0, bootstrap_rounds=200, min_recent=20),
    )
    result = run_job(spec)

    assert result.state == "succeeded" and result.version is not None, result.error
    record = registry.get(result.version)
    tests = {t.kind: t for t in record.lineage.experiments}
    assert set(tests) == {"class_weight", "slice_weight"}, record.lineage.experiments
    assert tests["class_weight"].target == "ORG" and tests["class_weight"].evaluated_on == RECENT
    assert tests["slice_weight"].evaluated_on == "slice line_shape=table"
    for test in tests.values():
        assert abs(test.with_adjustment - test.without - test.effect) < 1e-9
        assert test.ci_low <= test.effect <= test.ci_high and test.n >= 10
        assert test.supported == (test.ci_low > 0)
    assert record.lineage.chosen_variant in (
        "planned",
        "without class_weight ORG",
        "without slice_weight line_shape=table",
    )
    kept = {a.kind for a in record.lineage.adjustments}
    assert ("class_weight" in kept) != (record.lineage.chosen_variant == "without class_weight ORG")
    page = render_approvals(registry)
    assert "tested by experiment" in page and "class_weight ORG" in page, page
