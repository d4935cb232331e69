"""Importers from annotation tools: codecs, pixel conventions, round trips, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from data.importers import (
    DEFAULT_CLASSES,
    HAIR,
    IGNORE,
    SCALP,
    DatasetInfo,
    ImageLabels,
    LabelImportError,
    LabelScheme,
    assign_split,
    export_coco,
    export_cvat_xml,
    export_label_studio,
    import_coco,
    import_cvat_xml,
    import_label_studio,
    import_png_csv,
    mask_outlines,
    parse_coco,
    rasterise_polygon,
    read_png_mask,
    read_points_csv,
    read_project_labels,
    rle_counts_from_string,
    rle_counts_to_string,
    rle_decode,
    rle_encode,
    write_manifest,
)
from data.manifest import COLUMNS, read_manifest

H, W = 48, 64


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def make_labels(rng: np.random.Generator, name: str, n_dots: int = 12) -> ImageLabels:
    """A small scalp: an ellipse of scalp, two hair blobs, an ignore patch, dots on the scalp."""
    mask = np.zeros((H, W), np.uint8)
    cx, cy = int(rng.integers(28, 36)), int(rng.integers(20, 28))
    cv2.ellipse(mask, (cx, cy), (24, 16), float(rng.uniform(0, 180)), 0, 360, SCALP, -1)
    cv2.circle(mask, (cx - 8, cy - 3), int(rng.integers(3, 6)), HAIR, -1)
    cv2.circle(mask, (cx + 9, cy + 4), int(rng.integers(3, 6)), HAIR, -1)
    mask[cy + 6 : cy + 9, cx - 2 : cx + 4] = IGNORE
    rows, cols = np.nonzero(mask == SCALP)
    pick = rng.choice(len(rows), n_dots, replace=False)
    dots = np.c_[cols[pick], rows[pick]] + rng.uniform(-0.49, 0.49, (n_dots, 2))
    return ImageLabels(name, W, H, mask, dots)


def write_photo(path: Path, width: int = W, height: int = H) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((height, width, 3), 120, np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def read_item(out: Path, row: dict) -> tuple[np.ndarray, pd.DataFrame | None]:
    mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
    dots = pd.read_csv(out / row["dots"]) if row["dots"] else None
    return mask, dots


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def coco_doc(images: list[dict], annotations: list[dict], names: list[str]) -> dict:
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }


# ------------------------------------------------------------------------------------------
# RLE codec
# ------------------------------------------------------------------------------------------


def test_rle_counts_are_column_major_and_start_with_zeros():
    m = np.array([[0, 1, 1], [0, 1, 0]], bool)
    # column-major: (0,0) (0,1 rows) -> 0 0 | 1 1 | 1 0  => 2 zeros, 3 ones, 1 zero
    assert rle_encode(m) == [2, 3, 1]
    assert np.array_equal(rle_decode([2, 3, 1], 2, 3), m)
    starts_on = np.array([[1, 0], [1, 0]], bool)
    assert rle_encode(starts_on) == [0, 2, 2]
    with pytest.raises(ValueError):
        rle_decode([2, 3], 2, 3)


def test_compressed_rle_strings_hand_computed():
    # counts 3, 2, 5: absolute (the first three are never differenced), one 6-bit char each
    assert rle_counts_to_string([3, 2, 5]) == "325"
    # 100 = 0b00011_00100: low group 4 with the "more" bit (4|32 -> 'T'), then 3 -> '3'
    assert rle_counts_to_string([100]) == "T3"
    # the fourth count is stored as 1 - 2 = -1: group 31 with the sign bit -> chr(48 + 31) = 'O'
    assert rle_counts_to_string([10, 2, 3, 1]) == ":23O"
    assert rle_counts_from_string("T3") == [100]
    counts = rle_counts_from_string(":23O")
    assert counts == [10, 2, 3, 1]
    expected = np.zeros((4, 4), bool)
    expected[2, 2] = expected[3, 2] = expected[3, 3] = True  # flat F-order indices 10, 11 and 15
    assert np.array_equal(rle_decode(counts, 4, 4), expected)
    with pytest.raises(ValueError):
        rle_counts_from_string("T")  # ends inside a number


def test_rle_round_trips_random_masks_and_large_counts():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 30, 2)
        m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        counts = rle_encode(m)
        assert np.array_equal(rle_decode(counts, h, w), m)
        assert rle_counts_from_string(rle_counts_to_string(counts)) == counts
    big = [0, 123456, 5, 99_999_999, 1, 2, 70_000, 3]
    assert rle_counts_from_string(rle_counts_to_string(big)) == big


# ------------------------------------------------------------------------------------------
# Pixel conventions and geometry
# ------------------------------------------------------------------------------------------


def test_coco_square_covers_exactly_pixels_0_to_3():
    doc = coco_doc(
        [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
        ["scalp"],
    )
    (labels,) = parse_coco(doc).images
    expected = np.zeros((8, 8), np.uint8)
    expected[:4, :4] = SCALP
    assert np.array_equal(labels.mask, expected)


def test_polygons_sharing_an_edge_share_no_pixel():
    square = np.array([[0.0, 0.0], [6.0, 0.0], [6.0, 6.0], [0.0, 6.0]])  # edges through pixel centres
    upper = rasterise_polygon(square[[0, 1, 2]], 8, 8)
    lower = rasterise_polygon(square[[0, 2, 3]], 8, 8)
    assert not (upper & lower).any()
    assert np.array_equal(upper | lower, rasterise_polygon(square, 8, 8))


def test_mask_outlines_refill_exactly_with_holes_filled():
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = rng.integers(2, 30, 2)
        m = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        refilled = np.zeros_like(m)
        for ring in mask_outlines(m):
            assert np.all(np.abs(ring - np.round(ring)) == 0.5)  # vertices on pixel corners
            refilled |= rasterise_polygon(ring, h, w)
        background, _ = ndimage.label(~m)  # 4-connected holes, as 8-connected outlines see them
        edge_labels = np.unique(np.r_[background[0], background[-1], background[:, 0], background[:, -1]])
        holes = (background > 0) & ~np.isin(background, edge_labels)
        assert np.array_equal(refilled, m | holes)


# ------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_coco_round_trip(tmp_path, segmentation):
    rng = np.random.default_rng(2)
    items = [make_labels(rng, f"img_{i}.png") for i in range(2)]
    for item in items:
        write_photo(tmp_path / "images" / item.name)
    export = tmp_path / "coco.json"
    export.write_text(json.dumps(export_coco(items, segmentation=segmentation)))

    report = import_coco(export, tmp_path / "images", tmp_path / "ds", info=DatasetInfo(px_per_mm=20.0))
    assert report.ok and len(report.rows) == 2
    manifest = read_manifest(write_manifest(report.rows, tmp_path / "ds"))  # the project's own reader
    assert [r.px_per_mm for r in manifest] == [20.0, 20.0] and all(r.dots.is_file() for r in manifest)
    for item, row in zip(items, report.rows, strict=True):
        assert row["source"] == "coco" and row["px_per_mm"] == 20.0 and row["split"] in ("train", "val", "test")
        mask, dots = read_item(tmp_path / "ds", row)
        if segmentation == "rle":
            assert np.array_equal(mask, item.mask)
        for value in (SCALP, HAIR, IGNORE):
            assert iou(mask == value, item.mask == value) > 0.98
        assert np.array_equal(mask, item.mask)  # these blobs have no holes a polygon loses
        assert np.abs(dots[["x", "y"]].to_numpy() - item.dots).max() < 1e-9
        assert dots["dot_id"].tolist() == list(range(len(item.dots)))


def test_coco_uncompressed_rle_hair_wins_and_unlabelled_fill(tmp_path):
    scalp = np.zeros((6, 5), bool)
    scalp[1:5, 1:4] = True
    doc = coco_doc(
        [{"id": 7, "file_name": "a.png", "width": 5, "height": 6}],
        [  # hair first: the overlap rule is by class, not by order
            {"id": 1, "image_id": 7, "category_id": 2, "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]]},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": {"counts": rle_encode(scalp), "size": [6, 5]}},
        ],
        ["Scalp ", "HAIR"],
    )  # names compare case-insensitively
    (labels,) = parse_coco(doc, scheme=LabelScheme(unlabelled=IGNORE)).images
    expected = np.full((6, 5), IGNORE, np.uint8)
    expected[scalp] = SCALP
    expected[1:3, 1:3] = HAIR
    assert np.array_equal(labels.mask, expected)
    assert labels.dots is None  # no dot category in this export: dots are not labelled


def test_coco_dot_from_bbox_centre_and_keypoints():
    doc = coco_doc(
        [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
        [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 2, 4]},
            {"id": 2, "image_id": 1, "category_id": 2, "keypoints": [5.5, 6.5, 2, 9, 9, 0]},
        ],
        ["dot", "smp_dot", "scalp"],
    )
    (labels,) = parse_coco(doc).images
    # bbox centre (3, 5) and keypoint (5.5, 6.5) in COCO corner coordinates, minus half a pixel
    assert np.allclose(labels.dots, [[2.5, 4.5], [5.0, 6.0]])
    assert labels.mask is not None and not labels.mask.any()  # regions labelled (scalp declared), none drawn


def test_coco_unknown_category_is_refused_unless_mapped_or_skipped(tmp_path):
    doc = coco_doc(
        [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[4, 4, 8, 4, 8, 8, 4, 8]]},
        ],
        ["skin", "scalp"],
    )
    export = tmp_path / "labels_v3.json"
    export.write_text(json.dumps(doc))
    write_photo(tmp_path / "images" / "a.png", 8, 8)
    with pytest.raises(LabelImportError, match=r"labels_v3\.json.*'skin'"):
        import_coco(export, tmp_path / "images", tmp_path / "ds")
    (skipped,) = parse_coco(doc, scheme=LabelScheme(unknown="skip")).images
    assert skipped.mask[:4, :4].max() == 0 and skipped.mask[4:, 4:].min() == SCALP
    (mapped,) = parse_coco(doc, scheme=LabelScheme(classes={**DEFAULT_CLASSES, "skin": SCALP})).images
    assert mapped.mask[:4, :4].min() == SCALP


def test_malformed_or_missing_exports_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [}')
    with pytest.raises(LabelImportError, match=r"broken\.json.*malformed JSON"):
        import_coco(bad, tmp_path, tmp_path / "ds")
    with pytest.raises(LabelImportError, match=r"nowhere\.json.*not found"):
        import_coco(tmp_path / "nowhere.json", tmp_path, tmp_path / "ds")
    not_coco = tmp_path / "list.json"
    not_coco.write_text("[1, 2]")
    with pytest.raises(LabelImportError, match=r"list\.json"):
        import_coco(not_coco, tmp_path, tmp_path / "ds")


def test_batch_reports_bad_images_and_continues(tmp_path):
    images = [{"id": i, "file_name": f"p{i}.png", "width": 10, "height": 10} for i in range(4)]
    square = [[1, 1, 6, 1, 6, 6, 1, 6]]
    anns = [
        {"id": 1, "image_id": 0, "category_id": 1, "segmentation": square},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": square},  # photo missing
        {"id": 3, "image_id": 2, "category_id": 2, "keypoints": [30, 2, 2]},  # dot outside
        {"id": 4, "image_id": 3, "category_id": 1, "segmentation": square},
    ]  # photo is 12x10
    export = tmp_path / "batch.json"
    export.write_text(json.dumps(coco_doc(images, anns, ["scalp", "dot"])))
    for name, size in (("p0.png", (10, 10)), ("p2.png", (10, 10)), ("p3.png", (12, 10))):
        write_photo(tmp_path / "images" / name, *size)

    report = import_coco(export, tmp_path / "images", tmp_path / "ds")
    assert [r["image"] for r in report.rows] == ["p0/photo.png"]
    reasons = {f.image: f.reason for f in report.failures}
    assert set(reasons) == {"p1.png", "p2.png", "p3.png"}
    assert "batch.json" in reasons["p1.png"] and "not found" in reasons["p1.png"]
    assert "batch.json" in reasons["p2.png"] and "outside" in reasons["p2.png"]
    assert "p3.png" in reasons["p3.png"] and "12x10" in reasons["p3.png"]
    assert all("\n" not in r for r in reasons.values())
    manifest = pd.read_csv(write_manifest(report.rows, tmp_path / "ds"), keep_default_na=False)
    assert list(manifest.columns) == list(COLUMNS) and len(manifest) == 1
    assert (tmp_path / "ds" / manifest.loc[0, "image"]).is_file()


def test_images_without_annotations_are_skipped(tmp_path):
    doc = coco_doc(
        [
            {"id": 1, "file_name": "a.png", "width": 8, "height": 8},
            {"id": 2, "file_name": "b.png", "width": 8, "height": 8},
        ],
        [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": [2, 2, 2]}],
        ["dot"],
    )
    parsed = parse_coco(doc)
    assert parsed.skipped == ("b.png",)
    (labels,) = parsed.images
    assert labels.mask is None  # regions not labelled in a dots-only export
    write_photo(tmp_path / "images" / "a.png", 8, 8)
    export = tmp_path / "dots.json"
    export.write_text(json.dumps(doc))
    report = import_coco(export, tmp_path / "images", tmp_path / "ds")
    mask, dots = read_item(tmp_path / "ds", report.rows[0])
    assert (mask == IGNORE).all() and len(dots) == 1


# ------------------------------------------------------------------------------------------
# CVAT
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("segmentation", ["polygon", "mask"])
def test_cvat_round_trip(tmp_path, segmentation):
    rng = np.random.default_rng(3)
    items = [make_labels(rng, f"cv_{i}.png", n_dots=20) for i in range(2)]
    for item in items:
        write_photo(tmp_path / "images" / item.name)
    export = tmp_path / "annotations.xml"
    export.write_text(export_cvat_xml(items, segmentation=segmentation))

    report = import_cvat_xml(export, tmp_path / "images", tmp_path / "ds")
    assert report.ok and len(report.rows) == 2
    for item, row in zip(items, report.rows, strict=True):
        assert row["source"] == "cvat"
        mask, dots = read_item(tmp_path / "ds", row)
        assert np.array_equal(mask, item.mask)
        assert np.abs(dots[["x", "y"]].to_numpy() - item.dots).max() < 1e-6


def test_cvat_points_element_with_several_points_and_malformed_xml(tmp_path):
    xml = """<annotations><version>1.1</version>
      <image id="0" name="a.png" width="10" height="8">
        <points label="dot" points="1.5,2.5;9.5,7.5" occluded="0"/>
        <polygon label="scalp" points="0,0;10,0;10,8;0,8"/>
      </image></annotations>"""
    export = tmp_path / "annotations.xml"
    export.write_text(xml)
    photo = write_photo(tmp_path / "images" / "a.png", 10, 8)
    report = import_cvat_xml(export, tmp_path / "images", tmp_path / "ds", info=DatasetInfo(copy_images=False))
    assert report.rows[0]["image"] == "../images/a.png"  # the original, relative to the dataset
    (entry,) = read_manifest(write_manifest(report.rows, tmp_path / "ds"))
    assert entry.image == photo.resolve() and entry.px_per_mm is None
    mask, dots = read_item(tmp_path / "ds", report.rows[0])
    assert (mask == SCALP).all()
    assert np.allclose(dots[["x", "y"]].to_numpy(), [[1.0, 2.0], [9.0, 7.0]])
    broken = tmp_path / "cut.xml"
    broken.write_text(xml[:80])
    with pytest.raises(LabelImportError, match=r"cut\.xml.*malformed XML"):
        import_cvat_xml(broken, tmp_path / "images", tmp_path / "ds")


# ------------------------------------------------------------------------------------------
# Label Studio
# ------------------------------------------------------------------------------------------


def test_label_studio_round_trip_with_upload_prefix(tmp_path):
    rng = np.random.default_rng(4)
    item = make_labels(rng, "1a2b3c4d-scalp.png", n_dots=25)
    write_photo(tmp_path / "images" / "scalp.png")  # the original name, without the upload prefix
    export = tmp_path / "project-1.json"
    export.write_text(json.dumps(export_label_studio([item], image_root="/data/upload/1/")))

    report = import_label_studio(export, tmp_path / "images", tmp_path / "ds")
    assert report.ok
    (row,) = report.rows
    assert row["image"] == "scalp/photo.png" and row["source"] == "labelstudio"
    mask, dots = read_item(tmp_path / "ds", row)
    assert np.array_equal(mask, item.mask)
    assert np.abs(dots[["x", "y"]].to_numpy() - item.dots).max() < 1e-3


def test_label_studio_brush_masks_are_refused(tmp_path):
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/upload/1/a.png"},
            "annotations": [
                {
                    "result": [
                        {
                            "type": "brushlabels",
                            "original_width": 8,
                            "original_height": 8,
                            "value": {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["scalp"]},
                        }
                    ]
                }
            ],
        }
    ]
    export = tmp_path / "brush.json"
    export.write_text(json.dumps(tasks))
    with pytest.raises(LabelImportError, match=r"brush\.json.*export the project as COCO"):
        import_label_studio(export, tmp_path, tmp_path / "ds")


# ------------------------------------------------------------------------------------------
# PNG masks + CSV points
# ------------------------------------------------------------------------------------------


def test_png_csv_with_value_map(tmp_path):
    write_photo(tmp_path / "img" / "a.jpg", 12, 10)
    raw = np.zeros((10, 12), np.uint8)
    raw[2:8, 2:10] = 128
    raw[4:6, 4:6] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(raw).save(tmp_path / "masks" / "a.png")
    (tmp_path / "dots").mkdir()
    pd.DataFrame({"dot_id": [7, 9], "x": [3.25, 8.0], "y": [4.0, 6.5]}).to_csv(tmp_path / "dots" / "a.csv", index=False)

    report = import_png_csv(
        tmp_path / "img",
        tmp_path / "ds",
        masks_dir=tmp_path / "masks",
        dots_dir=tmp_path / "dots",
        value_map={0: 0, 128: SCALP, 255: HAIR},
        info=DatasetInfo(split="val", view="global", client="c1", visit="v0"),
    )
    assert report.ok
    (row,) = report.rows
    facts = (row["split"], row["view"], row["client"], row["visit"], row["source"])
    assert facts == ("val", "global", "c1", "v0", "png+csv")
    assert row["image"] == "a/photo.jpg"
    mask, dots = read_item(tmp_path / "ds", row)
    assert np.array_equal(mask, np.select([raw == 128, raw == 255], [SCALP, HAIR], 0))
    assert dots["dot_id"].tolist() == [7, 9] and dots["x"].tolist() == [3.25, 8.0]
    ds = tmp_path / "ds"
    back = read_project_labels(ds / row["image"], ds / row["mask"], ds / row["dots"])
    assert np.array_equal(back.mask, mask) and back.dot_ids.tolist() == [7, 9]


def test_png_mask_with_bad_values_names_file_and_values(tmp_path):
    raw = np.zeros((6, 6), np.uint8)
    raw[1, 1], raw[2, 2] = 128, 7
    Image.fromarray(raw).save(tmp_path / "odd_mask.png")
    with pytest.raises(LabelImportError, match=r"odd_mask\.png.*\[7, 128\]"):
        read_png_mask(tmp_path / "odd_mask.png")
    with pytest.raises(LabelImportError, match=r"odd_mask\.png.*\[7\]"):
        read_png_mask(tmp_path / "odd_mask.png", value_map={0: 0, 128: 1})
    with pytest.raises(LabelImportError, match=r"gone\.png.*not found"):
        read_png_mask(tmp_path / "gone.png")


def test_png_mask_size_must_match_photo(tmp_path):
    write_photo(tmp_path / "img" / "a.png", 12, 10)
    write_photo(tmp_path / "img" / "b.png", 12, 10)
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.ones((10, 11), np.uint8)).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.ones((10, 12), np.uint8)).save(tmp_path / "masks" / "b.png")
    report = import_png_csv(tmp_path / "img", tmp_path / "ds", masks_dir=tmp_path / "masks")
    assert [r["image"] for r in report.rows] == ["b/photo.png"]
    (failure,) = report.failures
    assert failure.image == "a.png" and "a.png" in failure.reason and "11x10" in failure.reason


def test_csv_points_outside_or_without_columns_are_refused(tmp_path):
    (tmp_path / "pts.csv").write_text("x,y\n1,1\n2,2\n12.5,3\n")
    with pytest.raises(LabelImportError, match=r"pts\.csv: row 3:.*outside the 12x10 image"):
        read_points_csv(tmp_path / "pts.csv", width=12, height=10)
    xy, ids = read_points_csv(tmp_path / "pts.csv", width=13, height=10)
    assert xy.shape == (3, 2) and ids is None
    (tmp_path / "cols.csv").write_text("col,row\n1,1\n")
    with pytest.raises(LabelImportError, match=r"cols\.csv: needs columns x and y"):
        read_points_csv(tmp_path / "cols.csv", width=12, height=10)
    (tmp_path / "text.csv").write_text("x,y\n1,one\n")
    with pytest.raises(LabelImportError, match=r"text\.csv: row 1: y='one'"):
        read_points_csv(tmp_path / "text.csv", width=12, height=10)


# ------------------------------------------------------------------------------------------
# Photos, splits, manifest
# ------------------------------------------------------------------------------------------


def test_exif_rotated_photo_is_written_upright(tmp_path):
    stored = np.zeros((10, 16, 3), np.uint8)
    stored[0, 0] = 255  # top-left of the stored pixels
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 10 wide, 16 high
    (tmp_path / "images").mkdir()
    img.save(tmp_path / "images" / "phone.jpg", quality=100, exif=exif)
    doc = coco_doc(
        [{"id": 1, "file_name": "phone.jpg", "width": 10, "height": 16}],
        [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": [9.5, 0.5, 2]}],
        ["dot"],
    )
    export = tmp_path / "phone.json"
    export.write_text(json.dumps(doc))
    report = import_coco(export, tmp_path / "images", tmp_path / "ds")
    (row,) = report.rows
    assert row["image"] == "phone/photo.png"
    upright = np.asarray(Image.open(tmp_path / "ds" / row["image"]))
    assert upright.shape[:2] == (16, 10) and upright[0, 9].mean() > 200  # stored (0,0) is now top-right


def test_splits_are_deterministic_and_near_80_10_10():
    names = [f"IMG_{i:04d}.jpg" for i in range(3000)]
    splits = [assign_split(n) for n in names]
    assert splits == [assign_split(n) for n in names]
    share = pd.Series(splits).value_counts(normalize=True)
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.1) < 0.03


def test_write_manifest_append_replaces_rows_of_the_same_photo(tmp_path):
    row = {
        "image": "a/photo.png",
        "mask": "a/mask.png",
        "dots": "",
        "truth": "",
        "px_per_mm": float("nan"),
        "view": "closeup",
        "split": "train",
        "source": "coco",
        "client": "",
        "visit": "",
    }
    write_manifest([row, {**row, "image": "b/photo.png"}], tmp_path)
    path = write_manifest([{**row, "split": "test"}], tmp_path, append=True)
    table = pd.read_csv(path, keep_default_na=False)
    assert list(table.columns) == list(COLUMNS)
    assert sorted(table["image"]) == ["a/photo.png", "b/photo.png"]
    assert table.set_index("image").loc["a/photo.png", "split"] == "test"
