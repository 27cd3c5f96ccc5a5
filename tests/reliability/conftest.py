"""Fixtures of the reliability tests: a broker of a test's own, configs on any broker, scratch registries."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.broker import EmbeddedBroker, free_port
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
