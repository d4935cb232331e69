"""``smp visit add``, ``smp visit import`` and ``smp clients``: the records of clients' visits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.commands import DB_HELP as _DB_HELP
from pipeline.commands import add_settings_options
from pipeline.errors import UserError

if TYPE_CHECKING:
    from pipeline.records import IngestResult, PhotoStore, Records

_KINDS_HELP = "baseline, session (with --session N), follow-up or touch-up"


def register(subparsers: argparse._SubParsersAction) -> None:
    visit = subparsers.add_parser(
        "visit",
        help="add clients' visits and their photos to the records (one visit, or a CSV manifest)",
        description=(
            "Record visits: which client, which scalp region, when, what kind of visit, and its photos. "
            "Photos are copied once each into the content-addressed store; each visit is written in one "
            "transaction (all or nothing). Running the same command again changes nothing."
        ),
    )
    actions = visit.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        help="add one visit and its photos",
        description=(
            "Add one visit of --client for --region with its PHOTOs. A photo already in this visit is "
            "reported as already present; a photo already in another visit is an error (nothing is written). "
            "With --assess, each photo new to the records is assessed (as smp assess does) and the "
            "assessment and its dots are stored with the visit."
        ),
    )
    add.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="JPEG, PNG, TIFF or WebP files")
    add.add_argument("--client", required=True, metavar="ID", help="the clinic's id of the client")
    add.add_argument(
        "--region",
        required=True,
        metavar="NAME",
        help="scalp region: crown, vertex, frontal, temples, nape, donor, scar, ... (a slug)",
    )
    add.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="date of the visit")
    add.add_argument("--kind", required=True, metavar="KIND", help=_KINDS_HELP)
    add.add_argument(
        "--session",
        type=int,
        default=None,
        metavar="N",
        help="session number (required for a session visit, optional for a touch-up)",
    )
    add.add_argument(
        "--view",
        choices=("closeup", "global"),
        default=None,
        help="what the photos show (default: unknown; --assess fills it in)",
    )
    add.add_argument("--notes", default=None, metavar="TEXT", help="notes on the visit")
    _common(add)
    add.set_defaults(func=run_add)

    imp = actions.add_parser(
        "import",
        help="import visits from a CSV manifest",
        description=(
            "Import a CSV manifest with a header row and one photo per row. Columns: client, region, date "
            "(YYYY-MM-DD), kind, photo (path relative to the manifest's folder); optional: session, view "
            "(closeup|global), clinic, notes. Every row is checked first (unknown client, bad date, unknown "
            "kind, missing or unreadable photo, the same photo twice, a photo already in another visit); if "
            "any row has a problem, all problems are listed with their row numbers and nothing is written. "
            "Each visit is then written in its own transaction; importing again changes nothing."
        ),
    )
    imp.add_argument("manifest", type=Path, metavar="MANIFEST.csv")
    _common(imp)
    imp.set_defaults(func=run_import)

    clients = subparsers.add_parser(
        "clients",
        help="list the clients in the records with their visit and photo counts",
        description="List the clients in the records: clinic, client id, regions, visits, photos, last visit.",
    )
    clients.add_argument("--clinic", default=None, metavar="C", help="only this clinic's clients")
    clients.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    clients.set_defaults(func=run_clients)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clinic", default=None, metavar="C", help="the clients' clinic (default: 'default')")
    parser.add_argument(
        "--create-client",
        action="store_true",
        help="create clients (and their clinic) not yet in the records instead of refusing them",
    )
    parser.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    parser.add_argument(
        "--store", type=Path, default=None, metavar="DIR", help="photo store folder (default: $SMP_HOME or ./smp-data)"
    )
    parser.add_argument("--assess", action="store_true", help="assess new photos and store the results")
    add_settings_options(parser, what="assessment", default="assess/default.yaml", prefix="with --assess: ")


def _open(args: argparse.Namespace) -> tuple[Records, PhotoStore]:
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.records import PhotoStore, data_home, open_records

    try:
        records = open_records(args.db)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise UserError(f"cannot open the records database: {str(exc).splitlines()[0]}") from None
    store_root = getattr(args, "store", None) or data_home()
    return records, PhotoStore(Path(store_root))


def _assessor(args: argparse.Namespace, failures: list[str]):
    """The ``assess`` callback of add_visit/import_manifest (None without --assess): assess one
    photo, or note why not. The model is loaded on the first photo, i.e. only once the
    visit passed validation."""
    if not args.assess:
        return None
    loaded: list[Any] = []

    def assessor() -> Any:
        if not loaded:
            from pipeline.one_photo.assess import Assessor
            from pipeline.one_photo.settings import load_assess_settings

            try:
                loaded.append(Assessor(load_assess_settings(args.config, args.overrides)))
            except (FileNotFoundError, ValueError) as exc:
                raise UserError(f"cannot load a model: {exc}") from None
            for w in loaded[0].setup_warnings:
                print(f"smp visit: warning: {w}", file=sys.stderr)
        return loaded[0]

    def assess(path: Path) -> Any:
        from pipeline.one_photo.loading import PhotoError

        try:
            return assessor().assess_file(path)
        except (PhotoError, ValueError) as exc:
            failures.append(f"{path}: not assessed: {exc}")
            return None

    return assess


def _report(result: IngestResult) -> None:
    state = "new visit" if result.visit_created else "visit"
    print(
        f"{state} {result.visit}: {len(result.added)} photo(s) added, {len(result.skipped)} already present"
        + (f", {result.assessments_added} assessment(s) stored" if result.assessments_added else "")
    )
    for name in result.added:
        print(f"  added {name}")
    for name in result.skipped:
        print(f"  already present {name}")


def _finish(failures: list[str]) -> int:
    for line in failures:
        print(f"smp visit: failed: {line}", file=sys.stderr)
    return 1 if failures else 0


def run_add(args: argparse.Namespace) -> int:
    from pipeline.records import DEFAULT_CLINIC, add_visit

    records, store = _open(args)
    failures: list[str] = []
    result = add_visit(
        records,
        store,
        client=args.client,
        region=args.region,
        date=args.date,
        kind=args.kind,
        session=args.session,
        photos=args.photos,
        clinic=args.clinic or DEFAULT_CLINIC,
        view=args.view,
        notes=args.notes,
        create_client=args.create_client,
        assess=_assessor(args, failures),
    )
    _report(result)
    return _finish(failures)


def run_import(args: argparse.Namespace) -> int:
    from pipeline.records import DEFAULT_CLINIC, import_manifest

    records, store = _open(args)
    failures: list[str] = []
    result = import_manifest(
        records,
        store,
        args.manifest,
        clinic=args.clinic or DEFAULT_CLINIC,
        create_client=args.create_client,
        assess=_assessor(args, failures),
    )
    if result.problems:
        for p in result.problems:
            print(f"smp visit import: {args.manifest}: {p}", file=sys.stderr)
        raise UserError(f"{len(result.problems)} problem(s) in {args.manifest}; nothing was imported")
    for visit in result.visits:
        _report(visit)
    print(
        f"{args.manifest}: {len(result.visits)} visit(s), {result.added} photo(s) added, "
        f"{result.skipped} already present"
    )
    return _finish(failures)


def run_clients(args: argparse.Namespace) -> int:
    from pipeline.records import list_clients

    records, _ = _open(args)
    with records.session(read_only=True) as session:
        rows = list_clients(session, args.clinic)
    if not rows:
        print("no clients" + (f" in clinic {args.clinic!r}" if args.clinic else ""))
        return 0
    header = ("clinic", "client", "regions", "visits", "photos", "last visit")
    table = [header] + [
        (
            r.clinic,
            r.client,
            str(r.regions),
            str(r.visits),
            str(r.photos),
            r.last_visit.isoformat() if r.last_visit else "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
    return 0
