"""The registry: atomic versions, a champion pointer, an audit log."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from insightloop.deploy import Registry, RegistryError, VersionRecord, VersionStatus
from insightloop.deploy.events import utc_now


def record() -> VersionRecord:
    return VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        base_model="tiny",
        labels=["a", "b"],
    )


def write_file(path: Path) -> None:
    (path / "weights.bin").write_bytes(b"\0" * 1000)


def test_versions_are_numbered_and_listed(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    first = registry.create_version(write_file, record(), by="alice", reason="first")
    second = registry.create_version(write_file, record(), by="bob")
    assert (first.version, second.version) == ("v0001", "v0002")
    assert registry.names() == ["v0001", "v0002"]
    assert (registry.path_of("v0001") / "weights.bin").stat().st_size == 1000
    assert registry.get("v0002").status == VersionStatus.CANDIDATE
    with pytest.raises(RegistryError):
        registry.path_of("v0003")
    with pytest.raises(RegistryError):
        registry.path_of("../etc")


def test_a_failed_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    registry = Registry(tmp_path)

    def half_write(path: Path) -> None:
        (path / "part").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.create_version(half_write, record(), by="x")
    assert registry.names() == []
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".lock")] == []


def test_concurrent_writers_get_distinct_versions(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    names: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: names.append(registry.create_version(write_file, record(), by="t").version)
        )
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(names) == [f"v{i:04d}" for i in range(1, 7)]


def test_promote_moves_the_pointer_archives_the_old_and_audits(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for _ in range(2):
        registry.create_version(write_file, record(), by="trainer")
    assert registry.production() is None
    event = registry.promote("v0001", by="alice", reason="first model")
    assert event.action == "promote" and event.version == "v0001" and event.by == "alice"
    registry.promote("v0002", by="bob", reason="better")
    assert registry.production() == "v0002"
    assert registry.get("v0001").status == VersionStatus.ARCHIVED
    assert registry.get("v0002").status == VersionStatus.PRODUCTION
    log = registry.audit_log()
    assert [(e.version, e.action, e.to_status.value, e.by) for e in log] == [
        ("v0001", "register", "candidate", "trainer"),
        ("v0002", "register", "candidate", "trainer"),
        ("v0001", "promote", "production", "alice"),
        ("v0002", "promote", "production", "bob"),
        ("v0001", "promote", "archived", "bob"),
    ]


def test_leftover_staging_directories_are_cleaned(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    (tmp_path / ".incoming-dead").mkdir()
    assert registry.remove_incomplete() == [".incoming-dead"]
    assert registry.names() == []
