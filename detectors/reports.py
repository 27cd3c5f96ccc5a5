"""Evidently reports (HTML + JSON) for people to open; built apart from the checks, which stay fast.

Evidently is imported lazily (it takes seconds to import): importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from insightloop.detectors._evidently import ensure_evidently
from insightloop.detectors.descriptors import DESCRIPTOR_NAMES
from insightloop.detectors.embedding_stats import embedding_state
from insightloop.detectors.profile import ReferenceProfile
from insightloop.detectors.window import Window

#: Labeled rows a window needs on both sides for a classification-quality report.
MIN_REPORT_LABELS = 10


def report_frame(profile: ReferenceProfile, window: Window, *, embedding_dims: int = 0) -> Any:
    """A pandas DataFrame of what the reports show: descriptors, prediction, confidence, scores, target.

    ``embedding_dims`` > 0 adds that many whitened principal components of the embeddings (``emb_0``…),
    fitted on the reference, for Evidently's embeddings drift.
    """
    import pandas as pd  # type: ignore[import-untyped]

    descriptors = profile.describe(window)
    frame = pd.DataFrame({name: descriptors[name] for name in DESCRIPTOR_NAMES})
    frame["prediction"] = window.predicted_labels
    frame["confidence"] = window.confidence
    for j, name in enumerate(window.class_names):
        frame[f"score_{name}"] = window.probabilities[:, j]
    frame["target"] = pd.Series(window.labels, dtype="object")
    if embedding_dims > 0:
        state = embedding_state(profile, n_components=embedding_dims)
        if state is not None:
            reduced = state.reduce(window.embeddings)
            for i in range(reduced.shape[1]):
                frame[f"emb_{i}"] = reduced[:, i]
    return frame


def drift_report(
    profile: ReferenceProfile, current: Window, *, embedding_dims: int = 4, evidently_embeddings: bool = False
) -> Any:
    """Evidently report: drift of each descriptor, the predicted label, confidence, class scores and the
    first ``embedding_dims`` whitened principal components of the embeddings (fitted on the reference).

    ``evidently_embeddings=True`` adds Evidently's ``EmbeddingsDrift`` on those components; it renders a
    t-SNE plot, which takes seconds to minutes, so it is off by default. Returns the Evidently snapshot;
    write it with :func:`save_report`.
    """
    ensure_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    ref = report_frame(profile, profile.window, embedding_dims=embedding_dims).drop(columns=["target"])
    cur = report_frame(profile, current, embedding_dims=embedding_dims).drop(columns=["target"])
    emb_cols = [c for c in ref.columns if c.startswith("emb_")]
    numeric = [c for c in ref.columns if c != "prediction"]
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=["prediction"],
        embeddings={"embeddings": emb_cols} if emb_cols and evidently_embeddings else None,
    )
    methods: dict[str, Any] = {c: "ks" for c in numeric}
    methods["prediction"] = "chisquare"
    metrics: list[Any] = [DataDriftPreset(columns=[*numeric, "prediction"], per_column_method=methods)]
    if emb_cols and evidently_embeddings:
        metrics.append(EmbeddingsDrift(embeddings_name="embeddings"))
    report = Report(metrics)
    with np.errstate(all="ignore"):  # Evidently correlates columns; a constant one divides by zero
        return report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )


def quality_report(profile: ReferenceProfile, current: Window) -> Any | None:
    """Evidently classification report on the labeled rows of both windows (None with too few labels)."""
    ensure_evidently()
    ref_rows = profile.window.labeled()
    cur_rows = current.labeled()
    if len(ref_rows) < MIN_REPORT_LABELS or len(cur_rows) < MIN_REPORT_LABELS:
        return None
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset

    ref = report_frame(profile, ref_rows)
    cur = report_frame(profile, cur_rows)
    definition = DataDefinition(
        numerical_columns=[c for c in ref.columns if c not in ("prediction", "target")],
        categorical_columns=["prediction", "target"],
        classification=[
            BinaryClassification(target="target", prediction_labels="prediction", pos_label=current.class_names[1])
            if len(current.class_names) == 2
            else MulticlassClassification(target="target", prediction_labels="prediction")
        ],
    )
    with np.errstate(all="ignore"):
        return Report([ClassificationPreset()]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )


def build_reports(profile: ReferenceProfile, current: Window, *, embedding_dims: int = 4) -> dict[str, Any]:
    """``{"drift": snapshot}``, plus ``"quality"`` when both sides have labels."""
    reports = {"drift": drift_report(profile, current, embedding_dims=embedding_dims)}
    quality = quality_report(profile, current)
    if quality is not None:
        reports["quality"] = quality
    return reports


def save_report(snapshot: Any, directory: Path | str, stem: str) -> tuple[Path, Path]:
    """Write an Evidently snapshot as ``<stem>.html`` and ``<stem>.json`` in ``directory``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    html_path, json_path = root / f"{stem}.html", root / f"{stem}.json"
    snapshot.save_html(str(html_path))
    snapshot.save_json(str(json_path))
    return html_path, json_path


def write_reports(
    profile: ReferenceProfile, current: Window, directory: Path | str, stem: str, *, embedding_dims: int = 4
) -> list[Path]:
    """Build and save every report; returns the written paths (HTML, JSON per report)."""
    paths: list[Path] = []
    for kind, snapshot in build_reports(profile, current, embedding_dims=embedding_dims).items():
        paths.extend(save_report(snapshot, directory, f"{stem}-{kind}"))
    return paths
