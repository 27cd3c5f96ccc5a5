"""Fixtures of the reliability tests: a broker of a test's own (in memory, or durable on a local S3 endpoint that
outlives broker restarts), configs on any broker, scratch registries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.broker import EmbeddedBroker, free_port, port_open
from insightloop.daemon.config import Config, load_config


def config_for(bootstrap: str, registry: Path, state: Path, unique: str, **sections: dict[str, Any]) -> Config:
    """A Config on ``bootstrap`` with topics and groups of this test only (like tests/conftest's make_config)."""
    base: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_ms": 3000, "heartbeat_interval_ms": 500},
        "topics": {
            name: f"{unique}.{name}" for name in ("texts", "predictions", "labels", "insights", "models", "deadletter")
        },
        "scorer": {"group_id": f"scorer-{unique}", "max_wait_ms": 50, "drain_timeout_s": 15},
        "monitor": {"group_id": f"monitor-{unique}"},
        "controller": {"group_id": f"controller-{unique}"},
        "registry": {"path": str(registry)},
        "state": {"dir": str(state)},
        "api": {"host": "127.0.0.1", "http_port": 0},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_config(None, base, environ={})


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test alone (on a free loopback port), for tests that stop and restart it."""
    broker = EmbeddedBroker(port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def registry_copy(trained_registry: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's trained registry."""
    target = tmp_path / "registry"
    shutil.copytree(trained_registry, target)
    return target


@pytest.fixture(autouse=True)
def close_refused_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python 3.0 leaves the socket of a refused connect() open (kafka/net/inet.py ``sock_connect``) and
    the garbage collector later warns about it, at any point of the session. The tests here refuse connections
    on purpose (a stopped broker), so while they run the library closes that socket."""
    from kafka.net import inet

    original = inet.KafkaNetSocket.sock_connect

    async def sock_connect(self: Any, net: Any, sock: Any, sockaddr: Any, timeout_at: float | None = None) -> Any:
        try:
            return await original(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    monkeypatch.setattr(inet.KafkaNetSocket, "sock_connect", sock_connect)


# -- a durable broker: Tansu's s3 storage engine against moto's S3 server on loopback ---------------------------

#: moto's server, installed into a virtual environment of its own: moto needs botocore, which pins
#: python-dateutil below 3, and the Kubernetes client the runner needs (37, for ``V1Job.from_dict``) needs 3 or
#: later, so the two cannot share the project's environment. The server is a separate process anyway, and the
#: tests only talk HTTP to it.
MOTO_REQUIREMENT = "moto[server]>=5,<6"


def moto_server_binary() -> Path:
    """``moto_server`` from a cached virtual environment, made on first use (needs the package index once)."""
    from filelock import FileLock

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "insightloop-tests"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / "moto-venv"
    binary = venv / "bin" / "moto_server"
    with FileLock(str(cache / "moto-venv.lock")):
        if not binary.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", MOTO_REQUIREMENT],
                check=True,
                timeout=600,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
    return binary


class LocalS3:
    """moto's S3 server on a free loopback port, with the environment Tansu's s3 engine needs to reach it."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def broker_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> None:
        """CreateBucket (moto takes an unsigned request, so no S3 client is needed)."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """moto's S3 server for the session (each durable broker gets a bucket of its own)."""
    binary = moto_server_binary()
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert process.poll() is None, f"moto_server exited with {process.returncode}"
            assert time.monotonic() < deadline, "moto_server did not listen within 60 s"
            time.sleep(0.1)
        yield LocalS3(port, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class DurableBroker(EmbeddedBroker):
    """An embedded broker whose topics and committed offsets live in a bucket of the local S3 server, so a kill
    and a start again on the same port keep them, as a real cluster's restart does."""

    def __init__(self, s3: LocalS3, bucket: str, port: int) -> None:
        super().__init__(port=port, storage_engine=f"s3://{bucket}/", env=s3.broker_env())
        self.bucket = bucket

    def restart(self, down_s: float = 0.0) -> None:
        """Kill the broker (SIGKILL), wait ``down_s`` and start it again on the same port."""
        self.kill()
        time.sleep(down_s)
        self.start()


@pytest.fixture
def durable_broker(local_s3: LocalS3) -> Iterator[DurableBroker]:
    """A durable broker of this test alone, stopped (and its port freed) at the end."""
    bucket = f"tansu-{uuid.uuid4().hex[:12]}"
    local_s3.create_bucket(bucket)
    broker = DurableBroker(local_s3, bucket, free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        assert not port_open(broker.host, broker.port), "the broker's port is still open"
