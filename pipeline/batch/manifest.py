"""The batch manifest, each photo's key and the work list: what is to be done (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.metrics import PhotoMetrics
from pipeline.errors import UserError

if TYPE_CHECKING:
    pass

#: Manifest columns: ``photo`` (required; relative to the manifest's folder), and the visit
#: columns of ``smp visit import`` (client, region, date, kind required together) to record results.
VISIT_COLUMNS = ("client", "region", "date", "kind", "session", "view", "clinic", "notes")
_VISIT_REQUIRED = VISIT_COLUMNS[:4]
BATCH_COLUMNS = ("photo",) + VISIT_COLUMNS
#: The per-photo metrics of docs/metrics.md (``data.metrics.PhotoMetrics``), one Parquet column each
#: (the count of dots whose colour could not be read stays in each photo's ``assessment.json``).
METRIC_COLUMNS = tuple(f.name for f in fields(PhotoMetrics) if f.name != "dots_not_measurable")
#: One row per photo of the manifest, in this order.
ROW_COLUMNS = (
    ("row", "path", "sha256", "status", "error", "model", "config_hash", "result_dir")
    + METRIC_COLUMNS
    + ("warnings", "seconds")
)


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
    problems += [
        f"row 1: unknown column {c!r} (columns: {', '.join(BATCH_COLUMNS)})" for c in header if c not in BATCH_COLUMNS
    ]
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
            for check in (
                lambda: parse_date(visit["date"]),  # noqa: B023 - called within this iteration
                lambda: parse_kind(visit["kind"], visit["session"]),  # noqa: B023
                lambda: parse_region(visit["region"]),  # noqa: B023
            ):
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


def result_row(
    row: int,
    path: str,
    sha256: str | None,
    status: str,
    *,
    error: str | None = None,
    model: str | None = None,
    config_hash: str | None = None,
    result_dir: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    warnings: int | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "row": row,
        "path": path,
        "sha256": sha256,
        "status": status,
        "error": error,
        "model": model,
        "config_hash": config_hash,
        "result_dir": result_dir,
    }
    for k in METRIC_COLUMNS:
        v = (metrics or {}).get(k)
        out[k] = None if v is None else (int(v) if k == "dot_count" else float(v))
    out["warnings"] = warnings
    out["seconds"] = seconds
    return out


def model_label(model: Mapping[str, Any]) -> str:
    return f"{model.get('name') or 'unknown'}@{model.get('version') or ''}"


def done_row(
    row: int, path: str, folder: Path, status: str = "skipped", seconds: float | None = None
) -> dict[str, Any]:
    """The row of a photo whose result folder is complete, read back from its ``assessment.json``."""
    doc = json.loads((Path(folder) / "assessment.json").read_text())
    return result_row(
        row,
        path,
        doc["photo"]["sha256"],
        status,
        model=model_label(doc.get("model") or {}),
        config_hash=doc.get("config_hash"),
        result_dir=str(folder),
        metrics=doc.get("metrics"),
        warnings=len(doc.get("warnings") or ()),
        seconds=seconds,
    )


def work_list(
    items: Sequence[BatchItem], out: Path, config_hash: str
) -> tuple[list[WorkItem], list[dict[str, Any]], list[dict[str, Any]]]:
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
            failed.append(result_row(it.row, str(it.path), None, "failed", error=f"{it.name}: no such photo file"))
            continue
        except OSError as exc:
            failed.append(result_row(it.row, str(it.path), None, "failed", error=f"{it.name}: cannot read ({exc})"))
            continue
        folder = result_dir(out, sha, config_hash)
        if (folder / "assessment.json").is_file():
            done.append(done_row(it.row, str(it.path), folder))
        elif sha in queued:  # same bytes as an earlier row: its result is this row's too
            done.append(result_row(it.row, str(it.path), sha, "duplicate", result_dir=str(folder)))
        else:
            queued.add(sha)
            todo.append(WorkItem(it.row, str(it.path), sha, str(folder)))
    return todo, done, failed
