"""Records: visit ingest (add_visit), manifest import, and the `smp visit` commands (pipeline/commands/visit.py)."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from records_helpers import counts, fake_assessor, make_photos, store_files, visit_args

from pipeline.errors import UserError
from pipeline.records import (
    IngestError,
    PhotoStore,
    add_visit,
    import_manifest,
    list_clients,
    open_records,
    sweep_store,
)
from pipeline.records import db as records_db
from pipeline.records import ingest as ingest_module
from pipeline.records.schema import Assessment, Client, Photo, Visit, VisitPhoto

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
