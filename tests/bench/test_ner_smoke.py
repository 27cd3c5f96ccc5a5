"""bench/ner.py end to end in its tiny mode: CoNLL read, a token classifier trained, the per-type table."""

from __future__ import annotations

import re

import pytest

from tests.bench.scripts import NUMBER, needs_data, run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_data("conll2003/eng.train")]


def test_the_ner_bench_prints_the_per_type_table_and_its_summary() -> None:
    out, lines = run_bench(["bench/ner.py", "--smoke"], timeout_s=600)
    assert re.fullmatch(rf"ner: micro_f1={NUMBER} macro_f1={NUMBER} epochs=\d+ train_s={NUMBER}", lines[-1]), lines[-1]
    rows = {line.split()[0] for line in lines if re.match(rf"\s*\w+\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+\d+$", line)}
    assert {"LOC", "MISC", "ORG", "PER"} <= rows
    assert re.search(r"^epoch 1: [\d.]+ s on (cpu|cuda)", out, re.M)
