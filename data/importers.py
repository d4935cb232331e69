"""Import labels made with annotation tools into the project's dataset format, and export back.

Supported sources
-----------------
* COCO JSON (``source="coco"``): region categories as polygons or RLE (uncompressed count
  lists and compressed COCO strings); dots as keypoints (``[x, y, v]``) or a bbox centre.
* CVAT for images 1.1 XML (``"cvat"``): ``<points>``, ``<box>``/``<ellipse>`` centres for dots;
  ``<polygon>``, ``<box>`` and ``<mask>`` for regions.
* Label Studio JSON export (``"labelstudio"``): ``keypointlabels``, ``polygonlabels`` and
  ``rectanglelabels`` in percent of ``original_width``/``original_height``. Brush masks are
  refused (their RLE is a Label Studio-specific bit stream): export such projects as COCO.
* Plain PNG class masks plus CSV dot tables (``"png+csv"``).

What is written (the project format, as :mod:`data.synth.scene` writes it)
------------------------------------------------------------------------
For every imported image a folder ``<out>/<photo stem>/`` with ``photo<suffix>``, ``mask.png``
(uint8 class indices: 0 background, 1 scalp, 2 hair, 255 unlabelled/ignore), ``dots.csv``
(``dot_id,x,y``) and ``label_source.json`` (provenance: tool, export file, image sha256).
The importers return manifest rows (the columns of :data:`data.manifest.COLUMNS`, paths
relative to the import's output folder); :func:`write_manifest` writes them, and
:func:`data.manifest.read_manifest` reads them back like any other manifest.

Conventions, stated once
------------------------
* Coordinates. The project (and OpenCV) puts pixel *centres* at integers: the top-left pixel
  spans [-0.5, 0.5]. COCO, CVAT and Label Studio put pixel *corners* at integers: the top-left
  pixel spans [0, 1]. Tool coordinates are therefore shifted by -0.5 on import and +0.5 on
  export (``LabelScheme.origin`` switches this off for tools that use centres). CSV dot tables
  read by the PNG+CSV importer are in the project convention by default.
* Rasterising. A pixel belongs to a polygon when its centre is inside (even-odd rule), with
  half-open edges (a centre exactly on a left/top edge is in, on a right/bottom edge is out),
  so polygons that share an edge never share a pixel and the COCO square
  ``[0,0, 4,0, 4,4, 0,4]`` is exactly pixels 0..3.
* Overlaps. Every class is painted in ``LabelScheme.priority`` order, later wins. The default
  ``(background, scalp, hair, ignore)`` means hair over scalp whatever the annotation order, and an
  "ignore" region overrides everything. Pixels no annotation covers get ``LabelScheme.unlabelled``.
* What an export labels. Regions count as labelled in an export when it declares or uses a
  region label (COCO categories, CVAT ``<meta>`` labels, anything used). Otherwise ``mask.png`` is
  all 255 (nothing known). Dots likewise; an export without dot labels writes no ``dots.csv`` and
  the manifest's ``dots`` cell stays empty, because "no dot labelled" is not "no dot there".
  Images without a single usable annotation are skipped (listed in ``ImportReport.skipped``).
* Errors. Anything wrong with an export as a whole (missing or malformed file, an unmapped
  label, refused brush masks) raises :class:`LabelImportError` with a one-line message naming the
  file. Anything wrong with one image (image not found, size mismatch, a dot outside the image,
  a broken polygon) is reported in ``ImportReport.failures`` and the import goes on.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlparse

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from data.manifest import COLUMNS as MANIFEST_COLUMNS
from data.manifest import SPLITS, VIEWS, pick_split

BACKGROUND, SCALP, HAIR, IGNORE = 0, 1, 2, 255
CLASS_VALUES: tuple[int, ...] = (BACKGROUND, SCALP, HAIR, IGNORE)
DEFAULT_CLASSES: Mapping[str, int] = MappingProxyType(
    {"background": BACKGROUND, "scalp": SCALP, "hair": HAIR, "ignore": IGNORE})
DEFAULT_DOT_LABELS: tuple[str, ...] = ("dot", "smp_dot")
DEFAULT_PRIORITY: tuple[int, ...] = (BACKGROUND, SCALP, HAIR, IGNORE)

SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PROVENANCE_SCHEMA = "smp-label-import/1"

Origin = Literal["corner", "centre"]
_EXIF_ORIENTATION = 0x0112
_DOT: Final = "dot"
_LabelKind = int | Literal["dot"] | None  # class value, a dot, or "ignore this label"


class LabelImportError(ValueError):
    """Labels could not be imported; the message is one line naming the file and the problem."""


# --------------------------------------------------------------------------------------------
# Results and settings
# --------------------------------------------------------------------------------------------

def _norm_label(name: object) -> str:
    return str(name).strip().casefold()


@dataclass(frozen=True)
class LabelScheme:
    """How label names in an export become project classes and dots.

    ``classes`` replaces the default mapping; extend it with
    ``LabelScheme(classes={**DEFAULT_CLASSES, "skin": SCALP})``. Names are compared
    case-insensitively with surrounding spaces ignored.
    """

    classes: Mapping[str, int] = field(default_factory=lambda: DEFAULT_CLASSES)
    """Label name -> class value (0, 1, 2 or 255)."""
    dot_labels: tuple[str, ...] = DEFAULT_DOT_LABELS
    """Labels whose shapes are SMP dot centres. The first is used when exporting."""
    unlabelled: int = BACKGROUND
    """Value of pixels that no region annotation covers: 0 (background) or 255 (ignore)."""
    priority: tuple[int, ...] = DEFAULT_PRIORITY
    """Painting order of the classes; a later class wins where annotations overlap."""
    unknown: Literal["error", "skip", "background"] = "error"
    """What to do with a used label that is neither mapped nor a dot label."""
    origin: Origin = "corner"
    """Where the tool puts integer coordinates: pixel corners (COCO, CVAT, Label Studio) or centres."""

    def __post_init__(self) -> None:
        classes: dict[str, int] = {}
        for name, value in dict(self.classes).items():
            if int(value) not in CLASS_VALUES:
                raise ValueError(f"class {name!r} maps to {value}; classes are {CLASS_VALUES}")
            classes[_norm_label(name)] = int(value)
        dots = tuple(_norm_label(n) for n in self.dot_labels)
        if not dots:
            raise ValueError("dot_labels needs at least one name")
        if clash := sorted(set(dots) & set(classes)):
            raise ValueError(f"labels {clash} are both dot labels and region classes")
        if self.unlabelled not in (BACKGROUND, IGNORE):
            raise ValueError("unlabelled must be 0 (background) or 255 (ignore)")
        if sorted(self.priority) != sorted(CLASS_VALUES):
            raise ValueError(f"priority must order exactly the classes {CLASS_VALUES}")
        if self.unknown not in ("error", "skip", "background"):
            raise ValueError("unknown must be 'error', 'skip' or 'background'")
        if self.origin not in ("corner", "centre"):
            raise ValueError("origin must be 'corner' or 'centre'")
        object.__setattr__(self, "classes", MappingProxyType(classes))
        object.__setattr__(self, "dot_labels", dots)
        object.__setattr__(self, "priority", tuple(int(v) for v in self.priority))

    @property
    def shift(self) -> float:
        """Added to tool coordinates to get project coordinates (-0.5 for corner-origin tools)."""
        return -0.5 if self.origin == "corner" else 0.0

    def class_name(self, value: int) -> str:
        """The first label name mapped to ``value`` (used when exporting)."""
        for name, v in self.classes.items():
            if v == value:
                return name
        raise ValueError(f"no label name maps to class {value}")

    def known_kind(self, label: str) -> _LabelKind | Literal["unknown"]:
        key = _norm_label(label)
        if key in self.dot_labels:
            return _DOT
        if key in self.classes:
            return self.classes[key]
        return "unknown"


@dataclass(frozen=True, eq=False)
class ImageLabels:
    """The labels of one image in project terms (pixel centres at integers)."""

    name: str
    """The image as the export names it (file name, relative path or URL basename)."""
    width: int
    height: int
    mask: np.ndarray | None = None
    """HxW uint8 class indices, or None when the source labels no regions."""
    dots: np.ndarray | None = None
    """(N, 2) float64 dot centres x, y, or None when the source labels no dots."""
    dot_ids: np.ndarray | None = None
    """(N,) int64 ids of the dots when the source has them (else 0..N-1 are written)."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"{self.name}: image size must be positive, got {self.width}x{self.height}")
        if self.mask is not None:
            mask = np.array(self.mask, dtype=np.uint8, copy=True)
            if mask.shape != (self.height, self.width):
                raise ValueError(f"{self.name}: mask shape {mask.shape} is not {(self.height, self.width)}")
            mask.setflags(write=False)
            object.__setattr__(self, "mask", mask)
        if self.dots is not None:
            dots = np.array(self.dots, dtype=np.float64, copy=True).reshape(-1, 2)
            dots.setflags(write=False)
            object.__setattr__(self, "dots", dots)
        if self.dot_ids is not None:
            ids = np.array(self.dot_ids, dtype=np.int64, copy=True).reshape(-1)
            if self.dots is None or len(ids) != len(self.dots):
                raise ValueError(f"{self.name}: dot_ids must match dots")
            ids.setflags(write=False)
            object.__setattr__(self, "dot_ids", ids)


@dataclass(frozen=True)
class ImportFailure:
    """One image that could not be imported, and why (a one-line message)."""

    image: str
    reason: str


@dataclass(frozen=True)
class ParsedExport:
    """What a parser read from one export, before anything is written."""

    images: tuple[ImageLabels, ...]
    failures: tuple[ImportFailure, ...] = ()
    skipped: tuple[str, ...] = ()
    """Images the export lists without any usable annotation."""


@dataclass(frozen=True)
class DatasetInfo:
    """Manifest facts the annotation tools do not know, applied to every imported image."""

    view: str = "closeup"
    px_per_mm: float | None = None
    split: str | None = None
    """train/val/test for every image, or None to assign by a hash (see :func:`assign_split`)."""
    client: str = ""
    visit: str = ""
    copy_images: bool = True
    """Copy photos into the dataset (else the manifest points at the originals)."""

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be train, val or test, got {self.split!r}")
        if self.px_per_mm is not None and not (math.isfinite(self.px_per_mm) and self.px_per_mm > 0):
            raise ValueError(f"px_per_mm must be positive, got {self.px_per_mm}")


@dataclass(frozen=True)
class ImportReport:
    """Result of a high-level import: manifest rows of what was written, and what was not."""

    rows: tuple[dict[str, Any], ...]
    failures: tuple[ImportFailure, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


# --------------------------------------------------------------------------------------------
# COCO run-length encoding
# --------------------------------------------------------------------------------------------
# pycocotools is not a dependency (it needs a C build), and the codec is small, so it is
# written here in numpy/Python from the COCO format description: counts alternate between runs
# of 0 and 1 starting with 0, over the pixels in column-major (Fortran) order; the compressed
# string stores each count (from the fourth on, as the difference to the count two places
# before) in 5-bit groups, low bits first, as characters 48 + (group | 0x20 if more follow),
# the last group's 0x10 bit being the sign.

def _runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a 1-D boolean array, starting with a (possibly empty) run of False."""
    flat = np.asarray(flat, dtype=bool).ravel()
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], edges, [flat.size])))
    runs = counts.tolist()
    return [0, *runs] if flat[0] else runs


def _unruns(counts: Sequence[int], n: int) -> np.ndarray:
    """Inverse of :func:`_runs`: a boolean array of length ``n``."""
    c = np.asarray(counts, dtype=np.int64).ravel()
    if c.size and c.min() < 0:
        raise ValueError("run lengths must not be negative")
    if int(c.sum()) != n:
        raise ValueError(f"run lengths add up to {int(c.sum())} pixels, expected {n}")
    values = (np.arange(c.size) % 2).astype(bool)
    return np.repeat(values, c)


def rle_encode(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts of a 2-D boolean mask (column-major, first run is 0s)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    return _runs(m.astype(bool).ravel(order="F"))


def rle_decode(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """HxW boolean mask from COCO uncompressed RLE counts (``ValueError`` if they do not fit)."""
    flat = _unruns(counts, height * width)
    return flat.reshape((width, height)).T.copy()


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """COCO compressed RLE string of uncompressed counts (pycocotools' ``rleToString``)."""
    out: list[str] = []
    cnts = [int(c) for c in counts]
    for i, count in enumerate(cnts):
        x = count - cnts[i - 2] if i > 2 else count
        more = True
        while more:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers stay negative
            more = x != -1 if group & 0x10 else x != 0
            out.append(chr(48 + (group | 0x20 if more else group)))
    return "".join(out)


def rle_counts_from_string(text: str) -> list[int]:
    """Uncompressed counts of a COCO compressed RLE string (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x = 0
        shift = 0
        while True:
            if pos >= len(text):
                raise ValueError("compressed RLE string ends in the middle of a number")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {text[pos]!r} at {pos} is not COCO RLE")
            pos += 1
            x |= (code & 0x1F) << shift
            shift += 5
            if not code & 0x20:
                if code & 0x10:
                    x |= -1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError("compressed RLE string decodes to a negative run")
        counts.append(x)
    return counts


# --------------------------------------------------------------------------------------------
# Polygons <-> pixels
# --------------------------------------------------------------------------------------------
# Hand-written because neither library does what the contract needs: cv2.fillPoly (even with
# sub-pixel `shift`) rounds edge crossings to the nearest pixel and fills both ends inclusively,
# so the COCO unit square of side 4 ([-0.5, 3.5] in centre coordinates) comes out 5x5 pixels;
# skimage.draw.polygon tests every pixel of the bounding box against every edge (O(area x
# vertices), about a minute for one large scalp outline) and includes centres on the boundary.

def _fill_polygon(canvas: np.ndarray, xy: np.ndarray) -> None:
    """Set ``canvas`` pixels whose centres lie inside polygon ``xy`` (project coordinates).

    Scanline fill, vectorised over all (row, edge) crossings: a row ``r`` crosses an edge when
    ``min(y0, y1) <= r < max(y0, y1)``; within a row, sorted crossings pair up (even-odd rule)
    and the pixels ``ceil(x_a) .. ceil(x_b) - 1`` between a pair are inside.
    """
    h, w = canvas.shape
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_start = np.clip(np.ceil(np.minimum(y0, y1)), 0, h).astype(np.int64)
    r_stop = np.clip(np.ceil(np.maximum(y0, y1)), 0, h).astype(np.int64)
    n = r_stop - r_start
    crossing = np.flatnonzero(n > 0)
    if crossing.size == 0:
        return
    n = n[crossing]
    edge = np.repeat(crossing, n)
    rows = r_start[edge] + np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n)
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    xs = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    if rows.size % 2 or np.any(rows[0::2] != rows[1::2]):  # pragma: no cover - closed polygons
        raise AssertionError("odd number of crossings on a scanline")
    pair_rows = rows[0::2]
    start = np.clip(np.ceil(xs[0::2]), 0, w).astype(np.int64)
    stop = np.clip(np.ceil(xs[1::2]), 0, w).astype(np.int64)
    top, bottom = int(pair_rows.min()), int(pair_rows.max()) + 1
    span = (bottom - top) * (w + 1)
    base = (pair_rows - top) * (w + 1)
    diff = np.bincount(base + start, minlength=span) - np.bincount(base + stop, minlength=span)
    inside = np.cumsum(diff.reshape(bottom - top, w + 1), axis=1)[:, :w] > 0
    canvas[top:bottom] |= inside


def rasterise_polygon(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW boolean mask of the pixels whose centres are inside polygon ``xy``.

    ``xy`` is (N, 2) x, y in project coordinates (pixel centres at integers). Even-odd rule,
    half-open edges; vertices may lie outside the image.
    """
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(pts)}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("polygon coordinates must be finite numbers")
    canvas = np.zeros((height, width), dtype=bool)
    _fill_polygon(canvas, pts)
    return canvas


def _drop_redundant_vertices(poly: np.ndarray) -> np.ndarray:
    """Remove repeated and collinear vertices (including zero-width spikes) of an integer ring."""
    p = poly
    while len(p) >= 3:
        repeated = np.all(p == np.roll(p, -1, axis=0), axis=1)
        if repeated.any():
            p = p[~repeated]
            continue
        prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
        cross = (p[:, 0] - prev[:, 0]) * (nxt[:, 1] - p[:, 1]) - (p[:, 1] - prev[:, 1]) * (nxt[:, 0] - p[:, 0])
        straight = cross == 0
        if not straight.any():
            return p
        if straight.all():
            return p[:0]
        p = p[~straight]
    return p[:0]


def mask_outlines(region: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of a boolean mask along pixel edges, in project coordinates.

    Each outline is an (N, 2) float64 polygon whose vertices are pixel corners (half-integers);
    filling it with :func:`rasterise_polygon` gives the region back exactly, holes filled (a
    polygon cannot carry holes; export RLE/masks when they matter). The outline is traced by
    ``cv2.findContours`` on the mask upsampled 2x: there a boundary pixel ``u`` of an original
    pixel ``j`` is ``2j`` (its left/top half) or ``2j + 1`` (right/bottom half), so
    ``ceil(u / 2)`` is the pixel edge in corner coordinates.
    """
    m = np.asarray(region, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"region must be 2-D, got shape {m.shape}")
    if not m.any():
        return []
    up = np.repeat(np.repeat(m.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outlines = []
    for contour in contours:
        corners = (contour.reshape(-1, 2).astype(np.int64) + 1) // 2
        ring = _drop_redundant_vertices(corners)
        if len(ring) >= 3:
            outlines.append(ring.astype(np.float64) - 0.5)
    return outlines


def compose_mask(layers: Mapping[int, np.ndarray], height: int, width: int, *,
                 unlabelled: int = BACKGROUND, priority: Sequence[int] = DEFAULT_PRIORITY) -> np.ndarray:
    """HxW uint8 class mask from per-class boolean layers, painted in ``priority`` order."""
    out = np.full((height, width), unlabelled, dtype=np.uint8)
    for value in priority:
        layer = layers.get(value)
        if layer is not None:
            out[np.asarray(layer, dtype=bool)] = value
    return out


# --------------------------------------------------------------------------------------------
# Building one image's labels while parsing
# --------------------------------------------------------------------------------------------

class _ImageBuilder:
    """Accumulates one image's shapes (tool coordinates in, project coordinates kept)."""

    def __init__(self, name: str, width: int, height: int, scheme: LabelScheme) -> None:
        self.name, self.width, self.height, self.scheme = name, width, height, scheme
        self.layers: dict[int, np.ndarray] = {}
        self.dots: list[tuple[float, float]] = []

    def _layer(self, value: int) -> np.ndarray:
        if value not in self.layers:
            self.layers[value] = np.zeros((self.height, self.width), dtype=bool)
        return self.layers[value]

    def add_polygon(self, value: int, xy_tool: np.ndarray, what: str) -> None:
        pts = np.asarray(xy_tool, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            raise LabelImportError(f"{what}: a polygon needs at least 3 points, got {len(pts)}")
        if not np.all(np.isfinite(pts)):
            raise LabelImportError(f"{what}: polygon coordinates are not finite numbers")
        _fill_polygon(self._layer(value), pts + self.scheme.shift)

    def add_bitmap(self, value: int, bitmap: np.ndarray) -> None:
        self._layer(value)[...] |= bitmap

    def add_dot(self, x_tool: float, y_tool: float, what: str) -> None:
        x, y = float(x_tool) + self.scheme.shift, float(y_tool) + self.scheme.shift
        _check_point(x, y, self.width, self.height, what)
        self.dots.append((x, y))

    def build(self, has_regions: bool, has_dots: bool) -> ImageLabels:
        mask = None
        if has_regions:
            mask = compose_mask(self.layers, self.height, self.width,
                                unlabelled=self.scheme.unlabelled, priority=self.scheme.priority)
        dots = np.asarray(self.dots, dtype=np.float64).reshape(-1, 2) if has_dots else None
        return ImageLabels(self.name, self.width, self.height, mask, dots)


def _check_point(x: float, y: float, width: int, height: int, what: str) -> None:
    """Refuse a dot centre (project coordinates) outside the image's pixel area."""
    if not (math.isfinite(x) and math.isfinite(y)):
        raise LabelImportError(f"{what}: dot position ({x}, {y}) is not a finite number")
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
        raise LabelImportError(
            f"{what}: dot at x={x:.3f}, y={y:.3f} is outside the {width}x{height} image")


def _label_kinds(declared: Iterable[str], used: Iterable[str], scheme: LabelScheme,
                 source: str, noun: str) -> tuple[dict[str, _LabelKind], bool, bool]:
    """Resolve every label of an export; raise for used labels that cannot be mapped.

    Returns the kind per normalised label and whether the export labels regions / dots.
    """
    used_set = {_norm_label(u) for u in used}
    kinds: dict[str, _LabelKind] = {}
    unknown: list[str] = []
    for label in sorted({_norm_label(d) for d in declared} | used_set):
        kind = scheme.known_kind(label)
        if kind == "unknown":
            if label not in used_set or scheme.unknown == "skip":
                kind = None
            elif scheme.unknown == "background":
                kind = BACKGROUND
            else:
                unknown.append(label)
                continue
        kinds[label] = kind
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        nouns = f"{noun} {names} is" if len(unknown) == 1 else f"{noun}s {names} are"
        raise LabelImportError(
            f"{source}: {nouns} not mapped to a class or dot label; map it "
            f"(LabelScheme(classes={{**DEFAULT_CLASSES, {unknown[0]!r}: 1}})) or pass unknown='skip'")
    has_regions = any(k is not None and k != _DOT for k in kinds.values())
    has_dots = any(k == _DOT for k in kinds.values())
    return kinds, has_regions, has_dots


def _as_int(value: Any, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LabelImportError(f"{what} is {value!r}, not a number") from None
    if not number.is_integer() or number <= 0:
        raise LabelImportError(f"{what} is {value!r}, not a positive integer")
    return int(number)


def _floats(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise LabelImportError(f"{what}: expected numbers") from None
    if not np.all(np.isfinite(arr)):
        raise LabelImportError(f"{what}: expected finite numbers")
    return arr


# --------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------

def _coco_list(doc: Mapping[str, Any], key: str, source: str, required: bool = True) -> list[Any]:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise LabelImportError(f"{source}: COCO '{key}' must be a list of objects")
    return value


def parse_coco(doc: Any, *, source: str = "coco.json", scheme: LabelScheme = LabelScheme()) -> ParsedExport:
    """Read a loaded COCO document (``images``, ``annotations``, ``categories``).

    Region categories: ``segmentation`` polygons (lists of x, y), uncompressed RLE
    (``{"counts": [...], "size": [h, w]}``) or compressed RLE (``"counts": "<string>"``).
    Dot categories: every keypoint with visibility > 0, else the bbox centre.
    """
    if not isinstance(doc, Mapping):
        raise LabelImportError(f"{source}: a COCO file is a JSON object with images, annotations, categories")
    images = _coco_list(doc, "images", source)
    annotations = _coco_list(doc, "annotations", source, required=False)
    categories: dict[Any, str] = {}
    for i, cat in enumerate(_coco_list(doc, "categories", source)):
        if "id" not in cat or not isinstance(cat.get("name"), str):
            raise LabelImportError(f"{source}: category #{i} needs an 'id' and a 'name'")
        categories[cat["id"]] = cat["name"]
    by_image: dict[Any, list[dict[str, Any]]] = {}
    image_ids = [im.get("id") for im in images]
    if len(set(map(repr, image_ids))) != len(image_ids):
        raise LabelImportError(f"{source}: image ids are not unique")
    known_ids = set(image_ids)
    for ann in annotations:
        if ann.get("category_id") not in categories:
            raise LabelImportError(
                f"{source}: annotation {ann.get('id')} uses category_id {ann.get('category_id')!r}, "
                "which is not in 'categories'")
        if ann.get("image_id") not in known_ids:
            raise LabelImportError(
                f"{source}: annotation {ann.get('id')} refers to image_id {ann.get('image_id')!r}, "
                "which is not in 'images'")
        by_image.setdefault(ann["image_id"], []).append(ann)
    used = {categories[a["category_id"]] for a in annotations}
    kinds, has_regions, has_dots = _label_kinds(categories.values(), used, scheme, source, "category")

    parsed: list[ImageLabels] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    for i, im in enumerate(images):
        name = str(im.get("file_name") or f"image #{i}")
        anns = [a for a in by_image.get(im.get("id"), [])
                if kinds[_norm_label(categories[a["category_id"]])] is not None]
        if not anns:
            skipped.append(name)
            continue
        try:
            if not isinstance(im.get("file_name"), str):
                raise LabelImportError("no 'file_name'")
            width = _as_int(im.get("width"), "width")
            height = _as_int(im.get("height"), "height")
            builder = _ImageBuilder(name, width, height, scheme)
            for ann in anns:
                kind = kinds[_norm_label(categories[ann["category_id"]])]
                what = f"annotation {ann.get('id')}"
                if kind == _DOT:
                    for x, y in _coco_dot_points(ann, what):
                        builder.add_dot(x, y, what)
                elif isinstance(kind, int):
                    _coco_region(builder, kind, ann, what)
            parsed.append(builder.build(has_regions, has_dots))
        except LabelImportError as err:
            failures.append(ImportFailure(name, f"{source}: image {name!r}: {err}"))
    return ParsedExport(tuple(parsed), tuple(failures), tuple(skipped))


def _coco_dot_points(ann: Mapping[str, Any], what: str) -> list[tuple[float, float]]:
    keypoints = ann.get("keypoints")
    if keypoints:
        kp = _floats(keypoints, what)
        if kp.ndim != 1 or kp.size % 3:
            raise LabelImportError(f"{what}: keypoints must be a flat list of x, y, v triples")
        kp = kp.reshape(-1, 3)
        visible = kp[kp[:, 2] > 0]
        if not len(visible):
            raise LabelImportError(f"{what}: no keypoint is labelled (all visibility 0)")
        return [(float(x), float(y)) for x, y, _ in visible]
    bbox = ann.get("bbox")
    if bbox is not None:
        b = _floats(bbox, what)
        if b.shape != (4,):
            raise LabelImportError(f"{what}: bbox must be [x, y, width, height]")
        return [(float(b[0] + b[2] / 2), float(b[1] + b[3] / 2))]
    raise LabelImportError(f"{what}: a dot needs keypoints or a bbox")


def _coco_region(builder: _ImageBuilder, value: int, ann: Mapping[str, Any], what: str) -> None:
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        polygons = seg if isinstance(seg[0], list) else [seg]
        for poly in polygons:
            flat = _floats(poly, what)
            if flat.ndim != 1 or flat.size % 2:
                raise LabelImportError(f"{what}: a polygon is a flat list of x, y pairs")
            builder.add_polygon(value, flat.reshape(-1, 2), what)
    elif isinstance(seg, Mapping):
        size = seg.get("size")
        if not (isinstance(size, list) and len(size) == 2):
            raise LabelImportError(f"{what}: RLE needs 'size': [height, width]")
        if _floats(size, f"{what}: RLE size").tolist() != [builder.height, builder.width]:
            raise LabelImportError(
                f"{what}: RLE size {size} is not the image's [{builder.height}, {builder.width}]")
        counts = seg.get("counts")
        try:
            if isinstance(counts, str):
                counts = rle_counts_from_string(counts)
            elif not isinstance(counts, list):
                raise ValueError("'counts' must be a list or a string")
            bitmap = rle_decode(counts, builder.height, builder.width)
        except (TypeError, ValueError) as err:
            raise LabelImportError(f"{what}: bad RLE ({err})") from None
        builder.add_bitmap(value, bitmap)
    else:
        raise LabelImportError(f"{what}: a region needs a polygon or RLE 'segmentation'")


def export_coco(items: Sequence[ImageLabels], *, scheme: LabelScheme = LabelScheme(),
                segmentation: Literal["polygon", "rle"] = "polygon") -> dict[str, Any]:
    """COCO document of project labels (the inverse of :func:`parse_coco`).

    Regions: one annotation per outer outline (``"polygon"``, holes filled) or one compressed-RLE
    annotation per class and image (``"rle"``, exact). Pixels equal to ``scheme.unlabelled`` are
    not exported. Dots: one keypoint annotation each (category with keypoints ``["centre"]``).
    """
    if segmentation not in ("polygon", "rle"):
        raise ValueError("segmentation must be 'polygon' or 'rle'")
    off = -scheme.shift
    region_values = [v for v in scheme.priority if v != scheme.unlabelled]
    categories = [{"id": i + 1, "name": scheme.class_name(v), "supercategory": "region"}
                  for i, v in enumerate(region_values)]
    cat_of = {v: i + 1 for i, v in enumerate(region_values)}
    dot_cat = len(categories) + 1
    categories.append({"id": dot_cat, "name": scheme.dot_labels[0], "supercategory": "smp",
                       "keypoints": ["centre"], "skeleton": []})
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        image_id = index + 1
        first = len(annotations)
        images.append({"id": image_id, "file_name": item.name, "width": item.width, "height": item.height})
        if item.mask is not None:
            for value in region_values:
                region = item.mask == value
                if not region.any():
                    continue
                if segmentation == "rle":
                    rows, cols = np.nonzero(region)
                    annotations.append({
                        "category_id": cat_of[value], "iscrowd": 0, "area": int(region.sum()),
                        "bbox": [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1],
                        "segmentation": {"size": [item.height, item.width],
                                         "counts": rle_counts_to_string(rle_encode(region))}})
                    continue
                for ring in mask_outlines(region):
                    xy = ring + off
                    x, y = xy[:, 0], xy[:, 1]
                    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
                    annotations.append({
                        "category_id": cat_of[value], "iscrowd": 0, "area": area,
                        "bbox": [float(x.min()), float(y.min()), float(np.ptp(x)), float(np.ptp(y))],
                        "segmentation": [xy.ravel().tolist()]})
        if item.dots is not None:
            for x, y in item.dots + off:
                annotations.append({
                    "category_id": dot_cat, "iscrowd": 0, "area": 0.0, "num_keypoints": 1,
                    "keypoints": [float(x), float(y), 2], "bbox": [float(x), float(y), 0.0, 0.0]})
        for ann in annotations[first:]:
            ann["image_id"] = image_id
    for ann_id, ann in enumerate(annotations, start=1):
        ann["id"] = ann_id
    return {"info": {"description": "exported by smp-assess data.importers"},
            "images": images, "annotations": annotations, "categories": categories}


# --------------------------------------------------------------------------------------------
# CVAT for images 1.1 XML
# --------------------------------------------------------------------------------------------

_CVAT_SHAPES = ("points", "polygon", "polyline", "box", "ellipse", "mask", "cuboid", "skeleton")


def _cvat_points(text: str | None, what: str) -> np.ndarray:
    try:
        pts = [tuple(float(v) for v in pair.split(",")) for pair in (text or "").strip().split(";") if pair]
        arr = np.asarray(pts, dtype=np.float64)
    except ValueError:
        raise LabelImportError(f"{what}: points {text!r} are not 'x1,y1;x2,y2;...'") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
        raise LabelImportError(f"{what}: points {text!r} are not 'x1,y1;x2,y2;...'")
    return arr


def _cvat_float(shape: ET.Element, key: str, what: str) -> float:
    try:
        value = float(shape.get(key, "nan"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise LabelImportError(f"{what}: attribute {key}={shape.get(key)!r} is not a number")
    return value


def parse_cvat_xml(root: ET.Element, *, source: str = "annotations.xml",
                   scheme: LabelScheme = LabelScheme()) -> ParsedExport:
    """Read a parsed CVAT for images 1.1 document (``<annotations>`` root element)."""
    if root.tag != "annotations":
        raise LabelImportError(f"{source}: root element is <{root.tag}>, not CVAT <annotations>")
    images = root.findall("image")
    if not images and root.find("track") is not None:
        raise LabelImportError(f"{source}: this is a CVAT for video export; export 'CVAT for images 1.1'")
    declared = [lab.findtext("name") or "" for lab in root.findall("./meta//labels/label")]
    used = {s.get("label", "") for im in images for s in im if s.tag in _CVAT_SHAPES}
    kinds, has_regions, has_dots = _label_kinds([d for d in declared if d], used, scheme, source, "label")

    parsed: list[ImageLabels] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    for i, im in enumerate(images):
        name = im.get("name") or f"image #{i}"
        shapes = [s for s in im if s.tag in _CVAT_SHAPES and kinds[_norm_label(s.get("label", ""))] is not None]
        if not shapes:
            skipped.append(name)
            continue
        try:
            if not im.get("name"):
                raise LabelImportError("no 'name' attribute")
            width = _as_int(im.get("width"), "width")
            height = _as_int(im.get("height"), "height")
            builder = _ImageBuilder(name, width, height, scheme)
            for n, shape in enumerate(shapes):
                _cvat_shape(builder, kinds[_norm_label(shape.get("label", ""))], shape,
                            f"<{shape.tag}> #{n} ({shape.get('label')})")
            parsed.append(builder.build(has_regions, has_dots))
        except LabelImportError as err:
            failures.append(ImportFailure(name, f"{source}: image {name!r}: {err}"))
    return ParsedExport(tuple(parsed), tuple(failures), tuple(skipped))


def _cvat_shape(builder: _ImageBuilder, kind: _LabelKind, shape: ET.Element, what: str) -> None:
    tag = shape.tag
    if tag in ("box", "ellipse") and shape.get("rotation") and _cvat_float(shape, "rotation", what) != 0:
        raise LabelImportError(f"{what}: rotated shapes are not supported")
    if kind == _DOT:
        if tag == "points":
            for x, y in _cvat_points(shape.get("points"), what):
                builder.add_dot(x, y, what)
        elif tag == "box":
            builder.add_dot((_cvat_float(shape, "xtl", what) + _cvat_float(shape, "xbr", what)) / 2,
                            (_cvat_float(shape, "ytl", what) + _cvat_float(shape, "ybr", what)) / 2, what)
        elif tag == "ellipse":
            builder.add_dot(_cvat_float(shape, "cx", what), _cvat_float(shape, "cy", what), what)
        else:
            raise LabelImportError(f"{what}: dots must be points, boxes or ellipses")
        return
    if not isinstance(kind, int):  # pragma: no cover - skipped labels never reach here
        return
    value = kind
    if tag == "polygon":
        builder.add_polygon(value, _cvat_points(shape.get("points"), what), what)
    elif tag == "box":
        x0, y0 = _cvat_float(shape, "xtl", what), _cvat_float(shape, "ytl", what)
        x1, y1 = _cvat_float(shape, "xbr", what), _cvat_float(shape, "ybr", what)
        builder.add_polygon(value, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), what)
    elif tag == "mask":
        left, top = int(_cvat_float(shape, "left", what)), int(_cvat_float(shape, "top", what))
        w, h = int(_cvat_float(shape, "width", what)), int(_cvat_float(shape, "height", what))
        if left < 0 or top < 0 or w <= 0 or h <= 0 or left + w > builder.width or top + h > builder.height:
            raise LabelImportError(f"{what}: mask box {w}x{h}+{left}+{top} is outside the image")
        try:
            counts = [int(c) for c in (shape.get("rle") or "").replace(" ", "").split(",") if c]
            crop = _unruns(counts, w * h).reshape(h, w)  # CVAT: row-major inside the box
        except ValueError as err:
            raise LabelImportError(f"{what}: bad rle ({err})") from None
        bitmap = np.zeros((builder.height, builder.width), dtype=bool)
        bitmap[top:top + h, left:left + w] = crop
        builder.add_bitmap(value, bitmap)
    else:
        raise LabelImportError(f"{what}: regions must be polygons, boxes or masks")


def _fmt(v: float) -> str:
    text = f"{v:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def export_cvat_xml(items: Sequence[ImageLabels], *, scheme: LabelScheme = LabelScheme(),
                    segmentation: Literal["polygon", "mask"] = "polygon") -> str:
    """CVAT for images 1.1 XML of project labels (the inverse of :func:`parse_cvat_xml`).

    Regions as ``<polygon>`` outlines (holes filled) or exact ``<mask>`` RLE; one ``<points>``
    element per dot. Coordinates are written with 8 decimals.
    """
    if segmentation not in ("polygon", "mask"):
        raise ValueError("segmentation must be 'polygon' or 'mask'")
    off = -scheme.shift
    region_values = [v for v in scheme.priority if v != scheme.unlabelled]
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    labels = ET.SubElement(ET.SubElement(ET.SubElement(root, "meta"), "task"), "labels")
    label_types = [(scheme.class_name(v), segmentation) for v in region_values] + [(scheme.dot_labels[0], "points")]
    for name, kind in label_types:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = kind
    common = {"source": "manual", "occluded": "0", "z_order": "0"}
    for index, item in enumerate(items):
        im = ET.SubElement(root, "image", {"id": str(index), "name": item.name,
                                           "width": str(item.width), "height": str(item.height)})
        if item.mask is not None:
            for value in region_values:
                region = item.mask == value
                if not region.any():
                    continue
                name = scheme.class_name(value)
                if segmentation == "mask":
                    rows, cols = np.nonzero(region)
                    top, left = int(rows.min()), int(cols.min())
                    crop = region[top:rows.max() + 1, left:cols.max() + 1]
                    ET.SubElement(im, "mask", {"label": name, **common,
                                               "rle": ", ".join(map(str, _runs(crop.ravel()))),
                                               "left": str(left), "top": str(top),
                                               "width": str(crop.shape[1]), "height": str(crop.shape[0])})
                    continue
                for ring in mask_outlines(region):
                    pts = ";".join(f"{_fmt(x)},{_fmt(y)}" for x, y in ring + off)
                    ET.SubElement(im, "polygon", {"label": name, **common, "points": pts})
        if item.dots is not None:
            for x, y in item.dots + off:
                ET.SubElement(im, "points", {"label": scheme.dot_labels[0], **common,
                                             "points": f"{_fmt(x)},{_fmt(y)}"})
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------------------------
# Label Studio JSON
# --------------------------------------------------------------------------------------------

_LS_POINT = ("keypointlabels", "keypoint")
_LS_POLYGON = ("polygonlabels", "polygon")
_LS_RECT = ("rectanglelabels", "rectangle")
_LS_BRUSH = ("brushlabels", "brush")
_LS_UUID = re.compile(r"^[0-9a-f]{8}-")


def label_studio_image_name(url: str) -> str:
    """The file name behind a Label Studio ``data.image`` value (upload path, URL, local files)."""
    parsed = urlparse(url)
    local = parse_qs(parsed.query).get("d")
    path = local[0] if local else unquote(parsed.path)
    return PurePosixPath(path.replace("\\", "/")).name


def _ls_geometry(result: Mapping[str, Any]) -> str | None:
    kind = str(result.get("type", "")).lower()
    value = result.get("value") or {}
    if kind in _LS_POINT + _LS_POLYGON + _LS_RECT + _LS_BRUSH:
        return kind
    if kind == "labels" and isinstance(value, Mapping):
        if "points" in value:
            return "polygon"
        if "rle" in value:
            return "brush"
        if "x" in value and "y" in value:
            return "rectangle" if "height" in value else "keypoint"
    return None


def _ls_labels(result: Mapping[str, Any]) -> list[str]:
    value = result.get("value") or {}
    labels = value.get(str(result.get("type", "")).lower()) or value.get("labels") or []
    return [str(x) for x in labels] if isinstance(labels, list) else [str(labels)]


def _ls_annotation(task: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """Results of the first annotation not cancelled (Label Studio keeps one per annotator)."""
    for ann in task.get("annotations") or []:
        if isinstance(ann, Mapping) and not ann.get("was_cancelled") and ann.get("result"):
            return [r for r in ann["result"] if isinstance(r, Mapping)]
    return None


def parse_label_studio(doc: Any, *, source: str = "export.json", scheme: LabelScheme = LabelScheme(),
                       image_key: str = "image") -> ParsedExport:
    """Read a loaded Label Studio JSON export (a list of tasks).

    Uses each task's first non-cancelled annotation; positions are percent of the result's
    ``original_width``/``original_height``. Brush masks are refused for the whole file.
    """
    tasks = [doc] if isinstance(doc, Mapping) and "annotations" in doc else doc
    if not isinstance(tasks, list) or not all(isinstance(t, Mapping) for t in tasks):
        raise LabelImportError(f"{source}: a Label Studio JSON export is a list of tasks")
    chosen = [(t, _ls_annotation(t)) for t in tasks]
    results = [r for _, rs in chosen for r in rs or []]
    if any(_ls_geometry(r) in _LS_BRUSH for r in results):
        raise LabelImportError(
            f"{source}: brush masks (brushlabels) are not supported; export the project as COCO instead")
    used = {label for r in results if _ls_geometry(r) for label in _ls_labels(r)}
    kinds, has_regions, has_dots = _label_kinds((), used, scheme, source, "label")

    parsed: list[ImageLabels] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    for i, (task, res) in enumerate(chosen):
        data = task.get("data") or {}
        url = data.get(image_key) if isinstance(data, Mapping) else None
        name = label_studio_image_name(url) if isinstance(url, str) and url else f"task {task.get('id', i)}"
        shapes = [r for r in res or [] if _ls_geometry(r) and _ls_labels(r)
                  and any(kinds[_norm_label(lab)] is not None for lab in _ls_labels(r))]
        if not shapes:
            skipped.append(name)
            continue
        try:
            if not (isinstance(url, str) and url):
                raise LabelImportError(f"no data.{image_key}")
            sizes = {(r.get("original_width"), r.get("original_height")) for r in shapes}
            if len(sizes) != 1:
                raise LabelImportError(f"results disagree on original_width/height: {sorted(map(str, sizes))}")
            (ow, oh), = sizes
            width, height = _as_int(ow, "original_width"), _as_int(oh, "original_height")
            builder = _ImageBuilder(name, width, height, scheme)
            for n, r in enumerate(shapes):
                _ls_shape(builder, kinds, r, f"result {r.get('id', n)}")
            parsed.append(builder.build(has_regions, has_dots))
        except LabelImportError as err:
            failures.append(ImportFailure(name, f"{source}: image {name!r}: {err}"))
    return ParsedExport(tuple(parsed), tuple(failures), tuple(skipped))


def _ls_shape(builder: _ImageBuilder, kinds: Mapping[str, _LabelKind], result: Mapping[str, Any], what: str) -> None:
    labels = _ls_labels(result)
    if len(labels) != 1:
        raise LabelImportError(f"{what}: has {len(labels)} labels {labels}, expected one")
    kind = kinds[_norm_label(labels[0])]
    if kind is None:
        return
    if _floats(result.get("image_rotation") or 0, what) != 0:
        raise LabelImportError(f"{what}: image_rotation is not 0; rotate the photo itself and relabel")
    value = result.get("value")
    if not isinstance(value, Mapping):
        raise LabelImportError(f"{what}: no 'value'")
    sx, sy = builder.width / 100.0, builder.height / 100.0
    geometry = _ls_geometry(result)
    if geometry in _LS_RECT + _LS_POINT and _floats(value.get("rotation") or 0, what) != 0:
        raise LabelImportError(f"{what}: rotated shapes are not supported")
    region = kind if isinstance(kind, int) else None
    if geometry in _LS_POINT:
        if region is not None:
            raise LabelImportError(f"{what}: a keypoint labelled {labels[0]!r}, which is a region class")
        xy = _floats([value.get("x"), value.get("y")], what)
        builder.add_dot(xy[0] * sx, xy[1] * sy, what)
    elif geometry in _LS_RECT:
        r = _floats([value.get(k) for k in ("x", "y", "width", "height")], what)
        x0, y0, x1, y1 = r[0] * sx, r[1] * sy, (r[0] + r[2]) * sx, (r[1] + r[3]) * sy
        if region is None:
            builder.add_dot((x0 + x1) / 2, (y0 + y1) / 2, what)
        else:
            builder.add_polygon(region, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), what)
    elif geometry in _LS_POLYGON:
        if region is None:
            raise LabelImportError(f"{what}: a polygon labelled {labels[0]!r}, which is a dot label")
        pts = _floats(value.get("points"), what)
        if pts.ndim != 2 or pts.shape[1:] != (2,):
            raise LabelImportError(f"{what}: polygon points must be [[x, y], ...]")
        builder.add_polygon(region, pts * [sx, sy], what)


def export_label_studio(items: Sequence[ImageLabels], *, scheme: LabelScheme = LabelScheme(),
                        image_root: str = "") -> list[dict[str, Any]]:
    """Label Studio tasks with one annotation each (the inverse of :func:`parse_label_studio`).

    ``data.image`` is ``image_root + name``. Regions become polygons (holes filled), dots
    keypoints; positions in percent of the image size.
    """
    off = -scheme.shift
    region_values = [v for v in scheme.priority if v != scheme.unlabelled]
    tasks = []
    for index, item in enumerate(items):
        base = {"to_name": "image", "original_width": item.width, "original_height": item.height,
                "image_rotation": 0}
        scale = np.array([100.0 / item.width, 100.0 / item.height])
        results: list[dict[str, Any]] = []
        if item.mask is not None:
            for value in region_values:
                for ring in mask_outlines(item.mask == value):
                    results.append({**base, "id": f"r{len(results)}", "from_name": "region",
                                    "type": "polygonlabels",
                                    "value": {"points": ((ring + off) * scale).tolist(), "closed": True,
                                              "polygonlabels": [scheme.class_name(value)]}})
        if item.dots is not None:
            for x, y in (item.dots + off) * scale:
                results.append({**base, "id": f"r{len(results)}", "from_name": "dot",
                                "type": "keypointlabels",
                                "value": {"x": float(x), "y": float(y), "width": 0.3,
                                          "keypointlabels": [scheme.dot_labels[0]]}})
        tasks.append({"id": index + 1, "data": {"image": image_root + item.name},
                      "annotations": [{"id": index + 1, "was_cancelled": False, "result": results}]})
    return tasks


# --------------------------------------------------------------------------------------------
# Plain PNG masks and CSV points
# --------------------------------------------------------------------------------------------

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
                "2 hair, 255 ignore); pass value_map to map them")
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


def read_points_csv(path: Path, *, width: int, height: int, origin: Origin = "centre",
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


# --------------------------------------------------------------------------------------------
# Writing the project format
# --------------------------------------------------------------------------------------------

_Fit = Literal["as_is", "transpose", "strip_orientation"]


def _image_header(image: Path) -> tuple[tuple[int, int], tuple[int, int], int]:
    """Stored size, displayed size (EXIF orientation applied) and orientation, from the header only."""
    try:
        with Image.open(image) as img:
            w, h = img.size
            orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except FileNotFoundError:
        raise LabelImportError(f"{image}: image file not found") from None
    except (OSError, UnidentifiedImageError, ValueError, TypeError) as err:
        raise LabelImportError(f"{image}: not a readable image ({err})") from None
    return (w, h), ((h, w) if orientation in (5, 6, 7, 8) else (w, h)), orientation


def _image_fit(image: Path, width: int, height: int) -> _Fit:
    """How the photo's pixels relate to labels made for a ``width`` x ``height`` image.

    Annotation tools show photos upright (EXIF orientation applied), so labels normally match
    the displayed size; the photo is then written upright. When they match only the stored
    pixels (the tool ignored EXIF) the orientation tag is dropped instead.
    """
    (w, h), shown, orientation = _image_header(image)
    if orientation not in range(2, 9):
        if (w, h) == (width, height):
            return "as_is"
    elif (width, height) == shown:
        return "transpose"
    elif (width, height) == (w, h):
        return "strip_orientation"
    raise LabelImportError(
        f"{image}: image is {shown[0]}x{shown[1]} px but its labels are for {width}x{height}")


def _safe_stem(name: str) -> str:
    stem = PurePosixPath(name.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (``..`` when outside it)."""
    return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def write_project_labels(labels: ImageLabels, image: Path, out_dir: Path, *, source: str,
                         info: DatasetInfo = DatasetInfo(), folder: str | None = None,
                         export: Path | None = None) -> dict[str, Any]:
    """Write one image's labels as ``out_dir/<folder>/`` and return its manifest row.

    ``folder`` defaults to the photo's stem. Writes ``photo<suffix>`` (unless
    ``info.copy_images`` is False), ``mask.png`` (all 255 when ``labels.mask`` is None),
    ``dots.csv`` (only when ``labels.dots`` is given) and ``label_source.json``. Without
    copies, an EXIF-rotated original is referenced as is (loaders apply EXIF orientation).
    """
    image, out_dir = Path(image), Path(out_dir)
    fit = _image_fit(image, labels.width, labels.height)
    item = out_dir / (folder or _safe_stem(image.name))
    item.mkdir(parents=True, exist_ok=True)
    for stale in [*item.glob("photo.*"), item / "dots.csv"]:
        stale.unlink(missing_ok=True)
    if not info.copy_images:
        if fit == "strip_orientation":
            raise LabelImportError(
                f"{image}: labels match the un-rotated pixels of an EXIF-rotated photo; import with copy_images=True")
        photo = image
    elif fit == "as_is":
        photo = item / f"photo{image.suffix.lower()}"
        shutil.copyfile(image, photo)
    else:
        photo = item / "photo.png"
        with Image.open(image) as img:
            upright = ImageOps.exif_transpose(img) if fit == "transpose" else img.copy()
            upright.save(photo, format="PNG")
    mask = labels.mask if labels.mask is not None else np.full((labels.height, labels.width), IGNORE, np.uint8)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(mask), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - OpenCV only fails on impossible arrays
        raise RuntimeError("could not encode the mask")
    (item / "mask.png").write_bytes(buf.tobytes())
    dots_cell = ""
    if labels.dots is not None:
        ids = labels.dot_ids if labels.dot_ids is not None else np.arange(len(labels.dots))
        pd.DataFrame({"dot_id": ids, "x": labels.dots[:, 0], "y": labels.dots[:, 1]}).to_csv(
            item / "dots.csv", index=False)
        dots_cell = _relative(item / "dots.csv", out_dir)
    provenance = {
        "schema": PROVENANCE_SCHEMA, "source": source, "export": str(export) if export else None,
        "image": labels.name, "image_file": str(image), "image_sha256": _sha256(image),
        "orientation_fix": fit, "width": labels.width, "height": labels.height,
        "regions_labelled": labels.mask is not None,
        "dots": None if labels.dots is None else len(labels.dots),
    }
    (item / "label_source.json").write_text(json.dumps(provenance, indent=1))
    split = info.split or assign_split(info.client or image.name)
    return {"image": _relative(photo, out_dir), "mask": _relative(item / "mask.png", out_dir),
            "dots": dots_cell, "truth": "", "px_per_mm": info.px_per_mm if info.px_per_mm else math.nan,
            "view": info.view, "split": split, "source": source, "client": info.client, "visit": info.visit}


def read_project_labels(image: Path, mask: Path | None, dots: Path | None, *,
                        name: str | None = None) -> ImageLabels:
    """Project-format files back into :class:`ImageLabels` (for export to a tool)."""
    image = Path(image)
    _, (width, height), _ = _image_header(image)
    class_mask = None
    if mask is not None:
        class_mask = read_png_mask(Path(mask))
        if class_mask.shape != (height, width):
            raise LabelImportError(
                f"{mask}: mask is {class_mask.shape[1]}x{class_mask.shape[0]} px, image is {width}x{height}")
    xy, ids = (None, None) if dots is None else read_points_csv(Path(dots), width=width, height=height)
    return ImageLabels(name or image.name, width, height, class_mask, xy, ids)


# --------------------------------------------------------------------------------------------
# High-level importers
# --------------------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelImportError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LabelImportError(f"{path}: is a folder, expected an export file") from None
    except UnicodeDecodeError:
        raise LabelImportError(f"{path}: not UTF-8 text") from None


def _load_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LabelImportError(f"{path}: malformed JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def _load_xml(path: Path) -> ET.Element:
    text = _read_text(path)
    try:
        return ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as err:
        line, col = err.position
        raise LabelImportError(f"{path}: malformed XML (line {line}, column {col})") from None


def _find_image(images_dir: Path, candidates: Sequence[str], export: str, name: str) -> Path:
    tried: list[str] = []
    for candidate in candidates:
        rel = PurePosixPath(candidate.replace("\\", "/"))
        if rel.is_absolute() and Path(rel).is_file():
            return Path(rel)
        rel_parts = [p for p in rel.parts if p not in ("/", "..", ".")]
        if not rel_parts:
            continue
        path = images_dir.joinpath(*rel_parts)
        tried.append(str(PurePosixPath(*rel_parts)))
        if path.is_file():
            return path
    raise LabelImportError(
        f"{export}: image {name!r} not found in {images_dir} (tried {', '.join(dict.fromkeys(tried))})")


def _name_candidates(name: str) -> list[str]:
    base = PurePosixPath(name.replace("\\", "/")).name
    return [name, base]


def _ls_candidates(name: str) -> list[str]:
    return [name, _LS_UUID.sub("", name)]


def _write_parsed(parsed: ParsedExport, *, export: Path, images_dir: Path, out_dir: Path, source: str,
                  info: DatasetInfo, candidates: Callable[[str], list[str]]) -> ImportReport:
    rows: list[dict[str, Any]] = []
    failures = list(parsed.failures)
    folders: set[str] = set()
    for labels in parsed.images:
        try:
            image = _find_image(Path(images_dir), candidates(labels.name), export.name, labels.name)
            folder = stem = _safe_stem(_LS_UUID.sub("", image.name) if source == "labelstudio" else image.name)
            n = 1
            while folder in folders:
                n += 1
                folder = f"{stem}-{n}"
            folders.add(folder)
            rows.append(write_project_labels(labels, image, Path(out_dir), source=source, info=info,
                                             folder=folder, export=export))
        except LabelImportError as err:
            message = str(err)
            if export.name not in message:
                message = f"{export.name}: image {labels.name!r}: {message}"
            failures.append(ImportFailure(labels.name, message))
    return ImportReport(tuple(rows), tuple(failures), parsed.skipped)


def import_coco(json_path: Path, images_dir: Path, out_dir: Path, *, scheme: LabelScheme = LabelScheme(),
                info: DatasetInfo = DatasetInfo()) -> ImportReport:
    """Import a COCO JSON export: photos from ``images_dir``, project format into ``out_dir``."""
    json_path = Path(json_path)
    parsed = parse_coco(_load_json(json_path), source=json_path.name, scheme=scheme)
    return _write_parsed(parsed, export=json_path, images_dir=Path(images_dir), out_dir=Path(out_dir),
                         source="coco", info=info, candidates=_name_candidates)


def import_cvat_xml(xml_path: Path, images_dir: Path, out_dir: Path, *, scheme: LabelScheme = LabelScheme(),
                    info: DatasetInfo = DatasetInfo()) -> ImportReport:
    """Import a CVAT for images 1.1 XML export."""
    xml_path = Path(xml_path)
    parsed = parse_cvat_xml(_load_xml(xml_path), source=xml_path.name, scheme=scheme)
    return _write_parsed(parsed, export=xml_path, images_dir=Path(images_dir), out_dir=Path(out_dir),
                         source="cvat", info=info, candidates=_name_candidates)


def import_label_studio(json_path: Path, images_dir: Path, out_dir: Path, *,
                        scheme: LabelScheme = LabelScheme(), info: DatasetInfo = DatasetInfo(),
                        image_key: str = "image") -> ImportReport:
    """Import a Label Studio JSON export (photos looked up by file name, upload prefix optional)."""
    json_path = Path(json_path)
    parsed = parse_label_studio(_load_json(json_path), source=json_path.name, scheme=scheme, image_key=image_key)
    return _write_parsed(parsed, export=json_path, images_dir=Path(images_dir), out_dir=Path(out_dir),
                         source="labelstudio", info=info, candidates=_ls_candidates)


def import_png_csv(images_dir: Path, out_dir: Path, *, masks_dir: Path | None = None,
                   dots_dir: Path | None = None, mask_pattern: str = "{stem}.png",
                   dots_pattern: str = "{stem}.csv", value_map: Mapping[int, int] | None = None,
                   dots_origin: Origin = "centre", info: DatasetInfo = DatasetInfo()) -> ImportReport:
    """Import photos with class-mask PNGs and/or dot CSVs matched by file stem.

    For ``images_dir/a.jpg`` the mask is ``masks_dir/a.png`` and the dots ``dots_dir/a.csv``
    (see the patterns). A photo with neither is skipped; with only one, the other part counts
    as unlabelled (mask all 255, or no ``dots.csv``).
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise LabelImportError(f"{images_dir}: images folder not found")
    for d in (masks_dir, dots_dir):
        if d is not None and not Path(d).is_dir():
            raise LabelImportError(f"{d}: folder not found")
    photos = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    mask_of = {p: Path(masks_dir) / mask_pattern.format(stem=p.stem) for p in photos} if masks_dir else {}
    mask_files = {m.resolve() for m in mask_of.values()}
    photos = [p for p in photos if p.resolve() not in mask_files]
    rows: list[dict[str, Any]] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    for photo in photos:
        mask_path = mask_of.get(photo)
        dots_path = Path(dots_dir) / dots_pattern.format(stem=photo.stem) if dots_dir else None
        mask_path = mask_path if mask_path is not None and mask_path.is_file() else None
        dots_path = dots_path if dots_path is not None and dots_path.is_file() else None
        if mask_path is None and dots_path is None:
            skipped.append(photo.name)
            continue
        try:
            raw, (width, height), _ = _image_header(photo)
            mask = None if mask_path is None else read_png_mask(mask_path, value_map=value_map)
            if mask is not None:
                if (mask.shape[1], mask.shape[0]) not in (raw, (width, height)):
                    raise LabelImportError(
                        f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but image "
                        f"{photo.name} is {width}x{height}")
                height, width = mask.shape
            xy, ids = (None, None) if dots_path is None else read_points_csv(
                dots_path, width=width, height=height, origin=dots_origin)
            labels = ImageLabels(photo.name, width, height, mask, xy, ids)
            rows.append(write_project_labels(labels, photo, out_dir, source="png+csv", info=info))
        except LabelImportError as err:
            failures.append(ImportFailure(photo.name, str(err)))
    return ImportReport(tuple(rows), tuple(failures), tuple(skipped))



# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------

def assign_split(key: str, fractions: Sequence[tuple[str, float]] = SPLIT_FRACTIONS) -> str:
    """Deterministic split of ``key`` (a photo file name, or a client id to keep visits together).

    The first 8 bytes of the key's SHA-256 give a number in [0, 1) that falls into the
    cumulative ``fractions``; the same key always lands in the same split, on any machine.
    """
    return pick_split(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / float(1 << 64),
                      fractions)


def write_manifest(rows: Iterable[Mapping[str, Any]], out_dir: Path, *, name: str = "manifest.csv",
                   append: bool = False) -> Path:
    """Write ``out_dir/name`` with the manifest columns (row paths are relative to ``out_dir``).

    With ``append`` an existing manifest is kept and rows for the same ``image`` are replaced,
    so importing several exports into one dataset (or re-importing one) builds one manifest.
    """
    path = Path(out_dir) / name
    new = pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS))
    if append and path.is_file():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in MANIFEST_COLUMNS if c not in old.columns]
        if missing:
            raise LabelImportError(f"{path}: existing manifest lacks columns {missing}")
        old = old[~old["image"].isin(set(new["image"].astype(str)))]
        new = pd.concat([old[list(MANIFEST_COLUMNS)], new.astype(object)], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    new.to_csv(path, index=False)
    return path
