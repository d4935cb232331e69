"""Building one image's labels while parsing, and the checks all parsers share."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from data.importers.polygons import _fill_polygon, compose_mask
from data.importers.results import (
    _DOT,
    BACKGROUND,
    ImageLabels,
    LabelImportError,
    LabelScheme,
    _LabelKind,
    _norm_label,
)


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
            mask = compose_mask(
                self.layers, self.height, self.width, unlabelled=self.scheme.unlabelled, priority=self.scheme.priority
            )
        dots = np.asarray(self.dots, dtype=np.float64).reshape(-1, 2) if has_dots else None
        return ImageLabels(self.name, self.width, self.height, mask, dots)


def _check_point(x: float, y: float, width: int, height: int, what: str) -> None:
    """Refuse a dot centre (project coordinates) outside the image's pixel area."""
    if not (math.isfinite(x) and math.isfinite(y)):
        raise LabelImportError(f"{what}: dot position ({x}, {y}) is not a finite number")
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
        raise LabelImportError(f"{what}: dot at x={x:.3f}, y={y:.3f} is outside the {width}x{height} image")


def _label_kinds(
    declared: Iterable[str], used: Iterable[str], scheme: LabelScheme, source: str, noun: str
) -> tuple[dict[str, _LabelKind], bool, bool]:
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
            f"(LabelScheme(classes={{**DEFAULT_CLASSES, {unknown[0]!r}: 1}})) or pass unknown='skip'"
        )
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
