"""The batch's tables and summary, its visits in the records, and its MLflow run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.batch.manifest import METRIC_COLUMNS, ROW_COLUMNS, VISIT_COLUMNS, BatchItem, photo_sha256

if TYPE_CHECKING:
    import pandas as pd


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
        return {
            "total": self.total,
            "done_before": self.done_before,
            "assessed": self.assessed,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "photos_per_second": round(self.throughput, 4),
            "first_result_s": None if self.first_result_s is None else round(self.first_result_s, 3),
            "steady_photos_per_second": (None if self.steady_throughput is None else round(self.steady_throughput, 4)),
            "failures": [{"row": r, "path": p, "error": e} for r, p, e in self.failures],
        }


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


def summarise(frame: pd.DataFrame, done_before: int, seconds: float, result_times: Sequence[float] = ()) -> BatchResult:
    """Counts and rates; ``result_times``: seconds from the start at which each new result arrived."""
    failed = frame[frame["status"] == "failed"]
    times = sorted(result_times)
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else None
    return BatchResult(
        total=len(frame),
        done_before=done_before,
        assessed=int((frame["status"] == "ok").sum()),
        failed=len(failed),
        seconds=seconds,
        first_result_s=times[0] if times else None,
        steady_throughput=steady,
        failures=tuple((int(r), str(p), str(e)) for r, p, e in zip(failed["row"], failed["path"], failed["error"])),
    )


# --------------------------------------------------------------------------- records and MLflow


def store_in_records(
    frame: pd.DataFrame, items: Sequence[BatchItem], records: Any, store: Any, *, create_client: bool = False
) -> tuple[int, list[str]]:
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
            add_visit(
                records,
                store,
                client=v["client"],
                region=v["region"],
                date=v["date"],
                kind=v["kind"],
                photos=[it.path for it, _ in members],
                session=int(v["session"]) if v["session"] else None,
                clinic=v["clinic"] or DEFAULT_CLINIC,
                view=v["view"] or None,
                notes=v["notes"] or None,
                create_client=create_client,
            )
        except IngestError as exc:
            problems.append(f"records: rows {', '.join(str(it.row) for it, _ in members)}: {exc}")
            continue
        with records.transaction() as session:
            for _it, folder in members:
                doc = json.loads((Path(folder) / "assessment.json").read_text())
                dots = pd.read_csv(Path(folder) / "dots.csv")
                added += store_assessment(
                    session, doc["photo"]["sha256"], doc, dots, clinic=v["clinic"] or DEFAULT_CLINIC
                ).created
    return added, problems


def log_mlflow(
    frame: pd.DataFrame,
    result: BatchResult,
    *,
    engine: str,
    workers: int,
    model: str,
    config_hash: str,
    manifest: Path,
    out: Path,
    cpus_per_worker: int | None = None,
) -> str:
    """One MLflow run (experiment ``smp-batch``): params, counts, throughput, medians, artifacts."""
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    import mlflow

    from models.registry import use_experiment

    use_experiment("smp-batch")
    ok = frame[frame["status"].isin(["ok", "skipped", "duplicate"])]
    metrics: dict[str, float] = {
        "photos_total": result.total,
        "photos_assessed": result.assessed,
        "photos_skipped": result.done_before,
        "photos_failed": result.failed,
        "photos_per_second": result.throughput,
        "seconds": result.seconds,
    }
    if result.steady_throughput is not None:
        metrics["steady_photos_per_second"] = result.steady_throughput
    if result.first_result_s is not None:
        metrics["first_result_seconds"] = result.first_result_s
    for c in ("dot_density_per_cm2", "show_through", "dot_count"):
        med = ok[c].astype("float64").median()
        if med == med:
            metrics[f"median_{c}"] = float(med)
    with mlflow.start_run(run_name=f"batch {manifest.name}") as run:
        mlflow.log_params(
            {
                "engine": engine,
                "workers": workers,
                "cpus_per_worker": cpus_per_worker or "auto",
                "model": model,
                "config_hash": config_hash,
                "manifest": str(manifest),
                "manifest_sha256": photo_sha256(manifest)[:16],
                "out": str(out),
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / "failures.csv"))
        mlflow.log_dict(result.to_json(), "summary.json")
        return run.info.run_id
