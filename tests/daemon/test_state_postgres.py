"""The PostgreSQL side of the state store, against a real server (tests/postgres.py): the same schema as
SQLite, migrations that two processes can start at once, clear errors for a wrong password or an absent
server, a broken connection that heals, and a password that reaches no log, no error and no child process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from insightloop.daemon.broker import EmbeddedBroker, free_port
from insightloop.daemon.config import load_config
from insightloop.daemon.errors import ConfigError, ExitCode
from insightloop.daemon.state import MIGRATIONS, JobRecord, StateStore
from insightloop.daemon.state_backend import (
    StateStoreAccessError,
    StateStoreUnavailableError,
    masked_url,
    postgres_sql,
)
from insightloop.retrain.runners import job_environment
from tests.postgres import SUPERUSER, PostgresServer

# -- the dialect layer (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://loop@db:5432/state", "postgresql://loop@db:5432/state"),
        ("postgresql://loop:s3cret@db:5432/state", "postgresql://loop:***@db:5432/state"),
        ("postgres://loop:p%40ss@db/state?sslmode=require", "postgres://loop:***@db/state?sslmode=require"),
        ("postgresql://db/state?user=loop&password=s3cret", "postgresql://db/state?user=loop&password=***"),
        ("postgresql://a:b:c@db/state", "postgresql://a:***@db/state"),  # a colon in the password
        ("postgresql://a:x@y@db/state", "postgresql://a:***@db/state"),  # an unescaped @ in the password
        ("postgresql://db/state", "postgresql://db/state"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


@pytest.mark.parametrize(
    ("portable", "for_psycopg"),
    [
        ("SELECT * FROM t WHERE id = ?", "SELECT * FROM t WHERE id = %s"),
        ("UPDATE t SET a = '?' WHERE b = ?", "UPDATE t SET a = '?' WHERE b = %s"),  # not inside a literal
        ("SELECT 'it''s ?' , ?", "SELECT 'it''s ?' , %s"),  # a quote escaped inside a literal
        ("SELECT a FROM t WHERE b LIKE '5%'", "SELECT a FROM t WHERE b LIKE '5%%'"),
        ("SELECT id FROM t ORDER BY a LIMIT -1 OFFSET ?", "SELECT id FROM t ORDER BY a LIMIT ALL OFFSET %s"),
        ("SELECT id FROM t LIMIT ?", "SELECT id FROM t LIMIT %s"),
    ],
)
def test_portable_sql_becomes_psycopgs(portable: str, for_psycopg: str) -> None:
    assert postgres_sql(portable) == for_psycopg


# -- one schema ------------------------------------------------------------------------------

# What each SQLite type name of the migrations is in PostgreSQL.
SAME_TYPE = {"TEXT": "text", "REAL": "double precision", "BLOB": "bytea", "INTEGER": {"integer", "bigint"}}


def test_both_backends_have_the_same_tables_columns_and_indexes(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    sqlite_store = StateStore(tmp_path)
    raw = sqlite_store._conn
    tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
    tables = sorted(t for t in tables if not t.startswith("sqlite_"))
    sqlite_columns = {
        (table, r["name"]): (r["type"], bool(r["notnull"]) or bool(r["pk"]))
        for table in tables
        for r in raw.execute(f"PRAGMA table_info({table})").fetchall()
    }
    sqlite_indexes = {
        r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall()
    }
    sqlite_store.close()

    with postgres_server.fresh_database() as database:
        store = StateStore(tmp_path, postgres_server.url(database), postgres_server.password)
        rows = store._conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name != 'insightloop_schema'"
        ).fetchall()
        pg_columns = {(r[0], r[1]): (r[2], r[3] == "NO") for r in rows}
        pg_indexes = {
            r[0]
            for r in store._conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname NOT LIKE '%pkey'"
            ).fetchall()
        }
        store.close()

    assert sorted({table for table, _ in pg_columns}) == tables
    assert set(pg_columns) == set(sqlite_columns)
    for key, (sqlite_type, sqlite_not_null) in sqlite_columns.items():
        pg_type, pg_not_null = pg_columns[key]
        expected = SAME_TYPE[sqlite_type]
        assert pg_type in expected if isinstance(expected, set) else pg_type == expected, (key, pg_type)
        assert pg_not_null == sqlite_not_null, key
    assert pg_indexes == sqlite_indexes


def test_two_processes_starting_at_once_migrate_once(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """A monitor and a controller (and two more) open one empty database at the same moment."""
    with postgres_server.fresh_database() as database:
        url = postgres_server.url(database)
        opened: list[StateStore] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def open_store() -> None:
            start.wait()
            try:
                opened.append(StateStore(tmp_path, url, postgres_server.password))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_store, name=f"opener-{n}") for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert [s.schema_version for s in opened] == [len(MIGRATIONS)] * 4
        opened[0].save_job(JobRecord(id="job-1", state="running"))
        assert [j.id for j in opened[3].jobs()] == ["job-1"]  # one database, seen by all
        for store in opened:
            store.close()


# -- errors ----------------------------------------------------------------------------------


def test_a_wrong_password_is_a_permanent_error_that_does_not_repeat_it(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    wrong = "wrong-" + postgres_server.password[:8]
    with pytest.raises(StateStoreAccessError) as caught:
        StateStore(tmp_path, postgres_server.url(), wrong)
    message = str(caught.value)
    assert "password authentication failed" in message and f"127.0.0.1:{postgres_server.port}" in message
    assert wrong not in message and caught.value.__cause__ is None
    # The same with the password inside the URL: the URL is shown masked.
    with pytest.raises(StateStoreAccessError) as caught:
        StateStore(tmp_path, f"postgresql://{SUPERUSER}:{wrong}@127.0.0.1:{postgres_server.port}/postgres")
    assert wrong not in str(caught.value) and f"{SUPERUSER}:***@" in str(caught.value)


def test_an_absent_database_is_a_permanent_error(postgres_server: PostgresServer, tmp_path: Path) -> None:
    with pytest.raises(StateStoreAccessError, match='database "no_such_db" does not exist'):
        StateStore(tmp_path, postgres_server.url("no_such_db"), postgres_server.password)


def test_a_server_that_does_not_answer_is_a_temporary_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StateStoreUnavailableError, match=rf"127\.0\.0\.1:{port}.*not reachable"):
        StateStore(tmp_path, f"postgresql://loop:pw-123@127.0.0.1:{port}/state", connect_timeout_s=2)
    assert time.monotonic() - started < 10


def test_a_connection_the_server_ended_heals_on_the_next_call(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """An administrator's kill, a failover or a server restart ends the store's connection."""
    with postgres_server.fresh_database() as database:
        url = postgres_server.url(database)
        store = StateStore(tmp_path, url, postgres_server.password)
        store.save_job(JobRecord(id="job-1", state="running"))
        with psycopg.connect(url, password=postgres_server.password, autocommit=True) as server_side:
            ended = server_side.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'insightloop' AND datname = current_database()"
            ).fetchone()
        assert ended is not None and ended[0] == 1
        with pytest.raises(StateStoreUnavailableError):  # what was in flight fails, as a temporary error
            store.job("job-1")
        job = store.job("job-1")  # the next call connects again
        assert job is not None and job.state == "running"
        with pytest.raises(StateStoreUnavailableError), store.transaction() as conn:  # ended inside a transaction
            conn.execute("INSERT INTO outbox (id, created_at, payload) VALUES ('x', 'now', '{}')")
            with psycopg.connect(url, password=postgres_server.password, autocommit=True) as server_side:
                server_side.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'insightloop' AND datname = current_database()"
                )
            conn.execute("INSERT INTO outbox (id, created_at, payload) VALUES ('y', 'now', '{}')")
        assert store.outbox() == []  # neither half landed
        store.save_job(JobRecord(id="job-2", state="running"))
        assert len(store.jobs()) == 2
        store.close()


# -- configuration, logs, child processes ----------------------------------------------------


def test_the_url_must_name_postgres_and_its_errors_never_echo_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"state": {"url": "mysql://loop:s3cret@db/state"}}, environ={})
    assert "state.url" in str(caught.value) and "s3cret" not in str(caught.value)
    assert load_config(None, {"state": {"url": ""}}, environ={}).state.url is None  # empty: SQLite


def test_the_password_comes_from_the_environment_and_stays_out_of_reprs_and_jobs() -> None:
    environ = {"INSIGHTLOOP_STATE__URL": "postgresql://loop@db:5432/state", "INSIGHTLOOP_STATE__PASSWORD": "s3cret"}
    config = load_config(None, None, environ=environ)
    assert (config.state.url, config.state.password) == ("postgresql://loop@db:5432/state", "s3cret")
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.state)
    # A local retraining job's environment leaves it out, and libpq's own variable too.
    child = job_environment({**environ, "PGPASSWORD": "s3cret", "PATH": "/bin"})
    assert "s3cret" not in child.values() and child["PATH"] == "/bin"


def test_the_daemon_says_which_store_it_uses_and_logs_no_password(
    postgres_server: PostgresServer, broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.daemon_process import InProcessDaemon, http_get

    with postgres_server.fresh_database() as database:
        url = postgres_server.url(database, with_password=True)  # the password inside the URL, against advice
        config = load_config(
            None,
            {
                "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                "registry": {"path": str(tmp_path / "registry")},
                "state": {"dir": str(tmp_path / "state"), "url": url},
                "api": {"host": "127.0.0.1", "http_port": 0},
            },
            environ={},
        )
        with caplog.at_level(logging.INFO, logger="insightloop"), InProcessDaemon(config, role="api") as daemon:
            status, body = http_get(daemon.url + "/readyz")
        assert status == 200 and '"state": {"backend": "postgresql"}' in body
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert f"state store: postgresql at postgresql://{SUPERUSER}:***@127.0.0.1:{postgres_server.port}/" in logged
        assert postgres_server.password not in logged and postgres_server.password not in body


def test_insightloop_run_with_a_wrong_password_exits_with_a_config_error(
    postgres_server: PostgresServer, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                "registry": {"path": str(tmp_path / "registry")},
                "state": {"dir": str(tmp_path / "state"), "url": postgres_server.url()},
                "api": {"host": "127.0.0.1", "http_port": 0},
            }
        ),
        encoding="utf-8",
    )
    wrong = "not-the-password-4321"
    env: dict[str, Any] = {**os.environ, "INSIGHTLOOP_STATE__PASSWORD": wrong}
    done = subprocess.run(
        [sys.executable, "-m", "insightloop.daemon.cli", "run", "--config", str(config_file), "--role", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == ExitCode.CONFIG_ERROR, done.stderr[-2000:]
    assert "password authentication failed" in done.stderr and "refused the state store" in done.stderr
    assert wrong not in done.stderr + done.stdout
