"""COCO JSON: parsing an export into project labels, and exporting project labels as COCO."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from data.importers.builder import _as_int, _floats, _ImageBuilder, _label_kinds
from data.importers.polygons import mask_outlines
from data.importers.results import (
    _DOT,
    ImageLabels,
    ImportFailure,
    LabelImportError,
    LabelScheme,
    ParsedExport,
    _norm_label,
)
from data.importers.rle import rle_counts_from_string, rle_counts_to_string, rle_decode, rle_encode


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
                "which is not in 'categories'"
            )
        if ann.get("image_id") not in known_ids:
            raise LabelImportError(
                f"{source}: annotation {ann.get('id')} refers to image_id {ann.get('image_id')!r}, "
                "which is not in 'images'"
            )
        by_image.setdefault(ann["image_id"], []).append(ann)
    used = {categories[a["category_id"]] for a in annotations}
    kinds, has_regions, has_dots = _label_kinds(categories.values(), used, scheme, source, "category")

    parsed: list[ImageLabels] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    for i, im in enumerate(images):
        name = str(im.get("file_name") or f"image #{i}")
        anns = [
            a for a in by_image.get(im.get("id"), []) if kinds[_norm_label(categories[a["category_id"]])] is not None
        ]
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
            raise LabelImportError(f"{what}: RLE size {size} is not the image's [{builder.height}, {builder.width}]")
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


def export_coco(
    items: Sequence[ImageLabels],
    *,
    scheme: LabelScheme = LabelScheme(),
    segmentation: Literal["polygon", "rle"] = "polygon",
) -> dict[str, Any]:
    """COCO document of project labels (the inverse of :func:`parse_coco`).

    Regions: one annotation per outer outline (``"polygon"``, holes filled) or one compressed-RLE
    annotation per class and image (``"rle"``, exact). Pixels equal to ``scheme.unlabelled`` are
    not exported. Dots: one keypoint annotation each (category with keypoints ``["centre"]``).
    """
    if segmentation not in ("polygon", "rle"):
        raise ValueError("segmentation must be 'polygon' or 'rle'")
    off = -scheme.shift
    region_values = [v for v in scheme.priority if v != scheme.unlabelled]
    categories = [
        {"id": i + 1, "name": scheme.class_name(v), "supercategory": "region"} for i, v in enumerate(region_values)
    ]
    cat_of = {v: i + 1 for i, v in enumerate(region_values)}
    dot_cat = len(categories) + 1
    categories.append(
        {"id": dot_cat, "name": scheme.dot_labels[0], "supercategory": "smp", "keypoints": ["centre"], "skeleton": []}
    )
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
                    annotations.append(
                        {
                            "category_id": cat_of[value],
                            "iscrowd": 0,
                            "area": int(region.sum()),
                            "bbox": [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1],
                            "segmentation": {
                                "size": [item.height, item.width],
                                "counts": rle_counts_to_string(rle_encode(region)),
                            },
                        }
                    )
                    continue
                for ring in mask_outlines(region):
                    xy = ring + off
                    x, y = xy[:, 0], xy[:, 1]
                    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
                    annotations.append(
                        {
                            "category_id": cat_of[value],
                            "iscrowd": 0,
                            "area": area,
                            "bbox": [float(x.min()), float(y.min()), float(np.ptp(x)), float(np.ptp(y))],
                            "segmentation": [xy.ravel().tolist()],
                        }
                    )
        if item.dots is not None:
            for x, y in item.dots + off:
                annotations.append(
                    {
                        "category_id": dot_cat,
                        "iscrowd": 0,
                        "area": 0.0,
                        "num_keypoints": 1,
                        "keypoints": [float(x), float(y), 2],
                        "bbox": [float(x), float(y), 0.0, 0.0],
                    }
                )
        for ann in annotations[first:]:
            ann["image_id"] = image_id
    for ann_id, ann in enumerate(annotations, start=1):
        ann["id"] = ann_id
    return {
        "info": {"description": "exported by smp-assess data.importers"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
