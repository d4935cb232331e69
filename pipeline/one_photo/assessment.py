"""One photo's assessment as a result (:class:`Assessment`) and as files: the output contract of
docs/design.md (``assessment.json``, ``dots.csv``, ``mask.png``, ``overlay.png``)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from data.metrics import PhotoMetrics
from pipeline.one_photo.calibration import Calibration
from pipeline.one_photo.loading import Photo
from pipeline.one_photo.overlay import render_overlay
from pipeline.one_photo.pigment import DOT_COLUMNS
from pipeline.one_photo.quality import (
    QualityReport,
)
from pipeline.subject import Subject

__all__ = ["SCHEMA", "Assessment", "write_assessment"]

SCHEMA = "smp-assessment/1"


@dataclass(frozen=True)
class Assessment:
    """One photo's results, ready to be written or stored."""

    photo: Photo
    view: str
    calibration: Calibration
    quality: QualityReport
    model: dict[str, Any]
    metrics: PhotoMetrics
    dots: pd.DataFrame
    labels: np.ndarray
    warnings: tuple[str, ...]
    timings_s: dict[str, float]
    config_hash: str
    roi_polygon_px: np.ndarray | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        p = self.photo
        return {
            "schema": SCHEMA,
            "photo": {
                "path": p.path,
                "sha256": p.sha256,
                "width": p.width,
                "height": p.height,
                "view": self.view,
                "capture_time": p.capture_time.isoformat() if p.capture_time else None,
                "source_mode": p.source_mode,
                "bit_depth": p.bit_depth,
                "notes": list(p.notes),
            },
            "calibration": self.calibration.to_json(),
            "quality": self.quality.to_json(),
            "model": self.model,
            "metrics": self.metrics.to_dict(),
            "roi_polygon_px": None if self.roi_polygon_px is None else np.round(self.roi_polygon_px, 3).tolist(),
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
            "config_hash": self.config_hash,
        }


def write_assessment(
    a: Assessment, out_dir: str | Path, *, overlay: bool = True, subject: Subject | None = None
) -> Path:
    """Write the output contract into ``out_dir`` (created); returns the folder. ``subject``: whose
    photo it is and from which visit (``assessment.json``'s ``subject``; null when not given); its
    ``photo``, when given, names the photo on the overlay (else the assessed file's name).

    Files are written to temporary names and renamed, so a folder never holds a
    half-written file; ``assessment.json`` is written last (its presence means done).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()

    def put(name: str, data: bytes) -> None:
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)

    def write_overlay() -> None:
        ppm = a.calibration.px_per_mm
        name = subject.photo if subject is not None and subject.photo else Path(a.photo.path).name
        title = f"{name}  {len(a.dots)} dots" + ("" if a.quality.ok else "  (quality warnings)")
        img = render_overlay(a.photo.rgb, a.labels, a.dots, ppm, title=title)
        cv2.cvtColor(img, cv2.COLOR_RGB2BGR, dst=img)  # in place: no second copy of a large photo
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        put("overlay.png", buf.tobytes())

    # the overlay (OpenCV, which releases the GIL) is drawn and encoded while the tables are written
    with ThreadPoolExecutor(1) as pool:
        drawing = pool.submit(write_overlay) if overlay else None
        put("dots.csv", a.dots[DOT_COLUMNS].to_csv(index=False, float_format="%.4f").encode())
        ok, buf = cv2.imencode(".png", a.labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        put("mask.png", buf.tobytes())
        if drawing is not None:
            drawing.result()
    doc = a.to_json()
    doc["subject"] = subject.to_json() if subject else None
    doc["timings_s"]["write"] = round(time.perf_counter() - t, 4)
    put("assessment.json", json.dumps(doc, indent=1).encode())
    return out
