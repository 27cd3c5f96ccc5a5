"""A sampled monitor keeps a text, its prediction and its label together, through the real broker.

Two real monitors (their own consumer groups and state stores) read the same three topics: one with
``monitor.sample_rate: 0.3``, one at the default 1.0. The sampled one must store exactly one id subset, the
same for texts, predictions and labels, and count the rest as sampled out; the other must store everything.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.config import Config
from insightloop.daemon.events import PredictionEvent
from insightloop.daemon.kafka import ensure_topics
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.monitor import Monitor
from insightloop.daemon.state import DB_FILE, StateStore
from tests.kafka_helpers import produce_raw
from tests.synthetic import sentiment_rows

pytestmark = pytest.mark.integration

N = 600
KINDS = ("texts", "predictions", "labels")


def _prediction(row: dict[str, str]) -> bytes:
    positive = 0.8 if row["label"] == "positive" else 0.2
    event = PredictionEvent(
        id=row["id"],
        model_version="v-sampling",
        label=row["label"],
        scores={"negative": 1 - positive, "positive": positive},
        embedding=[positive, 1 - positive, 0.5],
        n_tokens=len(row["text"].split()),
        precision="cpu/float32",
    )
    return event.model_dump_json().encode()


def _ingested(metrics: Metrics, kind: str) -> float:
    read = metrics.registry.get_sample_value
    stored = read("insightloop_monitor_records_stored_total", {"kind": kind}) or 0.0
    return stored + (read("insightloop_monitor_records_sampled_out_total", {"kind": kind}) or 0.0)


def _stored_ids(state: Path) -> dict[str, set[str]]:
    with sqlite3.connect(state / DB_FILE) as conn:
        return {
            "texts": {r[0] for r in conn.execute("SELECT id FROM records WHERE text IS NOT NULL")},
            "predictions": {r[0] for r in conn.execute("SELECT id FROM records WHERE scored_at IS NOT NULL")},
            "labels": {r[0] for r in conn.execute("SELECT id FROM records WHERE label IS NOT NULL")}
            | {r[0] for r in conn.execute("SELECT id FROM waiting_labels")},
        }


def _run_until_ingested(monitors: list[tuple[Monitor, Metrics]], timeout_s: float = 120.0) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(monitor: Monitor) -> None:
        try:
            monitor.run(stop)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,), name=f"monitor-{n}") for n, (m, _) in enumerate(monitors)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not errors:
            if all(_ingested(metrics, kind) >= N for _, metrics in monitors for kind in KINDS):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    counts = [{kind: _ingested(metrics, kind) for kind in KINDS} for _, metrics in monitors]
    assert all(c == {kind: N for kind in KINDS} for c in counts), counts


def test_a_sampled_monitor_keeps_texts_predictions_and_labels_of_the_same_ids(
    make_config: Any, tmp_path: Path, unique: str
) -> None:
    rows = sentiment_rows(N, seed=11, prefix=f"s-{unique}")
    sampled_config: Config = make_config(
        monitor={"group_id": f"sampled-{unique}", "sample_rate": 0.3, "check_every_records": 10**9},
        state={"dir": str(tmp_path / "sampled")},
    )
    full_config: Config = make_config(
        monitor={"group_id": f"full-{unique}", "check_every_records": 10**9}, state={"dir": str(tmp_path / "full")}
    )
    topics = sampled_config.topics
    ensure_topics(sampled_config.kafka, topics.all())
    # Labels first for half of the ids (they wait for their text), after it for the rest, as late labels come.
    early, late = rows[: N // 2], rows[N // 2 :]
    produce_raw(
        sampled_config, topics.labels, [json.dumps({"id": r["id"], "label": r["label"]}).encode() for r in early]
    )
    produce_raw(sampled_config, topics.texts, [json.dumps({"id": r["id"], "text": r["text"]}).encode() for r in rows])
    produce_raw(sampled_config, topics.predictions, [_prediction(r) for r in rows])
    produce_raw(
        sampled_config, topics.labels, [json.dumps({"id": r["id"], "label": r["label"]}).encode() for r in late]
    )

    stores = [StateStore(sampled_config.state.dir), StateStore(full_config.state.dir)]
    sampled_metrics, full_metrics = Metrics(), Metrics()
    try:
        _run_until_ingested(
            [
                (Monitor(sampled_config, stores[0], sampled_metrics), sampled_metrics),
                (Monitor(full_config, stores[1], full_metrics), full_metrics),
            ]
        )
    finally:
        for store in stores:
            store.close()

    every_id = {r["id"] for r in rows}
    sampled, full = _stored_ids(sampled_config.state.dir), _stored_ids(full_config.state.dir)
    assert full == {kind: every_id for kind in KINDS}, "sample_rate 1 keeps everything"
    kept = sampled["texts"]
    assert sampled["predictions"] == kept and sampled["labels"] == kept, "one id subset for all three kinds"
    assert 0.2 * N < len(kept) < 0.4 * N, len(kept)
    for kind in KINDS:
        out = sampled_metrics.registry.get_sample_value("insightloop_monitor_records_sampled_out_total", {"kind": kind})
        assert out == N - len(kept), (kind, out)
        assert full_metrics.registry.get_sample_value(
            "insightloop_monitor_records_sampled_out_total", {"kind": kind}
        ) in (
            None,
            0.0,
        )
    with sqlite3.connect(sampled_config.state.dir / DB_FILE) as conn:
        joined = conn.execute(
            "SELECT COUNT(*) FROM records WHERE label IS NOT NULL AND scored_at IS NOT NULL"
        ).fetchone()
    assert joined[0] == len(kept), "every kept label joined its kept text and prediction"
