"""Alembic environment: migrate the connection handed over by
:func:`pipeline.records.db.upgrade`, or, run from the ``alembic`` command, the
database of ``-x url=...`` / ``$SMP_DATABASE_URL`` / the default SQLite file."""

from __future__ import annotations

from alembic import context

from pipeline.records.db import make_engine
from pipeline.records.schema import Base


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters tables by copying them; later revisions need batch mode there
        render_as_batch=connection.dialect.name == "sqlite",
        # our SQLite connections issue BEGIN themselves, so DDL is transactional there too
        transactional_ddl=True,
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(context.get_x_argument(as_dictionary=True).get("url"))
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
run_migrations_online()
