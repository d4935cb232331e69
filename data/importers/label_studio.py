"""Label Studio JSON: parsing an export into project labels, and exporting project labels as tasks."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from data.importers.builder import _as_int, _floats, _ImageBuilder, _label_kinds
from data.importers.polygons import mask_outlines
from data.importers.results import (
    ImageLabels,
    ImportFailure,
    LabelImportError,
    LabelScheme,
    ParsedExport,
    _LabelKind,
    _norm_label,
)

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


def parse_label_studio(
    doc: Any, *, source: str = "export.json", scheme: LabelScheme = LabelScheme(), image_key: str = "image"
) -> ParsedExport:
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
            f"{source}: brush masks (brushlabels) are not supported; export the project as COCO instead"
        )
    used = {label for r in results if _ls_geometry(r) for label in _ls_labels(r)}
    kinds, has_regions, has_dots = _label_kinds((), used, scheme, source, "label")

    parsed: list[ImageLabels] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    for i, (task, res) in enumerate(chosen):
        data = task.get("data") or {}
        url = data.get(image_key) if isinstance(data, Mapping) else None
        name = label_studio_image_name(url) if isinstance(url, str) and url else f"task {task.get('id', i)}"
        shapes = [
            r
            for r in res or []
            if _ls_geometry(r) and _ls_labels(r) and any(kinds[_norm_label(lab)] is not None for lab in _ls_labels(r))
        ]
        if not shapes:
            skipped.append(name)
            continue
        try:
            if not (isinstance(url, str) and url):
                raise LabelImportError(f"no data.{image_key}")
            sizes = {(r.get("original_width"), r.get("original_height")) for r in shapes}
            if len(sizes) != 1:
                raise LabelImportError(f"results disagree on original_width/height: {sorted(map(str, sizes))}")
            ((ow, oh),) = sizes
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


def export_label_studio(
    items: Sequence[ImageLabels], *, scheme: LabelScheme = LabelScheme(), image_root: str = ""
) -> list[dict[str, Any]]:
    """Label Studio tasks with one annotation each (the inverse of :func:`parse_label_studio`).

    ``data.image`` is ``image_root + name``. Regions become polygons (holes filled), dots
    keypoints; positions in percent of the image size.
    """
    off = -scheme.shift
    region_values = [v for v in scheme.priority if v != scheme.unlabelled]
    tasks = []
    for index, item in enumerate(items):
        base = {"to_name": "image", "original_width": item.width, "original_height": item.height, "image_rotation": 0}
        scale = np.array([100.0 / item.width, 100.0 / item.height])
        results: list[dict[str, Any]] = []
        if item.mask is not None:
            for value in region_values:
                for ring in mask_outlines(item.mask == value):
                    results.append(
                        {
                            **base,
                            "id": f"r{len(results)}",
                            "from_name": "region",
                            "type": "polygonlabels",
                            "value": {
                                "points": ((ring + off) * scale).tolist(),
                                "closed": True,
                                "polygonlabels": [scheme.class_name(value)],
                            },
                        }
                    )
        if item.dots is not None:
            for x, y in (item.dots + off) * scale:
                results.append(
                    {
                        **base,
                        "id": f"r{len(results)}",
                        "from_name": "dot",
                        "type": "keypointlabels",
                        "value": {"x": float(x), "y": float(y), "width": 0.3, "keypointlabels": [scheme.dot_labels[0]]},
                    }
                )
        tasks.append(
            {
                "id": index + 1,
                "data": {"image": image_root + item.name},
                "annotations": [{"id": index + 1, "was_cancelled": False, "result": results}],
            }
        )
    return tasks
