"""bench/state_store.py runs end to end in its smoke mode (a throwaway PostgreSQL, the real reviews) and prints its
summary line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import find_server_binaries, missing_server

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "amazon_multidomain_sentiment"
NUMBER = r"\d+(?:\.\d+)?"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (DATA / "train.jsonl").is_file(), reason="needs the real data in ../shared/data"),
]


def test_the_state_store_bench_prints_its_summary() -> None:
    if find_server_binaries() is None:
        missing_server("initdb/pg_ctl/postgres not found")
    done = subprocess.run(
        [sys.executable, "bench/state_store.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    pattern = (
        rf"state_store: records=1000 sqlite_records_per_s={NUMBER} postgres_records_per_s={NUMBER} "
        rf"ratio={NUMBER} sqlite_window_ms={NUMBER} postgres_window_ms={NUMBER}"
    )
    assert re.fullmatch(pattern, last), last
