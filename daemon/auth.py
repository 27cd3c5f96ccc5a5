"""Who may change what serves traffic: bearer tokens with rights, compared in constant time.

Tokens come from ``api.approval_token`` (all rights, name ``operator``) and ``api.tokens_file``
(a mounted Secret, re-read when it changes). Tokens are never logged or echoed back.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from insightloop.daemon.errors import ConfigError

log = logging.getLogger(__name__)


class Right(StrEnum):
    """What a token allows."""

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


class AuthResult(StrEnum):
    """Why a request was or was not let through."""

    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"
    EXPIRED = "expired"
    FORBIDDEN = "forbidden"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenStore:
    """Checks bearer tokens against the configured ones."""

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
        self._file_mtime: float | None = None
        self._from_file: list[tuple[bytes, TokenEntry]] = []
        self._lock = threading.Lock()
        self._reload_if_changed()

    def _reload_if_changed(self) -> None:
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
        except FileNotFoundError as exc:
            raise ConfigError(f"api.tokens_file: {self._file} does not exist") from exc
        if mtime == self._file_mtime:
            return
        try:
            raw = yaml.safe_load(self._file.read_text(encoding="utf-8")) or []
            entries = [TokenEntry.model_validate(item) for item in raw]
        except (yaml.YAMLError, ValidationError, TypeError) as exc:
            # The message must not contain token values: name only the position and field.
            detail = (
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                if isinstance(exc, ValidationError)
                else type(exc).__name__
            )
            raise ConfigError(f"api.tokens_file {self._file} is invalid: {detail}") from None
        self._from_file = [(_digest(e.token), e) for e in entries]
        self._file_mtime = mtime
        log.info("loaded %d named tokens from %s", len(entries), self._file)

    @property
    def configured(self) -> bool:
        """True if at least one token can authenticate."""
        return bool(self._static or self._from_file)

    def check(
        self, authorization: str | None, needed: Right, now: datetime | None = None
    ) -> tuple[AuthResult, Principal | None]:
        """Authenticate an ``Authorization`` header value and authorise ``needed``."""
        if not authorization or not authorization.startswith("Bearer "):
            return AuthResult.MISSING, None
        presented = _digest(authorization[len("Bearer ") :].strip())
        with self._lock:
            try:
                self._reload_if_changed()
            except ConfigError:
                log.exception("tokens file unreadable; keeping the tokens loaded before")
            candidates = self._static + self._from_file
        match: TokenEntry | None = None
        for digest, entry in candidates:
            # Compare every entry (no early exit) in constant time per comparison.
            if hmac.compare_digest(digest, presented) and match is None:
                match = entry
        if match is None:
            return AuthResult.INVALID, None
        if match.expires_at is not None and (now or datetime.now(UTC)) >= match.expires_at:
            return AuthResult.EXPIRED, Principal(match.name, frozenset(match.rights))
        principal = Principal(match.name, frozenset(match.rights))
        if needed not in principal.rights:
            return AuthResult.FORBIDDEN, principal
        return AuthResult.OK, principal
