"""Data kept: stored production texts are bounded by age and count, kept only for labeled items when privacy
asks for it, and the README says what is stored where."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.config import Config
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.monitor import Monitor
from insightloop.daemon.state import MIGRATIONS, LabelRow, PredictionRow, StateStore, TextRow

README = Path(__file__).resolve().parents[2] / "README.md"
DAY = 86400.0


def add(store: StateStore, ids: list[str], at: float, scored: bool = True, labeled: bool = False) -> None:
    """Records as the monitor writes them: text, then prediction, then (maybe) label, all at ``at``."""
    store.add_texts([TextRow(i, f"text of {i}", None, {}) for i in ids], at)
    if scored:
        scores = {"positive": 0.9, "negative": 0.1}
        store.add_predictions([PredictionRow(i, "v0001", "positive", scores, [0.0] * 8, 4) for i in ids], at)
    if labeled:
        store.add_labels([LabelRow(i, "positive") for i in ids], at)


def texts(store: StateStore) -> dict[str, str | None]:
    with store.transaction() as conn:
        return {row["id"]: row["text"] for row in conn.execute("SELECT id, text FROM records")}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = StateStore(tmp_path / "state")
    yield opened
    opened.close()


def test_retention_by_age(store: StateStore) -> None:
    now = time.time()
    add(store, ["old-1", "old-2"], now - 8 * DAY, labeled=True)
    add(store, ["new-1"], now - 1 * DAY)
    store.add_texts([TextRow("never-scored", "x", None, {})], now - 9 * DAY)
    store.add_labels([LabelRow("label-only", "positive")], now - 10 * DAY)  # a label whose text never came
    assert store.apply_retention(7 * DAY, 1000, now) == 4
    assert set(texts(store)) == {"new-1"}


def test_retention_by_count_keeps_the_newest(store: StateStore) -> None:
    now = time.time()
    for n in range(12):
        add(store, [f"r{n:02d}-{k}" for k in range(100)], now - 3600 + n)
    assert store.apply_retention(7 * DAY, 1000, now) == 200
    kept = set(texts(store))
    assert len(kept) == 1000 and not any(i.startswith(("r00-", "r01-")) for i in kept)


def test_labeled_only_keeps_texts_only_where_retraining_needs_them(store: StateStore) -> None:
    now = time.time()
    add(store, ["old-labeled"], now - 4 * DAY, labeled=True)
    add(store, ["old-unlabeled"], now - 4 * DAY)
    store.add_texts([TextRow("old-unscored", "no prediction ever came", None, {})], now - 4 * DAY)
    add(store, ["recent-unlabeled"], now - 1 * DAY)
    store.apply_retention(7 * DAY, 1000, now, keep_text="all")
    assert all(texts(store).values()), "keep_text: all blanks nothing"
    store.apply_retention(7 * DAY, 1000, now, keep_text="labeled_only")
    kept = texts(store)
    assert kept["old-labeled"] == "text of old-labeled", "labeled texts are what retraining needs"
    assert kept["recent-unlabeled"] == "text of recent-unlabeled", "the current window keeps its texts"
    assert kept["old-unlabeled"] == "" and kept["old-unscored"] == "", "older unlabeled texts are not kept"
    # A label that arrives after its text was blanked does not bring an empty text into training data.
    store.add_labels([LabelRow("old-unlabeled", "negative")], now)
    assert [r.id for r in store.recent_records(100, labeled_only=True)] == ["old-labeled"]


def test_the_monitor_applies_the_configured_retention(make_config, store: StateStore) -> None:
    config = make_config(
        monitor={
            "retention_max_age_s": 2 * DAY,
            "retention_max_rows": 1000,
            "keep_text": "labeled_only",
            "min_window": 1_000_000,  # retention only: no detector run in this test
        },
        state={"dir": str(store.directory)},
    )
    now = time.time()
    add(store, [f"expired-{k}" for k in range(50)], now - 3 * DAY, labeled=True)
    add(store, [f"aging-{k}" for k in range(30)], now - 1.5 * DAY)
    add(store, [f"aging-labeled-{k}" for k in range(20)], now - 1.5 * DAY, labeled=True)
    add(store, [f"fresh-{k}" for k in range(1100)], now - 60)
    monitor = Monitor(config, store, Metrics())
    assert monitor.check() == []
    kept = texts(store)
    assert len(kept) == 1000, "bounded by monitor.retention_max_rows"
    assert not any(i.startswith(("expired-", "aging-")) for i in kept), "the oldest go first, by age then count"
    assert all(kept[i] for i in kept)

    config = make_config(
        monitor={"retention_max_age_s": 2 * DAY, "keep_text": "labeled_only", "min_window": 1_000_000},
        state={"dir": str(store.directory)},
    )
    add(store, [f"aging-{k}" for k in range(30)], now - 1.5 * DAY)
    add(store, [f"aging-labeled-{k}" for k in range(20)], now - 1.5 * DAY, labeled=True)
    Monitor(config, store, Metrics()).check()
    kept = texts(store)
    assert all(kept[f"aging-{k}"] == "" for k in range(30)), "unlabeled texts past half the age are blanked"
    assert all(kept[f"aging-labeled-{k}"] for k in range(20)), "labeled ones stay for retraining"


def test_readme_says_what_is_stored_where() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## What is stored where\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no 'What is stored where' section"
    section = match.group(1)
    tables = re.findall(r"CREATE TABLE (\w+)", "\n".join(MIGRATIONS))
    assert tables, "no tables found in daemon/state.py"
    missing = [t for t in tables if not re.search(rf"\b{t}\b", section, flags=re.I)]
    assert not missing, f"the section does not mention the tables {missing}"
    for key in ("monitor.retention_max_age_s", "monitor.retention_max_rows", "monitor.keep_text"):
        assert key in section, f"the section does not name the retention setting {key}"
    # The settings it names exist.
    defaults: dict[str, Any] = json.loads(Config().model_dump_json())
    for key in re.findall(r"`(\w+\.\w+)`", section):
        section_name, _, name = key.partition(".")
        if section_name in defaults:
            assert name in defaults[section_name], f"README names {key}, which is no setting"
