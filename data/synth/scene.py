"""A rendered synthetic photo with its exact truth, and how it is written to disk.

Every view (close-up, global) produces a :class:`Scene`. Its metrics are
computed from the truth with the shared definitions of :mod:`data.metrics`,
so the benchmark compares the pipeline against the same definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from data.colour import luminance_lstar
from data.flags import FlagSettings, flag_dots, measurable_dots
from data.metrics import DOT_COLOUR_COLUMNS, FLAG_NAMES, PlaneScale, photo_metrics

SCHEMA = "smp-synth-truth/1"

DOT_COLUMNS = [
    "dot_id",
    "x",
    "y",
    "x_mm",
    "y_mm",
    "diameter_mm",
    *DOT_COLOUR_COLUMNS,
    "session",
    "shade",
    "merged_with",
    "hair_covered",
    "in_scar",
    "hair_cover",
    "contrast_seen",
    "contrast_own",
    "contrast_photo",
    "speck_dL",
    "visible",
    "fresh",
    "elongation",
    "angle_deg",
    "scab",
]
#: One row per look-alike the photo shows (pores, follicle openings, cut ends, crease junctions, ...):
#: its kind and centre (image px and plane mm). Lines (creases, wrinkles) by their mid-points.
LOOKALIKE_COLUMNS = ["kind", "x", "y", "x_mm", "y_mm"]
#: Truth mask value of hair the photo does not show (the masks' "not labelled" value).
UNSEEN = 255


@dataclass(frozen=True)
class Scene:
    """One synthetic photo and everything that is true about it."""

    photo: np.ndarray
    """HxWx3 uint8 sRGB (RGB order)."""
    mask: np.ndarray
    """HxW uint8 classes: 0 background, 1 scalp, 2 hair; ``UNSEEN`` (255) hair the photo does not show
    (data.synth.visibility.unseen_hair): no pixel score counts it, the photo's metrics count it as scalp."""
    dots: pd.DataFrame
    """One row per true dot, columns ``DOT_COLUMNS`` (x, y in image pixels)."""
    clean_lstar: np.ndarray
    """HxW float32 L* of the scene reflectance (no light, no camera)."""
    skin_lstar: np.ndarray
    """HxW float32 L* of bare skin under the dots and hair (the show-through reference)."""
    plane_to_image: np.ndarray
    """3x3 homography from scalp-plane mm to image pixels (global views: nominal)."""
    px_per_mm: float
    view: str
    params: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
    lookalikes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LOOKALIKE_COLUMNS))
    """What SMP must be told apart from, where the photo shows it (``LOOKALIKE_COLUMNS``)."""


def scene_metrics(scene: Scene, rules: FlagSettings) -> dict[str, Any]:
    """Every photo metric (docs/metrics.md), computed from the truth."""
    scale = PlaneScale.from_homography(np.linalg.inv(scene.plane_to_image), scene.px_per_mm)
    d = scene.dots
    if "visible" in d:  # what the photo shows: a dot under hair or below the contrast floor is not counted
        d = d[d["visible"].to_numpy(bool)]
    flags = {k: d[k].to_numpy(bool) for k in FLAG_NAMES}
    # hair the photo does not show is, in the photo, the scalp it lies on
    labels = np.where(scene.mask == UNSEEN, np.uint8(1), scene.mask) if (scene.mask == UNSEEN).any() else scene.mask
    m = photo_metrics(
        labels,
        d[["x", "y"]].to_numpy(float),
        d["diameter_mm"].to_numpy(float),
        flags,
        scene.clean_lstar,
        scene.skin_lstar,
        scale,
        show_through_dl=rules.show_through_dl,
        show_through_sigma_mm=rules.viewing_sigma_mm,
        measurable=measurable_dots(d["diameter_mm"].to_numpy(float) * scale_at(scene, d), rules),
    )
    return m.to_dict()


def scale_at(scene: Scene, dots: pd.DataFrame) -> np.ndarray:
    """(N,) px per mm of the photo at each true dot (the plane -> image homography's local scale)."""
    from data.synth.visibility import image_px_per_mm

    if not len(dots):
        return np.zeros(0)
    return image_px_per_mm(scene.plane_to_image, dots[["x_mm", "y_mm"]].to_numpy(float))


def dot_flags_table(dots: pd.DataFrame, rules: FlagSettings) -> pd.DataFrame:
    f = flag_dots(
        dots["blue_index"].to_numpy(),
        dots["contrast_dL"].to_numpy(),
        dots["diameter_mm"].to_numpy(),
        rules,
        lstar=dots["L"].to_numpy(),
    )
    return dots.assign(blue_shift=f.blue_shift, faded=f.faded, spread=f.spread)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else round(float(obj), 6)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def encode_lstar16(lstar: np.ndarray) -> np.ndarray:
    """L* (0-100) as 16-bit, 1/500 L* per step: exact to 0.001 L* for the tests."""
    return np.clip(np.round(lstar * 500.0), 0, 65535).astype(np.uint16)


def decode_lstar16(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / np.float32(500.0)


def write_scene(
    scene: Scene,
    out_dir: Path,
    *,
    fmt: str,
    jpeg_quality: int,
    seed: int,
    rules: FlagSettings,
    extra: dict[str, Any] | None = None,
    write_lstar: bool = True,
) -> dict[str, Any]:
    """Write photo, mask.png, dots.csv, lookalikes.csv (when the scene has any) and truth.json into
    ``out_dir``; return the truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bgr = np.ascontiguousarray(scene.photo[..., ::-1])
    if fmt == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        name = "photo.jpg"
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        name = "photo.png"
    if not ok:  # pragma: no cover - OpenCV only fails on impossible arrays
        raise RuntimeError("could not encode the photo")
    (out_dir / name).write_bytes(buf.tobytes())
    _, mbuf = cv2.imencode(".png", scene.mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    (out_dir / "mask.png").write_bytes(mbuf.tobytes())
    if write_lstar:
        for key, arr in (("clean_lstar", scene.clean_lstar), ("skin_lstar", scene.skin_lstar)):
            _, lbuf = cv2.imencode(".png", encode_lstar16(arr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            (out_dir / f"{key}.png").write_bytes(lbuf.tobytes())
    scene.dots[DOT_COLUMNS].to_csv(out_dir / "dots.csv", index=False, float_format="%.4f")
    if len(scene.lookalikes):
        scene.lookalikes[LOOKALIKE_COLUMNS].to_csv(out_dir / "lookalikes.csv", index=False, float_format="%.3f")
    h, w = scene.mask.shape
    truth = {
        "schema": SCHEMA,
        "photo": name,
        "width": w,
        "height": h,
        "view": scene.view,
        "px_per_mm": scene.px_per_mm,
        "plane_to_image": scene.plane_to_image,
        "card": scene.card,
        "metrics": scene_metrics(scene, rules),
        "params": scene.params,
        "seed": seed,
    }
    if extra:
        truth.update(extra)
    truth = _jsonable(truth)
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def lstar_of(linear: np.ndarray) -> np.ndarray:
    return luminance_lstar(linear).astype(np.float32, copy=False)
