"""bench/loop.py runs its whole plumbing in its smoke size: a first model, the real daemon on a real shift, the
job's outcome, the upper bound and the TF-IDF anchor, and its summary lines (a tiny BERT: the figures mean
nothing, their presence and range do)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "amazon_multidomain_sentiment"
NUMBER = r"(-?\d+(?:\.\d+)?|nan)"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not (DATA / "test.jsonl").is_file(), reason="needs the real data in ../shared/data"),
]

CASE_LINE = re.compile(
    rf"loop: case=books-kitchen seeds=1 size=smoke delay=(-?\d+) false_alarms=(\d+) acc_none={NUMBER} "
    rf"acc_loop={NUMBER} acc_oracle={NUMBER} acc_tfidf={NUMBER} gap_closed={NUMBER} rate=\S+ "
    r"deviations=approval=bench_approves_what_the_gate_passed"
)


def test_the_loop_bench_runs_the_daemon_a_job_and_every_arm(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [
            sys.executable,
            "bench/loop.py",
            "--smoke",
            "--case",
            "books-kitchen",
            "--seeds",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    out = done.stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert done.returncode == 0 and lines, out[-3000:] + done.stderr[-3000:]
    assert re.fullmatch(r"loop: cases=1 seeds=1 min_gap_closed=" + NUMBER, lines[-1]), lines[-1]
    case = CASE_LINE.fullmatch(lines[-2])
    assert case, lines[-2]
    accuracies = [float(v) for v in case.groups()[2:6]]
    assert all(0.0 <= a <= 1.0 for a in accuracies), accuracies
    # TF-IDF on a few hundred real reviews is far from chance on their held-out kitchen reviews.
    assert accuracies[3] > 0.6, lines[-2]
    # What happened is said, whatever it was: an insight and the job's outcome, or that none came.
    assert re.search(r"^  delay -?\d+, false alarms \d+; accuracy none", out, re.MULTILINE), out[-3000:]
    outcome = ("the gate refused", "plan: ", "no retraining job started", "failed:")
    assert any(word in out for word in outcome), out[-3000:]
