"""bench/alarms.py runs the real daemon end to end in its smoke size (tiny BERT, a few hundred real texts)."""

from __future__ import annotations

import re

import pytest

from tests.bench.scripts import needs_data, run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_data("sst2/train.jsonl")]

SUMMARY = re.compile(
    r"alarms: texts_in_distribution=(\d+) false_alarms=(\d+) budget_texts=(\d+) median_delay=(-?\d+) max_delay=(-?\d+)"
)


def test_the_alarm_bench_runs_the_daemon_and_prints_its_summary() -> None:
    out, lines = run_bench(["bench/alarms.py", "--smoke"], timeout_s=900)
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary, lines[-1]
    texts, _, budget, _, _ = (int(v) for v in summary.groups())
    # Two in-distribution streams of 300 texts and three pre-change parts of 200: all counted.
    assert texts == 2 * 300 + 3 * 200
    assert budget == 1_000_000
    checks = re.search(r"^(\d+) checks;", out, re.MULTILINE)
    assert checks and int(checks.group(1)) > 0, "the daemon's monitor ran no check"
    for stream in ("books", "sst2"):
        assert re.search(rf"^  {stream} +texts= +300 .*checks= +[1-9]", out, re.MULTILINE), stream
