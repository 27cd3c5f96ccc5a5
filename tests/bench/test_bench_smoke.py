"""The benchmark scripts run end to end in their tiny modes and print their summary line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.scripts import ENV, NUMBER, ROOT, needs_data

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_data("amazon_multidomain_sentiment/test.jsonl")]

SCRIPTS = {
    "scoring": (
        [sys.executable, "bench/scoring.py", "--smoke"],
        rf"scoring: baseline_tps={NUMBER} ours_tps={NUMBER} ratio={NUMBER} e2e_share={NUMBER} "
        rf"ratio_like={NUMBER} acc_delta_points={NUMBER}",
    ),
    "memory": (
        [sys.executable, "bench/memory.py", "--smoke"],
        rf"memory: start_mb={NUMBER} end_mb={NUMBER} growth_mb={NUMBER}",
    ),
    "monitor": (
        [sys.executable, "bench/monitor.py", "--smoke"],
        rf"monitor: records=\d+ records_per_s={NUMBER} checks=\d+ check_ms_p50={NUMBER} check_ms_p95={NUMBER} "
        rf"sample_rate={NUMBER} texts_per_s={NUMBER} baseline_records_per_s={NUMBER} ratio={NUMBER}",
    ),
    "estimates": (
        [sys.executable, "bench/estimates.py", "--smoke"],
        rf"estimates: shipped=\w+ mae_points={NUMBER} shifts=\d+",
    ),
    "int8_candidates": (
        [sys.executable, "bench/int8_candidates.py", "--smoke"],
        rf"int8_candidates: shipped_x_fp32={NUMBER} best=\w+@\d+/\d+ best_x_fp32={NUMBER} best_agreement={NUMBER}",
    ),
    "gpu": (
        ["bash", "bench/gpu.sh", "--smoke"],
        rf"gpu: device=\S+ best_bf16_tps={NUMBER} best_batch=\d+ epoch_s={NUMBER} train_tps={NUMBER}",
    ),
}


def test_each_bench_script_prints_its_summary_line(tmp_path: Path) -> None:
    # The three run side by side: most of their time is start-up, broker joins and waits, not CPU.
    running = {}
    for name, (command, _) in SCRIPTS.items():
        out = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        running[name] = (subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=ENV), out)
    failures = []
    for name, (process, out) in running.items():
        try:
            code = process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        out.close()
        text = (tmp_path / f"{name}.log").read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if code != 0 or not re.fullmatch(SCRIPTS[name][1], last):
            failures.append(f"{name}: exit {code}, last line {last!r}\n{text[-2000:]}")
    assert not failures, "\n\n".join(failures)
