"""Evidently reports (HTML + JSON) for a reference profile and a window, and the runnable docstrings."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

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
