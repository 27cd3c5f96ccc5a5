"""The entity detectors on planted windows: each change fires the detector that asks about it, and a window
like the reference fires none (table-driven; no model, the windows are built directly)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from insightloop.detectors import (
    AlarmBudget,
    EntityProfile,
    EntityWindow,
    TrackerState,
    WindowEntity,
    calibrate_entity_profile,
    entity_check_step,
    fit_entity_calibrator,
    line_shape,
)

PROSE = ["the", "minister", "said", "on", "Tuesday", "that", "talks", "would", "resume", "in", "a", "week"]
KNOWN_NAMES = {"PER": ["Clinton", "Yeltsin", "Kohl"], "LOC": ["Paris", "Bonn", "Moscow"], "ORG": ["UN", "NATO", "EU"]}
NEW_NAMES = {"PER": ["Zorbak", "Quinlan", "Mbeki"], "LOC": ["Grozny", "Lima", "Oslo"], "ORG": ["ACME", "Fiat", "ZTE"]}


@dataclass(frozen=True)
class World:
    """How a planted window's texts are drawn."""

    types: tuple[float, float, float] = (0.4, 0.35, 0.25)  # PER, LOC, ORG
    entities_per_text: int = 2
    confidence: float = 0.92
    new_names: float = 0.05
    table: bool = False
    shift: float = 0.0  # of the embeddings along their first axis
    wrong: float = 0.1  # share of labeled texts whose first entity is mistyped


def planted(world: World, n: int, seed: int, labeled: bool = True) -> EntityWindow:
    rng = np.random.default_rng(seed)
    kinds = ["PER", "LOC", "ORG"]
    ids, texts, words_of, entities, predicted, gold, confidence = [], [], [], [], [], [], []
    for row in range(n):
        words: list[str] = []
        tags: list[str] = []
        found: list[WindowEntity] = []
        filler = list(rng.choice(PROSE, size=8))
        if world.table:
            filler = [str(int(v)) for v in rng.integers(0, 9, size=6)]
        for k in range(world.entities_per_text):
            kind = kinds[int(rng.choice(3, p=world.types))]
            pool = NEW_NAMES if rng.uniform() < world.new_names else KNOWN_NAMES
            name = str(rng.choice(pool[kind]))
            words += [filler[k % len(filler)], name]
            tags += ["O", f"B-{kind}"]
            found.append(
                WindowEntity(type=kind, text=name, confidence=float(np.clip(rng.normal(world.confidence, 0.03), 0, 1)))
            )
        words += filler
        tags += ["O"] * len(filler)
        truth = list(tags)
        if labeled and rng.uniform() < world.wrong:  # the model typed its first entity wrong
            first = truth.index(next(t for t in truth if t != "O"))
            truth[first] = "B-ORG" if truth[first] != "B-ORG" else "B-PER"
        ids.append(f"r{seed}-{row}")
        texts.append(" ".join(words))
        words_of.append(words)
        entities.append(found)
        predicted.append(tags)
        gold.append(truth if labeled else None)
        confidence.append(float(np.mean([e.confidence for e in found])))
    embeddings = rng.normal(size=(n, 16))
    embeddings[:, 0] += world.shift
    return EntityWindow(
        ids=ids,
        texts=texts,
        words=words_of,
        entities=entities,
        predicted_tags=predicted,
        gold_tags=gold,
        mean_confidence=np.array(confidence),
        embeddings=embeddings,
        meta=[{} for _ in range(n)],
        timestamps=[None] * n,
    )


@pytest.fixture(scope="module")
def profile() -> EntityProfile:
    window = planted(World(), 600, seed=1)
    known = frozenset(name.lower() for names in KNOWN_NAMES.values() for name in names)
    draft = EntityProfile(
        window=window,
        known_entities=known,
        entity_types=["LOC", "ORG", "PER"],
        calibrator=fit_entity_calibrator(window),
        reference_f1=0.95,
        reference_f1_by_type={"LOC": 0.95, "ORG": 0.9, "PER": 0.97},
        window_size=200,
    )
    return calibrate_entity_profile(draft, n_rounds=60)


BUDGET = AlarmBudget(budget_texts=1_000_000, check_every_records=200, detectors=8)
TRACKER = TrackerState(raise_level=1.0, clear_level=0.8, clear_after=2)

# (what changed, the detector that must fire)
CHANGES = [
    (World(types=(0.1, 0.1, 0.8)), "entity_type_mix"),
    (World(entities_per_text=4), "entity_density"),
    (World(confidence=0.75), "token_confidence"),
    (World(new_names=0.6), "new_entity_names"),
    (World(shift=1.5), "entity_embedding"),
    (World(wrong=0.7), "entity_f1_drop"),
    (World(table=True), "entity_slices"),
]


def fired(profile: EntityProfile, window: EntityWindow) -> dict[str, bool]:
    step = entity_check_step(profile, window, "v1", TRACKER, budget=BUDGET)
    names = {i for i in (step.insight.detector,)} if step.insight else set()
    also = {r.detector for r in step.result.results if r.severity is not None}
    return {r.detector: r.detector in (names | also) for r in step.result.results}


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_window_like_the_reference_fires_nothing(profile: EntityProfile, seed: int) -> None:
    assert not any(fired(profile, planted(World(), 200, seed=seed)).values())


@pytest.mark.parametrize(("world", "detector"), CHANGES, ids=[d for _, d in CHANGES])
def test_each_change_fires_the_detector_that_asks_about_it(profile: EntityProfile, world: World, detector: str) -> None:
    window = planted(world, 200, seed=21)
    outcome = fired(profile, window)
    assert outcome[detector], outcome
    step = entity_check_step(profile, window, "v1", TRACKER, budget=BUDGET)
    assert step.insight is not None and step.publish
    assert {c.name for c in step.insight.evidence.classes} == {"LOC", "ORG", "PER"}
    assert step.insight.recommendation.action == "retrain"


def test_the_insight_names_the_types_and_slices_that_moved(profile: EntityProfile) -> None:
    window = planted(World(types=(0.1, 0.1, 0.8), table=True), 200, seed=31)
    step = entity_check_step(profile, window, "v1", TRACKER, budget=BUDGET)
    insight = step.insight
    assert insight is not None
    assert insight.evidence.slices[0].key == "line_shape=table"
    assert "ORG" in insight.summary and "line_shape=table" in insight.summary
    assert insight.recommendation.adjust.class_weights == {"ORG": 2.0}
    assert "line_shape=table" in insight.recommendation.adjust.slice_weights


def test_labels_price_the_change_in_entity_f1(profile: EntityProfile) -> None:
    labeled = entity_check_step(profile, planted(World(wrong=0.7), 200, seed=41), "v1", TRACKER, budget=BUDGET)
    assert labeled.insight is not None and labeled.insight.cost is not None
    assert labeled.insight.cost.source == "labeled" and labeled.insight.cost.metric == "entity micro F1"
    assert labeled.insight.cost.points > 10 and labeled.insight.severity == "critical"
    assert labeled.labeled_accuracy is not None and labeled.labeled_accuracy < 0.85
    classes = labeled.insight.evidence.classes
    assert {c.quality_metric for c in classes} == {"F1"}, "an entity type's quality is its F1, said so"
    assert sum(c.current_share for c in classes) == pytest.approx(1.0)
    quiet = planted(World(confidence=0.75), 200, seed=42, labeled=False)
    estimated = entity_check_step(profile, quiet, "v1", TRACKER, budget=BUDGET)
    assert estimated.insight is not None and estimated.insight.cost is not None
    assert estimated.insight.cost.source == "estimated"


@pytest.mark.parametrize(
    ("words", "shape"),
    [
        (["Leicester", "3", "Chelsea", "2"], "table"),
        (["SOCCER", "-", "ENGLISH", "PREMIER", "LEAGUE"], "caps"),
        (["Germany", "imported", "47,600", "sheep", "."], "prose"),
        ([], "prose"),
        (["1.", "Jan", "Ullrich", "(", "Germany", ")", "4:32:11", "10"], "table"),
    ],
)
def test_line_shapes(words: list[str], shape: str) -> None:
    assert line_shape(words) == shape


def test_a_profile_reads_back_as_saved(profile: EntityProfile, tmp_path) -> None:  # type: ignore[no-untyped-def]
    again = EntityProfile.load(profile.save(tmp_path / "reference"))
    assert again.known_entities == profile.known_entities and again.thresholds == profile.thresholds
    assert again.window.texts == profile.window.texts and np.allclose(
        again.window.embeddings, profile.window.embeddings
    )
    window = planted(World(new_names=0.6), 200, seed=51)
    assert fired(again, window) == fired(profile, window)


def test_a_window_keeps_its_columns_aligned() -> None:
    window = planted(World(), 5, seed=2)
    with pytest.raises(ValueError, match="other lengths"):
        replace(window, texts=window.texts[:4])


def test_the_plan_weights_the_types_the_labels_grew_not_the_ones_the_model_predicts() -> None:
    # The model keeps predicting people; the labels say most first entities are organisations now.
    reference = planted(World(wrong=0.0), 600, seed=2)
    draft = EntityProfile(
        window=reference,
        known_entities=frozenset(),
        entity_types=["LOC", "ORG", "PER"],
        calibrator=fit_entity_calibrator(reference),
        reference_f1=1.0,
        window_size=200,
    )
    profile = calibrate_entity_profile(draft, n_rounds=40)
    mistaken = planted(World(types=(0.7, 0.2, 0.1), wrong=0.9), 200, seed=51)
    step = entity_check_step(profile, mistaken, "v1", TRACKER, budget=BUDGET)
    assert step.insight is not None
    assert step.insight.recommendation.adjust.class_weights == {"ORG": 2.0}
    unlabeled = planted(World(types=(0.7, 0.2, 0.1), wrong=0.9), 200, seed=51, labeled=False)
    step = entity_check_step(profile, unlabeled, "v1", TRACKER, budget=BUDGET)
    assert step.insight is not None
    assert step.insight.recommendation.adjust.class_weights == {"PER": 2.0}, "no labels: the predicted mix"
