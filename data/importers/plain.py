"""Plain PNG class masks and CSV dot tables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from data.importers.builder import _check_point
from data.importers.results import CLASS_VALUES, LabelImportError, Origin


def read_png_mask(path: Path, *, value_map: Mapping[int, int] | None = None) -> np.ndarray:
    """Read a single-channel class mask and check (or map) its values.

    Without ``value_map`` only 0, 1, 2 and 255 are accepted; with one (e.g. ``{0: 0, 128: 1,
    255: 2}`` for a 0/128/255 mask) every value present must be a key. Palette PNGs are read as
    their indices; RGB masks only when all channels are equal.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.asarray(img)
    except FileNotFoundError:
        raise LabelImportError(f"{path}: mask file not found") from None
    except (OSError, UnidentifiedImageError) as err:
        raise LabelImportError(f"{path}: not a readable image ({err})") from None
    if arr.ndim == 3:
        grey = mode == "LA" or (mode in ("RGB", "RGBA") and not np.any(arr[..., :3] != arr[..., :1]))
        if not grey:
            raise LabelImportError(f"{path}: mask is a colour ({mode}) image; save class indices as one channel")
        arr = arr[..., 0]
    values = np.unique(arr)
    if value_map is None:
        allowed = np.asarray(CLASS_VALUES)
        bad = values[~np.isin(values, allowed)]
        if bad.size:
            raise LabelImportError(
                f"{path}: mask values {_list_values(bad)} are not classes (0 background, 1 scalp, "
                "2 hair, 255 ignore); pass value_map to map them"
            )
        return arr.astype(np.uint8)
    if bad_targets := sorted({int(v) for v in value_map.values()} - set(CLASS_VALUES)):
        raise ValueError(f"value_map maps to {bad_targets}, which are not classes")
    bad = values[~np.isin(values, np.asarray(list(value_map), dtype=np.int64))]
    if bad.size:
        raise LabelImportError(f"{path}: mask values {_list_values(bad)} are not in value_map")
    lut_keys = np.asarray(list(value_map), dtype=np.int64)
    lut_vals = np.asarray(list(value_map.values()), dtype=np.uint8)
    order = np.argsort(lut_keys)
    return lut_vals[order][np.searchsorted(lut_keys[order], arr)]


def _list_values(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"


def read_points_csv(
    path: Path,
    *,
    width: int,
    height: int,
    origin: Origin = "centre",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read dot centres (columns ``x``, ``y``; optional integer ``dot_id``) and check them.

    Returns (N, 2) positions in project coordinates and the ids (None when absent). ``origin``
    says where the CSV puts integer coordinates (default: pixel centres, like ``dots.csv``).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise LabelImportError(f"{path}: points file not found") from None
    except pd.errors.EmptyDataError:
        raise LabelImportError(f"{path}: points file is empty (expected a header with x,y)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LabelImportError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if not {"x", "y"} <= set(table.columns):
        raise LabelImportError(f"{path}: needs columns x and y (found: {', '.join(table.columns) or 'none'})")
    shift = -0.5 if origin == "corner" else 0.0
    xy = np.empty((len(table), 2), dtype=np.float64)
    for col, k in (("x", 0), ("y", 1)):
        numbers = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(numbers))
        if bad.size:
            raise LabelImportError(f"{path}: row {bad[0] + 1}: {col}={table[col].iloc[bad[0]]!r} is not a number")
        xy[:, k] = numbers + shift
    for row, (x, y) in enumerate(xy):
        _check_point(x, y, width, height, f"{path}: row {row + 1}")
    ids = None
    if "dot_id" in table.columns:
        raw = pd.to_numeric(table["dot_id"], errors="coerce").to_numpy(dtype=np.float64)
        if np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)) and len(np.unique(raw)) == len(raw):
            ids = raw.astype(np.int64)
        else:
            raise LabelImportError(f"{path}: dot_id must be unique integers")
    return xy, ids
