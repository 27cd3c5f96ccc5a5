"""A registry of immutable model versions on a directory (a local path or a mounted PVC).

Layout::

    <root>/v0001/            one version (what is inside: :mod:`insightloop.deploy.layout`)
    <root>/v0001/status      its current status (the only file that changes after creation)
    <root>/PRODUCTION        the champion pointer: the name of the version serving traffic
    <root>/audit.jsonl       every status change: who, when, why (append-only)
    <root>/.lock             held while a writer changes the registry
    <root>/.incoming-*       a version being written (left behind only by a writer that died)

A version is written into a hidden staging directory, fsynced, and renamed into place, so no reader
ever sees a half-written version, even after a power loss; the pointer is replaced atomically the same
way, and audit lines are fsynced as they are appended.

A version whose record cannot be read, or an audit line that does not parse (a torn write, a hand
edit), is skipped by every listing, logged once per change of its file, and kept in
:meth:`Registry.problems` for the daemon to export and show; it never fails a listing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from insightloop.deploy.artifact import ArtifactSettings, ModelArtifact
from insightloop.deploy.errors import DeployPermanentError
from insightloop.deploy.events import AuditEntry, ModelEvent, VersionRecord, VersionStatus
from insightloop.deploy.layout import (
    AUDIT_FILE,
    INCOMING_PREFIX,
    LOCK_FILE,
    POINTER_FILE,
    PROFILE_DIR,
    RECORD_FILE,
    STATUS_FILE,
    TRAINING_DATA,
)
from insightloop.deploy.version_writer import VersionDraft, assemble

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
#: A staging directory untouched for this long belongs to a writer that died (writing takes seconds).
STALE_INCOMING_S = 900.0

log = logging.getLogger(__name__)


class RegistryError(DeployPermanentError):
    """The registry refused an operation (unknown version, wrong status, broken layout)."""


class GateFailedError(RegistryError):
    """The candidate failed the evaluation gate and no override was given."""


class UnreadableVersionError(RegistryError):
    """A version's record or status file cannot be read or does not parse (listed in ``Registry.problems()``)."""


class ProblemKind(StrEnum):
    """What kind of registry entry could not be read."""

    VERSION = "version"
    AUDIT = "audit"


@dataclass(frozen=True)
class RegistryProblem:
    """One registry entry skipped because it cannot be read: which file (relative to the registry root), which
    line of it for the audit log, the version it belongs to when known, and why."""

    kind: ProblemKind
    path: str
    error: str
    version: str | None = None
    line: int | None = None

    def describe(self) -> str:
        """One line for a log or a page."""
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.error}"


_UNREADABLE = (OSError, UnicodeDecodeError, ValueError, ValidationError)


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (deepest first), and ``root`` itself."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power loss
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Registry:
    """Model versions under one root directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        # Problems per file (relative path), with the file's signature when they were found: a file is
        # logged again only when it changes. Shared by the API's threads and the workers.
        self._problems: dict[str, tuple[tuple[int, ...] | None, list[RegistryProblem]]] = {}
        self._problems_lock = threading.Lock()

    def _note(self, relative: str, signature: tuple[int, ...] | None, found: list[RegistryProblem]) -> None:
        """Remember the problems of one file; log them when they are new for this version of the file."""
        with self._problems_lock:
            before = self._problems.get(relative)
            if found:
                self._problems[relative] = (signature, found)
            else:
                self._problems.pop(relative, None)
        if found and (before is None or before[0] != signature or before[1] != found):
            shown = "; ".join(p.describe() for p in found[:5])
            more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
            log.error(
                "registry %s: skipping %d unreadable entr%s: %s%s",
                self.root,
                len(found),
                "y" if len(found) == 1 else "ies",
                shown,
                more,
            )
        elif before is not None and not found:
            log.info("registry %s: %s is readable again", self.root, relative)

    def problems(self) -> list[RegistryProblem]:
        """Every entry the listings skip right now (a fresh look at the registry), versions first, in order.

        The daemon exports their number as ``insightloop_registry_unreadable_entries`` and shows them on
        the approvals page; ``insightloop models list`` prints them.
        """
        self.records()
        self.audit_log()
        present = {f"{name}/{RECORD_FILE}" for name in self._version_dirs()} | {AUDIT_FILE}
        with self._problems_lock:
            for gone in [key for key in self._problems if key not in present]:
                del self._problems[gone]
            found = [problem for _, (_, problems) in sorted(self._problems.items()) for problem in problems]
        return sorted(found, key=lambda p: (p.kind != ProblemKind.VERSION, p.path, p.line or 0))

    def problem_counts(self) -> dict[str, int]:
        """How many entries the listings skip, per kind (every kind present, 0 included): what
        ``insightloop_registry_unreadable_entries`` exports."""
        counts = {kind.value: 0 for kind in ProblemKind}
        for problem in self.problems():
            counts[problem.kind.value] += 1
        return counts

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- reading ------------------------------------------------------------------------------
    def path_of(self, version: str) -> Path:
        """Directory of ``version``; raises if there is no such version."""
        path = self.root / version
        if not VERSION_PATTERN.match(version) or not (path / RECORD_FILE).is_file():
            raise RegistryError(f"no version {version!r} in registry {self.root}")
        return path

    def names(self) -> list[str]:
        """Names of all complete versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if VERSION_PATTERN.match(p.name) and (p / RECORD_FILE).is_file()]
        return sorted(found, key=lambda name: int(name[1:]))

    def _version_dirs(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if VERSION_PATTERN.match(p.name) and (p / RECORD_FILE).is_file()]

    def get(self, version: str) -> VersionRecord:
        """The record of ``version`` with its current status; :class:`UnreadableVersionError` if it does not parse."""
        path = self.path_of(version)
        relative = f"{version}/{RECORD_FILE}"
        signature = _signature(path / RECORD_FILE)
        status_path = path / STATUS_FILE
        try:
            record = VersionRecord.model_validate_json((path / RECORD_FILE).read_bytes())
            if status_path.is_file():
                record.status = VersionStatus(status_path.read_text(encoding="utf-8").strip())
        except _UNREADABLE as exc:
            problem = RegistryProblem(ProblemKind.VERSION, relative, _short(exc), version=version)
            self._note(relative, (signature or (0, 0, 0)) + (_signature(status_path) or (0, 0, 0)), [problem])
            raise UnreadableVersionError(f"version {version} in {self.root} is unreadable: {problem.error}") from exc
        self._note(relative, None, [])
        return record

    def records(self) -> list[VersionRecord]:
        """Records of every readable version, oldest first (unreadable ones are in :meth:`problems`)."""
        found = []
        for name in self.names():
            try:
                found.append(self.get(name))
            except UnreadableVersionError:
                continue
            except RegistryError:  # removed since it was listed
                continue
        return found

    def production(self) -> str | None:
        """Name of the version serving traffic, or None before the first promotion."""
        pointer = self.root / POINTER_FILE
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        return name or None

    def audit_log(self) -> list[AuditEntry]:
        """Every readable recorded status change, oldest first (unreadable lines are in :meth:`problems`)."""
        path = self.root / AUDIT_FILE
        signature = _signature(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._note(AUDIT_FILE, None, [])
            return []
        except OSError as exc:
            self._note(AUDIT_FILE, signature, [RegistryProblem(ProblemKind.AUDIT, AUDIT_FILE, _short(exc))])
            return []
        entries: list[AuditEntry] = []
        problems: list[RegistryProblem] = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                entries.append(AuditEntry.model_validate_json(line))
            except _UNREADABLE as exc:
                problems.append(RegistryProblem(ProblemKind.AUDIT, AUDIT_FILE, _short(exc), line=number))
        self._note(AUDIT_FILE, signature, problems)
        return entries

    # -- writing ------------------------------------------------------------------------------
    def _append_audit(self, entry: AuditEntry) -> None:
        path = self.root / AUDIT_FILE
        created = not path.exists()
        with open(path, "a+b") as handle:
            # A torn last line (a writer that died mid-line) must not swallow this entry: start a new line.
            size = handle.seek(0, os.SEEK_END)
            torn = False
            if size:
                handle.seek(size - 1)
                torn = handle.read(1) != b"\n"
            handle.write((b"\n" if torn else b"") + entry.model_dump_json().encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_dir(self.root)

    def create_version(
        self,
        write_contents: Callable[[Path], None],
        record: VersionRecord,
        by: str,
        reason: str = "",
    ) -> VersionRecord:
        """Write a new version atomically and return its record (with the assigned name).

        ``write_contents`` fills a fresh directory; only when it returns is the directory renamed
        into place under the registry lock. If it raises, nothing is left behind. Training code
        uses :meth:`write_version`, which assembles the pieces of a version in one place.
        """
        return self._create(write_contents, lambda: record, by, reason)

    def write_version(self, draft: VersionDraft, by: str, reason: str = "") -> VersionRecord:
        """Assemble ``draft`` (artifact, profile, training data, plan, evaluation) into a new version, atomically."""
        done: list[VersionRecord] = []
        return self._create(lambda path: done.append(assemble(draft, path)), lambda: done[0], by, reason)

    def _create(
        self,
        write_contents: Callable[[Path], None],
        record: Callable[[], VersionRecord],
        by: str,
        reason: str,
    ) -> VersionRecord:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=INCOMING_PREFIX))
        try:
            write_contents(staging)
            with self._locked():
                taken = [int(m.group(1)) for p in self.root.iterdir() if (m := VERSION_PATTERN.match(p.name))]
                name = f"v{max([*taken, 0]) + 1:04d}"
                final = record().model_copy(update={"version": name})
                (staging / RECORD_FILE).write_text(final.model_dump_json(indent=2) + "\n", encoding="utf-8")
                (staging / STATUS_FILE).write_text(final.status.value + "\n", encoding="utf-8")
                # Every file and folder on disk before the version becomes visible, and the rename after:
                # a power loss leaves either no version or a whole one, never an empty version.json.
                _fsync_tree(staging)
                os.rename(staging, self.root / name)
                _fsync_dir(self.root)
                self._append_audit(
                    AuditEntry(
                        version=name,
                        action="register",
                        from_status=None,
                        to_status=final.status,
                        by=by,
                        reason=reason,
                    )
                )
            return final
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _set_status(self, version: str, status: VersionStatus) -> None:
        _write_atomically(self.path_of(version) / STATUS_FILE, status.value + "\n")

    def _transition(
        self, record: VersionRecord, to: VersionStatus, action: str, by: str, reason: str, via: str | None
    ) -> None:
        self._set_status(record.version, to)
        self._append_audit(
            AuditEntry(
                version=record.version,
                action=action,
                from_status=record.status,
                to_status=to,
                by=by,
                reason=reason,
                authenticated_as=via,
            )
        )

    def approve(
        self, version: str, by: str, note: str = "", override: bool = False, via: str | None = None
    ) -> VersionRecord:
        """Approve a candidate. One that failed the gate needs ``override`` (audited as such)."""
        with self._locked():
            record = self.get(version)
            if record.status != VersionStatus.CANDIDATE:
                raise RegistryError(f"{version} is {record.status.value}; only a candidate can be approved")
            if record.gate is not None and not record.gate.passed and not override:
                raise GateFailedError(
                    f"{version} failed the evaluation gate ({'; '.join(record.gate.reasons) or 'no reason'}); "
                    "approving it needs an explicit override"
                )
            action = "approve-override" if record.gate is not None and not record.gate.passed else "approve"
            self._transition(record, VersionStatus.APPROVED, action, by, note, via)
            return self.get(version)

    def reject(self, version: str, by: str, note: str = "", via: str | None = None) -> VersionRecord:
        """Reject a candidate (or an approved version not yet serving)."""
        with self._locked():
            record = self.get(version)
            if record.status not in (VersionStatus.CANDIDATE, VersionStatus.APPROVED):
                raise RegistryError(f"{version} is {record.status.value}; only a candidate can be rejected")
            self._transition(record, VersionStatus.REJECTED, "reject", by, note, via)
            return self.get(version)

    def promote(
        self, version: str, by: str, reason: str = "", via: str | None = None, action: str = "promote"
    ) -> ModelEvent:
        """Make an approved ``version`` the production model atomically; the previous one is archived."""
        with self._locked():
            record = self.get(version)
            allowed = (
                (VersionStatus.APPROVED, VersionStatus.ARCHIVED) if action == "rollback" else (VersionStatus.APPROVED,)
            )
            if record.status not in allowed:
                raise RegistryError(
                    f"{version} is {record.status.value}; it must be "
                    f"{' or '.join(s.value for s in allowed)} to {action}"
                )
            previous = self.production()
            _write_atomically(self.root / POINTER_FILE, version + "\n")
            self._transition(record, VersionStatus.PRODUCTION, action, by, reason, via)
            if previous and previous != version:
                self._transition(self.get(previous), VersionStatus.ARCHIVED, action, by, f"replaced by {version}", via)
        if action == "rollback":
            return ModelEvent(action="rollback", version=version, by=by, reason=reason)
        return ModelEvent(action="promote", version=version, by=by, reason=reason)

    def previous_production(self) -> str | None:
        """The version that served before the current one (the default rollback target)."""
        current = self.production()
        served = [e.version for e in self.audit_log() if e.to_status == VersionStatus.PRODUCTION]
        for name in reversed(served):
            if name != current and (self.root / name / RECORD_FILE).is_file():
                return name
        return None

    def rollback(self, by: str, to: str | None = None, reason: str = "", via: str | None = None) -> ModelEvent:
        """Return production to ``to`` (default: the version that served before)."""
        target = to or self.previous_production()
        if target is None:
            raise RegistryError("nothing to roll back to: no earlier production version")
        if target == self.production():
            raise RegistryError(f"{target} is already the production version")
        served = {e.version for e in self.audit_log() if e.to_status == VersionStatus.PRODUCTION}
        if target not in served:
            raise RegistryError(f"{target} never served traffic; approve and promote it instead")
        return self.promote(target, by=by, reason=reason or "rollback", via=via, action="rollback")

    def pending_candidates(self) -> list[VersionRecord]:
        """Candidates waiting for a person, oldest first."""
        return [r for r in self.records() if r.status == VersionStatus.CANDIDATE]

    def clean_incoming(self, older_than_s: float = STALE_INCOMING_S) -> list[str]:
        """Delete staging directories of interrupted writes, untouched for ``older_than_s``; return their names.

        A staging directory is never listed as a version, so this only frees space. The grace period
        spares a write in progress in another process (a retraining Job on the same volume); a registry
        the caller may not write to is left as it is, with a warning.
        """
        if not self.root.is_dir():
            return []
        now = time.time()
        stale = [
            path
            for path in self.root.iterdir()
            if path.name.startswith(INCOMING_PREFIX) and path.is_dir() and now - _newest_mtime(path) >= older_than_s
        ]
        if not stale:
            return []
        removed: list[str] = []
        try:
            with self._locked():
                for path in stale:
                    shutil.rmtree(path)
                    removed.append(path.name)
        except OSError as exc:
            log.warning("could not remove interrupted version writes in %s: %s", self.root, exc)
        if removed:
            log.info("removed %d interrupted version write(s) from %s: %s", len(removed), self.root, removed)
        return removed

    def remove_incomplete(self) -> list[str]:
        """Delete every staging directory now, whatever its age (nothing may be writing); return their names."""
        return self.clean_incoming(older_than_s=float("-inf"))

    def purge_texts(self, version: str, by: str, reason: str = "") -> list[str]:
        """Remove the texts a version directory keeps; return the files changed (relative to the version).

        ``data/train.jsonl`` (the copy of the training examples) is deleted, and the texts of the reference
        rows (``reference/rows.json``) are blanked; their ids, labels, meta, timestamps and every array the
        detectors compare stay. The version keeps serving; what needs the texts degrades: a retraining job
        from it finds no reference data in the version, and re-scoring its reference rows with other
        numerics would score empty texts. Audited as ``purge-texts``.
        """
        changed: list[str] = []
        with self._locked():
            record = self.get(version)
            path = self.path_of(version)
            training = path / (record.training.file if record.training and record.training.file else TRAINING_DATA)
            if training.is_file():
                training.unlink()
                _fsync_dir(training.parent)
                changed.append(str(training.relative_to(path)))
            rows_path = path / PROFILE_DIR / "rows.json"
            if rows_path.is_file():
                rows = json.loads(rows_path.read_text(encoding="utf-8"))
                texts = rows.get("texts") or []
                if any(texts):
                    rows["texts"] = ["" for _ in texts]
                    _write_atomically(rows_path, json.dumps(rows, ensure_ascii=False))
                    changed.append(str(rows_path.relative_to(path)))
            self._append_audit(
                AuditEntry(
                    version=version,
                    action="purge-texts",
                    from_status=record.status,
                    to_status=record.status,
                    by=by,
                    reason=reason or f"removed the texts of {', '.join(changed) or 'nothing (none were left)'}",
                )
            )
        log.info("purged the texts of %s: %s", version, changed or "none were left")
        return changed

    # -- typed views of a version's files -------------------------------------------------------
    def artifact_settings(self, version: str) -> ArtifactSettings:
        """Labels, ``max_length`` and widths of ``version``'s model, without loading it."""
        return ModelArtifact.read_settings(self.path_of(version))

    def training_data_file(self, version: str) -> Path | None:
        """The file of examples ``version`` was trained on, or None if none is recorded or still there.

        The copy inside the version directory comes first; a version whose copy is missing (written by
        hand, or by the first release) falls back to the source file it was trained from, if it exists.
        """
        path = self.path_of(version)
        training = self.get(version).training
        stored = path / (training.file if training is not None and training.file else TRAINING_DATA)
        if stored.is_file():
            return stored
        if training is not None:
            for source in (training.source("reference"), training.source("train")):
                if source is not None and Path(source.path).is_file():
                    return Path(source.path)
        return None


def _short(exc: BaseException) -> str:
    """A one-line, bounded reason for an unreadable entry."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0] if exc.error_count() else {"msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ())) or "(file)"
        text = f"{where}: {first['msg']}" + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` or anything below it (a writer touches the files it writes)."""
    newest = path.stat().st_mtime
    for folder, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.stat(os.path.join(folder, name), follow_symlinks=False).st_mtime)
    return newest
