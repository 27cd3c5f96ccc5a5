"""Who may read texts and change what serves traffic: bearer tokens with rights, compared in constant time.

Tokens come from ``api.approval_token`` (all rights, name ``operator``) and ``api.tokens_file`` (a mounted
Secret, re-read when its content changes). A tokens file that stops parsing fails closed: none of its tokens
authenticate until it parses again, so a token removed in a broken edit is revoked all the same. Tokens are
never logged or echoed back.

A browser cannot send a bearer header when it follows a link, so a caller with the ``read`` right can ask for
a *signed link* to one path (:meth:`TokenStore.sign_link`): the path with ``by``, ``exp`` and ``sig`` query
parameters, where ``sig`` is an HMAC keyed with the digest of the caller's own token. It works on every replica
that knows the token and dies with it (revoked, expired, or its ``read`` right taken away).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlencode

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from insightloop.daemon.errors import ConfigError

log = logging.getLogger(__name__)


class Right(StrEnum):
    """What a token allows."""

    READ = "read"  # texts: reference rows, vocabulary, training data, examples, reports
    APPROVE = "approve"
    REJECT = "reject"
    ROLLBACK = "rollback"


class TokenEntry(BaseModel):
    """One named token in the tokens file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    token: str = Field(min_length=16, repr=False)
    rights: list[Right]
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _utc_when_naive(cls, value: datetime | None) -> datetime | None:
        """A time without a zone is taken as UTC."""
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    rights: frozenset[Right]
    # The digest of the caller's token: the key of the links signed for it (never shown).
    key: bytes = field(default=b"", repr=False, compare=False)


class AuthResult(StrEnum):
    """Why a request was or was not let through."""

    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"
    EXPIRED = "expired"
    FORBIDDEN = "forbidden"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _link_signature(key: bytes, path: str, expires: int) -> str:
    return hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def _describe(exc: Exception) -> str:
    """An error of the tokens file without token values: only positions and field names."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{type(exc).__name__}{where}"


class TokenStore:
    """Checks bearer tokens and signed links against the configured tokens."""

    def __init__(self, approval_token: str | None, tokens_file: Path | None) -> None:
        self._static: list[tuple[bytes, TokenEntry]] = []
        if approval_token:
            self._static.append(
                (
                    _digest(approval_token),
                    TokenEntry(name="operator", token=approval_token, rights=list(Right)),
                )
            )
        self._file = tokens_file
        self._file_hash: bytes | None = None
        self._from_file: list[tuple[bytes, TokenEntry]] = []
        self._lock = threading.Lock()
        if self._file is not None:
            # At start a missing or broken file is a configuration error (the daemon does not start).
            try:
                content = self._file.read_bytes()
            except FileNotFoundError as exc:
                raise ConfigError(f"api.tokens_file: {self._file} does not exist") from exc
            try:
                entries = self._parse(content)
            except (yaml.YAMLError, ValidationError, TypeError) as exc:
                raise ConfigError(f"api.tokens_file {self._file} is invalid: {_describe(exc)}") from None
            self._install(content, entries)

    @staticmethod
    def _parse(content: bytes) -> list[TokenEntry]:
        raw = yaml.safe_load(content.decode("utf-8", errors="replace")) or []
        if not isinstance(raw, list):
            raise TypeError("the tokens file must be a list of entries")
        return [TokenEntry.model_validate(item) for item in raw]

    def _install(self, content: bytes, entries: list[TokenEntry]) -> None:
        self._from_file = [(_digest(e.token), e) for e in entries]
        self._file_hash = hashlib.sha256(content).digest()
        log.info("loaded %d named tokens from %s", len(entries), self._file)

    def _reload_if_changed(self) -> None:
        """Re-read the tokens file when its content changed (an edit may keep the mtime; a Secret's does)."""
        if self._file is None:
            return
        try:
            content = self._file.read_bytes()
        except OSError as exc:
            content, problem = b"", f"unreadable ({type(exc).__name__})"
        else:
            problem = ""
        digest = hashlib.sha256(content).digest() if not problem else hashlib.sha256(problem.encode()).digest()
        if digest == self._file_hash:
            return
        self._file_hash = digest  # logged once per change, not once per request
        if not problem:
            try:
                self._install(content, self._parse(content))
                return
            except (yaml.YAMLError, ValidationError, TypeError) as exc:
                problem = f"invalid: {_describe(exc)}"
        self._from_file = []
        log.error(
            "api.tokens_file %s is %s; none of its tokens authenticate until it is fixed "
            "(api.approval_token still does)",
            self._file,
            problem,
        )

    @property
    def configured(self) -> bool:
        """True if at least one token can authenticate."""
        return bool(self._static or self._from_file)

    def _candidates(self) -> list[tuple[bytes, TokenEntry]]:
        with self._lock:
            self._reload_if_changed()
            return self._static + self._from_file

    def check(
        self, authorization: str | None, needed: Right, now: datetime | None = None
    ) -> tuple[AuthResult, Principal | None]:
        """Authenticate an ``Authorization`` header value and authorise ``needed``."""
        if not authorization or not authorization.startswith("Bearer "):
            return AuthResult.MISSING, None
        presented = _digest(authorization[len("Bearer ") :].strip())
        match: tuple[bytes, TokenEntry] | None = None
        for digest, entry in self._candidates():
            # Compare every entry (no early exit) in constant time per comparison.
            if hmac.compare_digest(digest, presented) and match is None:
                match = (digest, entry)
        if match is None:
            return AuthResult.INVALID, None
        return self._authorise(match[0], match[1], needed, now)

    @staticmethod
    def _authorise(
        digest: bytes, entry: TokenEntry, needed: Right, now: datetime | None
    ) -> tuple[AuthResult, Principal]:
        principal = Principal(entry.name, frozenset(entry.rights), digest)
        if entry.expires_at is not None and (now or datetime.now(UTC)) >= entry.expires_at:
            return AuthResult.EXPIRED, principal
        if needed not in principal.rights:
            return AuthResult.FORBIDDEN, principal
        return AuthResult.OK, principal

    # -- signed links -------------------------------------------------------------------------
    @staticmethod
    def sign_link(principal: Principal, path: str, ttl_s: float, now: float | None = None) -> str:
        """The query string that lets a browser GET ``path`` for ``ttl_s`` seconds as ``principal``."""
        expires = int((time.time() if now is None else now) + ttl_s)
        return urlencode({"by": principal.name, "exp": expires, "sig": _link_signature(principal.key, path, expires)})

    def check_link(
        self, path: str, by: str, expires: str, signature: str, needed: Right, now: datetime | None = None
    ) -> tuple[AuthResult, Principal | None]:
        """Authenticate a signed link to ``path`` (the ``by``, ``exp`` and ``sig`` query values)."""
        moment = now or datetime.now(UTC)
        try:
            deadline = int(expires)
        except ValueError:
            return AuthResult.INVALID, None
        match: tuple[bytes, TokenEntry] | None = None
        for digest, entry in self._candidates():
            expected = _link_signature(digest, path, deadline)
            if entry.name == by and hmac.compare_digest(expected.encode(), signature.encode()) and match is None:
                match = (digest, entry)
        if match is None:
            return AuthResult.INVALID, None
        if moment.timestamp() >= deadline:
            return AuthResult.EXPIRED, Principal(match[1].name, frozenset(match[1].rights))
        return self._authorise(match[0], match[1], needed, now)
