"""Approve over HTTP → every scorer swaps between batches; a broken version is refused; rollback works."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.replay import replay
from insightloop.deploy import ModelArtifact, ModelEvent, Registry, VersionRecord, VersionStatus
from insightloop.deploy.events import utc_now
from tests.integration.daemon_process import InProcessDaemon, http_get
from tests.integration.test_scoring import metric_values
from tests.kafka_helpers import produce_raw, read_topic
from tests.synthetic import sentiment_rows, write_jsonl

pytestmark = pytest.mark.integration
TOKEN = "test-operator-token-0123456789"


def post(url: str, body: dict[str, Any], token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def register_copy(registry: Registry, source: str, corrupt: bool = False) -> str:
    """Register a new candidate holding the same weights as ``source`` (or broken weights)."""
    artifact = ModelArtifact.load(registry.path_of(source), device="cpu")

    def write(path: Path) -> None:
        artifact.save(path)
        if corrupt:
            (path / "model" / "model.safetensors").write_bytes(b"\0garbage")

    record = VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=source,
        base_model=source,
        labels=list(artifact.labels),
    )
    return registry.create_version(write, record, by="test").version


@pytest.fixture
def registry_copy(trained_registry: Path, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(trained_registry, target)
    return target


def wait_for(predicate: Any, timeout_s: float = 60, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.2)


def test_approve_swaps_refuses_broken_versions_and_rolls_back(make_config, registry_copy: Path, tmp_path: Path) -> None:
    config = make_config(
        registry={"path": str(registry_copy)},
        api={"approval_token": TOKEN},
        scorer={"max_batch_size": 16, "max_wait_ms": 20, "model_poll_s": 3600},
    )
    registry = Registry(registry_copy)
    v1 = registry.production()
    assert v1 is not None
    v2 = register_copy(registry, v1)
    rows = sentiment_rows(1200, seed=11, prefix="p")
    stream = write_jsonl(tmp_path / "stream.jsonl", rows)
    with InProcessDaemon(config) as daemon:
        url = daemon.url
        # Nobody without a token changes what serves traffic.
        status, body = post(f"{url}/api/models/{v2}/approve", {"by": "mallory"}, token=None)
        assert status == 401 and "authentication required" in body["error"]
        status, _ = post(f"{url}/api/models/{v2}/approve", {"by": "mallory"}, token="not-the-token-0123456789")
        assert status == 401
        assert registry.production() == v1 and registry.get(v2).status == VersionStatus.CANDIDATE

        # The first 800 texts are in flight while the swap happens; the last 400 come once v2 serves (how long
        # a swap takes varies: on a busy machine the whole stream was scored before it finished).
        feeder = threading.Thread(
            target=replay, args=(config, stream), kwargs={"rate": 300, "limit": 800, "progress": False}
        )
        feeder.start()
        try:
            read_topic(config, config.topics.predictions, until=lambda got: len(got) >= 200)
            status, body = post(f"{url}/api/models/{v2}/approve", {"by": "alice", "note": "looks better"})
            assert status == 200, body
            assert ModelEvent.model_validate(body["event"]).version == v2
        finally:
            feeder.join()
        wait_for(
            lambda: json.loads(http_get(url + "/readyz")[1])["workers"]["scorer"]["model_version"] == v2,
            message="the scorer to serve v2",
        )
        replay(config, stream, skip=800, progress=False)
        predictions = read_topic(
            config,
            config.topics.predictions,
            until=lambda got: len({p["id"] for p in got}) >= 1200,
            timeout_s=120,
            settle_s=1,
        )
        counts = Counter(p["id"] for p in predictions)
        assert set(counts) == {r["id"] for r in rows}, "an id went missing across the swap"
        assert max(counts.values()) == 1, "a text was scored twice across the swap"
        versions = Counter(p["model_version"] for p in predictions)
        assert versions[v1] > 0 and versions[v2] > 0, versions
        # A broken version is refused at approval and v2 keeps serving.
        v3 = register_copy(registry, v2, corrupt=True)
        status, body = post(f"{url}/api/models/{v3}/approve", {"by": "alice"})
        assert status == 422 and "cannot serve" in body["error"]
        assert registry.production() == v2 and registry.get(v3).status == VersionStatus.CANDIDATE

        # Even if the pointer is forced past the API, the scorer refuses the broken version and alerts.
        (registry_copy / "PRODUCTION").write_text(v3 + "\n")
        produce_raw(config, config.topics.models, [b'{"action": "promote", "version": "forced"}'], key=b"forced")
        wait_for(
            lambda: (
                metric_values(http_get(url + "/metrics")[1]).get(("insightloop_model_load_failures_total", ())) == 1
            ),
            message="the refusal metric",
        )
        produce_raw(config, config.topics.texts, [b'{"id": "after-refusal", "text": "great"}'], key=b"x")
        got = read_topic(config, config.topics.predictions, until=lambda m: any(p["id"] == "after-refusal" for p in m))
        assert next(p for p in got if p["id"] == "after-refusal")["model_version"] == v2
        (registry_copy / "PRODUCTION").write_text(v2 + "\n")

        # Roll back to v1 over the API; new texts are scored by v1 again.
        status, body = post(f"{url}/api/models/rollback", {"by": "bob", "note": "v2 regressed on books"})
        assert status == 200 and body["event"]["version"] == v1 and body["event"]["action"] == "rollback"
        wait_for(
            lambda: (
                metric_values(http_get(url + "/metrics")[1]).get(("insightloop_model_version_info", (("version", v1),)))
                == 1
            ),
            message="the scorer to swap back",
        )
        produce_raw(config, config.topics.texts, [b'{"id": "after-rollback", "text": "awful"}'], key=b"y")
        got = read_topic(config, config.topics.predictions, until=lambda m: any(p["id"] == "after-rollback" for p in m))
        assert next(p for p in got if p["id"] == "after-rollback")["model_version"] == v1
        samples = metric_values(http_get(url + "/metrics")[1])
        assert samples[("insightloop_promotions_total", ())] == 1
        assert samples[("insightloop_rollbacks_total", ())] == 1
        status, audit = http_get(url + "/api/audit")
    trail = [
        (e["version"], e["action"], e["to_status"], e["by"], e["authenticated_as"])
        for e in json.loads(audit)["entries"]
    ]
    assert trail[-6:] == [
        (v2, "approve", "approved", "alice", "operator"),
        (v2, "promote", "production", "alice", "operator"),
        (v1, "promote", "archived", "alice", "operator"),
        (v3, "register", "candidate", "test", None),
        (v1, "rollback", "production", "bob", "operator"),
        (v2, "rollback", "archived", "bob", "operator"),
    ]


def test_the_daemon_removes_interrupted_version_writes_at_start(make_config, registry_copy: Path) -> None:
    """A job killed while writing leaves `.incoming-*`: never a version, and gone once the daemon starts."""
    config = make_config(registry={"path": str(registry_copy)})
    registry = Registry(registry_copy)
    before = registry.names()
    staging = registry_copy / ".incoming-killed"
    shutil.copytree(registry.path_of(before[-1]), staging)  # a complete-looking version, version.json included
    old = time.time() - 2 * 3600
    for item in [*staging.rglob("*"), staging]:
        os.utime(item, (old, old), follow_symlinks=False)
    assert registry.names() == before, "a staging folder is never listed as a version"
    with InProcessDaemon(config, role="api") as daemon:
        assert not staging.exists()
        _, body = http_get(daemon.url + "/api/models")
    assert [v["version"] for v in json.loads(body)["versions"]] == before
