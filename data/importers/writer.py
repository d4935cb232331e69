"""Writing the project format: one folder per image (photo, mask, dots, provenance) and the manifest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from data.importers.plain import read_png_mask, read_points_csv
from data.importers.results import IGNORE, DatasetInfo, ImageLabels, LabelImportError
from data.manifest import COLUMNS as MANIFEST_COLUMNS
from data.manifest import pick_split

SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
PROVENANCE_SCHEMA = "smp-label-import/1"
_EXIF_ORIENTATION = 0x0112

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
    raise LabelImportError(f"{image}: image is {shown[0]}x{shown[1]} px but its labels are for {width}x{height}")


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


def write_project_labels(
    labels: ImageLabels,
    image: Path,
    out_dir: Path,
    *,
    source: str,
    info: DatasetInfo = DatasetInfo(),
    folder: str | None = None,
    export: Path | None = None,
) -> dict[str, Any]:
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
                f"{image}: labels match the un-rotated pixels of an EXIF-rotated photo; import with copy_images=True"
            )
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
            item / "dots.csv", index=False
        )
        dots_cell = _relative(item / "dots.csv", out_dir)
    provenance = {
        "schema": PROVENANCE_SCHEMA,
        "source": source,
        "export": str(export) if export else None,
        "image": labels.name,
        "image_file": str(image),
        "image_sha256": _sha256(image),
        "orientation_fix": fit,
        "width": labels.width,
        "height": labels.height,
        "regions_labelled": labels.mask is not None,
        "dots": None if labels.dots is None else len(labels.dots),
    }
    (item / "label_source.json").write_text(json.dumps(provenance, indent=1))
    split = info.split or assign_split(info.client or image.name)
    return {
        "image": _relative(photo, out_dir),
        "mask": _relative(item / "mask.png", out_dir),
        "dots": dots_cell,
        "truth": "",
        "px_per_mm": info.px_per_mm if info.px_per_mm else math.nan,
        "view": info.view,
        "split": split,
        "source": source,
        "client": info.client,
        "visit": info.visit,
    }


def read_project_labels(image: Path, mask: Path | None, dots: Path | None, *, name: str | None = None) -> ImageLabels:
    """Project-format files back into :class:`ImageLabels` (for export to a tool)."""
    image = Path(image)
    _, (width, height), _ = _image_header(image)
    class_mask = None
    if mask is not None:
        class_mask = read_png_mask(Path(mask))
        if class_mask.shape != (height, width):
            raise LabelImportError(
                f"{mask}: mask is {class_mask.shape[1]}x{class_mask.shape[0]} px, image is {width}x{height}"
            )
    xy, ids = (None, None) if dots is None else read_points_csv(Path(dots), width=width, height=height)
    return ImageLabels(name or image.name, width, height, class_mask, xy, ids)


def assign_split(key: str, fractions: Sequence[tuple[str, float]] = SPLIT_FRACTIONS) -> str:
    """Deterministic split of ``key`` (a photo file name, or a client id to keep visits together).

    The first 8 bytes of the key's SHA-256 give a number in [0, 1) that falls into the
    cumulative ``fractions``; the same key always lands in the same split, on any machine.
    """
    return pick_split(
        int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / float(1 << 64), fractions
    )


def write_manifest(
    rows: Iterable[Mapping[str, Any]], out_dir: Path, *, name: str = "manifest.csv", append: bool = False
) -> Path:
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
