"""The chart points the state store at an external PostgreSQL: the URL in the config, the password from a
Secret to the pods that use the store and to no other, and the rendered settings connect to a real server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.config import Config, load_config
from insightloop.daemon.state import MIGRATIONS, StateStore
from tests.helm.chart import HERE, Rendered, core_problems, lint, render, template
from tests.postgres import SUPERUSER, PostgresServer

VALUES_POSTGRES = HERE / "values-postgres.yaml"
STATE_ROLES = {"monitor", "controller", "api", "all"}


@pytest.fixture(scope="module")
def postgres_values() -> Rendered:
    return render(values=[VALUES_POSTGRES])


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(deployment)["env"]}


def _config(rendered: Rendered, tmp_path: Path, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(rendered.config_yaml(), encoding="utf-8")
    return load_config(path, environ=environ or {})


def _pod_environ(deployment: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The INSIGHTLOOP_* variables a pod of ``deployment`` would see, given the Secrets' contents."""
    environ = {}
    for name, entry in _env(deployment).items():
        if not name.startswith("INSIGHTLOOP_"):
            continue
        if "value" in entry:
            environ[name] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            environ[name] = secrets[(ref["name"], ref["key"])]
    return environ


def test_the_postgres_values_lint_and_validate(postgres_values: Rendered, tmp_path: Path) -> None:
    assert lint(values=[VALUES_POSTGRES]) == []
    assert core_problems(postgres_values.core, tmp_path) == []


def test_the_config_names_the_database_and_no_password(postgres_values: Rendered, tmp_path: Path) -> None:
    config = _config(postgres_values, tmp_path)
    assert config.state.url == (
        "postgresql://loop@postgres.db.svc.cluster.local:6432/insightloop_prod?sslmode=verify-full"
    )
    assert config.state.password is None and "password" not in postgres_values.config_yaml()
    assert not postgres_values.of_kind("Secret")  # an existing Secret is named, none is made


def test_only_the_roles_that_use_the_store_get_the_password(postgres_values: Rendered, tmp_path: Path) -> None:
    secrets = {("insightloop-postgres", "pg-password"): "from-the-secret"}
    roles = {}
    for deployment in postgres_values.of_kind("Deployment"):
        role = deployment["metadata"]["labels"]["insightloop/role"]
        roles[role] = _config(postgres_values, tmp_path, _pod_environ(deployment, secrets)).state
    assert set(roles) == {"scorer", "monitor", "controller", "api"}
    for role, state in roles.items():
        if role in STATE_ROLES:
            assert state.url is not None and state.password == "from-the-secret", role
        else:  # the scorers: SQLite in their emptyDir, and the Secret is not referenced at all
            assert (state.url, state.password) == (None, None), role
    (scorer,) = [d for d in postgres_values.of_kind("Deployment") if d["metadata"]["name"].endswith("-scorer")]
    assert not [e for e in _env(scorer).values() if "secretKeyRef" in e.get("valueFrom", {})]


def test_the_retraining_job_gets_neither_the_url_nor_the_password(postgres_values: Rendered) -> None:
    """A job trains from files on the registry volume; it never opens the state store."""
    job = str(postgres_values.job_template())
    assert "INSIGHTLOOP_STATE__" not in job and "insightloop-postgres" not in job and "postgresql://" not in job


def test_a_password_value_becomes_a_secret_of_the_chart(tmp_path: Path) -> None:
    rendered = render(sets={"stateStore.postgresql.host": "pg", "stateStore.postgresql.password": "hunter2-x"})
    secret = rendered.one("Secret")
    assert secret["metadata"]["name"] == "insightloop-postgresql"
    assert base64.b64decode(secret["data"]["password"]).decode() == "hunter2-x"
    (deployment,) = rendered.of_kind("Deployment")
    ref = _env(deployment)["INSIGHTLOOP_STATE__PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "insightloop-postgresql", "key": "password"}
    for doc in rendered.docs:  # only the Secret carries it (base64, as Kubernetes stores it)
        if doc["kind"] != "Secret":
            assert "hunter2-x" not in str(doc), doc["kind"]
    assert core_problems(rendered.core, tmp_path) == []


def test_by_default_the_store_is_sqlite_and_no_secret_is_involved(tmp_path: Path) -> None:
    rendered = render()
    assert _config(rendered, tmp_path).state.url is None
    assert not rendered.of_kind("Secret")
    (deployment,) = rendered.of_kind("Deployment")
    assert not [name for name in _env(deployment) if name.startswith("INSIGHTLOOP_STATE__")]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"stateStore.postgresql.host": "pg"}, "name the Secret holding the password"),
        ({"config.state.url": "postgresql://loop:pw@pg/db"}, "do not set config.state.url"),
        ({"config.state.password": "pw"}, "do not set config.state.url or config.state.password"),
        ({"stateStore.postgresql.sslmode": "sometimes"}, "sslmode"),
        ({"stateStore.postgresql.passwrd": "pw"}, "passwrd"),
    ],
)
def test_an_incomplete_or_misplaced_store_setting_is_refused(sets: dict[str, str], message: str) -> None:
    result = template(sets=sets)
    assert result.returncode != 0
    assert message in result.stderr


def test_what_the_chart_renders_connects_to_a_real_server(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """The URL the chart writes and the password the Secret gives are what the store needs: against a real server."""
    with postgres_server.fresh_database() as database:
        rendered = render(
            sets={
                "stateStore.postgresql.host": postgres_server.host,
                "stateStore.postgresql.port": str(postgres_server.port),
                "stateStore.postgresql.database": database,
                "stateStore.postgresql.user": SUPERUSER,
                "stateStore.postgresql.sslmode": "disable",
                "stateStore.postgresql.existingSecret": "pg",
            }
        )
        (deployment,) = rendered.of_kind("Deployment")
        environ = _pod_environ(deployment, {("pg", "password"): postgres_server.password})
        state = _config(rendered, tmp_path, environ).state.model_copy(update={"dir": tmp_path / "state"})
        store = StateStore.from_config(state)
        assert (store.backend, store.schema_version) == ("postgresql", len(MIGRATIONS))
        store.close()
