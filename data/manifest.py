"""Dataset manifests: one CSV row per labelled photo.

A manifest is a CSV file with the columns :data:`COLUMNS` (the synthetic
generator writes it as ``manifest.csv``; importers of human labels write the
same format). Paths are relative to the manifest's folder (absolute paths are
kept as they are). :func:`read_manifest` validates everything once and returns a
frozen :class:`Manifest`; any problem is a :class:`ManifestError` whose message is
one line naming the file, the row and the column.

Columns:

=========== ========================================================================
image       the photo (required)
mask        ``mask.png``: uint8 classes 0 background, 1 scalp, 2 hair, 255 ignore (required)
dots        ``dots.csv`` with at least ``x``, ``y`` (OpenCV pixel centres); empty when
            the photo has no dot labels
truth       ``truth.json`` of synthetic photos; empty for human labels
px_per_mm   scale of the photo; empty when unknown (human labels without a card)
view        ``closeup`` or ``global``
split       ``train``, ``val`` or ``test``
source      where the row came from (``synthetic``, an importer's name, ...)
client      client identifier (series); may be empty
visit       visit label (series); may be empty
=========== ========================================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast, get_args

import pandas as pd

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "VIEWS",
    "SPLITS",
    "ManifestError",
    "ManifestRow",
    "Manifest",
    "read_manifest",
    "concat_manifests",
]

View = Literal["closeup", "global"]
Split = Literal["train", "val", "test"]
VIEWS: tuple[str, ...] = get_args(View)
SPLITS: tuple[str, ...] = get_args(Split)

COLUMNS: tuple[str, ...] = ("image", "mask", "dots", "truth", "px_per_mm", "view", "split", "source", "client", "visit")
#: Columns that must be present in the header (the others default to empty).
REQUIRED_COLUMNS: tuple[str, ...] = ("image", "mask", "dots", "truth", "px_per_mm", "view", "split", "source")
_PATH_COLUMNS = ("image", "mask", "dots", "truth")
_OPTIONAL_PATHS = ("dots", "truth")


class ManifestError(ValueError):
    """A problem in a manifest, described in one line naming the row and column."""


@dataclass(frozen=True)
class ManifestRow:
    """One labelled photo; paths are absolute."""

    image: Path
    mask: Path
    dots: Path | None
    """``None``: the photo has no dot labels."""
    truth: Path | None
    px_per_mm: float | None
    """``None``: scale unknown."""
    view: View
    split: Split
    source: str
    client: str = ""
    visit: str = ""


@dataclass(frozen=True)
class Manifest:
    """A validated, immutable list of :class:`ManifestRow`."""

    rows: tuple[ManifestRow, ...]
    sources: tuple[Path, ...] = ()
    """The manifest files the rows were read from (for messages)."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> ManifestRow:
        return self.rows[index]

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    def filter(self, *, split: str | Sequence[str] | None = None, view: str | Sequence[str] | None = None) -> Manifest:
        """The rows whose split (and view) is one of those given."""
        splits = _as_set(split, SPLITS, "split")
        views = _as_set(view, VIEWS, "view")
        rows = tuple(
            r for r in self.rows if (splits is None or r.split in splits) and (views is None or r.view in views)
        )
        return replace(self, rows=rows)

    def to_frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with the columns :data:`COLUMNS` (absolute paths)."""
        records = [
            {
                "image": str(r.image),
                "mask": str(r.mask),
                "dots": str(r.dots) if r.dots else "",
                "truth": str(r.truth) if r.truth else "",
                "px_per_mm": r.px_per_mm,
                "view": r.view,
                "split": r.split,
                "source": r.source,
                "client": r.client,
                "visit": r.visit,
            }
            for r in self.rows
        ]
        return pd.DataFrame(records, columns=list(COLUMNS))


def _as_set(value: str | Sequence[str] | None, allowed: tuple[str, ...], what: str) -> frozenset[str] | None:
    if value is None:
        return None
    values = frozenset([value] if isinstance(value, str) else value)
    unknown = sorted(values - set(allowed))
    if unknown:
        raise ManifestError(f"unknown {what} {unknown[0]!r}; expected one of {', '.join(allowed)}")
    return values


def _cell(raw: object) -> str:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return ""
    return str(raw).strip()


def _parse_row(i: int, rec: dict[str, object], root: Path, where: str, check_files: bool) -> ManifestRow:
    def fail(column: str, message: str) -> ManifestError:
        name = _cell(rec.get("image")) or "?"
        return ManifestError(f"{where} row {i} (line {i + 2}, image {name!r}): column {column!r}: {message}")

    paths: dict[str, Path | None] = {}
    for col in _PATH_COLUMNS:
        text = _cell(rec.get(col))
        if not text:
            if col in _OPTIONAL_PATHS:
                paths[col] = None
                continue
            raise fail(col, "empty")
        path = Path(os.path.expanduser(text))
        path = (path if path.is_absolute() else root / path).resolve()
        if check_files and not path.is_file():
            raise fail(col, f"file not found: {path}")
        paths[col] = path

    text = _cell(rec.get("px_per_mm"))
    px_per_mm: float | None = None
    if text:
        try:
            px_per_mm = float(text)
        except ValueError:
            raise fail("px_per_mm", f"not a number: {text!r}") from None
        if not (math.isfinite(px_per_mm) and px_per_mm > 0):
            raise fail("px_per_mm", f"must be a positive number (got {text})")

    view = _cell(rec.get("view"))
    if view not in VIEWS:
        raise fail("view", f"{view!r} is not one of {', '.join(VIEWS)}")
    split = _cell(rec.get("split"))
    if split not in SPLITS:
        raise fail("split", f"{split!r} is not one of {', '.join(SPLITS)}")
    source = _cell(rec.get("source"))
    if not source:
        raise fail("source", "empty")
    # image and mask are not in _OPTIONAL_PATHS: an empty cell raised above, so they are Paths
    return ManifestRow(
        image=cast(Path, paths["image"]),
        mask=cast(Path, paths["mask"]),
        dots=paths["dots"],
        truth=paths["truth"],
        px_per_mm=px_per_mm,
        view=cast(View, view),
        split=cast(Split, split),
        source=source,
        client=_cell(rec.get("client")),
        visit=_cell(rec.get("visit")),
    )


def read_manifest(
    path: str | os.PathLike[str],
    *,
    split: str | Sequence[str] | None = None,
    view: str | Sequence[str] | None = None,
    check_files: bool = True,
) -> Manifest:
    """Read and validate a manifest CSV; keep only rows of ``split`` / ``view`` if given.

    Every row is validated (whatever the filter), so a broken manifest fails
    early. ``check_files=False`` skips the existence checks (e.g. for a manifest
    describing files on another machine).
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ManifestError(f"{where}: manifest not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ManifestError(f"{where}: not a readable CSV ({first})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{where}: missing column(s) {', '.join(repr(c) for c in missing)}")
    root = path.resolve().parent
    rows = tuple(_parse_row(i, rec, root, where, check_files) for i, rec in enumerate(frame.to_dict(orient="records")))
    return Manifest(rows=rows, sources=(path,)).filter(split=split, view=view)


def concat_manifests(manifests: Iterable[Manifest]) -> Manifest:
    """One manifest with the rows of all ``manifests`` in order (e.g. synthetic + imported).

    The same photo listed twice is refused: it would be sampled twice as often
    and could end up in two splits.
    """
    manifests = list(manifests)
    rows = tuple(r for m in manifests for r in m.rows)
    seen: dict[Path, int] = {}
    for i, r in enumerate(rows):
        if r.image in seen:
            raise ManifestError(
                f"row {i} of the concatenated manifest: column 'image': {r.image} already listed (row {seen[r.image]})"
            )
        seen[r.image] = i
    sources = tuple(s for m in manifests for s in m.sources)
    return Manifest(rows=rows, sources=sources)


def pick_split(u: float, fractions: Sequence[tuple[str, float]]) -> str:
    """The split whose cumulative share of [0, 1) holds ``u`` (a uniform number)."""
    total = 0.0
    for name, fraction in fractions:
        total += fraction
        if u < total:
            return name
    return fractions[-1][0]
