"""Metrics are observers behind a safety net: a failing observer is logged, never fatal."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from insightloop.daemon.metrics import Metrics, ObserverSet, PrometheusObserver
from insightloop.daemon.replay import replay
from insightloop.daemon.scorer import Scorer
from tests.kafka_helpers import read_topic
from tests.synthetic import sentiment_rows, write_jsonl


class BrokenObserver(PrometheusObserver):
    """An exporter that fails in every hook, as a misconfigured or buggy one would."""

    def __getattribute__(self, name: str) -> object:
        if name.startswith("on_"):

            def broken(*args: object) -> None:
                raise RuntimeError(f"exporter down in {name}")

            return broken
        return super().__getattribute__(name)


HOOKS: list[tuple[str, tuple[object, ...], str, dict[str, str], float]] = [
    ("on_batch", (16, 0.2), "insightloop_texts_scored_total", {}, 16.0),
    ("on_dead_letter", ("not_json",), "insightloop_dead_letters_total", {"reason": "not_json"}, 1.0),
    ("on_check", (0.5,), "insightloop_monitor_checks_total", {}, 1.0),
    ("on_ingested", ("texts", 90, 10), "insightloop_monitor_records_sampled_out_total", {"kind": "texts"}, 10.0),
    ("on_ingested", ("labels", 7, 0), "insightloop_monitor_records_stored_total", {"kind": "labels"}, 7.0),
    ("on_detector", ("embeddings", 2.5, True), "insightloop_drift_detected", {"detector": "embeddings"}, 1.0),
    ("on_detector", ("embeddings", 2.5, True, 1.5), "insightloop_drift_threshold", {"detector": "embeddings"}, 1.5),
    ("on_accuracy", (0.8, None), "insightloop_labeled_accuracy", {}, 0.8),
    (
        "on_insight_published",
        ("text_drift", "critical"),
        "insightloop_insights_total",
        {"kind": "text_drift", "severity": "critical"},
        1.0,
    ),
    ("on_job", ("failed",), "insightloop_retrain_jobs_total", {"state": "failed"}, 1.0),
    ("on_jobs_running", (2, 30.0), "insightloop_retrain_jobs_running", {}, 2.0),
    ("on_candidates_pending", (1, 90.0), "insightloop_candidate_oldest_pending_seconds", {}, 90.0),
]


@pytest.mark.parametrize(("hook", "args", "sample", "labels", "expected"), HOOKS, ids=[h[0] for h in HOOKS])
def test_a_failing_observer_is_logged_and_the_next_one_still_exports(
    hook: str,
    args: tuple[object, ...],
    sample: str,
    labels: dict[str, str],
    expected: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    observers = ObserverSet([BrokenObserver(Metrics()), PrometheusObserver(metrics)])
    with caplog.at_level(logging.ERROR, logger="insightloop.daemon.metrics"):
        getattr(observers, hook)(*args)
    assert metrics.registry.get_sample_value(sample, labels) == expected
    assert [r.getMessage() for r in caplog.records] == [f"observer BrokenObserver failed in {hook}"]


@pytest.mark.integration
def test_the_scorer_keeps_scoring_when_its_observer_fails(make_config, tmp_path: Path) -> None:
    config = make_config()
    rows = sentiment_rows(60, seed=3, prefix="obs")
    scorer = Scorer(config, BrokenObserver(Metrics()))
    stop = threading.Event()
    thread = threading.Thread(target=scorer.run, args=(stop,), name="scorer-under-test")
    thread.start()
    try:
        replay(config, write_jsonl(tmp_path / "stream.jsonl", rows), progress=False)
        predictions = read_topic(
            config, config.topics.predictions, until=lambda got: len({p["id"] for p in got}) >= 60, settle_s=0.5
        )
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert {p["id"] for p in predictions} == {r["id"] for r in rows}
