"""One broken registry file must not stop the daemon (issue 17, finding 3).

An empty ``v0099/version.json`` (a power loss before an fsync) made /approvals, /api/models and /api/candidates
answer 500; about 5 s later the controller's candidate metrics raised, every worker stopped (scoring too) and the
next start failed the same way. A torn last line of ``audit.jsonl`` made /api/audit, /api/models/v0001 and the
default rollback answer 500. Now the entry is skipped, logged, counted in a metric, and listed by
``Registry.problems()``; the daemon keeps scoring.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from insightloop.deploy import ProblemKind, Registry
from tests.integration.daemon_process import InProcessDaemon, http_get
from tests.integration.test_scoring import metric_values
from tests.kafka_helpers import produce_raw, read_topic
from tests.reliability.conftest import config_for

pytestmark = pytest.mark.integration

CONTROLLER_POLL_S = 0.5


def _break(registry: Path) -> None:
    (registry / "v0099").mkdir()
    (registry / "v0099" / "version.json").write_text("", encoding="utf-8")
    with open(registry / "audit.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"version": "v0001", "action": "prom')  # torn: no end, no newline


def test_a_broken_version_and_a_torn_audit_line_do_not_stop_the_daemon(
    broker, registry_copy: Path, tmp_path: Path, unique: str
) -> None:
    _break(registry_copy)
    config = config_for(
        broker.bootstrap_servers,
        registry_copy,
        tmp_path / "state",
        unique,
        scorer={"model_poll_s": 0.5},
        controller={"poll_s": CONTROLLER_POLL_S},
    )
    statuses: dict[str, int] = {}
    with InProcessDaemon(config) as daemon:  # every role: the controller's candidate metrics poll included
        for path in ("/approvals", "/api/models", "/api/candidates", "/api/audit", "/api/models/v0001"):
            statuses[path], _ = http_get(daemon.url + path)
        _, models = http_get(daemon.url + "/api/models")
        time.sleep(20 * CONTROLLER_POLL_S)  # the controller polled its candidate metrics many times meanwhile
        produce_raw(
            config, config.topics.texts, [json.dumps({"id": f"t{i}", "text": "fine"}).encode() for i in range(20)]
        )
        predictions = read_topic(config, config.topics.predictions, until=lambda got: len(got) >= 20, timeout_s=60)
        health, _ = http_get(daemon.url + "/healthz")
        ready, _ = http_get(daemon.url + "/readyz")
        _, metrics_text = http_get(daemon.url + "/metrics")
        restarts = dict(daemon.daemon.restarts)
    assert daemon.exit_code == 0 and not restarts, "a worker stopped on a broken registry file"
    assert statuses == dict.fromkeys(statuses, 200), statuses
    assert [v["version"] for v in json.loads(models)["versions"]] == ["v0001"]
    assert (health, ready) == (200, 200)
    assert Counter(p["id"] for p in predictions) == Counter(f"t{i}" for i in range(20)), "scoring went on"
    samples = metric_values(metrics_text)
    assert samples[("insightloop_registry_unreadable_entries", (("kind", "version"),))] == 1
    assert samples[("insightloop_registry_unreadable_entries", (("kind", "audit"),))] == 1

    problems = Registry(registry_copy).problems()
    assert [(p.kind, p.path) for p in problems] == [
        (ProblemKind.VERSION, "v0099/version.json"),
        (ProblemKind.AUDIT, "audit.jsonl"),
    ]


def test_a_restart_on_the_broken_registry_starts(broker, registry_copy: Path, tmp_path: Path, unique: str) -> None:
    """The crash loop: the next start failed the same way. Two starts in a row both come up and stop cleanly."""
    _break(registry_copy)
    config = config_for(
        broker.bootstrap_servers,
        registry_copy,
        tmp_path / "state",
        unique,
        controller={"poll_s": CONTROLLER_POLL_S},
    )
    for _ in range(2):
        with InProcessDaemon(config) as daemon:
            time.sleep(6 * CONTROLLER_POLL_S)
            restarts = dict(daemon.daemon.restarts)
        assert daemon.exit_code == 0 and not restarts


def test_purge_texts_removes_a_versions_texts_and_audits_it(registry_copy: Path) -> None:
    """Issue 17, finding 2 (the part outside HTTP): version directories kept data/train.jsonl and the reference
    rows' texts for ever; `insightloop models purge-texts` removes them, and the version still serves."""
    from insightloop.deploy import ModelArtifact
    from insightloop.detectors import ReferenceProfile
    from tests.daemon.test_cli import cli

    registry = Registry(registry_copy)
    version = registry.production() or ""
    folder = registry.path_of(version)
    rows_before = json.loads((folder / "reference" / "rows.json").read_text())
    assert (folder / "data" / "train.jsonl").is_file() and any(rows_before["texts"])

    done = cli(
        "models",
        "purge-texts",
        version,
        "--by",
        "dpo",
        "--note",
        "erasure request 17",
        "--registry",
        str(registry_copy),
        env_extra={"INSIGHTLOOP_KAFKA__BOOTSTRAP_SERVERS": ""},
    )
    assert done.returncode == 0, done.stderr
    assert not (folder / "data" / "train.jsonl").exists()
    rows = json.loads((folder / "reference" / "rows.json").read_text())
    assert set(rows["texts"]) == {""} and rows["ids"] == rows_before["ids"] and rows["labels"] == rows_before["labels"]
    entry = registry.audit_log()[-1]
    assert (entry.action, entry.version, entry.by, entry.reason) == (
        "purge-texts",
        version,
        "dpo",
        "erasure request 17",
    )
    assert registry.training_data_file(version) is None or "data/train.jsonl" not in str(
        registry.training_data_file(version)
    )
    ModelArtifact.load(folder).smoke_test()  # still serves
    assert len(ReferenceProfile.load(folder / "reference").window) == len(rows["ids"])  # the profile still loads
    again = cli(
        "models",
        "purge-texts",
        version,
        "--by",
        "dpo",
        "--registry",
        str(registry_copy),
        env_extra={"INSIGHTLOOP_KAFKA__BOOTSTRAP_SERVERS": ""},
    )
    assert again.returncode == 0 and "none were left" in again.stdout
