"""The state store's connection layer: one SQL text, two databases.

:class:`~insightloop.daemon.state.StateStore` writes its SQL once, in the dialect both SQLite and PostgreSQL
understand (``?`` placeholders, ``INSERT … ON CONFLICT (…) DO UPDATE SET … = excluded.…``, ``UPDATE … FROM``,
``CASE`` instead of the two-argument ``MIN``/``MAX`` only SQLite has). What still differs lives here and only
here:

- placeholders: PostgreSQL's driver takes ``%s``; ``LIMIT -1`` (SQLite's "no limit") is ``LIMIT ALL``;
- column types of the migrations: SQLite's ``REAL`` is 8 bytes (PostgreSQL's is 4, so ``DOUBLE PRECISION``),
  ``BLOB`` is ``BYTEA``, ``INTEGER PRIMARY KEY AUTOINCREMENT`` is an identity column;
- where the schema version is kept (``PRAGMA user_version``, or the one-row table ``insightloop_schema``) and
  how concurrent migrations are kept apart (SQLite's write lock, or a PostgreSQL advisory lock, so a monitor and
  a controller starting at once against one database never both apply a migration);
- transactions: SQLite's ``BEGIN IMMEDIATE`` takes the write lock up front; PostgreSQL runs each transaction
  at READ COMMITTED, which is enough because every read-modify-write the store does is one statement
  (an upsert) or is guarded by the row lock of the UPDATE that starts it;
- rows: both give rows readable by column name and by position;
- failures: a PostgreSQL server that cannot be reached, or a connection that broke, is a
  :class:`StateStoreUnavailableError` (temporary: the worker restarts and the next call connects again); a
  refused password, an unknown user or database is a :class:`StateStoreAccessError` (permanent).

The password never appears in a log line or an error message (:func:`masked_url`), and it is handed to the
driver as a connection argument, never put into the environment, so child processes cannot inherit it.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from insightloop.daemon.errors import ExitCode, PermanentError, TemporaryError

#: Schemes of a PostgreSQL ``state.url``.
POSTGRES_SCHEMES = ("postgresql", "postgres")
#: Key of the advisory lock that serialises migrations (any constant; it only has to be the same everywhere).
MIGRATION_LOCK_KEY = 0x1A51_6417
_MASK = "***"


class StateStoreUnavailableError(TemporaryError):
    """The state database cannot be reached right now (server down or restarting, network, a broken connection)."""


class StateStoreAccessError(PermanentError):
    """The state database refused us for a reason retrying cannot fix (password, user, database, permissions).

    The CLI exits with ``CONFIG_ERROR``: what needs fixing is the configuration (``state.*``) or the server's grants.
    """

    exit_code = ExitCode.CONFIG_ERROR


class Row(Protocol):
    """A result row: by column name (``row["id"]``) or by position (``row[0]``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...


class Cursor(Protocol):
    """What a statement returns."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the store uses; SQL is written in the portable dialect with ``?``."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> Cursor: ...


class Backend(Protocol):
    """One database behind the store."""

    #: ``sqlite`` or ``postgresql``.
    name: str
    #: Where the state lives, safe to log (a path, or the URL with its password masked).
    location: str
    #: Statements run without a transaction (reads, single writes) go through this.
    conn: Connection

    def transaction(self) -> Any:
        """A context manager: a write transaction whose body gets the connection; all of it lands or none."""
        ...

    def migrate(self, migrations: Sequence[str]) -> None:
        """Apply the migrations not yet applied, each in a transaction of its own, in order."""
        ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...


def masked_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) replaced by ``***``.

    >>> masked_url("postgresql://loop:s3cret@db.internal:5432/state?sslmode=require")
    'postgresql://loop:***@db.internal:5432/state?sslmode=require'
    >>> masked_url("postgresql://db/state?user=loop&password=s3cret")
    'postgresql://db/state?user=loop&password=***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK  # not a URL we can take apart: show nothing of it rather than risk its secret
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + _MASK
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            query = urlencode([(k, _MASK if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return urlsplit(url).scheme in POSTGRES_SCHEMES


# -- SQLite -------------------------------------------------------------------------------


#: How long an SQLite connection waits for another one's lock before it gives up.
SQLITE_BUSY_S = 30.0


def wal_mode(raw: sqlite3.Connection, wait_s: float = SQLITE_BUSY_S) -> None:
    """Put the file in WAL mode, waiting out other connections' locks.

    Switching a new file to WAL needs it to itself, and SQLite answers "database is locked" at once instead
    of using the busy timeout: two replicas opening one new state file together would lose one of them.
    """
    deadline = time.monotonic() + wait_s
    pause = 0.01
    while True:
        try:
            raw.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


class SqliteBackend:
    """One SQLite file in WAL mode; one connection shared under the store's lock."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        raw = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=SQLITE_BUSY_S)
        raw.row_factory = sqlite3.Row
        wal_mode(raw)
        raw.execute("PRAGMA synchronous=NORMAL")
        raw.execute("PRAGMA foreign_keys=ON")
        self._raw = raw
        self.conn: Connection = raw

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        self._raw.execute("BEGIN IMMEDIATE")
        try:
            yield self._raw
        except BaseException:
            self._raw.execute("ROLLBACK")
            raise
        self._raw.execute("COMMIT")

    def migrate(self, migrations: Sequence[str]) -> None:
        while True:
            with self.transaction() as conn:
                # Read under BEGIN IMMEDIATE's write lock: another process migrating the same file waits here,
                # then sees the version it wrote.
                version = self.schema_version()
                if version >= len(migrations):
                    return
                for statement in split_statements(migrations[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version + 1}")

    def schema_version(self) -> int:
        return int(self._raw.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._raw.close()


def split_statements(script: str) -> list[str]:
    """The statements of a migration script (they hold no ``;`` inside literals)."""
    return [s for s in (part.strip() for part in script.split(";")) if s]


# -- PostgreSQL ---------------------------------------------------------------------------

_DDL_TYPES = [
    # Order matters: the identity column before the bare INTEGER/REAL rewrites could touch it.
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
]


def postgres_ddl(statement: str) -> str:
    """A migration statement written for SQLite, with PostgreSQL's names for the same column types.

    >>> postgres_ddl("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, e BLOB)")
    'CREATE TABLE t (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION NOT NULL, e BYTEA)'
    """
    for pattern, replacement in _DDL_TYPES:
        statement = pattern.sub(replacement, statement)
    return statement


@functools.lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    """A statement of the portable dialect for psycopg: ``?`` outside literals becomes ``%s`` (a literal ``%``
    becomes ``%%``), and ``LIMIT -1`` becomes ``LIMIT ALL``.

    >>> postgres_sql("SELECT id FROM t WHERE a = ? AND b LIKE 'x%?' LIMIT -1 OFFSET ?")
    "SELECT id FROM t WHERE a = %s AND b LIKE 'x%%?' LIMIT ALL OFFSET %s"
    """
    out: list[str] = []
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted  # '' inside a literal toggles twice: still inside
        if char == "%":
            out.append("%%")
        elif char == "?" and not quoted:
            out.append("%s")
        else:
            out.append(char)
    return re.sub(r"\bLIMIT\s+-1\b", "LIMIT ALL", "".join(out))


class _PostgresRow(tuple[Any, ...]):
    """A row readable by position and by column name, like ``sqlite3.Row``."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


@functools.lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> type[_PostgresRow]:
    return type("Row", (_PostgresRow,), {"_names": {name: index for index, name in enumerate(names)}})


def _row_factory(cursor: Any) -> Any:
    """psycopg's row factory: rows of a class that knows this result's column names."""
    description = cursor.description
    if description is None:
        return tuple
    return _row_type(tuple(column.name for column in description))


class _PostgresConnection:
    """psycopg behind the portable dialect; every database error becomes one of the store's two kinds."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        with self._backend.errors():
            return self._backend.raw().execute(postgres_sql(sql), tuple(params))  # type: ignore[no-any-return]

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> Cursor:
        with self._backend.errors():
            cursor = self._backend.raw().cursor()
            cursor.executemany(postgres_sql(sql), [tuple(p) for p in seq_of_params])
            return cursor  # type: ignore[no-any-return]


# libpq's words for what retrying cannot fix (at connect time psycopg gives no SQLSTATE, only the message).
_REFUSED = re.compile(
    r"password authentication failed|no password supplied|authentication failed|"
    r"role \S+ does not exist|database \S+ does not exist|no pg_hba\.conf entry|permission denied",
    re.IGNORECASE,
)
# SQLSTATE classes of errors during a statement that retrying can fix: connection exceptions, operator
# intervention (admin shutdown, a failover), insufficient resources, serialization failures and deadlocks.
_RETRYABLE_SQLSTATE = ("08", "57", "53", "40")


class PostgresBackend:
    """A PostgreSQL database: one connection (autocommit outside transactions) shared under the store's lock,
    opened again on the next call after it broke."""

    name = "postgresql"

    def __init__(self, url: str, password: str | None = None, connect_timeout_s: float = 10.0) -> None:
        self._url = url
        self._password = password
        self._connect_timeout_s = connect_timeout_s
        self.location = masked_url(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._in_transaction = False
        self.conn: Connection = _PostgresConnection(self)
        self.raw()  # connect now: a wrong password or an unreachable server is seen at start-up

    def _secrets(self) -> list[str]:
        found = [self._password] if self._password else []
        parts = urlsplit(self._url)
        if parts.password:
            found.append(parts.password)
        found += [v for k, v in parse_qsl(parts.query) if k == "password" and v]
        return found

    def _clean(self, message: str) -> str:
        for secret in self._secrets():
            message = message.replace(secret, _MASK)
        return message.replace(self._url, self.location)

    def raw(self) -> Any:
        """The live psycopg connection, opened (again) when there is none or the last one broke."""
        import psycopg

        with self._lock:
            if self._conn is not None and not self._conn.closed and not self._conn.broken:
                return self._conn
            if self._in_transaction:  # never reconnect halfway through a transaction: its first part is gone
                raise StateStoreUnavailableError(f"the connection to {self.location} broke during a transaction")
            if self._conn is not None:
                self._conn.close()  # a broken one: release its socket now, not when it is collected
                self._conn = None
            extra: dict[str, Any] = {}
            if self._password is not None:
                extra["password"] = self._password
            try:
                self._conn = psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout_s)),
                    application_name="insightloop",
                    row_factory=_row_factory,
                    **extra,
                )
            except psycopg.OperationalError as exc:
                message = self._clean(str(exc).strip())
                if _REFUSED.search(message):
                    raise StateStoreAccessError(
                        f"PostgreSQL at {self.location} refused the state store: {message}"
                    ) from None
                raise StateStoreUnavailableError(f"PostgreSQL at {self.location} is not reachable: {message}") from None
            except psycopg.Error as exc:  # a malformed URL or option
                raise StateStoreAccessError(
                    f"cannot connect to PostgreSQL at {self.location}: {self._clean(str(exc).strip())}"
                ) from None
            return self._conn

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Database errors as the store's errors, their messages free of the password."""
        import psycopg

        try:
            yield
        except (StateStoreUnavailableError, StateStoreAccessError):
            raise
        except psycopg.Error as exc:
            message = self._clean(str(exc).strip())
            state = exc.sqlstate or ""
            if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(_RETRYABLE_SQLSTATE)):
                raise StateStoreUnavailableError(f"PostgreSQL at {self.location}: {message}") from exc
            if state.startswith(_RETRYABLE_SQLSTATE):
                raise StateStoreUnavailableError(f"PostgreSQL at {self.location}: {message}") from exc
            if state.startswith("42501") or state.startswith("28"):
                raise StateStoreAccessError(f"PostgreSQL at {self.location}: {message}") from exc
            raise  # a bug in our SQL: its own traceback says most

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._lock, self.errors():
            raw = self.raw()
            self._in_transaction = True
            try:
                with raw.transaction():
                    yield self.conn
            finally:
                self._in_transaction = False

    def migrate(self, migrations: Sequence[str]) -> None:
        while True:
            with self.transaction() as conn:
                # Held until this transaction ends: another process migrating the same database waits here,
                # then sees the version this one wrote.
                conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS insightloop_schema "
                    "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
                )
                conn.execute("INSERT INTO insightloop_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
                version = int(conn.execute("SELECT version FROM insightloop_schema WHERE id = 1").fetchone()[0])
                if version >= len(migrations):
                    return
                for statement in split_statements(migrations[version]):
                    conn.execute(postgres_ddl(statement))
                conn.execute("UPDATE insightloop_schema SET version = ? WHERE id = 1", (version + 1,))

    def schema_version(self) -> int:
        with self.errors():
            row = self.conn.execute(
                "SELECT version FROM insightloop_schema WHERE id = 1"
                if self._has_schema_table()
                else "SELECT 0 AS version"
            ).fetchone()
        return int(row[0])

    def _has_schema_table(self) -> bool:
        row = self.conn.execute("SELECT to_regclass('insightloop_schema') IS NOT NULL").fetchone()
        return bool(row[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_backend(
    directory: Path, db_file: str, url: str | None, password: str | None, connect_timeout_s: float
) -> Backend:
    """SQLite in ``directory`` unless ``url`` names a PostgreSQL database (``directory`` is made either way: it
    holds the reports and profile caches too)."""
    directory.mkdir(parents=True, exist_ok=True)
    if url:
        if not is_postgres_url(url):
            raise StateStoreAccessError(
                f"state.url must be a postgresql:// URL (got a {urlsplit(url).scheme or 'schemeless'} one); "
                "leave it empty for SQLite in state.dir"
            )
        return PostgresBackend(url, password, connect_timeout_s)
    return SqliteBackend(directory / db_file)
