"""CVAT for images 1.1 XML: parsing an export into project labels, and exporting project labels."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Literal

import numpy as np

from data.importers.builder import _as_int, _ImageBuilder, _label_kinds
from data.importers.polygons import mask_outlines
from data.importers.results import (
    _DOT,
    ImageLabels,
    ImportFailure,
    LabelImportError,
    LabelScheme,
    ParsedExport,
    _LabelKind,
    _norm_label,
)
from data.importers.rle import _runs, _unruns

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


def parse_cvat_xml(
    root: ET.Element, *, source: str = "annotations.xml", scheme: LabelScheme = LabelScheme()
) -> ParsedExport:
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
                _cvat_shape(
                    builder,
                    kinds[_norm_label(shape.get("label", ""))],
                    shape,
                    f"<{shape.tag}> #{n} ({shape.get('label')})",
                )
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
            builder.add_dot(
                (_cvat_float(shape, "xtl", what) + _cvat_float(shape, "xbr", what)) / 2,
                (_cvat_float(shape, "ytl", what) + _cvat_float(shape, "ybr", what)) / 2,
                what,
            )
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
        bitmap[top : top + h, left : left + w] = crop
        builder.add_bitmap(value, bitmap)
    else:
        raise LabelImportError(f"{what}: regions must be polygons, boxes or masks")


def _fmt(v: float) -> str:
    text = f"{v:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def export_cvat_xml(
    items: Sequence[ImageLabels],
    *,
    scheme: LabelScheme = LabelScheme(),
    segmentation: Literal["polygon", "mask"] = "polygon",
) -> str:
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
        im = ET.SubElement(
            root, "image", {"id": str(index), "name": item.name, "width": str(item.width), "height": str(item.height)}
        )
        if item.mask is not None:
            for value in region_values:
                region = item.mask == value
                if not region.any():
                    continue
                name = scheme.class_name(value)
                if segmentation == "mask":
                    rows, cols = np.nonzero(region)
                    top, left = int(rows.min()), int(cols.min())
                    crop = region[top : rows.max() + 1, left : cols.max() + 1]
                    ET.SubElement(
                        im,
                        "mask",
                        {
                            "label": name,
                            **common,
                            "rle": ", ".join(map(str, _runs(crop.ravel()))),
                            "left": str(left),
                            "top": str(top),
                            "width": str(crop.shape[1]),
                            "height": str(crop.shape[0]),
                        },
                    )
                    continue
                for ring in mask_outlines(region):
                    pts = ";".join(f"{_fmt(x)},{_fmt(y)}" for x, y in ring + off)
                    ET.SubElement(im, "polygon", {"label": name, **common, "points": pts})
        if item.dots is not None:
            for x, y in item.dots + off:
                ET.SubElement(im, "points", {"label": scheme.dot_labels[0], **common, "points": f"{_fmt(x)},{_fmt(y)}"})
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
