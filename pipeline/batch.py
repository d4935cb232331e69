"""Batch assessment: a manifest of photos in, one result folder per photo, a Parquet table out.

Stages (issue "Scale and speed")::

    read_batch_manifest -> work list (hash each photo: its key) -> skip what is done
    -> engine (local in-process / process pool, or Ray Data map_batches) -> rows
    -> results.parquet + failures.csv -> records (visit columns) -> one MLflow run

*Done* means ``DIR/results/<sha256[:16]>_<config_hash>/assessment.json`` exists:
:func:`pipeline.one_photo.assessment.write_assessment` writes it last and atomically, so a
batch killed half-way leaves only whole results, and running it again assesses
exactly the photos not done yet (same photo bytes, same model, same configuration).

Both engines run the same :func:`assess_one` on every photo with the model loaded
once per worker, so they write the same folders and the same rows.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.one_photo.assess import Assessor
    from pipeline.one_photo.settings import AssessSettings

__all__ = [
    "BATCH_COLUMNS", "METRIC_COLUMNS", "ROW_COLUMNS", "VISIT_COLUMNS", "BatchItem", "BatchResult", "RayAssessor",
    "WorkItem", "assess_one", "done_row", "log_mlflow", "photo_sha256", "read_batch_manifest", "result_dir",
    "results_frame", "run_local", "run_ray", "store_in_records", "summarise", "work_list", "write_tables",
]

#: Manifest columns: ``photo`` (required; relative to the manifest's folder), and the visit
#: columns of ``smp visit import`` (client, region, date, kind required together) to record results.
VISIT_COLUMNS = ("client", "region", "date", "kind", "session", "view", "clinic", "notes")
_VISIT_REQUIRED = VISIT_COLUMNS[:4]
BATCH_COLUMNS = ("photo",) + VISIT_COLUMNS
#: The per-photo metrics of docs/metrics.md (``data.metrics.PhotoMetrics``), one Parquet column each.
METRIC_COLUMNS = ("scalp_fraction", "show_through", "dot_count", "dot_density_per_cm2", "dot_diameter_mm_median",
                  "nn_distance_mm_median", "spacing_cv", "clark_evans_r", "blue_shift_fraction", "faded_fraction",
                  "spread_fraction")
#: One row per photo of the manifest, in this order.
ROW_COLUMNS = ("row", "path", "sha256", "status", "error", "model", "config_hash", "result_dir") + METRIC_COLUMNS + (
    "warnings", "seconds")


# --------------------------------------------------------------------------- manifest and work list (pure)

@dataclass(frozen=True)
class BatchItem:
    """One manifest row: ``row`` is its line (1 = header), ``path`` resolved, ``visit`` its visit cells."""

    row: int
    name: str
    path: Path
    visit: Mapping[str, str] | None = None


def read_batch_manifest(csv_path: str | Path) -> tuple[list[BatchItem], bool]:
    """Parse a batch manifest CSV: ``(items, has_visit_columns)``. Raises :class:`UserError`
    listing every problem with its row number (nothing is assessed then)."""
    from pipeline.records import parse_date, parse_kind, parse_region
    from pipeline.records.parse import read_csv_rows

    csv_path = Path(csv_path)
    header, raw_rows = read_csv_rows(csv_path)
    problems: list[str] = []
    if "photo" not in header:
        raise UserError(f"{csv_path}: row 1: no 'photo' column (columns: {', '.join(BATCH_COLUMNS)})")
    problems += [f"row 1: unknown column {c!r} (columns: {', '.join(BATCH_COLUMNS)})"
                 for c in header if c not in BATCH_COLUMNS]
    present = [c for c in _VISIT_REQUIRED if c in header]
    has_visits = bool(present)
    if present and len(present) < len(_VISIT_REQUIRED):
        missing = [c for c in _VISIT_REQUIRED if c not in header]
        problems.append(f"row 1: visit columns need all of {', '.join(_VISIT_REQUIRED)}; missing {', '.join(missing)}")
        has_visits = False
    items: list[BatchItem] = []
    seen: dict[Path, int] = {}
    for line, raw in raw_rows:
        cells = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            problems.append(f"row {line}: more cells than columns")
            continue
        if not any(cells.values()):
            continue  # blank line
        if not cells["photo"]:
            problems.append(f"row {line}: no photo given")
            continue
        path = (csv_path.parent / cells["photo"]).resolve()
        if path in seen:
            problems.append(f"row {line}: {cells['photo']} is already on row {seen[path]}")
            continue
        seen[path] = line
        visit = None
        if has_visits:
            visit = {c: cells.get(c, "") for c in VISIT_COLUMNS}
            for check in (lambda: parse_date(visit["date"]),  # noqa: B023 - called within this iteration
                          lambda: parse_kind(visit["kind"], visit["session"]),  # noqa: B023
                          lambda: parse_region(visit["region"])):  # noqa: B023
                try:
                    check()
                except ValueError as exc:
                    problems.append(f"row {line}: {exc}")
            if not visit["client"]:
                problems.append(f"row {line}: no client given")
        items.append(BatchItem(line, cells["photo"], path, visit))
    if problems:
        raise UserError(f"{csv_path}: " + "; ".join(problems))
    if not items:
        raise UserError(f"{csv_path}: no photos in the manifest")
    return items, has_visits


def photo_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of the file's bytes, as :func:`pipeline.one_photo.loading.load_photo` computes it (the photo's key)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def result_dir(out: Path, sha256: str, config_hash: str) -> Path:
    return Path(out) / "results" / f"{sha256[:16]}_{config_hash}"


@dataclass(frozen=True)
class WorkItem:
    """A photo to assess (what a worker gets): picklable and plain."""

    row: int
    path: str
    sha256: str
    out_dir: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "path": self.path, "sha256": self.sha256, "out_dir": self.out_dir}


def work_list(items: Sequence[BatchItem], out: Path, config_hash: str) -> tuple[
        list[WorkItem], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the manifest into ``(to_do, done_rows, failed_rows)``: a photo is hashed (cheap)
    to find its result folder; done when that folder has ``assessment.json``. A photo that
    cannot be read is a failed row; the same photo bytes twice are assessed once."""
    todo: list[WorkItem] = []
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    queued: set[str] = set()
    for it in items:
        try:
            sha = photo_sha256(it.path)
        except FileNotFoundError:
            failed.append(_row(it.row, str(it.path), None, "failed", error=f"{it.name}: no such photo file"))
            continue
        except OSError as exc:
            failed.append(_row(it.row, str(it.path), None, "failed", error=f"{it.name}: cannot read ({exc})"))
            continue
        folder = result_dir(out, sha, config_hash)
        if (folder / "assessment.json").is_file():
            done.append(done_row(it.row, str(it.path), folder))
        elif sha in queued:  # same bytes as an earlier row: its result is this row's too
            done.append(_row(it.row, str(it.path), sha, "duplicate", result_dir=str(folder)))
        else:
            queued.add(sha)
            todo.append(WorkItem(it.row, str(it.path), sha, str(folder)))
    return todo, done, failed


# --------------------------------------------------------------------------- one photo (both engines)

def _row(row: int, path: str, sha256: str | None, status: str, *, error: str | None = None,
         model: str | None = None, config_hash: str | None = None, result_dir: str | None = None,
         metrics: Mapping[str, Any] | None = None, warnings: int | None = None,
         seconds: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"row": row, "path": path, "sha256": sha256, "status": status, "error": error,
                           "model": model, "config_hash": config_hash, "result_dir": result_dir}
    for k in METRIC_COLUMNS:
        v = (metrics or {}).get(k)
        out[k] = None if v is None else (int(v) if k == "dot_count" else float(v))
    out["warnings"] = warnings
    out["seconds"] = seconds
    return out


def _model_label(model: Mapping[str, Any]) -> str:
    return f"{model.get('name') or 'unknown'}@{model.get('version') or ''}"


def done_row(row: int, path: str, folder: Path, status: str = "skipped",
             seconds: float | None = None) -> dict[str, Any]:
    """The row of a photo whose result folder is complete, read back from its ``assessment.json``."""
    doc = json.loads((Path(folder) / "assessment.json").read_text())
    return _row(row, path, doc["photo"]["sha256"], status, model=_model_label(doc.get("model") or {}),
                config_hash=doc.get("config_hash"), result_dir=str(folder), metrics=doc.get("metrics"),
                warnings=len(doc.get("warnings") or ()), seconds=seconds)


def assess_one(assessor: Assessor, item: WorkItem) -> dict[str, Any]:
    """Assess one photo, write its result folder (atomic files, ``assessment.json`` last) and
    return its row. A photo that cannot be assessed is a ``failed`` row, never an exception."""
    from pipeline.one_photo.assessment import write_assessment
    from pipeline.one_photo.loading import PhotoError

    t = time.perf_counter()
    try:
        a = assessor.assess_file(item.path)
        if a.photo.sha256 != item.sha256:
            raise PhotoError(item.path, "the file changed while the batch ran")
        write_assessment(a, item.out_dir, overlay=assessor.settings.overlay)
    except PhotoError as exc:
        return _row(item.row, item.path, item.sha256, "failed", error=str(exc), seconds=time.perf_counter() - t)
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the batch; its row says why
        return _row(item.row, item.path, item.sha256, "failed",
                    error=f"{item.path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                    seconds=time.perf_counter() - t)
    return _row(item.row, item.path, item.sha256, "ok", model=_model_label(a.model), config_hash=a.config_hash,
                result_dir=item.out_dir, metrics=a.metrics.to_dict(), warnings=len(a.warnings),
                seconds=time.perf_counter() - t)


def _limit_threads(threads: int) -> None:
    """Give each worker its share of the cores (torch, OpenCV), so N workers do not oversubscribe."""
    import cv2
    import torch

    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _make_assessor(settings: AssessSettings) -> Assessor:
    from pipeline.one_photo.assess import Assessor
    from pipeline.runtime import reuse_freed_memory

    reuse_freed_memory()
    return Assessor(settings)


# --------------------------------------------------------------------------- engines

Progress = Callable[[dict[str, Any]], None]

_WORKER: Assessor | None = None


def _pool_init(settings: AssessSettings, threads: int) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _WORKER = _make_assessor(settings)
    _limit_threads(threads)


def _pool_assess(item: WorkItem) -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    return assess_one(_WORKER, item)


def worker_threads(workers: int, cpus_per_worker: int | None = None, *, cluster: bool = False) -> int:
    """Threads (and Ray CPUs) of each worker: ``cpus_per_worker``; else 1 on a Ray cluster of unknown
    node sizes (Ray places the actors), or this machine's cores shared out among the workers."""
    if cpus_per_worker:
        return int(cpus_per_worker)
    if cluster:
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_local(items: Sequence[WorkItem], settings: AssessSettings, workers: int = 1, *,
              assessor: Assessor | None = None, progress: Progress | None = None,
              cpus_per_worker: int | None = None) -> list[dict[str, Any]]:
    """Assess ``items``: in this process (``workers`` 1; ``assessor`` reused if given) or in a
    pool of ``workers`` spawned processes, each loading the model once and using
    :func:`worker_threads` threads. Rows in completion order."""
    rows: list[dict[str, Any]] = []
    if not items:
        return rows
    threads = worker_threads(workers, cpus_per_worker)
    if workers <= 1:
        import cv2
        import torch

        own = assessor or _make_assessor(settings)
        before = torch.get_num_threads(), cv2.getNumThreads()
        if cpus_per_worker:
            _limit_threads(threads)
        try:
            for it in items:
                rows.append(assess_one(own, it))
                if progress:
                    progress(rows[-1])
        finally:  # this process's thread counts are the caller's again
            torch.set_num_threads(before[0])
            cv2.setNumThreads(before[1])
        return rows
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=mp.get_context("spawn"),
                             initializer=_pool_init, initargs=(settings, threads)) as pool:
        futures = [pool.submit(_pool_assess, it) for it in items]
        try:
            for fut in as_completed(futures):
                rows.append(fut.result())
                if progress:
                    progress(rows[-1])
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return rows


class RayAssessor:
    """Ray Data ``map_batches`` callable: one actor per worker, the model loaded once in ``__init__``.

    Each batch is a dict of columns (``row``, ``path``, ``sha256``, ``out_dir``); each photo's
    row comes back as one JSON text (a column of mixed None/float would not unify across blocks).
    """

    def __init__(self, settings_json: str, threads: int) -> None:
        from pipeline.one_photo.settings import AssessSettings

        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        self.assessor = _make_assessor(AssessSettings.model_validate_json(settings_json))
        _limit_threads(threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out = []
        for row, path, sha, out_dir in zip(batch["row"], batch["path"], batch["sha256"], batch["out_dir"]):
            out.append(json.dumps(assess_one(self.assessor, WorkItem(int(row), str(path), str(sha), str(out_dir)))))
        return {"result": out}


def run_ray(items: Sequence[WorkItem], settings: AssessSettings, workers: int = 1, *, address: str | None = None,
            progress: Progress | None = None, cpus_per_worker: int | None = None) -> list[dict[str, Any]]:
    """Assess ``items`` with Ray Data: ``workers`` actors (:class:`RayAssessor`), one photo per batch.

    Connects to ``address`` (an existing cluster, e.g. ``ray://head:10001`` or ``auto``) or starts
    Ray on this machine with its cores; shuts down only a Ray it started. Each actor reserves
    ``cpus_per_worker`` CPUs and runs that many threads (default: this machine's cores shared
    out, or 1 on a cluster, where Ray places the actors). On a cluster, the package must be
    installed on every node and the photo and output paths shared by all.
    """
    if not items:
        return []
    try:
        import ray
    except ImportError:
        raise UserError("the Ray engine needs Ray: pip install -e '.[ray]'") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = os.cpu_count() or 1
        ray.init(**kwargs)
        started = True
    try:
        per_worker = worker_threads(workers, cpus_per_worker, cluster=bool(address))
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        ds = ray.data.from_items([it.as_dict() for it in items], override_num_blocks=len(items))
        ds = ds.map_batches(RayAssessor, fn_constructor_kwargs={"settings_json": settings.model_dump_json(),
                                                                 "threads": per_worker},
                            compute=ray.data.ActorPoolStrategy(size=workers), batch_size=1, num_cpus=per_worker,
                            batch_format="numpy")
        rows = []
        for rec in ds.iter_rows():
            rows.append(json.loads(rec["result"]))
            if progress:
                progress(rows[-1])
        return rows
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- tables and summary

@dataclass(frozen=True)
class BatchResult:
    """What a batch did: counts, time, throughput (photos assessed per second) and the failures."""

    total: int
    done_before: int
    assessed: int
    failed: int
    seconds: float
    failures: tuple[tuple[int, str, str], ...] = field(default=())  # (row, path, error)
    #: seconds from the start to the first result (engine start, model loading, the first photo)
    first_result_s: float | None = None
    #: photos per second between the first and the last result: the rate once the workers run
    steady_throughput: float | None = None

    @property
    def throughput(self) -> float:
        return self.assessed / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "done_before": self.done_before, "assessed": self.assessed,
                "failed": self.failed, "seconds": round(self.seconds, 3),
                "photos_per_second": round(self.throughput, 4),
                "first_result_s": None if self.first_result_s is None else round(self.first_result_s, 3),
                "steady_photos_per_second": (None if self.steady_throughput is None
                                             else round(self.steady_throughput, 4)),
                "failures": [{"row": r, "path": p, "error": e} for r, p, e in self.failures]}


def results_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a table in manifest order with fixed column types (so Parquet files compare)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(ROW_COLUMNS)).sort_values("row", kind="stable")
    frame = frame.reset_index(drop=True)
    for c in METRIC_COLUMNS + ("seconds",):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame["dot_count"] = frame["dot_count"].astype("Int64")
    frame["warnings"] = pd.to_numeric(frame["warnings"], errors="coerce").astype("Int64")
    frame["row"] = frame["row"].astype("int64")
    for c in ("path", "sha256", "status", "error", "model", "config_hash", "result_dir"):
        frame[c] = frame[c].astype("string")
    return frame


def write_tables(frame: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """``out/results.parquet`` and ``out/failures.csv`` (row, path, error), written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    parquet, failures = out / "results.parquet", out / "failures.csv"
    tmp = out / ".results.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    tmp.replace(parquet)
    tmp = out / ".failures.csv.tmp"
    frame.loc[frame["status"] == "failed", ["row", "path", "error"]].to_csv(tmp, index=False)
    tmp.replace(failures)
    return parquet, failures


def summarise(frame: pd.DataFrame, done_before: int, seconds: float,
              result_times: Sequence[float] = ()) -> BatchResult:
    """Counts and rates; ``result_times``: seconds from the start at which each new result arrived."""
    failed = frame[frame["status"] == "failed"]
    times = sorted(result_times)
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else None
    return BatchResult(total=len(frame), done_before=done_before, assessed=int((frame["status"] == "ok").sum()),
                       failed=len(failed), seconds=seconds, first_result_s=times[0] if times else None,
                       steady_throughput=steady,
                       failures=tuple((int(r), str(p), str(e)) for r, p, e in
                                      zip(failed["row"], failed["path"], failed["error"])))


# --------------------------------------------------------------------------- records and MLflow

def store_in_records(frame: pd.DataFrame, items: Sequence[BatchItem], records: Any, store: Any, *,
                     create_client: bool = False) -> tuple[int, list[str]]:
    """Add the visits of the photos with a result and store their assessments (idempotent by
    photo, model and configuration). Returns ``(assessments added, problems)``; a visit with a
    problem (unknown client, photo in another visit) is left out and reported, the others go in."""
    import pandas as pd

    from pipeline.records import IngestError, add_visit, store_assessment
    from pipeline.records.schema import DEFAULT_CLINIC

    by_row = {it.row: it for it in items}
    good = frame[frame["status"].isin(["ok", "skipped", "duplicate"])]
    groups: dict[tuple[str, ...], list[tuple[BatchItem, str]]] = {}
    for row, folder in zip(good["row"], good["result_dir"]):
        it = by_row[int(row)]
        v = it.visit or {}
        key = tuple(v.get(c, "") for c in VISIT_COLUMNS)
        groups.setdefault(key, []).append((it, str(folder)))
    added, problems = 0, []
    for key, members in groups.items():
        v = dict(zip(VISIT_COLUMNS, key))
        try:
            add_visit(records, store, client=v["client"], region=v["region"], date=v["date"], kind=v["kind"],
                      photos=[it.path for it, _ in members], session=int(v["session"]) if v["session"] else None,
                      clinic=v["clinic"] or DEFAULT_CLINIC, view=v["view"] or None, notes=v["notes"] or None,
                      create_client=create_client)
        except IngestError as exc:
            problems.append(f"records: rows {', '.join(str(it.row) for it, _ in members)}: {exc}")
            continue
        with records.transaction() as session:
            for _it, folder in members:
                doc = json.loads((Path(folder) / "assessment.json").read_text())
                dots = pd.read_csv(Path(folder) / "dots.csv")
                added += store_assessment(session, doc["photo"]["sha256"], doc, dots,
                                          clinic=v["clinic"] or DEFAULT_CLINIC).created
    return added, problems


def log_mlflow(frame: pd.DataFrame, result: BatchResult, *, engine: str, workers: int, model: str,
               config_hash: str, manifest: Path, out: Path, cpus_per_worker: int | None = None) -> str:
    """One MLflow run (experiment ``smp-batch``): params, counts, throughput, medians, artifacts."""
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    import mlflow

    from models.registry import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment("smp-batch")
    ok = frame[frame["status"].isin(["ok", "skipped", "duplicate"])]
    metrics: dict[str, float] = {
        "photos_total": result.total, "photos_assessed": result.assessed, "photos_skipped": result.done_before,
        "photos_failed": result.failed, "photos_per_second": result.throughput, "seconds": result.seconds}
    if result.steady_throughput is not None:
        metrics["steady_photos_per_second"] = result.steady_throughput
    if result.first_result_s is not None:
        metrics["first_result_seconds"] = result.first_result_s
    for c in ("dot_density_per_cm2", "show_through", "dot_count"):
        med = ok[c].astype("float64").median()
        if med == med:
            metrics[f"median_{c}"] = float(med)
    with mlflow.start_run(run_name=f"batch {manifest.name}") as run:
        mlflow.log_params({"engine": engine, "workers": workers, "cpus_per_worker": cpus_per_worker or "auto",
                           "model": model, "config_hash": config_hash,
                           "manifest": str(manifest), "manifest_sha256": photo_sha256(manifest)[:16],
                           "out": str(out)})
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / "failures.csv"))
        mlflow.log_dict(result.to_json(), "summary.json")
        return run.info.run_id
