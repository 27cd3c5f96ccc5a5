"""The whole loop over the real broker with a tiny model:
shift → insight → retraining job → candidate → approval over the API → hot swap → new version serves."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.replay import replay
from insightloop.deploy import Registry, VersionStatus
from tests.integration.daemon_process import InProcessDaemon, http_get
from tests.integration.test_promotion import TOKEN, post
from tests.kafka_helpers import read_topic
from tests.synthetic import KITCHEN_NEGATIVE, KITCHEN_POSITIVE, domain_rows, sentiment_rows, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def loop_registry(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A champion with a reference profile large enough to calibrate thresholds (300 validation texts)."""
    from insightloop.daemon.train import train_first_model
    from insightloop.retrain import FineTuneSettings

    root = tmp_path_factory.mktemp("loop")
    data = write_jsonl(root / "train.jsonl", sentiment_rows(1200, seed=21, prefix="ref"))
    settings = FineTuneSettings(
        epochs=3, learning_rate=2e-3, batch_size=32, max_length=32, projection_dims=8, validation_share=0.25
    )
    train_first_model(
        data, root / "registry", str(tiny_base), settings, promote=True, progress=False, profile_rounds=100
    )
    return root / "registry"


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def detector_gauges(exposition: str) -> dict[str, dict[str, float]]:
    """Per-detector values of the drift gauges in a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, dict[str, float]] = {"insightloop_drift_statistic": {}, "insightloop_drift_detected": {}}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][sample.labels["detector"]] = sample.value
    return found


# A real retraining job of the tiny model that fits two CPU cores (the console's browser test uses it too).
FAST_JOBS = {
    "min_new_labels": 150,
    "cooldown_s": 0,
    "epochs": 4,
    "learning_rate": 2e-3,
    "batch_size": 32,
    "profile_rounds": 30,
    "projection_dims": 8,
    "device": "cpu",
    "poll_s": 1,
    "gate_min_improvement": 0.05,
}


def test_drift_is_found_retrained_approved_and_swapped(make_config, loop_registry: Path, tmp_path: Path) -> None:
    registry_root = tmp_path / "registry"
    shutil.copytree(loop_registry, registry_root)
    registry = Registry(registry_root)
    v1 = registry.production()
    config = make_config(
        registry={"path": str(registry_root)},
        api={"approval_token": TOKEN},
        monitor={
            "window_size": 300,
            "min_window": 150,
            "check_every_records": 150,
            "check_interval_s": 3600,
            "min_check_interval_s": 0,
        },
        controller=FAST_JOBS,
    )
    before = write_jsonl(tmp_path / "before.jsonl", sentiment_rows(300, seed=22, prefix="b"))
    after_rows = domain_rows(600, 23, "a", KITCHEN_POSITIVE, KITCHEN_NEGATIVE)
    after = write_jsonl(tmp_path / "after.jsonl", after_rows)
    with InProcessDaemon(config) as daemon:
        url = daemon.url
        # Unchanged traffic: checks run, nothing is raised.
        replay(config, before, labels_delay=20, progress=False)
        wait_for(lambda: daemon.app.metrics.checks._value.get() >= 1, 120, "a check on unchanged traffic")
        quiet = read_topic(config, config.topics.insights, until=lambda got: False, timeout_s=2)
        assert quiet == [], f"false alarm on unchanged traffic: {[i['summary'] for i in quiet]}"
        calm = detector_gauges(http_get(url + "/metrics")[1])
        assert calm["insightloop_drift_statistic"], "the detectors' statistics are exported"
        assert not any(calm["insightloop_drift_detected"].values()), calm

        # The stream shifts to another domain: an insight, then a job, then a candidate.
        replay(config, after, labels_delay=20, progress=False)
        insights = read_topic(config, config.topics.insights, until=lambda got: len(got) >= 1, timeout_s=180)
        assert insights and insights[0]["severity"] in ("warning", "critical")
        assert len({i["id"] for i in insights}) == 1, "one shift must be one insight, not a page per detector"
        assert insights[0]["evidence"]["examples"], "an insight shows example texts of the new traffic"
        assert Path(insights[0]["report"]).is_file()
        shifted = detector_gauges(http_get(url + "/metrics")[1])
        raised = {d for d, v in shifted["insightloop_drift_detected"].items() if v == 1}
        assert raised, shifted
        assert all(shifted["insightloop_drift_statistic"][d] > calm["insightloop_drift_statistic"][d] for d in raised)
        candidate = wait_for(
            lambda: next((r.version for r in registry.records() if r.status == VersionStatus.CANDIDATE), None),
            300,
            "a candidate",
        )
        record = registry.get(candidate)
        assert record.parent == v1 and record.insights and record.insights[0].id in {i["id"] for i in insights}
        assert record.gate is not None and record.gate.passed, record.gate
        job = wait_for(
            lambda: next(
                (j for j in json.loads(http_get(url + "/api/jobs")[1])["jobs"] if j["state"] == "succeeded"), None
            ),
            60,
            "the job to be recorded",
        )
        assert job["version"] == candidate and job["gate_passed"] is True

        # A person approves over the API; the scorer swaps; new texts carry the new version.
        status, body = post(f"{url}/api/models/{candidate}/approve", {"by": "ops", "note": "kitchen fixed"})
        assert status == 200, body
        more = write_jsonl(tmp_path / "more.jsonl", domain_rows(200, 24, "m", KITCHEN_POSITIVE, KITCHEN_NEGATIVE))
        swapped = f'insightloop_model_version_info{{version="{candidate}"}} 1.0'
        wait_for(lambda: swapped in http_get(url + "/metrics")[1], 60, "the swap")
        replay(config, more, progress=False)
        predictions = read_topic(
            config,
            config.topics.predictions,
            until=lambda got: sum(p["id"].startswith("m-") for p in got) >= 200,
            timeout_s=120,
        )
    fresh = [p for p in predictions if p["id"].startswith("m-")]
    assert {p["model_version"] for p in fresh} == {candidate}
    truth = {r["id"]: r["label"] for r in json.loads("[" + ",".join(more.read_text().splitlines()) + "]")}
    old = [p for p in predictions if p["id"].startswith("a-")]
    truth_after = {r["id"]: r["label"] for r in after_rows}
    accuracy_before = sum(p["label"] == truth_after[p["id"]] for p in old) / len(old)
    accuracy_after = sum(p["label"] == truth[p["id"]] for p in fresh) / len(fresh)
    assert accuracy_after > accuracy_before + 0.15, (accuracy_before, accuracy_after)
