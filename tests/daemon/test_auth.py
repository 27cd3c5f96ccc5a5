"""Bearer tokens: missing, wrong, expired and under-privileged tokens are refused."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from insightloop.daemon.auth import AuthResult, Right, TokenStore
from insightloop.daemon.errors import ConfigError

OPERATOR = "operator-token-0123456789"


def write_tokens(path: Path, text: str, bump: float = 0) -> Path:
    path.write_text(text)
    if bump:
        stat = path.stat()
        os.utime(path, (stat.st_atime + bump, stat.st_mtime + bump))
    return path


def test_config_token_has_every_right() -> None:
    store = TokenStore(OPERATOR, None)
    for right in Right:
        result, principal = store.check(f"Bearer {OPERATOR}", right)
        assert result is AuthResult.OK and principal is not None and principal.name == "operator"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, AuthResult.MISSING),
        ("", AuthResult.MISSING),
        (f"Basic {OPERATOR}", AuthResult.MISSING),
        ("Bearer wrong-token-0123456789", AuthResult.INVALID),
        (f"Bearer {OPERATOR}x", AuthResult.INVALID),
        (f"Bearer {OPERATOR[:-1]}", AuthResult.INVALID),
    ],
)
def test_bad_headers_are_refused(header: str | None, expected: AuthResult) -> None:
    assert TokenStore(OPERATOR, None).check(header, Right.APPROVE)[0] is expected


def test_without_tokens_nobody_gets_in() -> None:
    store = TokenStore(None, None)
    assert not store.configured
    assert store.check("Bearer anything-at-all-12345", Right.APPROVE)[0] is AuthResult.INVALID


def test_tokens_file_rights_expiry_and_reload(tmp_path: Path) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    path = write_tokens(
        tmp_path / "tokens.yaml",
        f"""
- name: reviewer
  token: reviewer-token-0123456789
  rights: [approve, reject]
- name: old
  token: old-token-0123456789abc
  rights: [approve, reject, rollback]
  expires_at: "{(datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None).isoformat()}"
- name: temp
  token: temp-token-0123456789abc
  rights: [rollback]
  expires_at: "{soon.isoformat()}"
""",
    )
    store = TokenStore(None, path)
    assert store.check("Bearer reviewer-token-0123456789", Right.APPROVE)[0] is AuthResult.OK
    result, principal = store.check("Bearer reviewer-token-0123456789", Right.ROLLBACK)
    assert result is AuthResult.FORBIDDEN and principal is not None and principal.name == "reviewer"
    assert store.check("Bearer old-token-0123456789abc", Right.APPROVE)[0] is AuthResult.EXPIRED
    assert store.check("Bearer temp-token-0123456789abc", Right.ROLLBACK)[0] is AuthResult.OK
    later = soon + timedelta(seconds=1)
    assert store.check("Bearer temp-token-0123456789abc", Right.ROLLBACK, now=later)[0] is AuthResult.EXPIRED
    # A rotated Secret is picked up without a restart.
    write_tokens(path, "- {name: new, token: new-token-0123456789abc, rights: [approve]}\n", bump=5)
    assert store.check("Bearer reviewer-token-0123456789", Right.APPROVE)[0] is AuthResult.INVALID
    assert store.check("Bearer new-token-0123456789abc", Right.APPROVE)[0] is AuthResult.OK


def test_invalid_tokens_file_errors_never_echo_a_token(tmp_path: Path) -> None:
    secret = "short"  # too short: rejected, and its value must not appear in the message
    path = write_tokens(tmp_path / "tokens.yaml", f"- {{name: a, token: {secret}, rights: [approve]}}\n")
    with pytest.raises(ConfigError) as error:
        TokenStore(None, path)
    assert "token" in str(error.value) and secret not in str(error.value).replace("tokens", "")
    with pytest.raises(ConfigError, match="does not exist"):
        TokenStore(None, tmp_path / "missing.yaml")
