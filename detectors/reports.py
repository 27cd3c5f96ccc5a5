"""Evidently reports (HTML + JSON) for people to open; built apart from the checks, which stay fast.

Evidently is imported lazily (it takes seconds to import): importing this module is cheap.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
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
    """Evidently classification report on the labeled rows of both windows (None with too few labels).

    Evidently's classification metrics need at least two classes among the labels and predictions of each
    side (with one, it cannot compute a true-positive rate). When a window lacks them, the report shows the
    counts of labels and predictions instead and says so at its top.
    """
    ensure_evidently()
    ref_rows = profile.window.labeled()
    cur_rows = current.labeled()
    if len(ref_rows) < MIN_REPORT_LABELS or len(cur_rows) < MIN_REPORT_LABELS:
        return None
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.metrics import UniqueValueCount
    from evidently.presets import ClassificationPreset

    ref = report_frame(profile, ref_rows)
    cur = report_frame(profile, cur_rows)
    columns = {
        "numerical_columns": [c for c in ref.columns if c not in ("prediction", "target")],
        "categorical_columns": ["prediction", "target"],
    }
    missing = _missing_classes(current.class_names, {"current": cur, "reference": ref})
    if not missing:
        definition = DataDefinition(
            **columns,
            classification=[
                BinaryClassification(target="target", prediction_labels="prediction", pos_label=current.class_names[1])
                if len(current.class_names) == 2
                else MulticlassClassification(target="target", prediction_labels="prediction")
            ],
        )
        try:
            with np.errstate(all="ignore"):
                return Report([ClassificationPreset()]).run(
                    Dataset.from_pandas(cur, data_definition=definition),
                    Dataset.from_pandas(ref, data_definition=definition),
                )
        except (ValueError, KeyError, IndexError, ZeroDivisionError) as exc:
            # Evidently's failures on degenerate label sets are not typed; the counts below still inform.
            missing = f"Evidently could not compute the classification metrics ({type(exc).__name__}: {exc})"
    definition = DataDefinition(**columns)
    with np.errstate(all="ignore"):
        snapshot = Report([UniqueValueCount(column="target"), UniqueValueCount(column="prediction")]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
    note = f"Classification metrics are left out: {missing}. Shown instead: counts of labels and predictions."
    return NotedSnapshot(snapshot, note)


def _missing_classes(class_names: Sequence[str], frames: dict[str, Any]) -> str:
    """Which side has fewer than two classes among its labels and predictions ('' when both have enough)."""
    problems = []
    for side, frame in frames.items():
        present = set(frame["target"].dropna()) | set(frame["prediction"].dropna())
        if len(present) < 2:
            absent = [c for c in class_names if c not in present]
            problems.append(f"the {side} window's labels and predictions lack {', '.join(map(repr, absent))}")
    return "; ".join(problems)


class NotedSnapshot:
    """An Evidently snapshot that carries a note for people: shown at the top of the HTML, kept in the JSON."""

    def __init__(self, snapshot: Any, note: str) -> None:
        self.snapshot = snapshot
        self.note = note

    def save_html(self, path: str) -> None:
        """The snapshot's HTML with the note as a banner at the top of the body."""
        self.snapshot.save_html(path)
        html = Path(path).read_text(encoding="utf-8")
        banner = (
            '<div class="insightloop-note" style="font-family:sans-serif;background:#fff4ce;border:1px solid #c9a'
            f'100;padding:.6rem 1rem;margin:.5rem">{escape(self.note)}</div>'
        )
        at = html.find("<body")
        at = html.find(">", at) + 1 if at >= 0 else 0
        Path(path).write_text(html[:at] + banner + html[at:], encoding="utf-8")

    def save_json(self, path: str) -> None:
        """The snapshot's JSON with a top-level ``note``."""
        self.snapshot.save_json(path)
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        Path(path).write_text(json.dumps({"note": self.note, **data}), encoding="utf-8")


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
