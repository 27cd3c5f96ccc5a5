"""bench/loop.py runs its whole plumbing in its smoke size: a first model, the real daemon on a real shift, the
job's outcome, the upper bound and the TF-IDF anchor, and its summary lines (few rows, 64 tokens: the figures
mean little, their presence and range do)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bench.scripts import needs_data, run_bench

FIGURE = r"(-?\d+(?:\.\d+)?|nan)"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    needs_data("amazon_multidomain_sentiment/test.jsonl"),
]

CASE_LINE = re.compile(
    rf"loop: case=books-kitchen seeds=1 size=smoke delay=(-?\d+) false_alarms=(\d+) acc_none={FIGURE} "
    rf"acc_loop={FIGURE} acc_oracle={FIGURE} acc_tfidf={FIGURE} gap_closed={FIGURE} rate=\S+ "
    r"deviations=approval=bench_approves_what_the_gate_passed"
)


def test_the_loop_bench_runs_the_daemon_a_job_and_every_arm(tmp_path: Path) -> None:
    arguments = ["bench/loop.py", "--smoke", "--case", "books-kitchen", "--seeds", "1", "--workdir", str(tmp_path)]
    out, lines = run_bench(arguments, timeout_s=840)
    assert re.fullmatch(r"loop: cases=1 seeds=1 min_gap_closed=" + FIGURE, lines[-1]), lines[-1]
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
