"""bench/alarms.py runs the real daemon end to end in its smoke size (tiny BERT, a few hundred real texts)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "sst2" / "train.jsonl").is_file(), reason="needs the real data in ../shared/data"),
]

SUMMARY = re.compile(
    r"alarms: texts_in_distribution=(\d+) false_alarms=(\d+) budget_texts=(\d+) median_delay=(-?\d+) max_delay=(-?\d+)"
)


def test_the_alarm_bench_runs_the_daemon_and_prints_its_summary(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "bench/alarms.py", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary, lines[-1]
    texts, _, budget, _, _ = (int(v) for v in summary.groups())
    # Two in-distribution streams of 300 texts and three pre-change parts of 200: all counted.
    assert texts == 2 * 300 + 3 * 200
    assert budget == 1_000_000
    checks = re.search(r"^(\d+) checks;", done.stdout, re.MULTILINE)
    assert checks and int(checks.group(1)) > 0, "the daemon's monitor ran no check"
    for stream in ("books", "sst2"):
        assert re.search(rf"^  {stream} +texts= +300 .*checks= +[1-9]", done.stdout, re.MULTILINE), stream
