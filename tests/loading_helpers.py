"""Photo builders shared by the loading tests (tests/test_loading_*.py): encode, write, test patterns, EXIF dates."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def _write(path: Path, img: Image.Image, fmt: str, **params) -> Path:
    img.save(path, fmt, **params)
    return path


def _encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _pattern(width: int = 40, height: int = 30) -> np.ndarray:
    """Deterministic RGB test pattern with every channel varying."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 6 % 256, y * 8 % 256, (x + y) * 3 % 256]).astype(np.uint8)


def _quadrants(width: int = 64, height: int = 48) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    a[:h, :w] = (255, 0, 0)
    a[:h, w:] = (0, 255, 0)
    a[h:, :w] = (0, 0, 255)
    a[h:, w:] = (255, 255, 255)
    return a


def _exif_with_dates(original: str | None = None, offset: str | None = None, plain: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if plain is not None:
        exif[0x0132] = plain
    if original is not None:
        exif.get_ifd(0x8769)[0x9003] = original
    if offset is not None:
        exif.get_ifd(0x8769)[0x9011] = offset
    return exif
