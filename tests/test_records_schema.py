"""Records: the schema and its migrations, visit kinds, the photo store and the SQLite file's permissions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from records_helpers import _migration_diff, fake_doc, fake_dots, make_photos, store_files

from pipeline.errors import UserError
from pipeline.records import (
    DEFAULT_CLINIC,
    IngestError,
    PhotoStore,
    StoreError,
    add_visit,
    open_records,
    parse_kind,
    store_assessment,
)
from pipeline.records import db as records_db
from pipeline.records.schema import Assessment, Base, Client, Photo, Region

pytestmark = pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")


@pytest.fixture(autouse=True)
def _dispose_engines():
    yield
    records_db.close_all()


@pytest.fixture
def env(tmp_path):
    """An open records database (temporary SQLite file), a store, and a client ``C1``."""
    records = open_records(f"sqlite:///{tmp_path / 'records.db'}")
    store = PhotoStore(tmp_path / "store")
    return records, store, tmp_path


# --------------------------------------------------------------------------- schema and migrations


def test_open_records_migrates_a_new_sqlite_file(tmp_path):
    records = open_records(f"sqlite:///{tmp_path / 'sub' / 'r.db'}")
    tables = set(sa.inspect(records.engine).get_table_names())
    assert set(Base.metadata.tables) | {"alembic_version"} == tables
    with records.engine.connect() as conn:
        assert records_db.current_revision(conn) == records_db.head_revision()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("SELECT slug FROM clinics").scalars().all() == [DEFAULT_CLINIC]
    # while a writer holds the write lock, a read-only session still reads (WAL, deferred BEGIN)
    with records.transaction() as writer:
        writer.add(Client(clinic_id=1, external_id="W"))
        writer.flush()
        with records.session(read_only=True) as reader:
            assert reader.scalars(sa.select(Client.external_id)).all() == []
    # opened again (another process, a later CLI call): nothing to do
    records_db.close_all()
    assert open_records(f"sqlite:///{tmp_path / 'sub' / 'r.db'}").engine is not records.engine
    # a database from a newer smp-assess is refused with a clear message, not migrated
    with records.transaction() as s:
        s.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    records_db.close_all()
    with pytest.raises(UserError, match="schema revision '9999'.*upgrade smp-assess"):
        open_records(f"sqlite:///{tmp_path / 'sub' / 'r.db'}")


def test_migration_head_matches_the_models(env):
    records, _, _ = env
    assert _migration_diff(records.engine) == []


def test_review_decisions_of_an_older_database_survive_the_photo_review_migration(tmp_path):
    """0002 -> 0003 (the photo review page's acts) keeps the decisions made before, none undone; and back."""
    from alembic import command

    engine = records_db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        command.upgrade(records_db._alembic_config(conn), "0002")
        conn.exec_driver_sql("INSERT INTO clients (clinic_id, external_id, created_at) VALUES (1, 'C', '2026-01-01')")
        conn.exec_driver_sql(
            "INSERT INTO photos (sha256, stored_path, original_name, width, height, bytes, created_at)"
            " VALUES ('ab', 'photos/ab.jpg', 'a.jpg', 10, 10, 1, '2026-01-01')"
        )
        conn.exec_driver_sql(
            "INSERT INTO assessments (photo_id, model_name, model_version, model_key, config_hash,"
            " schema, dot_count, metrics, calibration, quality, warnings, timings, created_at)"
            " VALUES (1, 'm', '1', 'm@1', 'h', 's', 1, '{}', '{}', '{}', '[]', '{}', '2026-01-01')"
        )
        conn.exec_driver_sql(
            "INSERT INTO dots (assessment_id, dot_index, x, y, blue_shift, faded, spread)"
            " VALUES (1, 0, 1.0, 2.0, 0, 0, 0)"
        )
        conn.exec_driver_sql(
            "INSERT INTO review_decisions (dot_id, decision, reviewer, created_at)"
            " VALUES (1, 'reject', 'ann', '2026-01-02')"
        )
    with engine.begin() as conn:
        command.upgrade(records_db._alembic_config(conn), "0003")
        assert conn.exec_driver_sql("SELECT decision, reviewer, undone_at FROM review_decisions").all() == [
            ("reject", "ann", None)
        ]
        conn.exec_driver_sql(
            "INSERT INTO review_done_marks (assessment_id, reviewer, created_at) VALUES (1, 'ann', '2026-01-03')"
        )
    with records_db.migration_transaction(engine) as conn:
        command.upgrade(records_db._alembic_config(conn), "head")
    assert _migration_diff(engine) == []
    with records_db.migration_transaction(engine) as conn:
        command.downgrade(records_db._alembic_config(conn), "0002")
        assert conn.exec_driver_sql("SELECT count(*) FROM review_decisions").scalar() == 1
        assert "review_done_marks" not in sa.inspect(conn).get_table_names()
    engine.dispose()


def test_photos_become_their_clinics_and_two_clinics_may_hold_the_same_bytes(tmp_path):
    """0003 -> 0004: each photo gets its visit's clinic (one in no visit, the default clinic); afterwards
    the same sha256 may be recorded once per clinic; going back is refused while two clinics share one."""
    from alembic import command

    engine = records_db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        command.upgrade(records_db._alembic_config(conn), "0003")
        run = conn.exec_driver_sql
        run("INSERT INTO clinics (id, slug, name, created_at) VALUES (7, 'north', 'North', '2026-01-01')")
        run("INSERT INTO clients (id, clinic_id, external_id, created_at) VALUES (1, 7, 'C', '2026-01-01')")
        run("INSERT INTO regions (id, client_id, name, created_at) VALUES (1, 1, 'crown', '2026-01-01')")
        run(
            "INSERT INTO visits (id, client_id, region_id, visit_date, kind, session_number, created_at)"
            " VALUES (1, 1, 1, '2026-01-01', 'baseline', 0, '2026-01-01')"
        )
        for photo_id, sha in ((1, "a" * 64), (2, "b" * 64)):
            run(
                "INSERT INTO photos (id, sha256, stored_path, original_name, width, height, bytes, created_at)"
                f" VALUES ({photo_id}, '{sha}', 'photos/{sha}.jpg', 'p.jpg', 10, 10, 1, '2026-01-01')"
            )
        run("INSERT INTO visit_photos (visit_id, photo_id, added_at) VALUES (1, 1, '2026-01-01')")
    with records_db.migration_transaction(engine) as conn:
        command.upgrade(records_db._alembic_config(conn), "0004")
        default = conn.exec_driver_sql("SELECT id FROM clinics WHERE slug = 'default'").scalar()
        assert conn.exec_driver_sql("SELECT id, clinic_id FROM photos ORDER BY id").all() == [(1, 7), (2, default)]
    assert _migration_diff(engine) == []
    with engine.begin() as conn:  # the same bytes in another clinic: allowed; twice in one clinic: not
        conn.exec_driver_sql(
            "INSERT INTO photos (clinic_id, sha256, stored_path, original_name, width, height,"
            f" bytes, created_at) VALUES (7, '{'b' * 64}', 'photos/b.jpg', 'p.jpg', 10, 10, 1,"
            " '2026-01-01')"
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO photos (clinic_id, sha256, stored_path, original_name, width, height,"
            f" bytes, created_at) VALUES (7, '{'a' * 64}', 'photos/a.jpg', 'p.jpg', 10, 10, 1,"
            " '2026-01-01')"
        )
    with (
        pytest.raises(RuntimeError, match="1 photo.*more than one clinic"),
        records_db.migration_transaction(engine) as conn,
    ):
        command.downgrade(records_db._alembic_config(conn), "0003")
    with records_db.migration_transaction(engine) as conn:
        conn.exec_driver_sql("DELETE FROM photos WHERE id = 3")
        command.downgrade(records_db._alembic_config(conn), "0003")
        assert "clinic_id" not in {c["name"] for c in sa.inspect(conn).get_columns("photos")}
    engine.dispose()


def test_the_same_bytes_are_a_new_photo_of_another_clinic(env):
    """add_visit by two clinics with one file: two photos, one store file; within a clinic the old rule
    stays (a photo already in another visit of the clinic is refused); assessments are stored per clinic."""
    records, store, tmp = env
    photos = make_photos(tmp / "in", 1)
    kw = dict(region="crown", date="2026-01-01", kind="baseline", create_client=True)
    first = add_visit(records, store, client="C", clinic="north", photos=[photos[0]], **kw)
    second = add_visit(records, store, client="C", clinic="south", photos=[photos[0]], **kw)
    assert first.added and second.added
    with pytest.raises(IngestError, match="already in visit"):
        add_visit(records, store, client="D", clinic="south", photos=[photos[0]], **kw)
    with records.transaction() as s:
        rows = s.execute(sa.select(Photo.id, Photo.sha256, Photo.stored_path)).all()
        assert len(rows) == 2 and len({sha for _, sha, _ in rows}) == 1 and len({p for _, _, p in rows}) == 1
        sha = rows[0][1]
        stored = store_assessment(s, sha, fake_doc(sha), fake_dots(), clinic="south")
        a = s.get(Assessment, stored.id)
        assert a.photo_id == max(i for i, _, _ in rows)
        with pytest.raises(LookupError, match="clinic 'west'"):
            store_assessment(s, sha, fake_doc(sha), None, clinic="west")
    assert len(store_files(store.root)) == 1


def test_default_url_and_postgres_driver(monkeypatch, tmp_path):
    assert records_db.default_url({}) == f"sqlite:///{Path('smp-data') / 'records.db'}"
    assert records_db.default_url({"SMP_HOME": "/data/smp"}) == "sqlite:////data/smp/records.db"
    assert records_db.default_url({"SMP_DATABASE_URL": "postgresql://h/db"}) == "postgresql://h/db"
    assert records_db.resolve_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert records_db.resolve_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="not a database URL"):
        records_db.resolve_url("not a url")


def test_schema_constraints(env):
    records, _, _ = env
    with pytest.raises(sa.exc.IntegrityError):  # a session visit needs its number
        with records.transaction() as s:
            s.execute(sa.text("INSERT INTO clients (clinic_id, external_id, created_at) VALUES (1, 'x', '2026-01-01')"))
            s.execute(sa.text("INSERT INTO regions (client_id, name, created_at) VALUES (1, 'crown', '2026-01-01')"))
            s.execute(
                sa.text(
                    "INSERT INTO visits (client_id, region_id, visit_date, kind, session_number, created_at)"
                    " VALUES (1, 1, '2026-01-01', 'session', 0, '2026-01-01')"
                )
            )
    with pytest.raises(sa.exc.IntegrityError):  # foreign keys are enforced on SQLite
        with records.transaction() as s:
            s.execute(sa.text("INSERT INTO regions (client_id, name, created_at) VALUES (99, 'crown', '2026-01-01')"))
    with pytest.raises(ValueError, match="region"):
        Region(name="Crown area")


@pytest.mark.parametrize(
    "kind,session,expected",
    [
        ("follow-up", None, ("follow-up", 0)),
        ("Follow_Up", "", ("follow-up", 0)),
        ("followup", None, ("follow-up", 0)),
        ("session", 2, ("session", 2)),
        ("Session 3", None, ("session", 3)),
        ("session-3", "3", ("session", 3)),
        ("touch-up", None, ("touch-up", 0)),
        ("touchup 1", None, ("touch-up", 1)),
        ("baseline", None, ("baseline", 0)),
    ],
)
def test_parse_kind(kind, session, expected):
    assert parse_kind(kind, session) == expected


@pytest.mark.parametrize(
    "kind,session,message",
    [
        ("checkup", None, "unknown kind"),
        ("session", None, "needs its session number"),
        ("baseline", 2, "has no session number"),
        ("session 2", 3, "disagree"),
        ("session", "two", "bad session"),
    ],
)
def test_parse_kind_refuses(kind, session, message):
    with pytest.raises(ValueError, match=message):
        parse_kind(kind, session)


# --------------------------------------------------------------------------- photo store


def test_store_is_content_addressed(tmp_path):
    store = PhotoStore(tmp_path / "store")
    (a,) = make_photos(tmp_path / "in", 1)
    sha = __import__("hashlib").sha256(a.read_bytes()).hexdigest()
    copy = tmp_path / "in" / "COPY.PNG"
    shutil.copy(a, copy)
    first = store.put(a, sha)
    second = store.put(copy, sha)
    assert first.created and not second.created and first.relpath == second.relpath
    assert first.relpath == f"photos/{sha[:2]}/{sha[2:4]}/{sha}.png"
    assert store_files(store.root) == [f"{sha}.png"]  # one copy, no temporary files left
    with pytest.raises(StoreError, match="changed"):
        store.put(a, "0" * 64)
    # a damaged stored copy is repaired
    store.path(first.relpath).write_bytes(b"garbage")
    store.put(a, sha)
    assert store.path(first.relpath).read_bytes() == a.read_bytes()
    # orphans (no record points to them) are swept once old enough
    assert store.sweep({first.relpath}, min_age_s=0) == ()
    assert store.sweep(set(), min_age_s=3600) == ()
    assert store.sweep(set(), min_age_s=0) == (first.relpath,)
    assert store_files(store.root) == []


# --------------------------------------------------------------------------- PostgreSQL


def test_a_new_sqlite_database_is_its_owners_only(tmp_path):
    import stat

    from pipeline.records import open_records

    old = os.umask(0o022)
    try:
        open_records(f"sqlite:///{tmp_path / 'r.db'}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.db").stat().st_mode) == 0o600
