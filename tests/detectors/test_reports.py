"""Evidently reports (HTML + JSON) for a reference profile and a window, and the runnable docstrings."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from insightloop.detectors import ReferenceProfile, build_reports, save_report, write_reports
from tests.detectors.worlds import Shift, make_window

MODULES = [
    "insightloop.detectors.calibration",
    "insightloop.detectors.drift",
    "insightloop.detectors.profile",
    "insightloop.detectors.quality",
    "insightloop.detectors.slices",
    "insightloop.detectors.tracker",
    "insightloop.detectors.window",
]


def test_reports_cover_descriptors_predictions_and_labels(profile: ReferenceProfile, tmp_path: Path) -> None:
    current = make_window(200, seed=61, shift=Shift(domain=0.5), prefix="cur")
    reports = build_reports(profile, current)
    assert set(reports) == {"drift", "quality"}
    html, data = save_report(reports["drift"], tmp_path / "reports", "window-1")
    assert html.name == "window-1.html" and data.name == "window-1.json"
    assert html.stat().st_size > 1000
    names = " ".join(m["metric_name"] for m in json.loads(data.read_text())["metrics"])
    for column in ("oov_share", "length_tokens", "prediction", "confidence"):
        assert f"column={column}" in names
    assert "column=emb_0" in names
    quality = json.loads(save_report(reports["quality"], tmp_path, "q")[1].read_text())
    assert any(m["metric_name"].startswith("Accuracy") for m in quality["metrics"])


def test_unlabeled_window_gets_only_the_drift_report(profile: ReferenceProfile, tmp_path: Path) -> None:
    current = make_window(120, seed=62, prefix="cur", labeled=0.0)
    paths = write_reports(profile, current, tmp_path, "w", embedding_dims=0)
    assert sorted(p.name for p in paths) == ["w-drift.html", "w-drift.json"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_a_window_lacking_a_class_still_gets_its_reports(profile: ReferenceProfile, tmp_path: Path) -> None:
    """The issue's repro: when a window's labels and predictions hold one class only, Evidently raised
    "Cannot compute TPR", write_reports wrote nothing and the insight got ``report: null``."""
    current = make_window(150, seed=63, prefix="cur")
    probabilities = np.tile([0.9, 0.1], (len(current.ids), 1))  # every row predicted negative
    current = dataclasses.replace(
        current,
        probabilities=probabilities,
        labels=[None if label is None else current.class_names[0] for label in current.labels],
    )
    paths = write_reports(profile, current, tmp_path, "w", embedding_dims=0)
    assert sorted(p.name for p in paths) == ["w-drift.html", "w-drift.json", "w-quality.html", "w-quality.json"]
    html = (tmp_path / "w-quality.html").read_text()
    assert "Classification metrics are left out" in html and "lack &#x27;positive&#x27;" in html
    assert json.loads((tmp_path / "w-quality.json").read_text())["note"].startswith("Classification metrics")
