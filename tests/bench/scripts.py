"""Running a bench script as a user would, for the smoke tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NUMBER = r"-?\d+(?:\.\d+)?"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


def needs_data(relative: str) -> pytest.MarkDecorator:
    """Skip unless ``../shared/data/<relative>`` exists."""
    return pytest.mark.skipif(not (DATA / relative).is_file(), reason="needs the real data in ../shared/data")


def run_bench(arguments: list[str], timeout_s: float) -> tuple[str, list[str]]:
    """Run ``python <arguments>`` in the project root; its stdout and non-blank lines (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, lines
