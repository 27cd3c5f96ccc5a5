"""`insightloop demo --yes` — the README's main job — runs to its summary on embedded defaults, for a text
classifier and (``--task ner``) for a named-entity recogniser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The real MiniLM trains twice (first model, candidate): minutes on 2 cores, beyond the default 300 s timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]


def run_demo(workdir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "insightloop.daemon", "demo", "--yes", "--workdir", str(workdir), *options],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
        check=False,
    )


def test_demo_runs_the_whole_loop_to_its_summary(tmp_path: Path) -> None:
    done = run_demo(tmp_path / "demo")
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-3000:]}"
    assert "insight [" in out, out[-3000:]
    # not a terminal: progress comes as periodic lines, never as redrawn bars
    assert "texts scored so far" in out and "still training the first model" in out
    assert "\r" not in out + done.stderr
    assert "retraining job" in out and "evaluated against the champion" in out
    assert "insightloop models approve v0002" in out
    assert "v0002 is in production" in out, out[-3000:]
    summary = out.split("== summary ==", 1)[1]
    assert "accuracy on drifted traffic" in summary
    before, after = (float(x.split()[0]) for x in summary.split("accuracy on drifted traffic: ", 1)[1].split(" → "))
    # Figures that look like real traffic, not a toy: good but imperfect in domain, a real drop after the
    # shift, a real recovery with the retrained model.
    first = float(summary.split("validation accuracy ", 1)[1].split()[0])
    assert 0.80 <= first <= 0.96, summary
    assert before <= first - 0.05, summary
    assert after > before, summary
    reports = [Path(line.strip()) for line in summary.splitlines() if line.strip().endswith(".html")]
    assert reports and all(p.is_file() for p in reports)


def test_the_entity_demo_runs_the_whole_loop_to_its_summary(tmp_path: Path) -> None:
    done = run_demo(tmp_path / "demo", "--task", "ner")
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-3000:]}"
    insight = next(line for line in out.splitlines() if "insight [" in line)
    assert "ORG" in insight, insight  # the type the new desk brought, by name
    # The candidate's evaluation carries the per-type table against the champion.
    table = out.split("evaluated against the champion:", 1)[1].split("gate:", 1)[0]
    assert "entity_micro_f1" in table and all(f"f1 {kind}" in table for kind in ("ORG", "PER", "LOC"))
    assert "v0002 is in production" in out, out[-3000:]
    summary = out.split("== summary ==", 1)[1]
    first = float(summary.split("validation entity micro F1 ", 1)[1].split()[0])
    drifted = summary.split("entity micro F1 on drifted traffic: ", 1)[1]
    before, after = (float(x.split()[0]) for x in drifted.split(" → "))
    # A real drop when the new desk starts, and a real recovery once the retrained recogniser serves.
    assert before <= first - 0.15, summary
    assert after >= before + 0.15, summary
    reports = [Path(line.strip()) for line in summary.splitlines() if line.strip().endswith(".html")]
    assert reports and all(p.is_file() for p in reports)
    assert any(p.name == "entities.html" for p in reports), "the candidate's per-type evaluation page"
    assert any(p.name.endswith("-drift.html") for p in reports), "Evidently's drift report of the descriptors"
