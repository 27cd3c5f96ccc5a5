"""The daemon as real processes: drain on SIGTERM and restart; two scorers sharing one group."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from insightloop.daemon.broker import free_port
from insightloop.daemon.kafka import ensure_topics
from insightloop.daemon.replay import replay
from tests.integration.daemon_process import DaemonProcess, http_get
from tests.integration.test_scoring import metric_values
from tests.kafka_helpers import read_topic
from tests.synthetic import sentiment_rows, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigterm_drains_and_restart_loses_nothing(make_config, tmp_path: Path) -> None:
    batch = 16
    config = make_config(scorer={"max_batch_size": batch, "max_wait_ms": 20})
    ensure_topics(config.kafka, config.topics.all())
    rows = sentiment_rows(1000, seed=3, prefix="d")
    source = write_jsonl(tmp_path / "stream.jsonl", rows)
    first = DaemonProcess(config, tmp_path, "first", free_port()).start()
    try:
        first.wait_ready()
        replay(config, source, progress=False)
        # Stop it while the stream is still being worked through.
        partial = read_topic(config, config.topics.predictions, until=lambda got: len(got) >= 100, timeout_s=60)
        assert 100 <= len(partial) < 1000, "the first daemon should be mid-stream when it is stopped"
        assert first.terminate() == 0, first.log_text()
    finally:
        first.kill()
    assert "scorer stopped" in first.log_text()
    second = DaemonProcess(config, tmp_path, "second", free_port()).start()
    try:
        second.wait_ready()
        predictions = read_topic(
            config,
            config.topics.predictions,
            until=lambda got: len({p["id"] for p in got}) >= 1000,
            timeout_s=120,
            settle_s=2,
        )
        assert second.terminate() == 0, second.log_text()
    finally:
        second.kill()
    counts = Counter(p["id"] for p in predictions)
    assert set(counts) == {row["id"] for row in rows}, "an id was lost across the restart"
    rescored = sum(n - 1 for n in counts.values())
    assert rescored <= batch, f"the restart re-scored {rescored} texts, more than one batch ({batch})"


def test_two_scorers_share_the_partitions(make_config, tmp_path: Path) -> None:
    config = make_config(scorer={"max_batch_size": 32})
    ensure_topics(config.kafka, config.topics.all())
    scorers = [DaemonProcess(config, tmp_path, f"scorer{i}", free_port()).start() for i in range(2)]
    try:
        for scorer in scorers:
            scorer.wait_ready()
        # Wait for the group to settle: each holds some partitions, together all four, none twice.
        deadline = time.monotonic() + 60
        while True:
            held = []
            for scorer in scorers:
                _, body = http_get(scorer.url + "/readyz")
                held.append(set(json.loads(body)["workers"]["scorer"]["assigned_partitions"]))
            if all(held) and not (held[0] & held[1]) and len(held[0] | held[1]) == 4:
                break
            assert time.monotonic() < deadline, f"the group did not settle: {held}"
            time.sleep(0.5)
        rows = sentiment_rows(1000, seed=4, prefix="s")
        replay(config, write_jsonl(tmp_path / "stream.jsonl", rows), progress=False)
        predictions = read_topic(
            config,
            config.topics.predictions,
            until=lambda got: len({p["id"] for p in got}) >= 1000,
            timeout_s=120,
            settle_s=1,
        )
        scored = []
        for scorer in scorers:
            _, text = http_get(scorer.url + "/metrics")
            scored.append(metric_values(text)[("insightloop_texts_scored_total", ())])
        for scorer in scorers:
            assert scorer.terminate() == 0, scorer.log_text()
    finally:
        for scorer in scorers:
            scorer.kill()
    assert {p["id"] for p in predictions} == {row["id"] for row in rows}
    assert all(n > 0 for n in scored), f"one scorer did no work: {scored}"
    assert sum(scored) == len(predictions) == 1000, (scored, len(predictions))
