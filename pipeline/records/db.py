"""Opening the records database: URL, engine, migrations, transactions.

The default is a SQLite file, ``<SMP_HOME or ./smp-data>/records.db``;
``SMP_DATABASE_URL`` or an explicit URL (the CLI's ``--db``) selects another one,
e.g. ``postgresql://user@host/smp`` (driven by psycopg 3).

:func:`open_records` brings the schema to the newest Alembic revision (the
migrations ship inside this package, so an installed wheel migrates too) and
returns a :class:`Records` handle; engines are cached per URL, the only state
kept between calls.

SQLite is set up for several processes writing at once: WAL journal (readers
never block the writer), a busy timeout (a writer waits for the lock instead of
failing) and foreign keys on. Every transaction starts with ``BEGIN IMMEDIATE``
(except in read-only sessions): with SQLite's default deferred transactions, a
transaction that read first and writes later fails at once with "database is
locked" when another process wrote in between, whatever the busy timeout; taking
the write lock up front makes concurrent writers queue instead, which is what an
ingest needs. Read-only sessions start a plain deferred ``BEGIN``, so readers
never wait for a writer (WAL).

Migrations run in one transaction (:func:`migration_transaction`). On SQLite a
migration that changes a table other tables refer to rebuilds it (copy, drop,
rename), which foreign keys would forbid; so foreign keys are switched off for
that transaction only, and it commits only if ``PRAGMA foreign_key_check`` then
finds every reference intact (SQLite's documented way to alter such a table).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from pipeline.errors import UserError

__all__ = [
    "DATABASE_URL_ENV",
    "HOME_ENV",
    "MIGRATIONS_DIR",
    "Records",
    "close_all",
    "current_revision",
    "data_home",
    "default_url",
    "head_revision",
    "make_engine",
    "migration_transaction",
    "open_records",
    "resolve_url",
    "upgrade",
]

DATABASE_URL_ENV = "SMP_DATABASE_URL"
HOME_ENV = "SMP_HOME"
#: Where the data lives without ``SMP_HOME``: relative to the working directory.
DEFAULT_HOME = "smp-data"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: How long (ms) a SQLite writer waits for another one before failing.
SQLITE_BUSY_TIMEOUT_MS = 60_000
#: PostgreSQL advisory lock key held while migrating, so that two processes opening a
#: fresh database at once do not both create the tables (ASCII "smp-mig").
_MIGRATION_LOCK_KEY = 0x736D702D6D6967

#: Execution option of read-only sessions (see the module docstring).
_READ_ONLY = "smp_read_only"

_ENGINES: dict[str, Engine] = {}


def data_home(env: Mapping[str, str] = os.environ) -> Path:
    """The folder of the records database and the photo store: ``$SMP_HOME`` or ``./smp-data``."""
    return Path(env.get(HOME_ENV) or DEFAULT_HOME)


def default_url(env: Mapping[str, str] = os.environ) -> str:
    """``$SMP_DATABASE_URL``, else the SQLite file ``<data home>/records.db``."""
    return env.get(DATABASE_URL_ENV) or f"sqlite:///{data_home(env) / 'records.db'}"


def resolve_url(url: str | None = None, env: Mapping[str, str] = os.environ) -> sa.URL:
    """The URL to use: ``url`` if given, else :func:`default_url`.

    ``postgresql://`` and ``postgres://`` mean psycopg 3 (SQLAlchemy would pick
    psycopg2 otherwise, which is not a dependency).
    """
    try:
        parsed = sa.make_url(url or default_url(env))
    except sa.exc.ArgumentError:
        raise ValueError(f"not a database URL: {url!r} (e.g. sqlite:///records.db or postgresql://host/db)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _use_wal(cursor, attempts: int = 50) -> None:
    """Put the database file in WAL mode (persistent in the file, so usually already done).

    Switching needs a moment of exclusive access and SQLite does not wait for it through
    the busy timeout: when two processes open a new file at once, one gets "database is
    locked". Retried with a growing pause (~10 s in all) before giving up.
    """
    for i in range(attempts):
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal" or cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or i == attempts - 1:
                raise
        time.sleep(min(0.01 * (i + 1), 0.4))


def make_engine(url: sa.URL | str | None = None) -> Engine:
    """A new engine for ``url`` (uncached), with the SQLite settings described above."""
    if not isinstance(url, sa.URL):
        url = resolve_url(url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # clients' records are the owner's only: a new database file is created 0600 (SQLite gives its
        # -wal and -shm files the same mode)
        os.close(os.open(url.database, os.O_CREAT | os.O_RDWR, 0o600))
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        # autocommit at the driver level: the "begin" hook below issues BEGIN itself
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _alembic_config(connection: Connection | None = None):
    """Alembic's settings, built in code (no alembic.ini): the shipped migrations, and
    the connection to migrate (``env.py`` uses it instead of opening its own)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration shipped with this package."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or ""


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction to change the schema in (see the module docstring)."""
    with engine.connect() as conn:
        sqlite_db = conn.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection if sqlite_db else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys = OFF")  # takes effect only outside a transaction
        try:
            with conn.begin():
                yield conn
                if sqlite_db:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise UserError(
                            f"the records migration would leave {len(broken)} broken reference(s) "
                            f"(first in table {broken[0][0]!r}); nothing was changed"
                        )
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys = ON")


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest revision, in one transaction.

    Concurrent callers queue on a lock (SQLite: the write lock taken by
    ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock) and the later ones find
    the schema already current.
    """
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(_alembic_config())
    with engine.execution_options(**{_READ_ONLY: True}).connect() as conn:
        current = current_revision(conn)
    if current == script.get_current_head():
        return
    try:
        script.get_revision(current)  # type: ignore[arg-type]  # alembic annotates str; None (empty database) is fine
    except CommandError:
        raise UserError(
            f"the records database is at schema revision {current!r}, which this version of "
            "smp-assess does not know: upgrade smp-assess"
        ) from None
    with migration_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        command.upgrade(_alembic_config(conn), "head")


@dataclass(frozen=True)
class Records:
    """An open, migrated records database."""

    engine: Engine

    @property
    def url(self) -> str:
        """The database URL, password hidden (for messages)."""
        return self.engine.url.render_as_string(hide_password=True)

    def session(self, *, read_only: bool = False) -> Session:
        """A new ORM session (the caller commits). ``read_only``: for queries only; on SQLite
        it does not take the write lock, so it never waits for an ingest."""
        bind = self.engine.execution_options(**{_READ_ONLY: True}) if read_only else self.engine
        return Session(bind, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed at the end of the block, or rolled back on any error."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session


def open_records(url: str | None = None) -> Records:
    """Open (creating and migrating as needed) the records database at ``url``.

    ``url``: a SQLAlchemy URL; None means ``$SMP_DATABASE_URL`` or the default
    SQLite file. Engines are cached per URL for the life of the process.
    """
    resolved = resolve_url(url)
    key = resolved.render_as_string(hide_password=False)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = make_engine(resolved)
        upgrade(engine)
        _ENGINES[key] = engine
    return Records(engine)


def close_all() -> None:
    """Dispose of every cached engine (tests, and before deleting a database file)."""
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


def _after_fork_in_child() -> None:
    # A forked child must not use the parent's pooled connections (SQLAlchemy's
    # "using connection pools with multiprocessing"): drop them without closing.
    for engine in _ENGINES.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)
