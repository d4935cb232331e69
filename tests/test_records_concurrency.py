"""Records: two processes ingesting at once, on SQLite and on a real PostgreSQL server when one can be started."""

from __future__ import annotations

import getpass
import multiprocessing
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy as sa
from records_helpers import _migration_diff, counts, fake_assessor, make_photos, store_files, visit_args

from pipeline.records import IngestError, PhotoStore, add_visit, open_records
from pipeline.records import db as records_db
from pipeline.records.schema import Assessment, Photo

pytestmark = pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")


@pytest.fixture(autouse=True)
def _dispose_engines():
    yield
    records_db.close_all()


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
