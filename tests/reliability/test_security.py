"""No one let in: approvals refuse missing, wrong and expired tokens over HTTP; tokens never reach logs,
audit or answers; token checks do not exit early; Kafka security settings reach the client.

Covered elsewhere: body size limits and the page's escaping (tests/integration/test_approvals_page.py), the
chart's non-root, read-only root filesystem (tests/helm/test_chart.py).
"""

from __future__ import annotations

import json
import logging
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
