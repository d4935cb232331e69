"""smp assess end to end: output contract, calibration fallbacks, ROI, bad input in a batch."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data.card import load_card
from data.config import ConfigError, load_settings
from data.flags import load_flag_settings
from data.synth.generate import generate_images
from data.synth.settings import SynthSettings
from pipeline.cli import main
from pipeline.one_photo.assess import Assessor
from pipeline.one_photo.assessment import SCHEMA, write_assessment
from pipeline.one_photo.pigment import DOT_COLUMNS
from pipeline.one_photo.settings import load_assess_settings

ROOT = Path(__file__).resolve().parent.parent
SCENE = [
    "image.width=640",
    "image.height=480",
    "camera.px_per_mm=[14, 18]",
    "card.probability=1.0",
    # the easy benchmark suite's scalp: light skin, short sparse hair, few aged dots
    "skin.fitzpatrick=[1, 3]",
    "hair.long_fraction=[0, 0.05]",
    "dots.aged_fraction=[0, 0.1]",
    "hair.follicle_density_per_cm2=[20, 60]",
    "dots.contrast_dl=[22, 36]",
]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    cfg = load_settings(SynthSettings, None, SCENE, default="synth/closeup.yaml")
    items = list(generate_images(out, 2, cfg, load_card(), load_flag_settings(), seed=21))
    nocard_cfg = load_settings(SynthSettings, None, SCENE + ["card.probability=0.0"], default="synth/closeup.yaml")
    nocard = list(generate_images(out / "nocard", 1, nocard_cfg, load_card(), load_flag_settings(), seed=22))
    return [it.folder for it in items], nocard[0].folder


@pytest.fixture(scope="module")
def classical():
    return Assessor(load_assess_settings(None, ["segment.method=classical"]))


def _photo(folder: Path) -> Path:
    return folder / json.loads((folder / "truth.json").read_text())["photo"]


def test_output_contract(scenes, classical, tmp_path):
    folder = scenes[0][0]
    truth = json.loads((folder / "truth.json").read_text())
    a = classical.assess_file(_photo(folder))
    out = write_assessment(a, tmp_path / "one")
    doc = json.loads((out / "assessment.json").read_text())
    assert doc["schema"] == SCHEMA
    assert doc["photo"]["sha256"] == a.photo.sha256 and doc["photo"]["view"] == "closeup"
    assert doc["photo"]["width"] == 640 and doc["photo"]["height"] == 480
    cal = doc["calibration"]
    assert cal["scale_source"] == "card" and cal["colour_source"] == "card"
    assert abs(cal["px_per_mm"] / truth["px_per_mm"] - 1) < 0.01
    assert cal["residual_de00_mean"] < 1.5
    for key in (
        "scalp_fraction",
        "show_through",
        "dot_count",
        "dot_density_per_cm2",
        "dot_diameter_mm_median",
        "nn_distance_mm_median",
        "spacing_cv",
        "clark_evans_r",
        "blue_shift_fraction",
        "faded_fraction",
        "spread_fraction",
    ):
        assert key in doc["metrics"]
    assert doc["quality"]["ok"] in (True, False) and isinstance(doc["warnings"], list)
    assert {"load", "calibrate", "segment", "dots", "pigment", "metrics", "total", "write"} <= set(doc["timings_s"])
    assert doc["model"]["kind"] == "classical"
    dots = pd.read_csv(out / "dots.csv")
    assert list(dots.columns) == DOT_COLUMNS
    assert len(dots) == doc["metrics"]["dot_count"] or len(dots) >= doc["metrics"]["dot_count"]
    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (480, 640) and set(np.unique(mask)) <= {0, 1, 2}
    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape == (480, 640, 3)
    assert not list(out.glob(".*.tmp"))


def test_dots_are_found_and_coloured(scenes, classical):
    """Classical baseline on an easy synthetic close-up: most dots found, colours sane."""
    from models.scoring import match_dots

    folder = scenes[0][0]
    truth = json.loads((folder / "truth.json").read_text())
    a = classical.assess_file(_photo(folder))
    true = pd.read_csv(folder / "dots.csv")
    m = match_dots(a.dots[["x", "y"]].to_numpy(), true[["x", "y"]].to_numpy(), 0.1 * truth["px_per_mm"])
    # the model-free baseline is weak next to the model (BENCHMARKS.md), but it must find dots
    assert 2 * m.tp / (len(true) + len(a.dots)) >= 0.5
    assert (a.dots["contrast_dL"].dropna() > 0).mean() > 0.9  # dots are darker than their skin
    assert a.dots["skin_L"].dropna().between(20, 95).all()
    ppm = truth["px_per_mm"]
    assert abs(a.metrics.dot_diameter_mm_median - true.diameter_mm.median()) < 0.1 * 20 / ppm + 0.05


def test_model_segmenter_runs(scenes):
    a = Assessor(load_assess_settings(None, ["segment.method=model", "segment.threads=1"]))
    r = a.assess_file(_photo(scenes[0][1]))
    assert r.model["kind"] == "model" and len(r.model["sha256"]) == 64
    assert r.model["precision"] in ("float32", "bfloat16")  # "auto" resolved for this machine and recorded
    with pytest.raises(ValueError, match="needs a GPU"):  # the user's error, not a quiet classical fallback
        Assessor(load_assess_settings(None, ["segment.method=model", "segment.precision=float16"]))
    assert r.metrics.dot_count > 0 and r.metrics.scalp_fraction > 0.3


def test_no_card_fallbacks(scenes, classical):
    photo = _photo(scenes[1])
    a = classical.assess_file(photo)
    assert a.calibration.scale.source == "none" and a.metrics.dot_density_per_cm2 is None
    assert any("no calibration card" in w for w in a.warnings)
    assert any("not corrected" in w for w in a.warnings)
    b = classical.assess_file(photo, px_per_mm=16.0)
    assert b.calibration.scale.source == "manual" and b.metrics.dot_density_per_cm2 is not None


def test_roi_polygon_limits_the_region(scenes, classical):
    photo = _photo(scenes[0][0])
    full = classical.assess_file(photo)
    half = classical.assess_file(photo, roi_polygon=np.array([[0, 0], [320, 0], [320, 480], [0, 480]]))
    assert half.metrics.dot_count < full.metrics.dot_count
    on_card = classical.assess_file(
        photo, roi_polygon=np.array([[-50, -50], [100, -50], [100, 100], [-50, 100.0]]), roi_units="card_mm"
    )
    assert on_card.roi_polygon_px is not None and on_card.roi_polygon_px.shape == (4, 2)


def test_no_scalp_photo_warns(tmp_path, classical):
    wall = np.full((300, 400, 3), (90, 110, 200), np.uint8)  # a blue wall: no skin anywhere
    wall[::2] = 0  # and a texture that is nothing like skin
    path = tmp_path / "wall.png"
    Image.fromarray(wall).save(path)
    a = classical.assess_file(path, px_per_mm=15)
    assert "no_scalp" in a.quality.warnings or a.metrics.dot_count == 0


def test_blurred_photo_is_out_of_focus(scenes, classical, tmp_path):
    img = cv2.imread(str(_photo(scenes[0][0])))
    blurred = cv2.GaussianBlur(img, (0, 0), 4.0)
    path = tmp_path / "blurred.png"
    cv2.imwrite(str(path), blurred)
    sharp = classical.assess_file(_photo(scenes[0][0]))
    a = classical.assess_file(path, px_per_mm=16)
    assert "out_of_focus" in a.quality.warnings and not a.quality.ok
    assert "out_of_focus" not in sharp.quality.warnings


def _bad_inputs(tmp_path: Path, good: Path) -> dict[str, Path]:
    files = {}
    data = good.read_bytes()
    files["truncated"] = tmp_path / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.jpg"
    files["text"].write_text("this is not a photo\n")
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    files["bomb"] = tmp_path / "bomb.png"
    files["bomb"].write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    files["missing"] = tmp_path / "missing.jpg"
    return files


def test_batch_with_bad_photos(scenes, tmp_path, capsys):
    good = _photo(scenes[0][0])
    rgb = np.asarray(Image.open(good).convert("RGB"))
    grey = tmp_path / "grey.png"
    Image.fromarray(rgb).convert("L").save(grey)
    tiff16 = tmp_path / "deep.tiff"
    cv2.imwrite(str(tiff16), (rgb[..., ::-1].astype(np.uint16) * 257))
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=95)
    bad = _bad_inputs(tmp_path, good)
    photos = [good, bad["truncated"], grey, bad["empty"], tiff16, bad["text"], cmyk, bad["bomb"], bad["missing"]]
    code = main(
        [
            "assess",
            *map(str, photos),
            "--out",
            str(tmp_path / "out"),
            "--set",
            "segment.method=classical",
            "--set",
            "overlay=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    failed = [line for line in err.splitlines() if line.startswith("smp assess: failed:")]
    assert len(failed) == 5, err
    assert "5 of 9 photo(s) failed" in err
    assert any("truncated" in line for line in failed) and any("empty" in line for line in failed)
    assert any("60000" in line or "pixels" in line for line in failed)
    done = sorted(p.name for p in (tmp_path / "out").iterdir() if (p / "assessment.json").exists())
    assert done == ["cmyk", "deep", "grey", "photo"]
    from pipeline.commands.assess import output_names

    assert output_names([Path("a/photo.jpg"), Path("b/photo.jpg"), Path("c/x.png")]) == ["a_photo", "b_photo", "x"]
    grey_doc = json.loads((tmp_path / "out" / "grey" / "assessment.json").read_text())
    assert any("grayscale" in w for w in grey_doc["warnings"])
    deep_doc = json.loads((tmp_path / "out" / "deep" / "assessment.json").read_text())
    assert deep_doc["photo"]["bit_depth"] == 16
    assert deep_doc["calibration"]["scale_source"] == "card"


def test_no_exif_in_outputs(scenes, tmp_path, classical):
    rgb = np.asarray(Image.open(_photo(scenes[0][0])).convert("RGB"))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    gps = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    exif[0x8825] = gps
    path = tmp_path / "gps.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    out = write_assessment(classical.assess_file(path), tmp_path / "gps")
    for f in out.iterdir():
        blob = f.read_bytes()
        assert b"SecretCam" not in blob and b"GPS" not in blob
    for img in ("mask.png", "overlay.png"):
        assert not Image.open(out / img).getexif()


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="dots.min_score"):
        load_assess_settings(None, ["dots.min_score=2"])
    code = main(["assess", "x.jpg", "--out", str(tmp_path), "--set", "segment.method=magic"])
    assert code == 2 and "segment.method" in capsys.readouterr().err
    code = main(["assess", "x.jpg", "--out", str(tmp_path), "--px-per-mm", "-3"])
    assert code == 2 and "--px-per-mm" in capsys.readouterr().err


def test_cli_help_lists_assess():
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "assess", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0 and "--px-per-mm" in res.stdout and "dots.csv" in res.stdout


def test_overlay_drawn_in_two_bands_equals_one_pass(monkeypatch):
    """Rings drawn by two threads into halves of the photo give the same pixels as drawing them in one pass."""
    from pipeline.one_photo import overlay as O

    rng = np.random.default_rng(3)
    h, w, n = 400, 500, 3000
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (h, w)).astype(np.uint8)
    dots = pd.DataFrame(
        {
            "x": rng.random(n) * w,
            "y": rng.random(n) * h,
            "diameter_px": rng.random(n) * 10 + 2,
            "blue_shift": rng.random(n) < 0.1,
            "faded": rng.random(n) < 0.1,
            "spread": rng.random(n) < 0.1,
        }
    )
    dots.loc[:50, "y"] = h / 2 + rng.normal(0, 3, 51)  # rings across the seam
    banded = O.render_overlay(rgb, labels, dots, 10.0, title="t")
    one_pass = O._draw_rings
    monkeypatch.setattr(O, "_draw_rings", lambda img, rings: one_pass(img, rings, min_parallel=10**9))
    np.testing.assert_array_equal(banded, O.render_overlay(rgb, labels, dots, 10.0, title="t"))
    tinted = O._tinted(rgb, labels, 0.25)  # the tint tables equal the per-pixel formula
    scalp = labels == 1
    expected = (rgb[scalp] * 0.75 + np.array(O._TINT[1]) * 0.25).astype(np.uint8)
    np.testing.assert_array_equal(tinted[scalp], expected)
    np.testing.assert_array_equal(tinted[labels == 0], (rgb[labels == 0] * 0.6).astype(np.uint8))


def test_a_whole_head_view_has_no_show_through_but_its_scalp_fraction(scenes, classical):
    """In a whole-head view no pixel is bare skin (dots and strands are finer than a pixel): its
    show-through is null with a warning, never a guess; the scalp fraction is still measured."""
    photo = _photo(scenes[0][0])
    closeup = classical.assess_file(photo)
    assert closeup.metrics.show_through is not None
    whole = Assessor(load_assess_settings(None, ["segment.method=classical", "view=global"])).assess_file(photo)
    assert whole.view == "global" and whole.metrics.show_through is None
    assert any(w.startswith("show_through not measured in a whole-head view") for w in whole.warnings)
    assert whole.metrics.scalp_fraction is not None and whole.metrics.dot_count is None


def test_every_close_up_is_segmented_at_one_scale():
    """Close-ups coarser than segment.min_px_per_mm are enlarged, finer than max_px_per_mm shrunk, to
    the canonical scale before the segmenter sees them; the labels come back at the photo's size. A
    whole-head view is segmented as it is."""
    from pipeline.one_photo.segment import Segmentation

    seen = []

    class Recorder:
        def describe(self):
            return {"name": "recorder", "version": "0", "sha256": "-", "path": "-", "kind": "model"}

        def __call__(self, rgb, view="closeup"):
            seen.append(rgb.shape[:2])
            return Segmentation(np.ones(rgb.shape[:2], np.uint8), np.zeros((0, 2)), np.zeros(0), "model")

    a = Assessor(load_assess_settings(None, ["segment.method=classical"]))
    a.segmenter = Recorder()
    c = a.settings.detect.canonical_px_per_mm
    rgb = np.full((100, 120, 3), 128, np.uint8)
    for ppm, view, expect in (
        (c / 2, "closeup", (200, 240)),
        (c * 2, "closeup", (50, 60)),
        (c, "closeup", (100, 120)),
        (c / 2, "global", (100, 120)),
    ):
        assert a.segment(rgb, ppm, view=view).labels.shape == (100, 120)
        assert seen[-1] == expect


def test_the_overlay_names_the_photo_as_the_subject_knows_it(scenes, classical, tmp_path, monkeypatch):
    """The web app assesses a stored file named by its hash: the overlay's title is the uploaded name."""
    import pipeline.one_photo.assessment as assessment_module
    from pipeline.subject import Subject

    titles = []
    real = assessment_module.render_overlay

    def spy(*args, **kwargs):
        titles.append(kwargs.get("title"))
        return real(*args, **kwargs)

    monkeypatch.setattr(assessment_module, "render_overlay", spy)
    a = classical.assess_file(_photo(scenes[0][0]))
    write_assessment(a, tmp_path / "named", subject=Subject(photo="crown-visit-2.jpg"))
    write_assessment(a, tmp_path / "plain")
    assert titles[0].startswith("crown-visit-2.jpg ") and titles[1].startswith(Path(a.photo.path).name + " ")
    doc = json.loads((tmp_path / "named" / "assessment.json").read_text())
    assert doc["subject"] is None  # a name alone is no subject: assessment.json keeps its contract
