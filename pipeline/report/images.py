"""Pictures embedded in a report: data URIs of downscaled images, and crops of flagged dots.

Photos and overlays go in as JPEG (a 1600 px overlay is ~0.3 MB instead of ~2 MB as PNG);
plots stay PNG (sharp text and lines) and are passed through untouched when small enough.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from data.metrics import FLAG_NAMES
from pipeline.one_photo.overlay import FLAG_COLOURS

__all__ = [
    "Picture",
    "MAX_WIDTH",
    "FLAG_ORDER",
    "encode_rgb",
    "picture_from_file",
    "read_rgb",
    "flag_table",
    "pick_flagged",
    "dot_crops",
    "flags_of",
    "as_float",
]

#: Widest picture a report embeds (CSS shows it at the page width; print is ~1400 px at 200 dpi).
MAX_WIDTH = 1600
#: Flags in the order crops are picked and named.
FLAG_ORDER = FLAG_NAMES
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Picture:
    """An image ready for ``<img src>``: a ``data:`` URI and its pixel size."""

    uri: str
    width: int
    height: int


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fit(rgb: np.ndarray, max_width: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if w <= max_width:
        return rgb
    f = max_width / w
    return cv2.resize(rgb, (max_width, max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def encode_rgb(rgb: np.ndarray, *, max_width: int = MAX_WIDTH, fmt: str = "jpeg", quality: int = 85) -> Picture:
    """An HxWx3 uint8 RGB image, shrunk to ``max_width``, as JPEG or PNG."""
    img = np.ascontiguousarray(_fit(rgb, max_width)[..., ::-1])
    if fmt == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        mime = "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        mime = "image/jpeg"
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB
        raise ValueError("could not encode the picture")
    return Picture(_uri(buf.tobytes(), mime), int(img.shape[1]), int(img.shape[0]))


def read_rgb(path: Path) -> np.ndarray | None:
    """The picture at ``path`` as RGB uint8, or None when it is missing or unreadable."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if img is None else img[..., ::-1]


def picture_from_file(path: Path, *, max_width: int = MAX_WIDTH, fmt: str = "jpeg") -> Picture | None:
    """The image file at ``path`` embedded (None when missing or not a picture).

    ``fmt="png"`` keeps a PNG that already fits byte for byte (plots)."""
    path = Path(path)
    if fmt == "png" and path.is_file():
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if data.startswith(_PNG_MAGIC) and len(data) > 24:
            w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            decodes = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
            if 0 < w <= max_width and 0 < h and decodes:
                return Picture(_uri(data, "image/png"), w, h)
    rgb = read_rgb(path)
    return None if rgb is None else encode_rgb(rgb, max_width=max_width, fmt=fmt)


# --------------------------------------------------------------------------- flagged dots


def _flag(dots: pd.DataFrame, name: str) -> np.ndarray:
    if name not in dots.columns:
        return np.zeros(len(dots), bool)
    col = dots[name]
    if col.dtype == object:
        return col.astype(str).str.strip().str.lower().isin(("true", "1", "yes")).to_numpy()
    return col.fillna(False).astype(bool).to_numpy()


def flag_table(dots: pd.DataFrame) -> dict[str, np.ndarray]:
    """{flag: bool array} for :data:`FLAG_ORDER` (all False where a column is absent)."""
    return {f: _flag(dots, f) for f in FLAG_ORDER}


def _severity(dots: pd.DataFrame, flag: str) -> np.ndarray:
    """Higher = worse, so the worst dots of each flag are shown first."""

    def col(name: str) -> np.ndarray:
        if name not in dots.columns:
            return np.zeros(len(dots))
        return pd.to_numeric(dots[name], errors="coerce").fillna(0.0).to_numpy(float)

    if flag == "blue_shift":
        return col("blue_index")
    if flag == "faded":
        return -col("contrast_dL")
    return (
        col("diameter_mm")
        if "diameter_mm" in dots.columns and dots["diameter_mm"].notna().any()
        else col("diameter_px")
    )


def pick_flagged(dots: pd.DataFrame, limit: int) -> list[int]:
    """Row positions of up to ``limit`` flagged dots: the worst of each flag in turn, so every
    kind of defect is shown even when one kind dominates."""
    flags = flag_table(dots)
    queues = []
    for f in FLAG_ORDER:
        idx = np.flatnonzero(flags[f])
        if len(idx):
            queues.append(list(idx[np.argsort(-_severity(dots, f)[idx], kind="stable")]))
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < limit and any(queues):
        for q in queues:
            while q and q[0] in seen:
                q.pop(0)
            if q and len(chosen) < limit:
                i = int(q.pop(0))
                chosen.append(i)
                seen.add(i)
    return chosen


def _ticks(img: np.ndarray, c: float, r: float, colour: tuple[int, int, int]) -> None:
    """Four short ticks around the dot: it is marked without hiding its edge."""
    h = img.shape[0]
    a, b = int(round(c - r - 0.18 * h)), int(round(c - r))
    d, e = int(round(c + r)), int(round(c + r + 0.18 * h))
    ci = int(round(c))
    th = max(2, h // 48)
    for p0, p1 in (((ci, a), (ci, b)), ((ci, d), (ci, e)), ((a, ci), (b, ci)), ((d, ci), (e, ci))):
        cv2.line(img, p0, p1, (0, 0, 0), th + 2, cv2.LINE_AA)
        cv2.line(img, p0, p1, colour, th, cv2.LINE_AA)


def dot_crops(
    image: np.ndarray,
    dots: pd.DataFrame,
    rows: list[int],
    *,
    px_per_mm: float | None,
    size: int = 128,
    mark: bool = True,
) -> list[Picture]:
    """A square crop around each dot of ``rows`` (positions in ``dots``), ``size`` px on screen.

    The window is ~5 dot diameters (at least 1.8 mm with a scale, 32 px without): the dot and
    the skin it is judged against. ``mark`` adds ticks in the dot's flag colour (off when the
    picture is the overlay, which already rings every dot)."""
    h, w = image.shape[:2]
    flags = flag_table(dots)
    xs = pd.to_numeric(dots["x"], errors="coerce").to_numpy(float)
    ys = pd.to_numeric(dots["y"], errors="coerce").to_numpy(float)
    dpx = (
        pd.to_numeric(dots["diameter_px"], errors="coerce").to_numpy(float)
        if "diameter_px" in dots.columns
        else np.full(len(dots), np.nan)
    )
    out = []
    for i in rows:
        x, y = xs[i], ys[i]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        d = dpx[i] if np.isfinite(dpx[i]) and dpx[i] > 0 else (0.2 * px_per_mm if px_per_mm else 4.0)
        half = max(2.5 * d, (0.9 * px_per_mm) if px_per_mm else 16.0, 12.0)
        half = int(round(min(half, 0.25 * min(h, w), 120)))
        cx, cy = int(round(x)), int(round(y))
        # pad with grey so a dot at the border stays centred
        x0, y0, x1, y1 = cx - half, cy - half, cx + half + 1, cy + half + 1
        crop = np.full((y1 - y0, x1 - x0, 3), 128, np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if sx1 > sx0 and sy1 > sy0:
            crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        interp = cv2.INTER_CUBIC if crop.shape[0] < size else cv2.INTER_AREA
        crop = np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interp))
        if mark:
            f = size / (2 * half + 1)
            flag = next((fl for fl in ("blue_shift", "spread", "faded") if flags[fl][i]), "ok")
            _ticks(crop, (half + 0.5) * f - 0.5, 0.75 * d * f + 3, FLAG_COLOURS[flag])
        out.append(encode_rgb(crop, max_width=size, quality=90))
    return out


def flags_of(dots: pd.DataFrame, i: int) -> list[str]:
    flags = flag_table(dots)
    return [f for f in FLAG_ORDER if flags[f][i]]


def as_float(dots: pd.DataFrame, name: str, i: int) -> Any:
    if name not in dots.columns:
        return None
    v = pd.to_numeric(dots[name], errors="coerce").iloc[i]
    return None if pd.isna(v) else float(v)
