"""Shared fixtures: one embedded broker per session, a tiny BERT, a trained registry, leak checks, and the state
store on both of its backends (SQLite, and a real PostgreSQL server started once per session)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from insightloop.daemon.broker import EmbeddedBroker, free_port
from insightloop.daemon.config import Config, load_config
from tests.postgres import PostgresServer, running_server
from tests.synthetic import sentiment_rows, write_jsonl

if TYPE_CHECKING:
    from insightloop.daemon.state import StateStore

#: The state store's backends; every test taking ``store_opener`` or ``state_store`` runs once on each.
STATE_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Kafka-protocol broker, started once per test session on a free port."""
    with EmbeddedBroker(port=free_port()) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT (2 layers, width 32) with the packaged MiniLM tokenizer, saved like a hub model."""
    from insightloop.retrain import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 labeled synthetic texts."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", sentiment_rows(400, seed=1))


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, train_file: Path) -> Path:
    """A registry whose production version is the tiny BERT fine-tuned on the synthetic set."""
    from insightloop.daemon.train import train_first_model
    from insightloop.retrain import FineTuneSettings

    registry = tmp_path_factory.mktemp("registry")
    settings = FineTuneSettings(epochs=4, learning_rate=2e-3, batch_size=16, max_length=32, projection_dims=8)
    train_first_model(train_file, registry, str(tiny_base), settings, promote=True, progress=False, profile_rounds=50)
    return registry


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 (initdb in a temporary folder), one per session.

    Skips when the server binaries are missing, except in CI (``CI=true``), where it fails.
    """
    with running_server() as server:
        yield server


@dataclass
class StoreOpener:
    """Opens this test's state store on one backend; calling it again opens the same state (a restart)."""

    backend: str
    directory: Path
    url: str | None = None
    password: str | None = None

    def __call__(self) -> StateStore:
        from insightloop.daemon.state import StateStore

        return StateStore(self.directory, self.url, self.password)

    def state_config(self) -> dict[str, Any]:
        """The ``state`` section of a config that names this store."""
        return {"dir": str(self.directory), "url": self.url, "password": self.password}


@pytest.fixture(params=STATE_BACKENDS)
def store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """The state store of this test, on SQLite (a file in ``tmp_path``) and on PostgreSQL (a fresh database)."""
    directory = tmp_path / "state"
    if request.param == "sqlite":
        yield StoreOpener("sqlite", directory)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.fresh_database() as database:
        yield StoreOpener("postgresql", directory, server.url(database), server.password)


@pytest.fixture
def state_store(store_opener: StoreOpener) -> Iterator[StateStore]:
    """An opened, migrated, empty state store on each backend, closed afterwards."""
    store = store_opener()
    yield store
    store.close()


@pytest.fixture
def unique() -> str:
    """A short unique token for topic and group names, so tests sharing the broker never collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def make_config(broker: EmbeddedBroker, trained_registry: Path, tmp_path: Path, unique: str) -> Any:
    """Build a Config for this test: its own topics and consumer groups on the session broker."""

    def build(**sections: dict[str, Any]) -> Config:
        base: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": broker.bootstrap_servers,
                "session_timeout_ms": 3000,
                "heartbeat_interval_ms": 500,
            },
            "topics": {
                name: f"{unique}.{name}"
                for name in ("texts", "predictions", "labels", "insights", "models", "deadletter")
            },
            "scorer": {"group_id": f"scorer-{unique}", "max_wait_ms": 50, "drain_timeout_s": 15},
            # Groups of their own too: a member another test's killed daemon left in a shared group holds up
            # every join until the broker's rebalance timeout (a monitor once waited past 120 s for its join).
            "monitor": {"group_id": f"monitor-{unique}"},
            "controller": {"group_id": f"controller-{unique}"},
            "registry": {"path": str(trained_registry)},
            "state": {"dir": str(tmp_path / "state")},
            "api": {"host": "127.0.0.1", "http_port": 0},
        }
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        return load_config(None, base, environ={})

    return build


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (after a short grace period for clean shutdowns)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 10
    while True:
        # tqdm's monitor thread lives for the rest of the process once any progress bar has been made.
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name != "tqdm_monitor"]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"
