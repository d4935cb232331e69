"""Reviewers' decisions -> a dataset that ``smp train`` reads (``manifest.csv`` + one folder per photo).

For every assessment with at least one review decision (in the clinic asked for):

* ``<out>/<photo sha256[:16]>/photo<ext>``: the photo, as stored;
* ``dots.csv``: the assessment's dots with the reviewers' verdicts applied (the latest
  decision on a dot counts): ``reject`` means "not a dot" and drops the row; ``accept``
  keeps it with its flags; ``relabel`` keeps it with its flags replaced by the new label
  (one of :data:`RELABELS`; ``none``: a dot with no flag). Dots nobody reviewed stay as the
  model found them (column ``review`` says which is which);
* ``mask.png``: all 255 ("not labelled"), because reviewers judge dots, not the
  scalp/hair segmentation: training then learns dots from these photos and leaves the
  segmentation alone (``data.manifest``: 255 is ignored);
* ``review.json``: provenance (assessment, model, config hash, every decision);

and ``<out>/manifest.csv`` (``data.manifest`` columns; ``source`` = ``review``; the split is
fixed by the client, so a client's photos stay in one split; ``client`` is the records' client
number, not the clinic's own id). ``smp train --set train_manifest=<out>/manifest.csv`` uses it.
"""
from __future__ import annotations

import json
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..records import PhotoStore, Records
from ..records.schema import Assessment, Client, Clinic, Dot, Photo, ReviewDecision, Visit, VisitPhoto

__all__ = ["FLAGS", "RELABELS", "ExportResult", "export_reviews", "zip_folder", "latest_decisions"]

#: Dot flags (docs/design.md).
FLAGS = ("blue_shift", "faded", "spread")
#: What a flagged dot can be relabelled as: one flag, or ``none`` (a dot without any flag).
RELABELS = (*FLAGS, "none")
IGNORE = 255


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: Path
    photos: int
    dots: int
    decisions: int


def latest_decisions(session: Any, dot_ids: list[int] | None = None) -> dict[int, ReviewDecision]:
    """The latest decision of each dot (all dots, or those of ``dot_ids``)."""
    stmt = sa.select(ReviewDecision).order_by(ReviewDecision.created_at, ReviewDecision.id)
    if dot_ids is not None:
        stmt = stmt.where(ReviewDecision.dot_id.in_(dot_ids))
    latest: dict[int, ReviewDecision] = {}
    for d in session.scalars(stmt):
        latest[d.dot_id] = d
    return latest


def _assessments_with_decisions(session: Any, clinic_id: int | None) -> list[tuple[Any, ...]]:
    stmt = (sa.select(Assessment, Photo, Visit, Client.id, Clinic.slug)
            .join(Photo, Photo.id == Assessment.photo_id).join(VisitPhoto, VisitPhoto.photo_id == Photo.id)
            .join(Visit, Visit.id == VisitPhoto.visit_id).join(Client, Client.id == Visit.client_id)
            .join(Clinic, Clinic.id == Client.clinic_id)
            .where(Assessment.id.in_(sa.select(Dot.assessment_id)
                                     .join(ReviewDecision, ReviewDecision.dot_id == Dot.id)))
            .order_by(Assessment.id))
    if clinic_id is not None:
        stmt = stmt.where(Client.clinic_id == clinic_id)
    return list(session.execute(stmt).all())


def _label_flags(label: str) -> dict[str, bool]:
    if label not in RELABELS:
        raise ValueError(f"unknown label {label!r}: use {', '.join(RELABELS)}")
    return {f: f == label for f in FLAGS}


def export_reviews(records: Records, store: PhotoStore, out: Path, *, clinic_id: int | None = None) -> ExportResult:
    """Write the dataset of every reviewed assessment (of ``clinic_id``, or all) into ``out`` (a new folder)."""
    from data.importers import assign_split, write_manifest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=False)
    rows, n_dots, n_decisions = [], 0, 0
    with records.session(read_only=True) as s:
        for assessment, photo, visit, client_id, _slug in _assessments_with_decisions(s, clinic_id):
            dots = list(s.scalars(sa.select(Dot).where(Dot.assessment_id == assessment.id).order_by(Dot.dot_index)))
            decisions = latest_decisions(s, [d.id for d in dots])
            item = out / photo.sha256[:16]
            item.mkdir()
            src = store.path(photo.stored_path)
            image = item / f"photo{src.suffix.lower()}"
            shutil.copyfile(src, image)
            table = []
            for d in dots:
                verdict = decisions.get(d.id)
                flags = {f: bool(getattr(d, f)) for f in FLAGS}
                review = "unreviewed"
                if verdict is not None:
                    if verdict.decision == "reject":
                        continue
                    review = verdict.decision
                    if verdict.decision == "relabel" and verdict.new_label:
                        flags = _label_flags(verdict.new_label)
                table.append({"dot_id": d.dot_index, "x": d.x, "y": d.y, "diameter_mm": d.diameter_mm, **flags,
                              "review": review})
            frame = pd.DataFrame(table, columns=["dot_id", "x", "y", "diameter_mm", *FLAGS, "review"])
            frame.to_csv(item / "dots.csv", index=False, float_format="%.4f")
            mask = np.full((photo.height, photo.width), IGNORE, np.uint8)
            ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            (item / "mask.png").write_bytes(buf.tobytes())
            provenance = {
                "schema": "smp-review-export/1", "assessment_id": assessment.id, "photo_sha256": photo.sha256,
                "model": {"name": assessment.model_name, "version": assessment.model_version,
                          "sha256": assessment.model_sha256},
                "config_hash": assessment.config_hash,
                "decisions": [{"dot_id": next(x.dot_index for x in dots if x.id == v.dot_id), "decision": v.decision,
                               "new_label": v.new_label, "reviewer": v.reviewer, "note": v.note,
                               "at": v.created_at.isoformat()} for v in decisions.values()],
                "mask": "not labelled (255): reviews judge dots, not the segmentation",
            }
            (item / "review.json").write_text(json.dumps(provenance, indent=1))
            n_dots += len(frame)
            n_decisions += len(decisions)
            ppm = (assessment.calibration or {}).get("px_per_mm")
            view = assessment.view or photo.view or "closeup"
            key = f"client-{client_id}"
            rows.append({"image": f"{item.name}/{image.name}", "mask": f"{item.name}/mask.png",
                         "dots": f"{item.name}/dots.csv", "truth": "",
                         "px_per_mm": float(ppm) if isinstance(ppm, (int, float)) and math.isfinite(ppm) else math.nan,
                         "view": view, "split": assign_split(key), "source": "review", "client": key,
                         "visit": f"{visit.visit_date.isoformat()}_{visit.kind}"
                                  + (f"-{visit.session_number}" if visit.session_number else "")})
    manifest = write_manifest(rows, out)
    return ExportResult(folder=out, manifest=manifest, photos=len(rows), dots=n_dots, decisions=n_decisions)


def zip_folder(folder: Path, dest: Path) -> Path:
    """``dest`` (a .zip) holding ``folder``'s files under the folder's name."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    tmp.replace(dest)
    return dest
