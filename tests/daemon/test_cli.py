"""The `insightloop` command as people run it: real subprocesses, exit codes, last lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from insightloop.daemon.broker import free_port, port_open
from insightloop.daemon.config import load_config
from insightloop.daemon.errors import ExitCode
from insightloop.deploy import Registry
from tests.kafka_helpers import produce_raw, read_topic


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "insightloop.daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    target = tmp_path / "insightloop.yaml"
    done = cli("init", "--path", str(target))
    assert done.returncode == 0, done.stderr
    assert load_config(target, environ={}).kafka.api_version == "2.5"
    again = cli("init", "--path", str(target))
    assert again.returncode == ExitCode.USAGE and "exists" in again.stderr


def test_train_prints_the_version_directory_last_and_promotes(
    tiny_base: Path, train_file: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "reg"
    done = cli(
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
    )
    assert done.returncode == 0, done.stderr
    last = Path(done.stdout.strip().splitlines()[-1])
    assert last.is_dir() and last.parent == registry.resolve()
    assert (last / "model" / "config.json").is_file() and (last / "projection.npz").is_file()
    assert Registry(registry).production() == last.name
    second = cli(
        "train",
        "--data",
        str(train_file),
        "--registry",
        str(registry),
        "--base",
        str(last),
        "--epochs",
        "1",
        "--max-length",
        "32",
        "--no-progress",
    )
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip().splitlines()[-1]).name == "v0002"
    assert Registry(registry).production() == last.name, "without --promote production must not change"


def test_train_reports_bad_data_with_its_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no label here"}\n')
    done = cli("train", "--data", str(bad), "--registry", str(tmp_path / "r"))
    assert done.returncode == ExitCode.DATA_ERROR
    assert "bad.jsonl:1" in done.stderr


def test_run_without_a_model_exits_with_no_model(broker, tmp_path: Path) -> None:
    done = cli(
        "run",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--registry",
        str(tmp_path / "empty"),
        "--state-dir",
        str(tmp_path / "state"),
        "--http-port",
        "0",
        timeout=120,
    )
    assert done.returncode == ExitCode.NO_MODEL, done.stderr
    assert "no production model" in done.stderr


def test_run_with_a_bad_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("scorer:\n  max_batch_sise: 3\n")
    done = cli("run", "--config", str(config))
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert "scorer.max_batch_sise: unknown key" in done.stderr


def test_run_against_no_broker_says_so(tmp_path: Path, trained_registry: Path) -> None:
    done = cli(
        "run",
        "--bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "--registry",
        str(trained_registry),
        "--http-port",
        "0",
        timeout=120,
        env_extra={"INSIGHTLOOP_KAFKA__BOOTSTRAP_TIMEOUT_MS": "2000"},
    )
    assert done.returncode == ExitCode.BROKER_UNREACHABLE, done.stderr
    assert "no Kafka broker reachable" in done.stderr


@pytest.mark.integration
def test_broker_command_creates_topics_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "insightloop.daemon", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert f"--bootstrap-servers 127.0.0.1:{port}" in line
        config = load_config(
            None,
            {
                "kafka": {
                    "bootstrap_servers": f"127.0.0.1:{port}",
                    "session_timeout_ms": 3000,
                    "heartbeat_interval_ms": 500,
                }
            },
            environ={},
        )
        produce_raw(config, config.topics.texts, [b'{"id": "1", "text": "hello"}'], key=b"1")
        got = read_topic(config, config.topics.texts, until=lambda m: len(m) >= 1, timeout_s=30)
        assert got == [{"id": "1", "text": "hello"}]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_open("127.0.0.1", port), "the broker kept listening after SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
