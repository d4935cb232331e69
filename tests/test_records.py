"""Records: schema and migrations, photo store, visit ingest, manifest import, assessments,
concurrency, CLI (pipeline/records/, pipeline/commands/visit.py); and the same ingest on a
real PostgreSQL server when one can be started."""

from __future__ import annotations

import csv
import getpass
import math
import multiprocessing
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from datetime import date
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from pipeline.errors import UserError
from pipeline.records import (
    DEFAULT_CLINIC,
    IngestError,
    PhotoStore,
    StoreError,
    add_visit,
    import_manifest,
    list_clients,
    open_records,
    parse_kind,
    record_review,
    store_assessment,
    store_dot_links,
    sweep_store,
)
from pipeline.records import db as records_db
from pipeline.records import ingest as ingest_module
from pipeline.records.schema import Assessment, Base, Client, Dot, DotLink, Photo, Region, Visit, VisitPhoto

pytestmark = pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")


# --------------------------------------------------------------------------- helpers


def make_photos(folder: Path, n: int, seed: int = 0, prefix: str = "p") -> list[Path]:
    """``n`` distinct small PNG photos."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def counts(records) -> dict[str, int]:
    with records.session() as s:
        return {
            m.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(m))
            for m in (Client, Region, Visit, Photo, VisitPhoto, Assessment, Dot)
        }


def store_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "photos").glob("*/*/*")) if (root / "photos").exists() else []


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


def visit_args(**kw):
    base = dict(client="C1", region="crown", date="2026-03-01", kind="follow-up", create_client=True)
    return {**base, **kw}


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


def _migration_diff(engine) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


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


# --------------------------------------------------------------------------- add_visit


def test_add_visit_is_idempotent(env):
    records, store, tmp = env
    photos = make_photos(tmp / "in", 3)
    first = add_visit(records, store, photos=photos, view="closeup", notes="first follow-up", **visit_args())
    assert first.visit_created and len(first.added) == 3 and first.skipped == ()
    before, files = counts(records), store_files(store.root)
    again = add_visit(records, store, photos=photos, **visit_args())
    assert not again.visit_created and again.added == () and again.skipped == tuple(str(p) for p in photos)
    assert again.visit_id == first.visit_id
    assert counts(records) == before and store_files(store.root) == files
    assert before == {
        "clients": 1,
        "regions": 1,
        "visits": 1,
        "photos": 3,
        "visit_photos": 3,
        "assessments": 0,
        "dots": 0,
    }
    # adding one more photo to the same visit adds just that one
    (extra,) = make_photos(tmp / "more", 1, seed=9, prefix="extra")
    more = add_visit(records, store, photos=[*photos, extra], **visit_args(create_client=False))
    assert more.added == (str(extra),) and len(more.skipped) == 3
    with records.session() as s:
        photo = s.scalars(sa.select(Photo).where(Photo.original_name == "p0.png")).one()
        assert (photo.width, photo.height, photo.view) == (32, 24, "closeup")
        assert store.path(photo.stored_path).read_bytes() == photos[0].read_bytes()
        assert s.scalars(sa.select(Visit.notes)).one() == "first follow-up"


def test_add_visit_reports_every_problem_and_writes_nothing(env):
    records, store, tmp = env
    photos = make_photos(tmp / "in", 2)
    add_visit(records, store, photos=photos[:1], **visit_args())
    before = counts(records)
    with pytest.raises(IngestError, match=r"unknown client 'C2' \(use --create-client"):
        add_visit(records, store, photos=photos[1:], **visit_args(client="C2", create_client=False))
    with pytest.raises(IngestError, match=r"p0.png is already in visit C1/crown 2026-03-01 follow-up"):
        add_visit(records, store, photos=photos, **visit_args(date="2026-04-01"))
    with pytest.raises(IngestError, match="duplicate photo: .*p1.png is the same photo as .*p1.png"):
        add_visit(records, store, photos=[photos[1], photos[1]], **visit_args(date="2026-04-01"))
    with pytest.raises(IngestError) as err:
        add_visit(records, store, photos=[tmp / "nope.jpg"], **visit_args(date="2026-02-30", kind="checkup"))
    assert "no such day" in str(err.value) and "unknown kind 'checkup'" in str(err.value)
    assert "no such photo file" in str(err.value) and len(err.value.problems) == 3
    not_a_photo = tmp / "notes.jpg"
    not_a_photo.write_text("hello")
    with pytest.raises(IngestError, match="notes.jpg: "):
        add_visit(records, store, photos=[not_a_photo], **visit_args(date="2026-04-01"))
    assert counts(records) == before


@pytest.mark.parametrize("where", ["store", "database"])
def test_crash_mid_ingest_leaves_no_half_visit(env, monkeypatch, where):
    records, store, tmp = env
    kept = make_photos(tmp / "old", 1, seed=5)
    add_visit(records, store, photos=kept, **visit_args(region="nape"))  # a committed photo, stored
    photos = make_photos(tmp / "in", 3)
    before, files = counts(records), store_files(store.root)
    calls = []

    if where == "store":  # the disk fails on the second photo
        real_put = PhotoStore.put

        def put(self, source, sha256):
            calls.append(source)
            if len(calls) == 2:
                raise OSError("disk full")
            return real_put(self, source, sha256)

        monkeypatch.setattr(PhotoStore, "put", put)
    else:  # the database fails after the photos were stored (while storing the last assessment)
        real = ingest_module._store_assessment

        def store_assessment(session, photo_id, sha, doc, dots):
            calls.append(sha)
            if len(calls) == 3:
                raise sa.exc.OperationalError("INSERT", {}, Exception("connection lost"))
            return real(session, photo_id, sha, doc, dots)

        monkeypatch.setattr(ingest_module, "_store_assessment", store_assessment)
    with pytest.raises((OSError, sa.exc.OperationalError)):
        add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args())
    assert counts(records) == before  # no visit, no photos, no assessments
    assert store_files(store.root) == files  # the files of the failed attempt are gone, the old one kept
    monkeypatch.undo()
    result = add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args())
    assert len(result.added) == 3 and result.assessments_added == 3


def test_a_failed_ingest_keeps_files_it_did_not_create(env, monkeypatch):
    """Cleanup removes only the files the failed attempt created: here one photo's file was
    already in the store (as if another process were ingesting it) and must stay."""
    import hashlib

    records, store, tmp = env
    photos = make_photos(tmp / "in", 2)
    theirs = store.put(photos[0], hashlib.sha256(photos[0].read_bytes()).hexdigest())
    real = ingest_module._insert

    def insert(session, model, values):
        if model is VisitPhoto and len(store_files(store.root)) == 2:
            raise RuntimeError("crash")
        return real(session, model, values)

    monkeypatch.setattr(ingest_module, "_insert", insert)
    with pytest.raises(RuntimeError):
        add_visit(records, store, photos=photos, **visit_args())
    assert store_files(store.root) == [Path(theirs.relpath).name]
    assert counts(records)["photos"] == 0
    # had its process been killed, the file would be an orphan: swept once old enough
    assert sweep_store(records, store, min_age_s=3600) == ()
    assert sweep_store(records, store, min_age_s=0) == (theirs.relpath,)


# --------------------------------------------------------------------------- manifests


def write_manifest(
    path: Path, rows: list[dict], columns=("client", "region", "date", "kind", "session", "photo", "view", "notes")
) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})
    return path


def test_manifest_validation_lists_every_problem_with_its_row(env):
    records, store, tmp = env
    photos = make_photos(tmp / "m", 4)
    add_visit(records, store, photos=photos[3:], **visit_args(client="C9", region="vertex"))
    before = counts(records)
    rows = [
        {"client": "C1", "region": "crown", "date": "2026-03-01", "kind": "baseline", "photo": "p0.png"},  # row 2 ok
        {"client": "C404", "region": "crown", "date": "2026-03-01", "kind": "baseline", "photo": "p1.png"},  # 3
        {"client": "C1", "region": "crown", "date": "01/03/2026", "kind": "baseline", "photo": "p2.png"},  # 4
        {"client": "C1", "region": "crown", "date": "2026-03-01", "kind": "check-up", "photo": "p2.png"},  # 5
        {"client": "C1", "region": "crown", "date": "2026-03-01", "kind": "baseline", "photo": "gone.png"},  # 6
        {"client": "C1", "region": "crown", "date": "2026-03-01", "kind": "baseline", "photo": "p0.png"},  # 7 dup
        {"client": "C1", "region": "crown", "date": "2026-03-01", "kind": "baseline", "photo": "p3.png"},  # 8 in C9
        {"client": "C1", "region": "crown", "date": "2026-03-01", "kind": "session", "photo": "p2.png"},  # 9
        {
            "client": "C1",
            "region": "Crown!",
            "date": "2026-03-01",
            "kind": "baseline",
            "photo": "p2.png",
            "view": "side",
        },  # 10
    ]
    manifest = write_manifest(tmp / "m" / "visits.csv", rows)
    with records.transaction() as s:  # C1 exists; C404 does not
        s.add(Client(clinic_id=1, external_id="C1"))
    before = counts(records)
    result = import_manifest(records, store, manifest)
    text = [str(p) for p in result.problems]
    expected = [
        "row 3: unknown client 'C404'",
        "row 4: bad date '01/03/2026': use YYYY-MM-DD",
        "row 5: unknown kind 'check-up'",
        "row 6: no such photo file: gone.png",
        "row 7: duplicate photo: p0.png is the same photo as row 2 (p0.png)",
        "row 8: p3.png is already in visit C9/vertex 2026-03-01 follow-up",
        "row 9: a 'session' visit needs its session number",
        "row 10: bad region 'Crown!'",
        "row 10: unknown view 'side'",
    ]
    for e in expected:
        assert any(t.startswith(e) for t in text), (e, text)
    assert len(text) == len(expected) and result.visits == ()
    assert counts(records) == before and len(store_files(store.root)) == 1


def test_manifest_header_problems(env):
    records, store, tmp = env
    bad = write_manifest(tmp / "bad.csv", [], columns=("client", "date", "kind", "photo", "colour"))
    problems = [str(p) for p in import_manifest(records, store, bad).problems]
    assert problems == [
        "row 1: missing column(s) region (columns: client, region, date, kind, photo, session, view, clinic, notes)"
    ]
    with pytest.raises(UserError, match="no such manifest"):
        import_manifest(records, store, tmp / "missing.csv")


def test_manifest_import_then_reimport_is_a_no_op(env):
    records, store, tmp = env
    make_photos(tmp / "m" / "photos", 5)
    rows = [
        {"client": "A1", "region": "crown", "date": "2026-01-10", "kind": "baseline", "photo": "photos/p0.png"},
        {
            "client": "A1",
            "region": "crown",
            "date": "2026-01-10",
            "kind": "baseline",
            "photo": "photos/p1.png",
            "notes": "before SMP",
        },
        {
            "client": "A1",
            "region": "crown",
            "date": "2026-02-10",
            "kind": "session",
            "session": "1",
            "photo": "photos/p2.png",
            "view": "closeup",
        },
        {"client": "A1", "region": "crown", "date": "2026-03-10", "kind": "Session 2", "photo": "photos/p3.png"},
        {"client": "B7", "region": "scar", "date": "2026-03-11", "kind": "touch-up", "photo": "photos/p4.png"},
        {},  # a blank line is skipped
    ]
    manifest = write_manifest(tmp / "m" / "visits.csv", rows)
    refused = import_manifest(records, store, manifest)
    assert [str(p) for p in refused.problems][:1] == ["row 2: unknown client 'A1' (use --create-client to add it)"]
    result = import_manifest(records, store, manifest, create_client=True)
    assert result.problems == () and result.added == 5 and len(result.visits) == 4
    assert str(result.visits[2].visit) == "A1/crown 2026-03-10 session 2"
    state, files = counts(records), store_files(store.root)
    again = import_manifest(records, store, manifest, create_client=True)
    assert again.problems == () and again.added == 0 and again.skipped == 5
    assert not any(v.visit_created for v in again.visits)
    assert counts(records) == state and store_files(store.root) == files and len(files) == 5
    with records.session() as s:
        summary = {c.client: (c.regions, c.visits, c.photos, c.last_visit) for c in list_clients(s)}
        assert summary == {"A1": (1, 3, 4, date(2026, 3, 10)), "B7": (1, 1, 1, date(2026, 3, 11))}
        assert s.scalar(sa.select(Visit.notes).where(Visit.kind == "baseline")) == "before SMP"


# --------------------------------------------------------------------------- assessments


def fake_doc(sha: str, *, config: str = "cfg1", model_sha: str | None = "ab" * 32, n_dots: int = 3) -> dict:
    return {
        "schema": "smp-assessment/1",
        "photo": {"path": "x.png", "sha256": sha, "view": "closeup"},
        "calibration": {"px_per_mm": 20.0, "scale_source": "card"},
        "quality": {"ok": True},
        "model": {"name": "smp-segmenter", "version": "3", "sha256": model_sha},
        "metrics": {"dot_count": n_dots, "show_through": 0.25, "dot_density_per_cm2": float("nan")},
        "warnings": ["no scale"],
        "timings_s": {"total": 0.5},
        "config_hash": config,
        "roi_polygon_px": None,
    }


def fake_dots(n: int = 3):
    import pandas as pd

    from pipeline.one_photo.pigment import DOT_COLUMNS

    rng = np.random.default_rng(n)
    frame = pd.DataFrame({c: rng.uniform(0, 50, n) for c in DOT_COLUMNS})
    frame["dot_id"] = np.arange(n)
    frame["skin_samples"] = np.arange(n) + 10
    for flag in ("blue_shift", "faded", "spread"):
        frame[flag] = rng.uniform(size=n) > 0.5
    frame.loc[0, "diameter_mm"] = np.nan
    return frame[DOT_COLUMNS]


class FakeAssessment:
    def __init__(self, sha: str, n: int = 3) -> None:
        self.sha, self.dots = sha, fake_dots(n)

    def to_json(self) -> dict:
        return fake_doc(self.sha, n_dots=len(self.dots))


def fake_assessor():
    import hashlib

    return lambda path: FakeAssessment(hashlib.sha256(Path(path).read_bytes()).hexdigest())


def test_store_assessment_is_idempotent_and_appends_new_configs(env):
    records, store, tmp = env
    photos = make_photos(tmp / "in", 1)
    result = add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args())
    assert result.assessments_added == 1
    with records.session() as s:
        sha = s.scalars(sa.select(Photo.sha256)).one()
    with records.transaction() as s:
        again = store_assessment(s, sha, fake_doc(sha), fake_dots())
        assert not again.created
        other = store_assessment(s, sha, fake_doc(sha, config="cfg2"), fake_dots(5))
        classical = store_assessment(s, sha, fake_doc(sha, model_sha=None), None)
        assert other.created and classical.created and len({again.id, other.id, classical.id}) == 3
    assert counts(records)["assessments"] == 3 and counts(records)["dots"] == 3 + 5
    # re-ingesting the visit with --assess assesses nothing again
    assert add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args()).assessments_added == 0
    with records.session() as s:
        a = s.get(Assessment, again.id)
        assert a.metrics["dot_density_per_cm2"] is None and a.metrics["show_through"] == 0.25  # NaN -> null
        assert (a.model_key, a.dot_count, a.view) == ("ab" * 32, 3, "closeup")
        assert s.get(Assessment, classical.id).model_key == "smp-segmenter@3"
        assert s.scalars(sa.select(Photo.view)).one() == "closeup"  # filled in from the assessment
        dots = s.scalars(sa.select(Dot).where(Dot.assessment_id == a.id).order_by(Dot.dot_index)).all()
        ref = fake_dots()
        assert [d.dot_index for d in dots] == [0, 1, 2] and dots[0].diameter_mm is None
        assert math.isclose(dots[1].lab_l, ref.loc[1, "L"]) and dots[2].blue_shift == bool(ref.loc[2, "blue_shift"])
        assert dots[1].skin_samples == 11
    with records.transaction() as s, pytest.raises(ValueError, match="is of photo"):
        store_assessment(s, sha, fake_doc("f" * 64), None)
    with records.transaction() as s, pytest.raises(LookupError, match="not in the records"):
        store_assessment(s, "f" * 64, fake_doc("f" * 64), None)


def test_dot_links_and_review_decisions(env):
    records, store, tmp = env
    photos = make_photos(tmp / "in", 2)
    add_visit(records, store, photos=photos[:1], assess=fake_assessor(), **visit_args(kind="session 1"))
    add_visit(records, store, photos=photos[1:], assess=fake_assessor(), **visit_args(kind="session 2"))
    with records.transaction() as s:
        before, after = s.scalars(sa.select(Assessment.id).order_by(Assessment.id)).all()
        pairs = [(0, 1, 0.05), (1, 2, float("nan")), (2, 0, None)]
        assert store_dot_links(s, before, after, pairs, "register/v1") == 3
        assert store_dot_links(s, before, after, pairs, "register/v1") == 0
        with pytest.raises(ValueError, match="no dot 7"):
            store_dot_links(s, before, after, [(7, 0, None)], "register/v1")
        dot = s.scalars(sa.select(Dot.id).where(Dot.assessment_id == after)).first()
        record_review(s, dot, "reject", "dr. k", note="hair, not a dot")
        record_review(s, dot, "relabel", "dr. k", new_label="spread")
        with pytest.raises(ValueError, match="needs new_label"):
            record_review(s, dot, "relabel", "dr. k")
    with records.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(DotLink)) == 3
        assert s.scalars(sa.select(DotLink.residual_mm).order_by(DotLink.id)).all() == [0.05, None, None]


# --------------------------------------------------------------------------- concurrency


def _ingest_worker(url: str, store_root: str, plan: list[tuple[dict, list[str]]]) -> list[tuple[int, int]]:
    """Run in a separate process: ingest each (visit, photos) of ``plan`` twice."""
    records = open_records(url)
    store = PhotoStore(Path(store_root))
    out = []
    for _ in range(2):
        for args, photos in plan:
            r = add_visit(records, store, photos=photos, **args)
            out.append((len(r.added), len(r.skipped)))
    return out


def run_concurrent_ingest(url: str, store_root: Path, photo_dir: Path) -> None:
    """Two processes (fresh interpreters, as two CLI calls) ingest into one new database at once:
    the same visit with overlapping photos, and a visit each. Nothing is lost or duplicated."""
    photos = [str(p) for p in make_photos(photo_dir, 8, seed=3)]
    shared = visit_args(client="C5")
    plans = [
        [(shared, photos[0:4]), (visit_args(client="C5", region="nape"), photos[6:7])],
        [(shared, photos[2:6]), (visit_args(client="C6", kind="session", session=1), photos[7:8])],
    ]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_ingest_worker, [(url, str(store_root), plan) for plan in plans])
    added = sum(a for r in results for a, _ in r)
    assert added == 8  # every photo added exactly once, by one of the two
    records = open_records(url)
    assert counts(records) == {
        "clients": 2,
        "regions": 3,
        "visits": 3,
        "photos": 8,
        "visit_photos": 8,
        "assessments": 0,
        "dots": 0,
    }
    assert len(store_files(store_root)) == 8
    with records.session() as s:
        assert s.scalar(sa.select(sa.func.count(sa.distinct(Photo.sha256)))) == 8


def test_two_processes_ingesting_at_once_lose_nothing(tmp_path):
    run_concurrent_ingest(f"sqlite:///{tmp_path / 'records.db'}", tmp_path / "store", tmp_path / "in")


# --------------------------------------------------------------------------- CLI


def test_cli_visit_add_import_and_clients(tmp_path, capsys, monkeypatch):
    from pipeline.cli import main

    monkeypatch.setenv("SMP_HOME", str(tmp_path / "home"))
    photos = [str(p) for p in make_photos(tmp_path / "in", 3)]
    add = ["visit", "add", "--client", "K-1", "--region", "crown", "--date", "2026-03-01", "--kind", "follow-up"]
    assert main(add + photos[:2]) == 2
    assert "unknown client 'K-1'" in capsys.readouterr().err
    assert main(add + ["--create-client", "--clinic", "north"] + photos[:2]) == 0
    assert "new visit north/K-1/crown 2026-03-01 follow-up: 2 photo(s) added" in capsys.readouterr().out
    assert main(add + ["--clinic", "north"] + photos[:2]) == 0
    assert "0 photo(s) added, 2 already present" in capsys.readouterr().out
    assert (tmp_path / "home" / "records.db").exists() and len(store_files(tmp_path / "home")) == 2

    manifest = write_manifest(
        tmp_path / "in" / "m.csv",
        [
            {"client": "K-1", "region": "crown", "date": "2026-04-01", "kind": "touch-up", "photo": "p2.png"},
            {"client": "K-1", "region": "crown", "date": "2026-04-31", "kind": "touch-up", "photo": "p0.png"},
        ],
    )
    db = ["--db", f"sqlite:///{tmp_path / 'home' / 'records.db'}", "--clinic", "north"]
    assert main(["visit", "import", str(manifest)] + db) == 2
    err = capsys.readouterr().err
    assert "m.csv: row 3: bad date '2026-04-31': no such day" in err
    assert "m.csv: row 3: p0.png is already in visit north/K-1/crown 2026-03-01 follow-up" not in err  # bad row
    assert err.strip().endswith("1 problem(s) in " + str(manifest) + "; nothing was imported")
    write_manifest(
        manifest, [{"client": "K-1", "region": "crown", "date": "2026-04-01", "kind": "touch-up", "photo": "p2.png"}]
    )
    assert main(["visit", "import", str(manifest)] + db) == 0
    assert "1 visit(s), 1 photo(s) added, 0 already present" in capsys.readouterr().out
    assert main(["clients"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["clinic", "client", "regions", "visits", "photos", "last", "visit"]
    assert out[1].split() == ["north", "K-1", "1", "2", "3", "2026-04-01"]
    assert main(["clients", "--db", "nonsense"]) == 2


def test_cli_visit_add_with_assess(tmp_path, capsys):
    """--assess runs the real assessor on each new photo (classical segmenter: fast) and stores it."""
    from pipeline.cli import main

    photo = make_photos(tmp_path / "in", 1)[0]
    db = f"sqlite:///{tmp_path / 'r.db'}"
    args = [
        "visit",
        "add",
        "--client",
        "K",
        "--create-client",
        "--region",
        "crown",
        "--date",
        "2026-03-01",
        "--kind",
        "baseline",
        "--db",
        db,
        "--store",
        str(tmp_path / "store"),
        "--assess",
        "--set",
        "segment.method=classical",
        str(photo),
    ]
    assert main(args) == 0
    assert "1 assessment(s) stored" in capsys.readouterr().out
    records = open_records(db)
    with records.session() as s:
        a = s.scalars(sa.select(Assessment)).one()
        assert a.model_key == "classical@1" and a.schema == "smp-assessment/1" and "show_through" in a.metrics


# --------------------------------------------------------------------------- PostgreSQL


def _no_postgres(reason: str) -> NoReturn:
    """Skip with the reason; fail instead where a server is required (``.ci/run`` sets
    ``SMP_TEST_REQUIRE_POSTGRES=1`` after installing PostgreSQL)."""
    message = f"no PostgreSQL server: {reason}"
    if os.environ.get("SMP_TEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " (SMP_TEST_REQUIRE_POSTGRES=1)")
    pytest.skip(message)


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    return str(candidates[-1]) if candidates else None


def _as_unprivileged() -> tuple[list[str], str | None]:
    """A command prefix to run PostgreSQL's tools as a non-root user (initdb refuses root)."""
    if os.geteuid() != 0:
        return [], getpass.getuser()
    runuser = shutil.which("runuser")
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if runuser:
            return [runuser, "-u", user, "--"], user
    return [], None


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgreSQL URL: ``$SMP_TEST_POSTGRES_URL``, or a throwaway server (initdb + pg_ctl) on a
    Unix socket in a temporary folder, stopped and deleted afterwards."""
    if os.environ.get("SMP_TEST_POSTGRES_URL"):
        yield records_db.resolve_url(os.environ["SMP_TEST_POSTGRES_URL"])
        return
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        _no_postgres("initdb/pg_ctl not found (install postgresql, or set SMP_TEST_POSTGRES_URL)")
    prefix, user = _as_unprivileged()
    if user is None:
        _no_postgres(
            "running as root without runuser and a 'postgres' or 'nobody' user (initdb refuses root); "
            "set SMP_TEST_POSTGRES_URL"
        )
    base = Path(tempfile.mkdtemp(prefix="smp-pg-"))  # short: Unix socket paths are limited to ~100 bytes
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        data, log, port = base / "data", base / "server.log", 5432
        init = subprocess.run(
            [*prefix, initdb, "-D", str(data), "-U", "smp", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if init.returncode:
            _no_postgres(f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}")
        opts = f"-p {port} -k {base} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        start = subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if start.returncode:
            tail = log.read_text()[-300:] if log.exists() else start.stderr
            _no_postgres(f"pg_ctl start failed: {tail.strip()}")
        try:
            yield sa.make_url(f"postgresql+psycopg://smp@/postgres?host={base}&port={port}")
        finally:
            subprocess.run(
                [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A URL whose tables live in a fresh schema of their own (dropped afterwards)."""
    schema = f"smp_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _no_postgres(f"cannot connect ({str(exc).splitlines()[0]})")
    url = postgres_server.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        records_db.close_all()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.mark.postgres
def test_postgresql_ingest_idempotency_and_concurrency(postgres_url, tmp_path):
    # two processes create the schema and ingest at once (migrations serialised by an advisory lock)
    run_concurrent_ingest(postgres_url, tmp_path / "store", tmp_path / "in")
    records = open_records(postgres_url)
    assert _migration_diff(records.engine) == []
    store = PhotoStore(tmp_path / "store")
    photos = make_photos(tmp_path / "more", 2, seed=11)
    first = add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args(client="P1"))
    state = counts(records)
    again = add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args(client="P1"))
    assert first.assessments_added == 2 and again.added == () and len(again.skipped) == 2
    assert counts(records) == state
    with pytest.raises(IngestError, match="already in visit"):
        add_visit(records, store, photos=photos, **visit_args(client="P1", date="2026-05-05"))
    with records.session() as s:
        a = s.scalars(sa.select(Assessment)).first()
        assert a.metrics["dot_density_per_cm2"] is None and a.created_at.tzinfo is not None


def test_a_new_sqlite_database_is_its_owners_only(tmp_path):
    import stat

    from pipeline.records import open_records

    old = os.umask(0o022)
    try:
        open_records(f"sqlite:///{tmp_path / 'r.db'}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.db").stat().st_mode) == 0o600
