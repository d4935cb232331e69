"""The calibration card: definition, geometry, raster, print files and ``smp card``."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data.card import (
    CardSpec,
    load_card,
    marker_bits,
    marker_corners_mm,
    paper_rect_mm,
    patch_centres_mm,
    patch_rects_mm,
    reference_lab,
    reference_srgb,
    render_card,
)
from data.config import ConfigError
from pipeline import cli
from pipeline.card_print import write_card
from pipeline.errors import UserError

MM_PER_INCH = 25.4


@pytest.fixture(scope="module")
def card() -> CardSpec:
    return load_card()


def detect_marker(rgb8: np.ndarray) -> tuple[int, np.ndarray]:
    """(id, corners (4, 2) px) of the one DICT_4X4_50 marker in an 8-bit RGB image."""
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50), params)
    corners, ids, _ = detector.detectMarkers(cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY))
    assert ids is not None and len(ids) == 1, "expected exactly one marker"
    return int(np.ravel(ids)[0]), np.reshape(corners[0], (4, 2)).astype(float)


def side_px(corners: np.ndarray) -> float:
    return float(np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1).mean())


# --------------------------------------------------------------------------- definition


def test_default_card_matches_card_md(card: CardSpec) -> None:
    assert card.name == "SMP-CARD-1"
    assert card.marker.dictionary == "DICT_4X4_50" and card.marker.id == 0
    np.testing.assert_allclose(paper_rect_mm(card), [-3, -3, 45, 13])
    np.testing.assert_allclose(marker_corners_mm(card), [[0, 0], [10, 0], [10, 10], [0, 10]])
    rects = patch_rects_mm(card)
    assert rects.shape == (12, 4)
    np.testing.assert_allclose(rects[7], [18, 6, 22, 10])  # column 1, row 1
    np.testing.assert_allclose(patch_centres_mm(card)[0], [15, 2])
    srgb = np.rint(reference_srgb(card) * 255).astype(int)
    assert srgb[0].tolist() == [243, 243, 242] and srgb[11].tolist() == [231, 199, 31]
    assert [r.colorchecker for r in card.patches.references] == [19, 20, 21, 22, 23, 24, 1, 2, 13, 14, 15, 16]


def test_reference_lab_known_values(card: CardSpec) -> None:
    lab = reference_lab(card)
    # neutrals have a = b = 0 when R = G = B; L* of sRGB 200 is 80.60
    np.testing.assert_allclose(lab[1], [80.60, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[5], [21.70, 0, 0], atol=0.01)
    # ColorChecker blue (sRGB 56, 61, 150) is roughly L 30, a 26, b -50
    np.testing.assert_allclose(lab[8], [30.35, 26.43, -49.67], atol=0.05)


def test_marker_bits_have_a_black_border(card: CardSpec) -> None:
    bits = marker_bits(card)
    assert bits.shape == (6, 6) and bits.dtype == np.uint8
    assert not bits[0].any() and not bits[-1].any() and not bits[:, 0].any() and not bits[:, -1].any()
    assert not np.array_equal(marker_bits(card, 1), bits)
    with pytest.raises(ConfigError, match="49"):
        marker_bits(card, 50)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"marker": {"id": 50}}, "0-49"),
        ({"marker": {"size_mm": -1}}, "size_mm"),
        ({"patches": {"origin_mm": [40, 0]}}, "inside paper"),
        ({"paper_mm": [-3, -3, 45, 8]}, "inside paper"),
        ({"marker": {"dictionary": "DICT_NOPE"}}, "DICT_NOPE"),
        ({"colour": 1}, "unknown key"),
    ],
)
def test_invalid_card_is_a_config_error(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_card(overrides=override)


def test_bad_reference_colour_in_card_file(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "configs/card/smp-card-1.yaml").read_text()
    bad = tmp_path / "card.yaml"
    bad.write_text(text.replace("srgb: [243, 243, 242]", "srgb: [243, 256, 242]"))
    with pytest.raises(ConfigError, match="srgb"):
        load_card(bad)


# --------------------------------------------------------------------------- references


def test_user_references_replace_printed_colours(card: CardSpec, tmp_path: Path) -> None:
    refs = tmp_path / "measured.yaml"
    refs.write_text("white: [240, 241, 236]\n3: [119, 120, 118]\nlab:\n  black: [21.5, 0.2, -0.6]\n")
    measured = load_card(references=refs)
    srgb = np.rint(reference_srgb(measured) * 255).astype(int)
    assert srgb[0].tolist() == [240, 241, 236]
    assert srgb[3].tolist() == [119, 120, 118]
    np.testing.assert_allclose(reference_lab(measured)[5], [21.5, 0.2, -0.6])
    # a Lab reference is printed/rendered as its nearest 8-bit sRGB
    assert list(measured.patches.references[5].srgb) == srgb[5].tolist()
    # untouched patches keep their defaults
    np.testing.assert_array_equal(reference_srgb(measured)[6:], reference_srgb(card)[6:])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("whitee: [1, 2, 3]\n", "whitee"),
        ("12: [1, 2, 3]\n", "out of range"),
        ("white: [1, 2]\n", "white"),
        ("white: [1.5, 2, 3]\n", "white"),
        ("white: [1, 2, 3]\n0: [1, 2, 3]\n", "twice"),
        ("lab:\n  red: [120, 0, 0]\n", "red"),
    ],
)
def test_bad_user_references(tmp_path: Path, content: str, message: str) -> None:
    refs = tmp_path / "refs.yaml"
    refs.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_card(references=refs)


def test_missing_reference_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_card(references=tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- raster


def test_rendered_png_at_600_dpi_has_true_scale_and_colours(card: CardSpec, tmp_path: Path) -> None:
    path = write_card(tmp_path / "card.png", card, dpi=600)
    image = Image.open(path)
    assert image.mode == "RGB"
    assert image.info["dpi"] == pytest.approx((600, 600), abs=0.01)
    rgb8 = np.asarray(image)
    ppm = 600 / MM_PER_INCH

    marker_id, corners = detect_marker(rgb8)
    assert marker_id == 0
    assert side_px(corners) / ppm == pytest.approx(10.0, rel=0.005)

    x0, y0 = card.paper_mm[:2]
    centres = np.floor((patch_centres_mm(card) - (x0, y0)) * ppm).astype(int)
    sampled = rgb8[centres[:, 1], centres[:, 0]].astype(float) / 255.0
    np.testing.assert_allclose(sampled, reference_srgb(card), atol=1 / 255 + 1e-9)


@pytest.mark.parametrize("marker_id", [0, 17])
def test_render_at_non_integer_scale(card: CardSpec, marker_id: int) -> None:
    ppm = 13.7
    raster = render_card(card, ppm, marker_id=marker_id)
    assert raster.rgb.dtype == np.float32 and raster.alpha.dtype == np.float32
    found, corners = detect_marker(np.rint(raster.rgb * 255).astype(np.uint8))
    assert found == marker_id
    assert side_px(corners) / ppm == pytest.approx(10.0, rel=0.01)
    # the detected corners are where the mm frame says they are (pixel-centre convention)
    expected = cv2.perspectiveTransform(marker_corners_mm(card)[None], raster.mm_to_pixel())[0]
    assert np.abs(corners - expected).max() < 0.5


def test_render_geometry_is_exact(card: CardSpec) -> None:
    """Area antialiasing is exact: coverages integrate to the true areas and lengths."""
    ppm = 13.7
    raster = render_card(card, ppm)
    x0, y0, x1, y1 = card.paper_mm
    assert raster.alpha.sum() / ppm**2 == pytest.approx((x1 - x0) * (y1 - y0), rel=1e-6)
    assert raster.alpha.min() == 0.0 and raster.alpha.max() == pytest.approx(1.0)
    assert raster.origin_mm == pytest.approx((x0 - 1 / ppm, y0 - 1 / ppm))
    # Ink along the pixel row lying inside the marker's top border module (y in [0, 10/6] mm):
    # linear-light darkness integrates to exactly the marker's 10 mm width.
    row = int(np.ceil((0.0 - raster.origin_mm[1]) * ppm))
    assert (row + 1) / ppm + raster.origin_mm[1] < 10 / 6
    encoded = raster.rgb[row, :, 1].astype(float)
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    assert (1.0 - linear)[: int((12.0 - raster.origin_mm[0]) * ppm)].sum() / ppm == pytest.approx(10.0, abs=1e-4)


@pytest.mark.slow  # a wall-clock assertion: run in CI's slow pass
def test_render_is_fast(card: CardSpec) -> None:
    render_card(card, 40.0)
    start = time.perf_counter()
    raster = render_card(card, 40.0)
    elapsed = time.perf_counter() - start
    assert raster.rgb.shape == (642, 1922, 3)
    assert elapsed < 0.15  # ~20 ms here; generous for loaded CI machines
    assert not raster.rgb.flags.writeable


# --------------------------------------------------------------------------- vector files


def test_svg_has_physical_size(card: CardSpec, tmp_path: Path) -> None:
    path = write_card(tmp_path / "card.svg", card, marker_id=3)
    root = ET.parse(path).getroot()
    assert root.get("width") == "48mm" and root.get("height") == "16mm"
    assert [float(v) for v in root.get("viewBox").split()] == [-3, -3, 48, 16]
    ns = {"s": "http://www.w3.org/2000/svg"}
    patches = root.findall("s:g/s:rect", ns)
    assert len(patches) == 12 and patches[0].get("fill") == "#f3f3f2"
    label = root.find("s:text", ns)
    assert label is not None and "id 3" in label.text and "10 mm" in label.text
    # the label sits below the marker and the patches, inside the paper
    assert float(label.get("y")) > 10 + float(label.get("font-size")) * 0.72
    assert float(label.get("x")) + float(label.get("textLength")) <= 45


def _rasterise_svg_marker(path: Path, ppm: float) -> np.ndarray:
    """Draw the SVG's marker path and rects with OpenCV (only M/h/v/z and rect are used)."""
    root = ET.parse(path).getroot()
    x0, y0, w, h = (float(v) for v in root.get("viewBox").split())
    image = np.full((int(round(h * ppm)), int(round(w * ppm)), 3), 255, np.uint8)
    d = root.find("{http://www.w3.org/2000/svg}path").get("d")
    for x, y, s in re.findall(r"M([-\d.]+) ([-\d.]+)h([-\d.]+)v", d):
        a = (np.array([float(x), float(y)]) - (x0, y0)) * ppm
        b = a + float(s) * ppm
        cv2.rectangle(image, tuple(np.rint(a).astype(int)), tuple(np.rint(b).astype(int) - 1), (0, 0, 0), -1)
    return image


def test_svg_marker_is_the_dictionary_marker(card: CardSpec, tmp_path: Path) -> None:
    path = write_card(tmp_path / "card.svg", card, marker_id=7)
    found, corners = detect_marker(_rasterise_svg_marker(path, 20.0))
    assert found == 7
    assert side_px(corners) / 20.0 == pytest.approx(10.0, rel=0.02)


def test_pdf_page_is_the_paper(card: CardSpec, tmp_path: Path) -> None:
    path = write_card(tmp_path / "card.pdf", card)
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    box = re.search(rb"/MediaBox \[\s*([-\d.]+) ([-\d.]+) ([-\d.]+) ([-\d.]+)\s*\]", data)
    assert box is not None
    llx, lly, urx, ury = (float(v) for v in box.groups())
    points_per_mm = 72 / MM_PER_INCH
    assert (llx, lly) == (0, 0)
    assert urx == pytest.approx(48 * points_per_mm, abs=0.01)
    assert ury == pytest.approx(16 * points_per_mm, abs=0.01)
    # the cross-reference table points at every object
    startxref = int(re.search(rb"startxref\s+(\d+)", data).group(1))
    assert data[startxref:].startswith(b"xref")
    count = int(re.search(rb"xref\s+0 (\d+)", data).group(1))
    offsets = re.findall(rb"(\d{10}) 00000 n ", data[startxref:])
    assert len(offsets) == count - 1
    for number, offset in enumerate(offsets, start=1):
        assert data[int(offset) :].startswith(f"{number} 0 obj".encode())
    length = int(re.search(rb"/Length (\d+)", data).group(1))
    stream_start = data.index(b"stream\n") + len(b"stream\n")
    assert data[stream_start + length :].startswith(b"\nendstream")


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler's pdftoppm not installed")
def test_pdf_renders_with_true_scale(card: CardSpec, tmp_path: Path) -> None:
    path = write_card(tmp_path / "card.pdf", card)
    subprocess.run(["pdftoppm", "-r", "600", "-png", "-singlefile", str(path), str(tmp_path / "page")], check=True)
    _, corners = detect_marker(np.asarray(Image.open(tmp_path / "page.png").convert("RGB")))
    assert side_px(corners) / (600 / MM_PER_INCH) == pytest.approx(10.0, rel=0.005)


@pytest.mark.parametrize(("name", "dpi"), [("card.jpg", 600), ("card", 600), ("card.png", 71), ("card.png", 2401)])
def test_write_card_rejects_bad_requests(card: CardSpec, tmp_path: Path, name: str, dpi: int) -> None:
    with pytest.raises(UserError):
        write_card(tmp_path / name, card, dpi=dpi)
    assert not (tmp_path / name).exists()


# --------------------------------------------------------------------------- CLI


@pytest.fixture()
def card_cli(monkeypatch: pytest.MonkeyPatch):
    """``smp`` with only the card command registered (other commands are tested elsewhere)."""
    monkeypatch.setattr(cli, "COMMANDS", ("card",))
    return cli.main


def test_cli_writes_card(card_cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.png"
    assert card_cli(["card", "--out", str(out), "--dpi", "300"]) == 0
    assert Image.open(out).size == (round(48 * 300 / MM_PER_INCH), round(16 * 300 / MM_PER_INCH))
    printed = capsys.readouterr().out
    assert str(out) in printed and "48 x 16 mm" in printed


def test_cli_options(card_cli, tmp_path: Path) -> None:
    refs = tmp_path / "refs.yaml"
    refs.write_text("red: [180, 50, 50]\n")
    out = tmp_path / "c.svg"
    assert card_cli(["card", "--out", str(out), "--marker-id", "9", "--references", str(refs)]) == 0
    text = out.read_text()
    assert "#b43232" in text and "id 9" in text


@pytest.mark.parametrize(
    "extra",
    [
        ["--out", "c.txt"],
        ["--out", "c.png", "--dpi", "10"],
        ["--out", "c.png", "--marker-id", "50"],
        ["--out", "c.png", "--references", "nope.yaml"],
    ],
)
def test_cli_errors_exit_2(card_cli, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    args = ["card", *[str(tmp_path / a) if a.startswith(("c.", "nope")) else a for a in extra]]
    assert card_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smp card: error:") and "\n" not in err
