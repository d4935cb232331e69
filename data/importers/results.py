"""Settings and results of an import: the label scheme, one image's labels, reports and failures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

import numpy as np

from data.manifest import SPLITS, VIEWS

BACKGROUND, SCALP, HAIR, IGNORE = 0, 1, 2, 255
CLASS_VALUES: tuple[int, ...] = (BACKGROUND, SCALP, HAIR, IGNORE)
DEFAULT_CLASSES: Mapping[str, int] = MappingProxyType(
    {"background": BACKGROUND, "scalp": SCALP, "hair": HAIR, "ignore": IGNORE}
)
DEFAULT_DOT_LABELS: tuple[str, ...] = ("dot", "smp_dot")
DEFAULT_PRIORITY: tuple[int, ...] = (BACKGROUND, SCALP, HAIR, IGNORE)

Origin = Literal["corner", "centre"]
_DOT: Final = "dot"
_LabelKind = int | Literal["dot"] | None  # class value, a dot, or "ignore this label"


class LabelImportError(ValueError):
    """Labels could not be imported; the message is one line naming the file and the problem."""


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
