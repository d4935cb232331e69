"""Records: clients, regions, visits, photos and their assessments over time.

A SQLite file by default (``<SMP_HOME or ./smp-data>/records.db``), PostgreSQL by
URL (``--db`` / ``SMP_DATABASE_URL``); the schema is migrated with Alembic when
opened. A photo is a clinic's (identified by its sha256 within the clinic); its file
lives once in a content-addressed store beside the database, whichever clinics hold it.
Assessments are append-only and keyed by (photo, model, config hash), so
re-running anything is idempotent and history is kept (docs/design.md, "Storage").

Typical use::

    records = open_records()                      # or open_records("postgresql://...")
    store = PhotoStore(data_home())
    add_visit(records, store, client="C-17", region="crown", date="2026-03-01",
              kind="follow-up", photos=["IMG_0001.jpg"])
"""

from pipeline.records.assessments import record_review, store_assessment, store_dot_links, store_photo_assessment
from pipeline.records.db import Records, data_home, default_url, open_records, resolve_url
from pipeline.records.entries import (
    AssessmentLike,
    ClientSummary,
    ImportResult,
    IngestError,
    IngestResult,
    PhotoEntry,
    PhotoFile,
    Problem,
    StoredAssessment,
    VisitKey,
)
from pipeline.records.ingest import add_visit, import_manifest, list_clients, sweep_store
from pipeline.records.parse import MANIFEST_COLUMNS, inspect_photo, parse_date, parse_kind, parse_region, read_manifest
from pipeline.records.schema import DEFAULT_CLINIC, VIEWS, VISIT_KINDS
from pipeline.records.store import PhotoStore, StoredFile, StoreError

__all__ = [
    "DEFAULT_CLINIC",
    "MANIFEST_COLUMNS",
    "VIEWS",
    "VISIT_KINDS",
    "AssessmentLike",
    "ClientSummary",
    "ImportResult",
    "IngestError",
    "IngestResult",
    "PhotoEntry",
    "PhotoFile",
    "PhotoStore",
    "Problem",
    "Records",
    "StoreError",
    "StoredAssessment",
    "StoredFile",
    "VisitKey",
    "add_visit",
    "data_home",
    "default_url",
    "import_manifest",
    "inspect_photo",
    "list_clients",
    "open_records",
    "parse_date",
    "parse_kind",
    "parse_region",
    "read_manifest",
    "record_review",
    "resolve_url",
    "store_assessment",
    "store_dot_links",
    "store_photo_assessment",
    "sweep_store",
]
