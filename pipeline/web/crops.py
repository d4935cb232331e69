"""Crops of single dots for the review queue: a small square of the photo around the dot, enlarged.

A crop is cut from the upright photo (``load_photo``: EXIF orientation applied, the frame
the dot coordinates are in), about 6 dot diameters wide, enlarged to ``CROP_PX`` with
nearest-neighbour pixels (a reviewer judges pixels, not a smoothed guess) and marked with
a thin ring outside the dot. Crops are cached on disk (``<home>/crops/<assessment>/<dot>.png``,
integer names only) and the last decoded photos in memory, since a queue page shows many
dots of the same photo.

The photo review page shows the whole upright photo the same way: :meth:`CropMaker.upright`
re-encodes it as a JPEG (``<home>/crops/<assessment>/upright.jpg``), so the browser draws
exactly the pixels the dot coordinates refer to, whatever orientation tag the file carries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CROP_PX", "CropMaker"]

CROP_PX = 160
UPRIGHT_QUALITY = 92
_MIN_HALF = 10


class CropMaker:
    def __init__(self, home: Path, cached_photos: int = 2) -> None:
        self.home = Path(home)
        self._photos: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._size = cached_photos
        self._lock = threading.Lock()

    def _rgb(self, path: Path) -> np.ndarray:
        from pipeline.one_photo.loading import load_photo

        with self._lock:
            if path in self._photos:
                self._photos.move_to_end(path)
                return self._photos[path]
        rgb = load_photo(path).rgb
        with self._lock:
            self._photos[path] = rgb
            while len(self._photos) > self._size:
                self._photos.popitem(last=False)
        return rgb

    def upright(self, photo_path: Path, assessment_id: int) -> bytes:
        """The upright photo of an assessment as a JPEG (cached)."""
        cached = self.home / "crops" / str(int(assessment_id)) / "upright.jpg"
        if cached.is_file():
            return cached.read_bytes()
        rgb = self._rgb(photo_path)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, UPRIGHT_QUALITY])
        if not ok:
            raise RuntimeError(f"assessment {assessment_id}: the photo could not be encoded")
        self._keep(cached, buf.tobytes())
        return buf.tobytes()

    def _keep(self, cached: Path, data: bytes) -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(cached)

    def crop(
        self, photo_path: Path, assessment_id: int, dot_index: int, x: float, y: float, diameter_px: float | None
    ) -> bytes:
        cached = self.home / "crops" / str(int(assessment_id)) / f"{int(dot_index)}.png"
        if cached.is_file():
            return cached.read_bytes()
        rgb = self._rgb(photo_path)
        h, w = rgb.shape[:2]
        d = float(diameter_px) if diameter_px is not None and np.isfinite(diameter_px) and diameter_px > 0 else 6.0
        half = int(max(_MIN_HALF, round(3 * d)))
        cx, cy = int(round(x)), int(round(y))
        x0, y0, x1, y1 = cx - half, cy - half, cx + half + 1, cy + half + 1
        tile = np.zeros((2 * half + 1, 2 * half + 1, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if sx1 > sx0 and sy1 > sy0:
            tile[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        scale = CROP_PX / tile.shape[0]
        big = cv2.resize(tile, (CROP_PX, CROP_PX), interpolation=cv2.INTER_NEAREST)
        centre = (int(round((x - x0 + 0.5) * scale)), int(round((y - y0 + 0.5) * scale)))
        radius = int(round((d / 2 + 2.5) * scale))
        cv2.circle(big, centre, radius, (255, 220, 0), 1, cv2.LINE_AA)
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(big[..., ::-1]))
        data = buf.tobytes()
        self._keep(cached, data)
        return data
