"""Reference profile persistence (plain files, no pickle) and the Window / Insight types."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from insightloop.detectors import (
    AccuracyCost,
    Adjustments,
    DescriptorShift,
    Evidence,
    Example,
    Insight,
    Recommendation,
    ReferenceProfile,
    SliceFinding,
    Window,
    WindowSpan,
    check_all,
)
from tests.detectors.worlds import CLASSES, Shift, make_window


def test_profile_round_trips_through_a_directory(profile: ReferenceProfile, tmp_path: Path) -> None:
    root = profile.save(tmp_path / "reference")
    assert sorted(p.name for p in root.iterdir()) == [
        "embeddings.npy",
        "probabilities.npy",
        "profile.json",
        "rows.json",
        "token_counts.npy",
        "vocabulary.json",
    ]
    for array in root.glob("*.npy"):
        np.load(array, allow_pickle=False)  # plain arrays, no pickled objects
    loaded = ReferenceProfile.load(root)
    assert loaded.manifest() == profile.manifest()
    w, v = profile.window, loaded.window
    assert (v.ids, v.texts, v.labels, v.meta, v.timestamps, v.class_names) == (
        w.ids,
        w.texts,
        w.labels,
        w.meta,
        w.timestamps,
        w.class_names,
    )
    for name in ("probabilities", "embeddings", "token_counts"):
        assert np.array_equal(getattr(v, name), getattr(w, name))
    assert loaded.vocabulary == profile.vocabulary
    assert loaded.calibrator == profile.calibrator
    assert loaded.thresholds == profile.thresholds
    # The loaded profile checks a window exactly like the original.
    window = make_window(300, seed=41, shift=Shift(domain=0.4), prefix="cur")
    before, after = check_all(profile, window, "v1"), check_all(loaded, window, "v1")
    assert [r.statistic for r in before.results] == pytest.approx([r.statistic for r in after.results])
    assert [i.id for i in before.insights] == [i.id for i in after.insights]


def test_profile_keeps_timestamps_and_meta_types(tmp_path: Path) -> None:
    window = make_window(60, seed=3)
    stamped = Window(
        ids=window.ids,
        texts=window.texts,
        class_names=window.class_names,
        probabilities=window.probabilities,
        embeddings=window.embeddings,
        token_counts=window.token_counts,
        labels=window.labels,
        meta=[{"n": i, "x": i / 2, "flag": i % 2 == 0, "none": None, "s": "é"} for i in range(60)],
        timestamps=[datetime(2026, 1, 1, 0, i, tzinfo=UTC) if i % 3 else None for i in range(60)],
    )
    profile = ReferenceProfile(stamped, ["good"], n_rounds=0)
    loaded = ReferenceProfile.load(profile.save(tmp_path))
    assert loaded.window.meta == stamped.meta
    assert loaded.window.timestamps == stamped.timestamps
    span = loaded.window.span()
    assert span.start == datetime(2026, 1, 1, 0, 1, tzinfo=UTC) and span.count == 60


def test_loading_a_directory_without_a_profile_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"profile\.json"):
        ReferenceProfile.load(tmp_path)


def test_profile_remembers_its_numerics_and_older_profiles_read_as_cpu_float32(
    profile: ReferenceProfile, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    w = profile.window
    noisy = np.clip(w.probabilities + rng.normal(0, 0.01, w.probabilities.shape), 1e-6, None)
    noisy /= noisy.sum(axis=1, keepdims=True)
    rescored = profile.rescored(noisy, w.embeddings + 0.01, "cpu/bfloat16")
    assert rescored.precision == "cpu/bfloat16" and profile.precision == "cpu/float32"
    assert rescored.thresholds == profile.thresholds and rescored.window.ids == w.ids
    assert np.allclose(rescored.window.probabilities, noisy)
    loaded = ReferenceProfile.load(rescored.save(tmp_path / "bf16"))
    assert loaded.precision == "cpu/bfloat16"
    assert np.allclose(loaded.window.embeddings, w.embeddings + 0.01)
    with pytest.raises(ValueError, match="do not fit"):
        profile.rescored(noisy[:10], w.embeddings[:10], "cpu/bfloat16")
    # A profile written before the field existed.
    root = profile.save(tmp_path / "old")
    manifest = json.loads((root / "profile.json").read_text())
    del manifest["precision"]
    (root / "profile.json").write_text(json.dumps(manifest))
    assert ReferenceProfile.load(root).precision == "cpu/float32"


def test_build_without_labels_has_no_calibrator() -> None:
    window = make_window(200, seed=4, labeled=0.0)
    profile = ReferenceProfile.build(window, ["the"], n_rounds=12, window_size=50)
    assert profile.calibrator is None
    assert profile.thresholds["labeled_quality"].method == "nominal"
    assert profile.thresholds["estimated_quality"].method == "nominal"
    assert check_all(profile, make_window(100, seed=5, shift=Shift(hard=0.5)), "v1").results


def test_window_validates_shapes() -> None:
    ok = make_window(5, seed=1)
    base = dict(
        ids=ok.ids,
        texts=ok.texts,
        class_names=ok.class_names,
        probabilities=ok.probabilities,
        embeddings=ok.embeddings,
        token_counts=ok.token_counts,
    )
    Window(**base)  # type: ignore[arg-type]
    for change in (
        {"texts": ok.texts[:4]},
        {"probabilities": ok.probabilities[:, :1]},
        {"embeddings": ok.embeddings[:3]},
        {"token_counts": ok.token_counts[:2]},
        {"class_names": ("a",)},
        {"labels": ["positive"]},
        {"probabilities": np.full((5, 2), math.nan)},
    ):
        with pytest.raises(ValueError):
            Window(**{**base, **change})  # type: ignore[arg-type]


def test_window_conveniences() -> None:
    w = make_window(50, seed=2, labeled=0.5)
    assert w.predicted_labels == [CLASSES[i] for i in w.probabilities.argmax(axis=1)]
    assert np.allclose(w.confidence, w.probabilities.max(axis=1))
    labeled = w.labeled()
    assert len(labeled) == w.n_labeled == sum(label is not None for label in w.labels)
    assert all(label is not None for label in labeled.labels)
    part = w.take([3, 1])
    assert part.ids == [w.ids[3], w.ids[1]] and np.array_equal(part.embeddings, w.embeddings[[3, 1]])
    assert w.without_labels().n_labeled == 0
    with pytest.raises(ValueError):
        w.probabilities[0, 0] = 0.5  # read-only


def _full_insight() -> Insight:
    return Insight(
        id="descriptors-0123",
        detector="descriptors",
        kind="text_drift",
        severity="critical",
        window=WindowSpan(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 1, 2, tzinfo=UTC), count=7),
        statistic=12.345678,
        threshold=3.1,
        p_value=4.5e-13,
        evidence=Evidence(
            descriptors=[
                DescriptorShift(
                    name="oov_share",
                    reference_mean=0.03,
                    current_mean=0.1,
                    reference_median=0.02,
                    current_median=0.09,
                    p_value=1e-12,
                    drifted=True,
                )
            ],
            slices=[
                SliceFinding(
                    key="meta.domain=kitchen",
                    field="meta.domain",
                    value="kitchen",
                    count=3,
                    share_reference=0.0,
                    share_current=0.4,
                    metric="error_rate",
                    reference_value=0.1,
                    current_value=0.3,
                    excess_errors=0.6,
                    share_p_value=1e-5,
                    loss_p_value=0.01,
                )
            ],
            metrics={"mmd2": 0.0123},
            examples=[Example(id="r1", text="Blender broke — “ouch”", score=0.5)],
        ),
        summary="Text descriptors drifted.",
        recommendation=Recommendation(
            action="retrain",
            adjust=Adjustments(max_length=256, slice_weights={"meta.domain=kitchen": 2.0}),
            because="new domain",
        ),
        cost=AccuracyCost(
            points=6.2, low=3.1, high=9.3, source="labeled", n=300, reference_accuracy=0.88, current_accuracy=0.818
        ),
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        model_version="v3",
        report="r/x.html",
    )


def test_insight_json_round_trip_is_exact() -> None:
    insight = _full_insight()
    text = insight.model_dump_json()
    assert Insight.model_validate_json(text) == insight
    assert json.loads(text)["schema_version"] == 1
    assert set(json.loads(text)) == {
        "schema_version",
        "id",
        "detector",
        "kind",
        "severity",
        "window",
        "statistic",
        "threshold",
        "p_value",
        "evidence",
        "summary",
        "recommendation",
        "cost",
        "created_at",
        "model_version",
        "report",
    }
    assert json.loads(text)["cost"]["source"] == "labeled"


@pytest.mark.parametrize(
    "change", [{"statistic": math.inf}, {"severity": "page"}, {"kind": "weather"}, {"p_value": 1.5}, {"surprise": 1}]
)
def test_insight_rejects_invalid_values(change: dict[str, object]) -> None:
    data = _full_insight().model_dump()
    data.update(change)
    with pytest.raises(ValidationError):
        Insight.model_validate(data)
