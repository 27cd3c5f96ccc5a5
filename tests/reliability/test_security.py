"""No one let in: approvals refuse missing, wrong and expired tokens over HTTP; tokens never reach logs,
audit or answers; token checks do not exit early; Kafka security settings reach the client.

A tokens file that stops parsing fails closed and is re-read by content (issue 17). Reading texts, the Host
check, sandboxed reports and the HTTP limits: tests/reliability/test_privacy.py.

Covered elsewhere: body size limits and the page's escaping (tests/integration/test_approvals_page.py), the
chart's non-root, read-only root filesystem (tests/helm/test_chart.py).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon import auth
from insightloop.daemon.auth import AuthResult, Right, TokenStore
from insightloop.daemon.config import load_config
from insightloop.daemon.errors import ConfigError
from insightloop.daemon.kafka import common_settings
from insightloop.deploy import Registry, VersionStatus
from tests.integration.daemon_process import InProcessDaemon, http_get
from tests.integration.test_promotion import post, register_copy

OPERATOR = "operator-secret-token-5f2b9c1e"
REVIEWER = "reviewer-secret-token-a81d77e0"  # may reject only
EXPIRED = "expired-secret-token-0c3e9b42"  # had every right, until yesterday
WRONG = "wrong-secret-token-77aa01bd9e"
SECRETS = (OPERATOR, REVIEWER, EXPIRED, WRONG)


def write_tokens(path: Path) -> Path:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    path.write_text(
        f"- {{name: reviewer, token: {REVIEWER}, rights: [reject]}}\n"
        f"- {{name: former, token: {EXPIRED}, rights: [approve, reject, rollback], expires_at: '{yesterday}'}}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.integration
def test_approvals_refuse_missing_wrong_and_expired_tokens_and_never_log_them(
    make_config, registry_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(
        registry={"path": str(registry_copy)},
        api={"approval_token": OPERATOR, "tokens_file": str(write_tokens(tmp_path / "tokens.yaml"))},
        logging={"level": "DEBUG"},
    )
    registry = Registry(registry_copy)
    champion = registry.production() or ""
    candidate = register_copy(registry, champion)
    audit_before = len(registry.audit_log())
    caplog.set_level(logging.DEBUG)  # everything any logger says, request lines included
    answers: list[str] = []
    with InProcessDaemon(config, role="api") as daemon:
        endpoints = [
            (f"{daemon.url}/api/models/{candidate}/approve", {"by": "mallory", "note": "let me in"}),
            (f"{daemon.url}/api/models/{candidate}/reject", {"by": "mallory"}),
            (f"{daemon.url}/api/models/rollback", {"by": "mallory"}),
        ]
        for url, body in endpoints:
            for token, status, error in (
                (None, 401, "authentication required"),
                (WRONG, 401, "invalid token"),
                (EXPIRED, 401, "token expired"),
            ):
                got, answer = post(url, body, token=token)
                assert got == status and error in answer.get("error", ""), (url, token, got, answer)
                answers.append(json.dumps(answer))
        got, answer = post(endpoints[0][0], {"by": "rita"}, token=REVIEWER)
        assert got == 403, answer
        answers.append(json.dumps(answer))
        assert registry.get(candidate).status == VersionStatus.CANDIDATE, "a refused request changed the registry"
        assert len(registry.audit_log()) == audit_before, "a refused request reached the audit log"

        got, answer = post(endpoints[0][0], {"by": "olivia", "note": "reviewed"}, token=OPERATOR)
        assert got == 200, answer
        answers.append(json.dumps(answer))
        for path in ("/api/audit", "/api/models", "/readyz", "/approvals", f"/api/models/{candidate}"):
            answers.append(http_get(daemon.url + path)[1])
    assert registry.production() == candidate
    entry = registry.audit_log()[-1]
    assert entry.authenticated_as == "operator" and entry.by == "olivia"

    logged = caplog.text
    for secret in SECRETS:
        assert secret not in logged, "a token reached the log"
        assert all(secret not in answer for answer in answers), "a token was echoed in an answer"
        assert secret not in (registry_copy / "audit.jsonl").read_text(), "a token reached the audit log"
    assert any("approve" in record.getMessage() or "promot" in record.getMessage() for record in caplog.records), (
        "the log should show the approval (so the absence of tokens means something)"
    )


def test_every_configured_token_is_compared_without_an_early_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing must not tell which entry matched, or how much of a token did: every configured digest is compared
    with hmac.compare_digest, on digests of one length, whatever is presented."""
    store = TokenStore(OPERATOR, write_tokens(tmp_path / "tokens.yaml"))
    calls: list[tuple[int, int]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, expected in (
        (OPERATOR, AuthResult.OK),
        (REVIEWER, AuthResult.FORBIDDEN),
        (EXPIRED, AuthResult.EXPIRED),
        (WRONG, AuthResult.INVALID),
        (OPERATOR[:-1], AuthResult.INVALID),
        ("x" * 4000, AuthResult.INVALID),
    ):
        calls.clear()
        assert store.check(f"Bearer {presented}", Right.APPROVE)[0] is expected
        assert len(calls) == 3, f"{len(calls)} comparisons for {expected}: one per configured token, always"
        assert set(calls) == {(32, 32)}, "digests of one length, whatever the presented token's length"


def test_config_errors_name_secret_keys_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, {"api": {"approval_token": "short-secret"}, "kafka": {"sasl_password": 98765432109}}, {})
    message = str(error.value)
    assert "api.approval_token" in message and "kafka.sasl_password" in message
    assert "short-secret" not in message and "98765432109" not in message
    assert error.value.__cause__ is None, "pydantic's own error (which repeats the input) must not be chained"


# -- Kafka security settings ---------------------------------------------------------------------

SSL_FILES = {"ssl_cafile": "/etc/kafka/ca.pem", "ssl_certfile": "/etc/kafka/client.pem", "ssl_keyfile": "/k.pem"}


@pytest.mark.parametrize(
    ("kafka", "present", "absent"),
    [
        ({}, {"security_protocol": "PLAINTEXT"}, ["sasl_mechanism", "sasl_plain_password", "ssl_cafile"]),
        (
            {"security_protocol": "SSL", **SSL_FILES, "ssl_check_hostname": False},
            {"security_protocol": "SSL", **SSL_FILES, "ssl_check_hostname": False},
            ["sasl_mechanism", "sasl_plain_username", "sasl_plain_password"],
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "svc", "sasl_password": "pw-1"},
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_plain_username": "svc",
                "sasl_plain_password": "pw-1",
            },
            ["ssl_cafile", "ssl_check_hostname"],
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "svc",
                "sasl_password": "pw-2",
                "ssl_cafile": "/etc/kafka/ca.pem",
            },
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "svc",
                "sasl_plain_password": "pw-2",
                "ssl_cafile": "/etc/kafka/ca.pem",
                "ssl_check_hostname": True,
            },
            ["ssl_certfile", "ssl_keyfile"],
        ),
    ],
)
def test_kafka_security_settings_reach_the_client(
    kafka: dict[str, Any], present: dict[str, Any], absent: list[str]
) -> None:
    settings = common_settings(load_config(None, {"kafka": kafka}, environ={}).kafka)
    assert {key: settings.get(key) for key in present} == present
    assert not set(absent) & set(settings)
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        unknown = set(settings) - set(client.DEFAULT_CONFIG)
        assert not unknown, f"{client.__name__} does not know {unknown}"


def test_sasl_password_from_the_environment_reaches_the_client() -> None:
    """The chart passes the password from a Secret as INSIGHTLOOP_KAFKA__SASL_PASSWORD, never in the file."""
    config = load_config(
        None,
        {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "svc"}},
        environ={"INSIGHTLOOP_KAFKA__SASL_PASSWORD": "from-a-secret"},
    )
    settings = common_settings(config.kafka)
    assert settings["sasl_plain_password"] == "from-a-secret"
    assert "from-a-secret" not in repr(config), "the password must not show in the config's repr"


# -- the tokens file fails closed (issue 17, finding 4) -------------------------------------------

KEPT = "kept-secret-token-1f9a3c5e7b"
REVOKED = "revoked-secret-token-2b8d4f6a"


def test_a_token_removed_in_a_broken_edit_no_longer_authenticates(
    make_config, registry_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's repro: the tokens file got a YAML error in the same edit that removed a token; the removed
    token kept working, and every request with a Bearer header logged a full traceback."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"- {{name: kept, token: {KEPT}, rights: [read]}}\n- {{name: revoked, token: {REVOKED}, rights: [read]}}\n",
        encoding="utf-8",
    )
    config = make_config(
        registry={"path": str(registry_copy)}, api={"approval_token": OPERATOR, "tokens_file": str(tokens)}
    )
    with InProcessDaemon(config, role="api") as daemon:
        url = f"{daemon.url}/api/links?path=/reports/x.html"
        assert _get_status(url, REVOKED) == 200  # authenticated: a link is signed
        # One edit: the revoked entry removed, and a YAML error (an unclosed flow mapping).
        tokens.write_text(f"- {{name: kept, token: {KEPT}, rights: [read]\n", encoding="utf-8")
        caplog.clear()
        caplog.set_level(logging.INFO)
        for _ in range(20):
            assert _get_status(url, REVOKED) == 401, "a token removed in the broken edit still authenticates"
            assert _get_status(url, KEPT) == 401, "no token of a file that does not parse authenticates"
        assert _get_status(url, OPERATOR) == 200, "api.approval_token still works"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "tokens_file" in r.getMessage()]
        assert len(errors) == 1, f"the error must be logged once per change, not per request: {len(errors)}"
        assert not any(r.exc_info for r in caplog.records), "no traceback per request"
        assert (
            "ParserError at line" in errors[0].getMessage() and KEPT not in caplog.text and REVOKED not in caplog.text
        )
        # Fixed: the file's tokens work again, the removed one does not.
        tokens.write_text(f"- {{name: kept, token: {KEPT}, rights: [read]}}\n", encoding="utf-8")
        assert _get_status(url, KEPT) == 200
        assert _get_status(url, REVOKED) == 401


def test_a_tokens_file_change_that_keeps_the_mtime_is_seen(tmp_path: Path) -> None:
    """The issue's repro: a change that kept the file's mtime (a restored backup, a Secret written twice within
    the file system's timestamp resolution) was ignored; the revoked token kept working."""
    path = tmp_path / "tokens.yaml"
    path.write_text(f"- {{name: old, token: {REVOKED}, rights: [approve]}}\n", encoding="utf-8")
    store = TokenStore(None, path)
    assert store.check(f"Bearer {REVOKED}", Right.APPROVE)[0] is AuthResult.OK
    before = path.stat()
    # Same length and same mtime, other content.
    path.write_text(
        f"- {{name: neu, token: {REVOKED.replace('revoked', 'renewed')}, rights: [approve]}}\n", encoding="utf-8"
    )
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    assert store.check(f"Bearer {REVOKED}", Right.APPROVE)[0] is AuthResult.INVALID
    assert store.check(f"Bearer {REVOKED.replace('revoked', 'renewed')}", Right.APPROVE)[0] is AuthResult.OK


def _get_status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
