"""`insightloop models …` on a registry directory: list, show, approve, reject, rollback, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from insightloop.daemon.broker import free_port
from insightloop.daemon.errors import ExitCode
from insightloop.daemon.kafka import ensure_topics
from insightloop.deploy import GateVerdict, ModelEvent, Registry, VersionStatus
from tests.daemon.test_cli import cli
from tests.integration.test_promotion import register_copy
from tests.kafka_helpers import read_topic

NO_KAFKA = {"INSIGHTLOOP_KAFKA__BOOTSTRAP_SERVERS": "", "INSIGHTLOOP_KAFKA__BOOTSTRAP_TIMEOUT_MS": "1000"}


def test_models_commands_change_the_registry_and_audit(trained_registry: Path, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    shutil.copytree(trained_registry, root)
    registry = Registry(root)
    v1 = registry.production() or ""
    v2 = register_copy(registry, v1)
    v3 = register_copy(registry, v1)
    env = {**NO_KAFKA, "INSIGHTLOOP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    common = ["--registry", str(root)]

    listing = cli("models", "list", *common, env_extra=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(line.startswith(v1) and "production" in line and line.endswith("*") for line in lines)
    assert any(line.startswith(v2) and "candidate" in line for line in lines)

    approve = cli("models", "approve", v2, "--by", "alice", "--note", "better on kitchen", *common, env_extra=env)
    assert approve.returncode == 0, approve.stderr
    assert registry.production() == v2
    assert "by polling" in approve.stderr  # no broker: the event could not be published

    reject = cli("models", "reject", v3, "--by", "bob", *common, env_extra=env)
    assert reject.returncode == 0 and registry.get(v3).status == VersionStatus.REJECTED
    again = cli("models", "approve", v3, "--by", "bob", *common, env_extra=env)
    assert again.returncode != 0 and "only a candidate can be approved" in again.stderr

    back = cli("models", "rollback", "--by", "carol", *common, env_extra=env)
    assert back.returncode == 0, back.stderr
    assert registry.production() == v1

    shown = cli("models", "show", v2, *common, env_extra=env)
    record = json.loads(shown.stdout)
    assert record["status"] == "archived"
    assert [e["action"] for e in record["audit"]] == ["register", "approve", "promote", "rollback"]
    assert record["audit"][1]["by"] == "alice" and record["audit"][1]["reason"] == "better on kitchen"


def test_gate_failures_and_broken_models_are_refused(trained_registry: Path, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    shutil.copytree(trained_registry, root)
    registry = Registry(root)
    v1 = registry.production() or ""
    broken = register_copy(registry, v1, corrupt=True)
    refused = cli("models", "approve", broken, "--by", "a", "--registry", str(root), env_extra=NO_KAFKA)
    assert refused.returncode == ExitCode.FAILURE and "cannot serve" in refused.stderr
    assert registry.production() == v1
    failing = register_copy(registry, v1)
    path = registry.path_of(failing) / "version.json"
    path.write_text(
        registry.get(failing)
        .model_copy(update={"gate": GateVerdict(passed=False, reasons=["books: -0.06 beyond bound"])})
        .model_dump_json()
    )
    gate = cli("models", "approve", failing, "--by", "a", "--registry", str(root), env_extra=NO_KAFKA)
    assert gate.returncode != 0 and "books: -0.06 beyond bound" in gate.stderr
    override = cli("models", "approve", failing, "--by", "a", "--override", "--registry", str(root), env_extra=NO_KAFKA)
    assert override.returncode == 0, override.stderr
    assert registry.audit_log()[-3].action == "approve-override"


def _train_promote(tiny_base: Path, train_file: Path, registry: Path, *extra: str, env: dict[str, str]) -> Any:
    return cli(
        "train",
        "--data",
        str(train_file),
        "--registry",
        str(registry),
        "--base",
        str(tiny_base),
        "--epochs",
        "1",
        "--max-length",
        "32",
        "--promote",
        "--no-progress",
        *extra,
        env_extra=env,
    )


def test_train_promote_takes_the_approval_path_and_publishes(
    make_config: Any, tiny_base: Path, train_file: Path, tmp_path: Path
) -> None:
    config = make_config()
    ensure_topics(config.kafka, config.topics.all())
    root = tmp_path / "registry"
    env = {"INSIGHTLOOP_TOPICS__MODELS": config.topics.models}
    done = _train_promote(tiny_base, train_file, root, "--bootstrap-servers", config.kafka.bootstrap_servers, env=env)
    assert done.returncode == 0, done.stderr
    registry = Registry(root)
    assert registry.production() == "v0001"
    events = read_topic(config, config.topics.models, until=lambda got: len(got) >= 1)
    event = ModelEvent.model_validate(events[0])
    assert (event.action, event.version, event.reason) == ("promote", "v0001", "insightloop train --promote")
    assert [(e.action, e.to_status.value) for e in registry.audit_log()] == [
        ("register", "candidate"),
        ("approve", "approved"),
        ("promote", "production"),
    ]


def test_train_promote_without_a_broker_still_promotes_and_audits(
    tiny_base: Path, train_file: Path, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    env = {**NO_KAFKA, "INSIGHTLOOP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    done = _train_promote(tiny_base, train_file, root, env=env)
    assert done.returncode == 0, done.stderr
    assert "by polling" in done.stderr, "the operator learns that the event was not sent"
    registry = Registry(root)
    assert registry.production() == "v0001"
    assert [e.action for e in registry.audit_log()] == ["register", "approve", "promote"]
    assert Path(done.stdout.strip().splitlines()[-1]) == registry.path_of("v0001").resolve()
