"""``smp batch``: assess a manifest of photos, resumable, locally or on Ray."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.commands import DB_HELP as _DB_HELP
from pipeline.commands import add_settings_options
from pipeline.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="assess a CSV manifest of photos (resumable; local processes or Ray)",
        description=(
            "Assess every photo of MANIFEST (CSV with a 'photo' column, paths relative to the manifest's "
            "folder; optionally the visit columns of 'smp visit import': client, region, date, kind, session, "
            "view, clinic, notes). Each photo's results go to DIR/results/<sha256[:16]>_<config hash>/ "
            "(as smp assess writes them); a photo already done for the same photo, model and configuration is "
            "skipped, so a batch stopped half-way finishes when run again. Writes DIR/results.parquet (one row "
            "per photo: status ok|skipped|duplicate|failed, metrics, seconds) and DIR/failures.csv; with visit "
            "columns, the visits, photos and assessments also go into the records (idempotent); one MLflow run "
            "(experiment smp-batch) records counts, throughput, failures and median metrics. Exit code 0 when "
            "every photo has a result, 1 with one 'failed:' line per photo that has none."
        ),
    )
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="CSV manifest")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (1 worker) or a process pool; ray: Ray Data (default local)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="parallel workers, each loading the model once and using cores/N threads (default 1)",
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=int,
        default=0,
        metavar="N",
        help="threads of each worker (and CPUs it reserves on Ray); default: this machine's cores "
        "shared out among the workers, 1 per worker on a Ray cluster",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --engine ray: an existing Ray cluster (e.g. auto, ray://head:10001); "
        "default: start Ray on this machine",
    )
    add_settings_options(parser, what="assessment", default="assess/default.yaml", example="segment.method=classical")
    parser.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    parser.add_argument(
        "--store", type=Path, default=None, metavar="DIR", help="photo store folder (default: $SMP_HOME or ./smp-data)"
    )
    parser.add_argument(
        "--create-client",
        action="store_true",
        help="create clients (and their clinic) not yet in the records instead of refusing them",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not record an MLflow run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipeline import batch as B
    from pipeline.one_photo.assess import Assessor
    from pipeline.one_photo.settings import load_assess_settings

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.cpus_per_worker < 0:
        raise UserError(f"--cpus-per-worker must be at least 1 (or 0 for automatic), got {args.cpus_per_worker}")
    cpus = args.cpus_per_worker or None
    if args.ray_address and args.engine != "ray":
        raise UserError("--ray-address needs --engine ray")
    items, has_visits = B.read_batch_manifest(args.manifest)
    settings = load_assess_settings(args.config, args.overrides)
    try:  # the key of a result (model + config hash) needs the model; workers load their own
        assessor = Assessor(settings)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"cannot load a model: {exc}") from None
    for w in assessor.setup_warnings:
        print(f"smp batch: warning: {w}", file=sys.stderr)
    if not has_visits:
        print(
            "smp batch: warning: the manifest has no visit columns (client, region, date, kind); "
            "results go to Parquet only, not into the records",
            file=sys.stderr,
        )

    out: Path = args.out
    todo, done, failed = B.work_list(items, out, assessor.config_hash)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="batch", unit="photo", file=sys.stderr, disable=len(todo) < 2)
    stamps: list[float] = []

    def progress(_row: dict) -> None:
        stamps.append(time.perf_counter() - t0)
        bar.update(1)

    try:
        if args.engine == "local":
            rows = B.run_local(
                todo,
                settings,
                args.workers,
                assessor=assessor if args.workers == 1 else None,
                progress=progress,
                cpus_per_worker=cpus,
            )
        else:
            del assessor  # the Ray workers load their own
            rows = B.run_ray(
                todo, settings, args.workers, address=args.ray_address, progress=progress, cpus_per_worker=cpus
            )
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    frame = B.results_frame(rows + done + failed)
    B.write_tables(frame, out)
    result = B.summarise(frame, sum(r["status"] == "skipped" for r in done), seconds, stamps)
    config_hash = frame["config_hash"].dropna().iloc[0] if frame["config_hash"].notna().any() else ""
    model = frame["model"].dropna().iloc[0] if frame["model"].notna().any() else ""

    problems: list[str] = [f"{e}" for _, _, e in result.failures]
    if has_visits:
        added, record_problems = _records(args, frame, items)
        problems += record_problems
        print(f"smp batch: records: {added} new assessment(s) stored", file=sys.stderr)
    if not args.no_mlflow:
        run_id = B.log_mlflow(
            frame,
            result,
            engine=args.engine,
            workers=args.workers,
            model=str(model),
            config_hash=str(config_hash),
            manifest=args.manifest,
            out=out,
            cpus_per_worker=cpus,
        )
        print(f"smp batch: MLflow run {run_id} (experiment smp-batch)", file=sys.stderr)
    print(
        f"smp batch: {result.total} photo(s): {result.assessed} assessed, {result.done_before} already done, "
        f"{result.failed} failed in {seconds:.1f} s ({result.throughput:.2f} photos/s"
        + (
            f"; {result.steady_throughput:.2f}/s after the first result at {result.first_result_s:.1f} s"
            if result.steady_throughput is not None
            else ""
        )
        + f") -> {out / 'results.parquet'}",
        file=sys.stderr,
    )
    summary = {
        **result.to_json(),
        "engine": args.engine,
        "workers": args.workers,
        "cpus_per_worker": B.worker_threads(args.workers, cpus, cluster=bool(args.ray_address)),
    }
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "summary.json")
    for line in problems:
        print(f"smp batch: failed: {line}", file=sys.stderr)
    return 1 if problems else 0


def _records(args: argparse.Namespace, frame, items) -> tuple[int, list[str]]:
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.batch import store_in_records
    from pipeline.records import PhotoStore, data_home, open_records

    try:
        records = open_records(args.db)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise UserError(f"cannot open the records database: {str(exc).splitlines()[0]}") from None
    store = PhotoStore(Path(args.store or data_home()))
    return store_in_records(frame, items, records, store, create_client=args.create_client)
