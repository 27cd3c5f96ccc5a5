"""The registry: atomic versions, a champion pointer, an audit log."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from insightloop.deploy import GateFailedError, GateVerdict, Registry, RegistryError, VersionRecord, VersionStatus
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
        threading.Thread(target=lambda: names.append(registry.create_version(write_file, record(), by="t").version))
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
    with pytest.raises(RegistryError, match="must be approved"):
        registry.promote("v0001", by="alice")
    registry.approve("v0001", by="alice", note="looks fine")
    event = registry.promote("v0001", by="alice", reason="first model")
    assert event.action == "promote" and event.version == "v0001" and event.by == "alice"
    registry.approve("v0002", by="bob", via="ops-token")
    registry.promote("v0002", by="bob", reason="better", via="ops-token")
    assert registry.production() == "v0002"
    assert registry.get("v0001").status == VersionStatus.ARCHIVED
    assert registry.get("v0002").status == VersionStatus.PRODUCTION
    log = registry.audit_log()
    assert [(e.version, e.action, e.to_status.value, e.by, e.authenticated_as) for e in log] == [
        ("v0001", "register", "candidate", "trainer", None),
        ("v0002", "register", "candidate", "trainer", None),
        ("v0001", "approve", "approved", "alice", None),
        ("v0001", "promote", "production", "alice", None),
        ("v0002", "approve", "approved", "bob", "ops-token"),
        ("v0002", "promote", "production", "bob", "ops-token"),
        ("v0001", "promote", "archived", "bob", "ops-token"),
    ]


def test_rollback_returns_to_the_previous_production_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(by="x")
    for _ in range(3):
        name = registry.create_version(write_file, record(), by="t").version
        registry.approve(name, by="a")
        registry.promote(name, by="a")
    event = registry.rollback(by="carol", reason="v0003 misbehaves")
    assert (event.action, event.version) == ("rollback", "v0002")
    assert registry.production() == "v0002"
    assert registry.get("v0003").status == VersionStatus.ARCHIVED
    assert registry.rollback(by="carol", to="v0001").version == "v0001"
    with pytest.raises(RegistryError, match="already the production"):
        registry.rollback(by="carol", to="v0001")
    candidate = registry.create_version(write_file, record(), by="t").version
    with pytest.raises(RegistryError, match="never served"):
        registry.rollback(by="carol", to=candidate)


def test_gate_failure_needs_an_audited_override(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    failed = record().model_copy(update={"gate": GateVerdict(passed=False, reasons=["recent: +0.1 < margin"])})
    name = registry.create_version(write_file, failed, by="t").version
    with pytest.raises(GateFailedError, match=r"recent: \+0\.1 < margin"):
        registry.approve(name, by="dave")
    assert registry.get(name).status == VersionStatus.CANDIDATE
    registry.approve(name, by="dave", note="known good", override=True)
    assert registry.audit_log()[-1].action == "approve-override"


def test_reject_only_what_does_not_serve(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    a = registry.create_version(write_file, record(), by="t").version
    b = registry.create_version(write_file, record(), by="t").version
    assert [r.version for r in registry.pending_candidates()] == [a, b]
    registry.reject(b, by="erin", note="worse on books")
    assert registry.get(b).status == VersionStatus.REJECTED
    with pytest.raises(RegistryError, match="only a candidate can be approved"):
        registry.approve(b, by="erin")
    registry.approve(a, by="erin")
    registry.promote(a, by="erin")
    with pytest.raises(RegistryError, match="only a candidate can be rejected"):
        registry.reject(a, by="erin")


def test_leftover_staging_directories_are_cleaned(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    (tmp_path / ".incoming-dead").mkdir()
    assert registry.remove_incomplete() == [".incoming-dead"]
    assert registry.names() == []


# -- unreadable entries (issue 17, finding 3) ---------------------------------------------------


def _with_history(tmp_path: Path) -> Registry:
    """v0001 served, then v0002; v0003 is a candidate."""
    registry = Registry(tmp_path)
    for _ in range(3):
        registry.create_version(write_file, record(), by="alice")
    for name in ("v0001", "v0002"):
        registry.approve(name, by="alice")
        registry.promote(name, by="alice")
    return registry


def test_an_empty_version_json_is_skipped_listed_as_a_problem_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from insightloop.deploy import ProblemKind, UnreadableVersionError

    registry = _with_history(tmp_path)
    (tmp_path / "v0099").mkdir()
    (tmp_path / "v0099" / "version.json").write_text("", encoding="utf-8")  # a power loss before the fsync
    with caplog.at_level("ERROR", logger="insightloop.deploy.registry"):
        for _ in range(5):  # every request of the approvals page lists the registry
            assert [r.version for r in registry.records()] == ["v0001", "v0002", "v0003"]
            assert [r.version for r in registry.pending_candidates()] == ["v0003"]
    assert len([r for r in caplog.records if "v0099/version.json" in r.getMessage()]) == 1, "logged once per change"
    (problem,) = registry.problems()
    assert (problem.kind, problem.path, problem.version) == (ProblemKind.VERSION, "v0099/version.json", "v0099")
    assert problem.error
    with pytest.raises(UnreadableVersionError):
        registry.get("v0099")
    assert isinstance(UnreadableVersionError("x"), RegistryError)
    # A new version is still numbered after the broken one, and the broken one fixed disappears from the problems.
    assert registry.create_version(write_file, record(), by="alice").version == "v0100"
    (tmp_path / "v0099").joinpath("version.json").write_text(
        record().model_copy(update={"version": "v0099"}).model_dump_json(), encoding="utf-8"
    )
    assert registry.problems() == [] and "v0099" in [r.version for r in registry.records()]


def test_a_version_with_a_garbled_status_file_is_skipped(tmp_path: Path) -> None:
    registry = _with_history(tmp_path)
    (tmp_path / "v0003" / "status").write_text("candid\n", encoding="utf-8")
    assert [r.version for r in registry.records()] == ["v0001", "v0002"]
    assert [p.version for p in registry.problems()] == ["v0003"]


def test_a_torn_audit_line_is_skipped_and_the_next_entry_starts_a_new_line(tmp_path: Path) -> None:
    from insightloop.deploy import ProblemKind

    registry = _with_history(tmp_path)
    audit = tmp_path / "audit.jsonl"
    whole = audit.read_text(encoding="utf-8").splitlines()
    with open(audit, "a", encoding="utf-8") as handle:
        handle.write(whole[-1][: len(whole[-1]) // 2])  # torn: half a line, no newline
    entries = registry.audit_log()
    assert len(entries) == len(whole)
    assert registry.previous_production() == "v0001", "the default rollback target still found"
    (problem,) = registry.problems()
    assert (problem.kind, problem.path, problem.line) == (ProblemKind.AUDIT, "audit.jsonl", len(whole) + 1)
    registry.reject("v0003", by="bob", note="after the tear")
    entries = registry.audit_log()
    assert entries[-1].action == "reject" and entries[-1].version == "v0003", "the new entry is readable"
    assert [p.line for p in registry.problems()] == [len(whole) + 1]
    registry.rollback(by="bob")
    assert registry.production() == "v0001"


def test_versions_and_audit_lines_are_fsynced_before_they_are_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from insightloop.deploy import registry as registry_module

    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync:" + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        events.append(f"rename:{dst}")
        real_rename(src, dst)

    monkeypatch.setattr(registry_module.os, "fsync", fsync)
    monkeypatch.setattr(registry_module.os, "rename", rename)
    Registry(tmp_path).create_version(write_file, record(), by="alice")
    at = events.index(f"rename:{tmp_path / 'v0001'}")
    before, after = events[:at], events[at + 1 :]
    staged = [e for e in before if "/.incoming-" in e]
    for name in ("weights.bin", "version.json", "status"):
        assert any(e.endswith("/" + name) for e in staged), f"{name} not fsynced before the rename"
    assert any(e.rsplit("/", 1)[-1].startswith(".incoming-") for e in staged), "the staging folder itself"
    assert f"fsync:{tmp_path}" in after, "the registry folder after the rename"
    assert f"fsync:{tmp_path / 'audit.jsonl'}" in after, "the audit line"
