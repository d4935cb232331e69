"""Evaluate a segmenter on labelled photos: regions, dots, a per-image table, pictures.

``evaluate`` runs the same tiled inference the pipeline uses on every photo of
a manifest and scores it against the labels (``models.scoring``). Dot scores
are computed only where dots are resolvable: close-ups, or any photo whose
scale is at least ``dot_min_px_per_mm`` (docs/design.md: global views measure dots
only where resolvable). A photo without a known scale gets region scores only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from data.config import Settings
from data.dataset import load_photo
from data.manifest import Manifest, ManifestError
from data.metrics import HAIR, SCALP
from models.inference import Precision, predict_view
from models.network import SegDotNet, prepare_for_inference
from models.scoring import (
    CLASS_NAMES,
    IGNORE,
    BoundaryScores,
    DotMatch,
    boundary_scores,
    class_counts,
    confusion,
    dot_scores,
    match_dots,
    pool_boundary,
    region_scores,
)


class EvalSettings(Settings):
    match_radius_mm: float = Field(0.1, gt=0)
    """A predicted dot centre within this distance of a true one (one-to-one) is a hit."""
    threshold: float = Field(0.3, gt=0, lt=1)
    """Heat-map score above which a peak is a dot."""
    tile: int = Field(512, ge=64)
    overlap: int = Field(64, ge=0)
    batch_size: int = Field(4, ge=1)
    precision: Precision | None = None
    """Arithmetic of inference (models.inference.resolve_precision); None: float32 on CPU (the reference),
    float16 autocast on CUDA."""
    dot_min_px_per_mm: float = Field(8.0, gt=0)
    """Dots are scored on photos at least this sharp (close-ups are 8-40 px/mm)."""
    max_images: int | None = Field(None, ge=1)
    """Score only the first N photos (quick validation during training)."""


@dataclass(frozen=True)
class ImagePrediction:
    """What one photo's evaluation keeps for pictures (overlays)."""

    image_path: Path
    labels: np.ndarray
    dots: np.ndarray
    true_mask: np.ndarray
    true_points: np.ndarray
    match: DotMatch | None


@dataclass(frozen=True)
class Evaluation:
    table: pd.DataFrame
    """One row per photo: path, view, px/mm, IoU per class, dot counts and F1, seconds."""
    confusion: np.ndarray
    """3x3 pixel counts over all photos (rows: truth)."""
    summary: dict[str, float]
    """Pooled figures: overall and per view (``closeup_``/``global_`` prefixes)."""
    samples: list[ImagePrediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(image, reason) of each photo that could not be read; the others are scored."""


def _pooled(cm: np.ndarray, matches: list[tuple[DotMatch, float]], prefix: str = "") -> dict[str, float]:
    out = {f"{prefix}{k}": v for k, v in region_scores(cm).to_dict().items()}
    if matches:
        out.update({f"{prefix}{k}": v for k, v in dot_scores(matches).to_dict().items()})
    return out


def evaluate(
    model: SegDotNet,
    manifest: Manifest,
    settings: EvalSettings = EvalSettings(),
    *,
    device: str | torch.device = "cpu",
    keep_samples: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Score ``model`` on every row of ``manifest`` (in order; ``max_images`` first rows)."""
    rows = list(manifest)[: settings.max_images] if settings.max_images else list(manifest)
    cm_all = np.zeros((3, 3), np.int64)
    per_view: dict[str, tuple[np.ndarray, list]] = {}
    matches: list[tuple[DotMatch, float]] = []
    records, failures = [], []
    samples: list[ImagePrediction] = []
    hair_b: list[BoundaryScores] = []
    scalp_b: list[BoundaryScores] = []
    per_view_hair: dict[str, list[BoundaryScores]] = {}
    per_view_scalp: dict[str, list[BoundaryScores]] = {}
    model = prepare_for_inference(model)  # an eval copy with conv+BN folded; the caller's model is untouched
    for i, row in enumerate(rows):
        try:
            photo = load_photo(row)
        except ManifestError as exc:  # a corrupt or unreadable photo: report it, score the rest
            failures.append((str(row.image), str(exc)))
            if progress:
                progress(i + 1, len(rows))
            continue
        t0 = time.perf_counter()
        pred = predict_view(
            model,
            photo.image,
            row.view,
            px_per_mm=row.px_per_mm,
            tile=settings.tile,
            overlap=settings.overlap,
            batch_size=settings.batch_size,
            device=device,
            threshold=settings.threshold,
            precision=settings.precision,
        )
        secs = time.perf_counter() - t0
        cm = confusion(pred.labels, photo.mask)
        cm_all += cm
        hb = boundary_scores(pred.labels == HAIR, photo.mask == HAIR, 1, valid=photo.mask != IGNORE)
        hair_b.append(hb)
        per_view_hair.setdefault(row.view, []).append(hb)
        # scalp with the same 1-px tolerance: between dense 1-2 px strands a mask one pixel off
        # scores a pixel IoU of ~0.7 against the truth itself (BENCHMARKS.md)
        sb = boundary_scores(pred.labels == SCALP, photo.mask == SCALP, 1, valid=photo.mask != IGNORE)
        scalp_b.append(sb)
        per_view_scalp.setdefault(row.view, []).append(sb)
        view_cm, view_matches = per_view.setdefault(row.view, (np.zeros((3, 3), np.int64), []))
        view_cm += cm
        rs = region_scores(cm)
        rec = {
            "image": str(row.image),
            "view": row.view,
            "px_per_mm": photo.px_per_mm,
            "miou_scalp_hair": rs.miou_scalp_hair,
            "hair_boundary_f1": hb.f1,
            "scalp_boundary_f1": sb.f1,
            "seconds": secs,
            "n_pred_dots": int(len(pred.dots)),
        }
        rec.update({f"iou_{n}": v for n, v in zip(CLASS_NAMES, rs.iou)})
        # the pixel counts behind the figures, so that any group of photos can be pooled
        rec.update(class_counts("scalp", SCALP, cm, sb) | class_counts("hair", HAIR, cm, hb))
        match = None
        scorable = (
            photo.has_points
            and np.isfinite(photo.px_per_mm)
            and (row.view == "closeup" or photo.px_per_mm >= settings.dot_min_px_per_mm)
        )
        if scorable:
            # invisible dots (under hair, below the contrast floor) are neither hits nor misses
            match = match_dots(
                pred.dots[:, :2], photo.points, settings.match_radius_mm * photo.px_per_mm, visible=photo.visible
            )
            matches.append((match, photo.px_per_mm))
            view_matches.append((match, photo.px_per_mm))
            ds = dot_scores([(match, photo.px_per_mm)])
            rec.update(
                {
                    "n_true_dots": int(photo.visible.sum()),
                    "dot_tp": ds.tp,
                    "dot_fp": ds.fp,
                    "dot_fn": ds.fn,
                    "dot_precision": ds.precision,
                    "dot_recall": ds.recall,
                    "dot_f1": ds.f1,
                    "dot_loc_error_mm_median": ds.to_dict()["dot_loc_error_mm_median"],
                }
            )
        records.append(rec)
        if len(samples) < keep_samples:
            samples.append(ImagePrediction(row.image, pred.labels, pred.dots, photo.mask, photo.points, match))
        if progress:
            progress(i + 1, len(rows))
    summary = _pooled(cm_all, matches)
    summary["hair_boundary_f1"] = pool_boundary(hair_b).f1 if hair_b else float("nan")
    summary["scalp_boundary_f1"] = pool_boundary(scalp_b).f1 if scalp_b else float("nan")
    for view, (cm, m) in per_view.items():
        summary.update(_pooled(cm, m, prefix=f"{view}_"))
        summary[f"{view}_hair_boundary_f1"] = pool_boundary(per_view_hair[view]).f1
        summary[f"{view}_scalp_boundary_f1"] = pool_boundary(per_view_scalp[view]).f1
    summary["n_images"] = float(len(records))
    summary["n_failed"] = float(len(failures))
    summary["seconds_per_image"] = float(np.mean([r["seconds"] for r in records])) if records else float("nan")
    return Evaluation(pd.DataFrame.from_records(records), cm_all, summary, samples, failures)


def selection_score(summary: dict[str, float]) -> float:
    """One number to rank models on a validation suite: mean of scalp/hair mIoU and dot F1.

    Missing parts (e.g. no dot labels) are left out of the mean.
    """
    parts = [summary.get("miou_scalp_hair", float("nan")), summary.get("dot_f1", float("nan"))]
    parts = [p for p in parts if p == p]
    return float(np.mean(parts)) if parts else float("nan")


# ----------------------------------------------------------------------------- pictures

_CLASS_TINT = np.array([[0, 0, 0], [255, 170, 60], [60, 140, 255]], np.float32)


def overlay(image: np.ndarray, sample: ImagePrediction, alpha: float = 0.35) -> np.ndarray:
    """RGB picture: predicted classes tinted, hits green, misses (true, unfound) red,
    false detections yellow; for a reviewer of the model, not of a client."""
    import cv2

    out = image.astype(np.float32)
    tint = _CLASS_TINT[sample.labels]
    paint = sample.labels > 0
    out[paint] = (1 - alpha) * out[paint] + alpha * tint[paint]
    out = np.clip(out, 0, 255).astype(np.uint8)
    r = max(2, int(round(min(image.shape[:2]) / 300)))
    matched_p = set(sample.match.pred_index.tolist()) if sample.match else set()
    matched_t = set(sample.match.true_index.tolist()) if sample.match else set()
    # true dots are drawn only where dots were scored (close-ups): elsewhere a miss means nothing
    for j, (x, y) in enumerate(sample.true_points if sample.match is not None else ()):
        if j not in matched_t:
            cv2.circle(out, (int(round(x)), int(round(y))), r + 1, (255, 40, 40), 1, cv2.LINE_AA)
    for j, d in enumerate(sample.dots):
        colour = (40, 220, 40) if j in matched_p else (255, 230, 0)
        cv2.circle(out, (int(round(d[0])), int(round(d[1]))), r, colour, 1, cv2.LINE_AA)
    return out


def confusion_figure(cm: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(3):
        for j in range(3):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.3f}\n{int(cm[i, j]):,}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(3), CLASS_NAMES)
    ax.set_yticks(range(3), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "pixels (row-normalised)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(ev: Evaluation, out: str | Path, images: dict[Path, np.ndarray] | None = None) -> list[Path]:
    """Write the table (CSV), summary (JSON), confusion matrix and overlays under ``out``."""
    import json

    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "evaluation.csv", out / "summary.json"]
    ev.table.to_csv(written[0], index=False, float_format="%.5g")
    written[1].write_text(json.dumps({k: (None if v != v else v) for k, v in ev.summary.items()}, indent=2))
    written.append(confusion_figure(ev.confusion, out / "confusion.png"))
    for k, s in enumerate(ev.samples):
        img = images.get(s.image_path) if images else None
        if img is None:
            bgr = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
            if bgr is None:  # the error cvtColor raises on an empty image
                raise cv2.error(f"{s.image_path}: cannot read this image")
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        p = out / f"overlay_{k:02d}.png"
        cv2.imwrite(str(p), cv2.cvtColor(overlay(img, s), cv2.COLOR_RGB2BGR))
        written.append(p)
    return written
