"""Reviewers' acts -> a dataset that ``smp train`` reads (``manifest.csv`` + one folder per photo).

Only what a person decided is exported as truth. A photo is exported when its assessment
has at least one active act of a reviewer (a decision on a dot, an added dot, a painted
shape, a "done" mark: :mod:`pipeline.records.review`; undone acts count nowhere). When
several assessments of one photo were reviewed, the newest of them is exported.

Per photo, ``<out>/<photo sha256[:16]>/``:

* ``photo<ext>``: the photo, as stored;
* ``dots.csv``: dots a reviewer confirmed (``review`` = ``confirmed``), relabelled (flags
  replaced by the new label: ``relabelled``) or added (``added``), all ``visible`` True;
  and the model's detections nobody judged, ``visible`` False and ``review`` =
  ``unreviewed``: the training loss treats their neighbourhood as unknown (neither dot nor
  background), since an unreviewed detection is the model's guess, not truth
  (models/targets.py, ``data.dataset.read_visible``). Rejected dots are left out;
* ``rejected.csv`` (``x``, ``y``, ``dot_id``): the detections a reviewer rejected, the
  known "not a dot" places;
* ``mask.png``: 255 ("not labelled") except where reviewers painted: 0 background,
  1 scalp, 2 hair, shapes drawn in the order they were made (later over earlier),
  brush strokes as thick lines with round ends, polygons filled;
* ``review.json``: provenance: the assessment and model, whether the dots are supervised,
  and every active act with its reviewer and time.

``<out>/manifest.csv`` (``data.manifest`` columns; ``source`` = ``review``) names a photo's
``dots.csv`` only when its dots are marked done: on a half-reviewed photo every dot nobody
looked at would read as "no dot here", so such a photo teaches the segmentation (its
painted mask) and nothing about dots. The split is fixed by the client, so a client's
photos stay in one split; ``client`` is the records' client number, not the clinic's own
id. ``smp train --set train_manifest=<out>/manifest.csv`` uses it.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import sqlalchemy as sa

from data.metrics import FLAG_NAMES
from pipeline.one_photo.clean_copy import clean_photo_bytes
from pipeline.records import PhotoStore, Records
from pipeline.records.review import Act, PhotoActs, photo_acts
from pipeline.records.schema import (
    MASK_LABELS,
    AddedDot,
    Assessment,
    Client,
    Clinic,
    DoneMark,
    Dot,
    Photo,
    ReviewDecision,
    ReviewShape,
    Visit,
    VisitPhoto,
)

__all__ = [
    "DOT_COLUMNS",
    "FLAGS",
    "RELABELS",
    "REJECTED_COLUMNS",
    "ExportResult",
    "dot_tables",
    "export_reviews",
    "latest_decisions",
    "paint_mask",
    "provenance",
    "remove_old_exports",
    "reviewed_assessment_ids",
    "zip_folder",
]

#: Dot flags (docs/design.md).
FLAGS = FLAG_NAMES
#: What a flagged dot can be relabelled as: one flag, or ``none`` (a dot without any flag).
RELABELS = (*FLAGS, "none")
IGNORE = 255
#: Columns of an exported ``dots.csv`` and ``rejected.csv``.
DOT_COLUMNS = ("dot_id", "x", "y", "diameter_mm", *FLAGS, "visible", "review")
REJECTED_COLUMNS = ("x", "y", "dot_id")
_SHIFT = 4  # sub-pixel bits of the OpenCV drawing calls
_REVIEW = {"accept": "confirmed", "relabel": "relabelled"}


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: ``photos`` manifest rows; ``dots`` visible (human) dots in them;
    ``decisions``, ``added``, ``shapes`` active acts of those kinds; ``done`` photos whose dots
    are supervised."""

    folder: Path
    manifest: Path
    photos: int
    dots: int
    decisions: int
    added: int = 0
    shapes: int = 0
    done: int = 0
    missing: tuple[str, ...] = ()
    """Photos left out because their stored file is gone from the photo store (sha256 prefixes)."""


def latest_decisions(session: Any, dot_ids: list[int] | None = None) -> dict[int, ReviewDecision]:
    """The latest decision not undone of each dot (all dots, or those of ``dot_ids``)."""
    stmt = (
        sa.select(ReviewDecision)
        .where(ReviewDecision.undone_at.is_(None))
        .order_by(ReviewDecision.created_at, ReviewDecision.id)
    )
    if dot_ids is not None:
        stmt = stmt.where(ReviewDecision.dot_id.in_(dot_ids))
    latest: dict[int, ReviewDecision] = {}
    for d in session.scalars(stmt):
        latest[d.dot_id] = d
    return latest


def reviewed_assessment_ids() -> Any:
    """A select of the ids of assessments with at least one active act."""
    decided = (
        sa.select(Dot.assessment_id)
        .join(ReviewDecision, ReviewDecision.dot_id == Dot.id)
        .where(ReviewDecision.undone_at.is_(None))
    )
    others = [sa.select(t.assessment_id).where(t.undone_at.is_(None)) for t in (AddedDot, ReviewShape, DoneMark)]
    return sa.union(decided, *others)


def _reviewed_assessments(session: Any, clinic_id: int | None) -> list[tuple[Any, ...]]:
    """(assessment, photo, visit, client id) of the newest reviewed assessment of each photo."""
    stmt = (
        sa.select(Assessment, Photo, Visit, Client.id)
        .join(Photo, Photo.id == Assessment.photo_id)
        .join(VisitPhoto, VisitPhoto.photo_id == Photo.id)
        .join(Visit, Visit.id == VisitPhoto.visit_id)
        .join(Client, Client.id == Visit.client_id)
        .join(Clinic, Clinic.id == Client.clinic_id)
        .where(Assessment.id.in_(reviewed_assessment_ids()))
        .order_by(Assessment.created_at, Assessment.id)
    )
    if clinic_id is not None:
        stmt = stmt.where(Client.clinic_id == clinic_id)
    newest: dict[int, tuple[Any, ...]] = {}
    for row in session.execute(stmt).all():
        newest[row[1].id] = tuple(row)
    return sorted(newest.values(), key=lambda r: r[0].id)


def _label_flags(label: str) -> dict[str, bool]:
    if label not in RELABELS:
        raise ValueError(f"unknown label {label!r}: use {', '.join(RELABELS)}")
    return {f: f == label for f in FLAGS}


# --------------------------------------------------------------------------- pure parts


def paint_mask(shapes: Sequence[Act], width: int, height: int) -> np.ndarray:
    """``height`` x ``width`` uint8 classes: 255 where nothing was painted, else the label's value
    (0 background, 1 scalp, 2 hair) of the last shape over each pixel.

    A brush stroke covers the pixels within ``radius_px`` of the line through its points
    (round ends and joins); a polygon its inside. Coordinates are OpenCV's (pixel centres
    at integers), drawn with sub-pixel precision and no anti-aliasing.
    """
    mask = np.full((height, width), IGNORE, np.uint8)
    scale = 1 << _SHIFT
    for shape in shapes:
        d = shape.detail
        value = MASK_LABELS.index(d["label"])
        pts = np.round(np.asarray(d["points"], np.float64).reshape(-1, 2) * scale).astype(np.int32)
        if d["kind"] == "polygon":
            cv2.fillPoly(mask, [pts], value, cv2.LINE_8, _SHIFT)
            continue
        radius = float(d["radius_px"])
        r = int(round(radius * scale))
        for p in pts:
            cv2.circle(mask, (int(p[0]), int(p[1])), r, value, -1, cv2.LINE_8, _SHIFT)
        for a, b in zip(pts[:-1], pts[1:]):
            along = (b - a).astype(np.float64)
            length = float(np.hypot(*along))
            if length == 0:
                continue
            normal = np.array([-along[1], along[0]]) / length * radius * scale
            quad = np.round(np.array([a + normal, b + normal, b - normal, a - normal])).astype(np.int32)
            cv2.fillConvexPoly(mask, quad, value, cv2.LINE_8, _SHIFT)
    return mask


def dot_tables(dots: Sequence[Any], acts: PhotoActs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(dots.csv, rejected.csv)`` of a photo: ``dots`` (the assessment's rows: ``id``,
    ``dot_index``, ``x``, ``y``, ``diameter_mm`` and the flags) judged by the latest active
    decisions of ``acts``, then the added dots."""
    verdicts = acts.latest_decisions
    table, rejected = [], []
    for d in dots:
        verdict = verdicts.get(d.id)
        flags = {f: bool(getattr(d, f)) for f in FLAGS}
        decision = verdict.detail["decision"] if verdict is not None else None
        if decision == "reject":
            rejected.append({"x": d.x, "y": d.y, "dot_id": d.dot_index})
            continue
        if decision == "relabel" and verdict is not None and verdict.detail["new_label"]:
            flags = _label_flags(verdict.detail["new_label"])
        table.append(
            {
                "dot_id": d.dot_index,
                "x": d.x,
                "y": d.y,
                "diameter_mm": d.diameter_mm,
                **flags,
                "visible": decision is not None,
                "review": _REVIEW.get(decision or "", "unreviewed"),
            }
        )
    for a in acts.added:
        table.append(
            {
                "dot_id": None,
                "x": a.detail["x"],
                "y": a.detail["y"],
                "diameter_mm": None,
                **{f: False for f in FLAGS},
                "visible": True,
                "review": "added",
            }
        )
    frame = pd.DataFrame(table, columns=list(DOT_COLUMNS)).astype(
        {"dot_id": "Int64", "x": float, "y": float, "diameter_mm": float, "visible": bool, **{f: bool for f in FLAGS}}
    )
    return frame, pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).astype({"dot_id": "Int64"})


def provenance(assessment: Any, photo: Any, acts: PhotoActs, dots: Sequence[Any]) -> dict[str, Any]:
    """``review.json`` of one exported photo."""
    index = {d.id: d.dot_index for d in dots}

    def entry(a: Act) -> dict[str, Any]:
        detail = dict(a.detail)
        if a.kind == "decision":
            detail = {
                "dot_id": index.get(detail["dot_id"]),
                "decision": detail["decision"],
                "new_label": detail["new_label"],
            }
        return {
            "act": a.kind,
            "id": a.id,
            "reviewer": a.reviewer,
            "reviewer_user_id": a.reviewer_user_id,
            "at": a.at.isoformat(),
            **detail,
        }

    return {
        "schema": "smp-review-export/2",
        "assessment_id": assessment.id,
        "photo_sha256": photo.sha256,
        "model": {
            "name": assessment.model_name,
            "version": assessment.model_version,
            "sha256": assessment.model_sha256,
        },
        "config_hash": assessment.config_hash,
        "dots_supervised": acts.is_done,
        "dots": (
            "marked done: confirmed, relabelled and added dots are dots, rejected ones are not, "
            "unreviewed detections are unknown (visible false)"
        )
        if acts.is_done
        else (
            "not marked done: the manifest gives no dots for this photo (a dot nobody judged would "
            "read as 'no dot'); dots.csv and rejected.csv are kept for the record"
        ),
        "mask": "painted shapes (0 background, 1 scalp, 2 hair), later over earlier; 255 elsewhere: not labelled",
        "acts": [entry(a) for a in acts.all()],
    }


def _write_png(path: Path, mask: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"{path}: the mask could not be encoded")
    path.write_bytes(buf.tobytes())


# --------------------------------------------------------------------------- the export


def export_reviews(records: Records, store: PhotoStore, out: Path, *, clinic_id: int | None = None) -> ExportResult:
    """Write the dataset of every reviewed photo (of ``clinic_id``, or all) into ``out`` (a new folder)."""
    from data.importers import assign_split, write_manifest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=False)
    rows: list[dict[str, Any]] = []
    totals = {"dots": 0, "decisions": 0, "added": 0, "shapes": 0, "done": 0}
    missing: list[str] = []
    with records.session(read_only=True) as s:
        for assessment, photo, visit, client_id in _reviewed_assessments(s, clinic_id):
            dots = list(s.scalars(sa.select(Dot).where(Dot.assessment_id == assessment.id).order_by(Dot.dot_index)))
            acts = photo_acts(s, assessment.id)
            src = store.path(photo.stored_path)
            if not src.is_file():  # lost from the store: said in the result, the rest exported
                missing.append(photo.sha256[:16])
                continue
            # named by the photo's hash; two clinics may hold the same bytes (an admin's export of all clinics)
            item = out / photo.sha256[:16]
            if item.exists():
                item = out / f"{photo.sha256[:16]}-p{photo.id}"
            item.mkdir()
            # the photo without its metadata (camera serial, GPS, maker notes): lossless, orientation kept
            data, ext = clean_photo_bytes(src.read_bytes())
            image = item / f"photo{ext}"
            image.write_bytes(data)
            table, rejected = dot_tables(dots, acts)
            table.to_csv(item / "dots.csv", index=False, float_format="%.4f")
            rejected.to_csv(item / "rejected.csv", index=False, float_format="%.4f")
            _write_png(item / "mask.png", paint_mask(acts.shapes, photo.width, photo.height))
            (item / "review.json").write_text(json.dumps(provenance(assessment, photo, acts, dots), indent=1))
            totals["dots"] += int(table["visible"].sum())
            totals["decisions"] += len(acts.decisions)
            totals["added"] += len(acts.added)
            totals["shapes"] += len(acts.shapes)
            totals["done"] += int(acts.is_done)
            ppm = (assessment.calibration or {}).get("px_per_mm")
            view = assessment.view or photo.view or "closeup"
            key = f"client-{client_id}"
            rows.append(
                {
                    "image": f"{item.name}/{image.name}",
                    "mask": f"{item.name}/mask.png",
                    "dots": f"{item.name}/dots.csv" if acts.is_done else "",
                    "truth": "",
                    "px_per_mm": float(ppm) if isinstance(ppm, (int, float)) and math.isfinite(ppm) else math.nan,
                    "view": view,
                    "split": assign_split(key),
                    "source": "review",
                    "client": key,
                    "visit": f"{visit.visit_date.isoformat()}_{visit.kind}"
                    + (f"-{visit.session_number}" if visit.session_number else ""),
                }
            )
    manifest = write_manifest(rows, out)
    return ExportResult(folder=out, manifest=manifest, photos=len(rows), missing=tuple(missing), **totals)


def zip_folder(folder: Path, dest: Path) -> Path:
    """``dest`` (a .zip) holding ``folder``'s files under the folder's name."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    tmp.replace(dest)
    return dest


def remove_old_exports(folder: Path, now: float, retention_s: float) -> list[Path]:
    """Delete the exports in ``folder`` (zips and folders) older than ``retention_s`` seconds at ``now``
    (seconds since the epoch): an export is removed once downloaded, and one whose download never finished
    stays no longer than this. Returns what was removed."""
    removed = []
    for path in sorted(folder.glob("review-*")) if folder.is_dir() else []:
        try:
            if now - path.stat().st_mtime <= retention_s:
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path)
        except FileNotFoundError:  # another request removed it first
            continue
    return removed
