"""Alembic migrations of the records database, shipped inside the package.

:func:`pipeline.records.db.open_records` applies them (``upgrade head``) in code.
To write the next revision after changing :mod:`pipeline.records.schema`::

    .venv/bin/alembic -c pipeline/records/migrations/alembic.ini revision --autogenerate -m "what changed"

(against ``$SMP_DATABASE_URL``, or ``-x url=sqlite:///scratch.db``), then read and
fix the generated file; ``tests/test_records_schema.py`` checks that the migrations and
the models agree.
"""
