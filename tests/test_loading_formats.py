"""pipeline.one_photo.loading: formats and round trips, 16-bit photos, the Photo's identity and API, and speed."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from loading_helpers import _encoded, _exif_with_dates, _pattern, _quadrants, _write
from PIL import Image
from pydantic import ValidationError

from pipeline.errors import UserError
from pipeline.one_photo.loading import LoadSettings, Photo, PhotoError, load_photo, read_photo_bytes

# ---------------------------------------------------------------------------
# formats and round trips


def test_jpeg_round_trip(tmp_path: Path) -> None:
    pixels = _pattern()
    path = _write(tmp_path / "photo.jpg", Image.fromarray(pixels), "JPEG", quality=95, subsampling=0)
    photo = load_photo(path)
    assert (photo.width, photo.height) == (40, 30)
    assert photo.rgb.shape == (30, 40, 3)
    assert np.abs(photo.rgb.astype(int) - pixels).max() <= 12
    assert photo.source_mode == "RGB" and photo.bit_depth == 8
    assert photo.path == str(path)
    assert photo.notes == () and photo.icc_converted is False and photo.capture_time is None


@pytest.mark.parametrize(
    ("fmt", "params", "suffix"),
    [
        ("PNG", {}, ".png"),
        ("TIFF", {}, ".tif"),
        ("TIFF", {"compression": "tiff_lzw"}, ".tiff"),
        ("WEBP", {"lossless": True}, ".webp"),
    ],
)
def test_lossless_formats_round_trip_exactly(tmp_path: Path, fmt: str, params: dict, suffix: str) -> None:
    pixels = _pattern()
    photo = load_photo(_write(tmp_path / f"photo{suffix}", Image.fromarray(pixels), fmt, **params))
    np.testing.assert_array_equal(photo.rgb, pixels)
    assert photo.notes == ()


def test_lossy_webp_loads(tmp_path: Path) -> None:
    pixels = _pattern()
    photo = load_photo(_write(tmp_path / "photo.webp", Image.fromarray(pixels), "WEBP", quality=95))
    assert photo.rgb.shape == (30, 40, 3)
    assert np.abs(photo.rgb.astype(int) - pixels).mean() < 10


def test_format_is_decided_by_content_not_extension(tmp_path: Path) -> None:
    pixels = _pattern()
    photo = load_photo(_write(tmp_path / "really_a_png.jpg", Image.fromarray(pixels), "PNG"))
    np.testing.assert_array_equal(photo.rgb, pixels)


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_unsupported_formats_are_refused_by_name(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path / "photo.jpg", Image.fromarray(_pattern()), fmt)
    expected = rf"photo\.jpg: {fmt} images are not supported \(use JPEG, PNG, TIFF or WebP\)"
    with pytest.raises(PhotoError, match=expected):
        load_photo(path)


def test_float_tiff_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "depth.tif", Image.fromarray(np.zeros((4, 4), np.float32)), "TIFF")
    with pytest.raises(PhotoError, match=r"depth\.tif: pixel format 'F' is not supported"):
        load_photo(path)


def test_multi_page_tiff_uses_first_page_and_says_so(tmp_path: Path) -> None:
    first, second = Image.new("RGB", (8, 6), (10, 20, 30)), Image.new("RGB", (8, 6), (200, 100, 50))
    path = tmp_path / "pages.tif"
    first.save(path, "TIFF", save_all=True, append_images=[second])
    photo = load_photo(path)
    assert tuple(photo.rgb[0, 0]) == (10, 20, 30)
    assert "file holds 2 images; the first was used" in photo.notes


def test_mpo_jpeg_from_phones_loads_first_picture(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (16, 8), (250, 5, 5)).save(path, "MPO", save_all=True, append_images=[Image.new("RGB", (16, 8))])
    photo = load_photo(path)
    assert np.abs(photo.rgb[4, 8].astype(int) - (250, 5, 5)).max() <= 8
    assert any("2 images" in note for note in photo.notes)


# ---------------------------------------------------------------------------
# 16-bit


def test_16bit_rgb_png_is_scaled_with_rounding(tmp_path: Path) -> None:
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[0, 0] = (65535, 32896, 0)
    rgb16[0, 1] = (257 * 100 + 128, 257 * 100 + 129, 257)  # 100.498 -> 100, 100.502 -> 101
    rgb16[0, 2] = (1000, 2000, 3000)
    ok, buf = cv2.imencode(".png", rgb16[..., ::-1])  # cv2 writes BGR
    assert ok
    path = tmp_path / "deep.png"
    path.write_bytes(buf.tobytes())
    photo = load_photo(path)
    assert photo.bit_depth == 16 and photo.source_mode == "RGB"
    assert tuple(photo.rgb[0, 0]) == (255, 128, 0)
    assert tuple(photo.rgb[0, 1]) == (100, 101, 1)
    assert tuple(photo.rgb[0, 2]) == (4, 8, 12)  # Pillow's own 8-bit view would truncate to (3, 7, 11)
    assert "16-bit photo reduced to 8 bits" in photo.notes


def test_16bit_rgb_tiff(tmp_path: Path) -> None:
    rgb16 = np.full((4, 5, 3), (65535, 32896, 514), np.uint16)
    ok, buf = cv2.imencode(".tiff", rgb16[..., ::-1])
    assert ok
    path = tmp_path / "deep.tif"
    path.write_bytes(buf.tobytes())
    photo = load_photo(path)
    assert photo.bit_depth == 16
    assert photo.rgb.shape == (4, 5, 3)
    assert tuple(photo.rgb[2, 2]) == (255, 128, 2)


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("TIFF", ".tif")])
def test_16bit_grayscale(tmp_path: Path, fmt: str, suffix: str) -> None:
    gray16 = np.array([[65535, 32896, 0, 300]], np.uint16)
    photo = load_photo(_write(tmp_path / f"gray16{suffix}", Image.fromarray(gray16), fmt))
    assert photo.source_mode.startswith("I;16") and photo.bit_depth == 16
    np.testing.assert_array_equal(photo.rgb[0, :, 0], [255, 128, 0, 1])
    assert (photo.rgb == photo.rgb[..., :1]).all()
    assert "grayscale photo: colour measurements are not meaningful" in photo.notes


def test_16bit_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    bgra16 = np.zeros((2, 2, 4), np.uint16)
    bgra16[..., 2] = 65535  # red
    bgra16[..., 3] = 65535
    bgra16[1, 1, 3] = 0  # fully transparent pixel
    ok, buf = cv2.imencode(".png", bgra16)
    assert ok
    path = tmp_path / "deep_alpha.png"
    path.write_bytes(buf.tobytes())
    photo = load_photo(path)
    assert tuple(photo.rgb[0, 0]) == (255, 0, 0)
    assert tuple(photo.rgb[1, 1]) == (255, 255, 255)
    assert "alpha channel dropped (composited on white)" in photo.notes


def test_truncated_16bit_png_is_refused(tmp_path: Path) -> None:
    rgb16 = np.random.default_rng(1).integers(0, 65535, (64, 64, 3)).astype(np.uint16)
    ok, buf = cv2.imencode(".png", rgb16)
    data = buf.tobytes()
    with pytest.raises(PhotoError, match=r"cut\.png: truncated or corrupt PNG data"):
        read_photo_bytes(data[: len(data) // 2], "cut.png")


# ---------------------------------------------------------------------------
# identity, immutability, API contracts


def test_sha256_is_of_the_file_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path / "photo.png", Image.fromarray(_pattern()), "PNG")
    assert load_photo(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_array_is_read_only_uint8_c_contiguous(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated photos too
    path = _write(tmp_path / "photo.jpg", Image.fromarray(_pattern()), "JPEG", exif=exif)
    rgb = load_photo(path).rgb
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous and not rgb.flags.writeable
    with pytest.raises(ValueError):
        rgb[0, 0, 0] = 1


def test_photo_is_frozen(tmp_path: Path) -> None:
    photo = load_photo(_write(tmp_path / "photo.png", Image.fromarray(_pattern()), "PNG"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        photo.width = 1  # type: ignore[misc]


def test_photo_checks_its_array() -> None:
    with pytest.raises(ValueError):
        Photo(rgb=np.zeros((2, 3), np.uint8), path="p", sha256="0", width=3, height=2, source_mode="L", bit_depth=8)
    with pytest.raises(ValueError):
        Photo(
            rgb=np.zeros((2, 3, 3), np.uint8), path="p", sha256="0", width=2, height=3, source_mode="RGB", bit_depth=8
        )


def test_read_photo_bytes_equals_load_photo(tmp_path: Path) -> None:
    exif = _exif_with_dates(original="2024:05:06 07:08:09")
    exif[0x0112] = 8
    path = _write(tmp_path / "photo.jpg", Image.fromarray(_quadrants()), "JPEG", exif=exif)
    from_path = load_photo(path)
    from_bytes = read_photo_bytes(path.read_bytes(), str(path))
    for f in dataclasses.fields(Photo):
        a, b = getattr(from_path, f.name), getattr(from_bytes, f.name)
        if f.name == "rgb":
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b, f.name


def test_photo_error_is_a_one_line_user_error_that_pickles() -> None:
    with pytest.raises(PhotoError) as info:
        read_photo_bytes(b"", "odd\nname.jpg")
    err = info.value
    assert isinstance(err, UserError)
    assert "\n" not in str(err) and str(err).endswith(": file is empty")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is PhotoError and str(clone) == str(err) and clone.reason == "file is empty"


def test_load_settings_are_validated_and_frozen() -> None:
    assert LoadSettings().max_pixels == 100_000_000 and LoadSettings().allow_grayscale is True
    with pytest.raises(ValidationError):
        LoadSettings(max_pixels=0)
    with pytest.raises(ValidationError):
        LoadSettings(max_pixel=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        LoadSettings().max_pixels = 5  # type: ignore[misc]


# ---------------------------------------------------------------------------
# speed


def _twelve_megapixel_jpeg(orientation: int = 1) -> bytes:
    y, x = np.mgrid[0:3000, 0:4000]
    pixels = np.dstack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 11) % 256]).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encoded(Image.fromarray(pixels), "JPEG", quality=90, exif=exif)


@pytest.mark.slow  # a wall-clock assertion: run in CI's slow pass
def test_12_megapixel_jpeg_loads_in_under_2_s() -> None:
    data = _twelve_megapixel_jpeg()
    start = time.perf_counter()
    photo = read_photo_bytes(data, "big.jpg")
    assert time.perf_counter() - start < 2.0
    assert (photo.width, photo.height) == (4000, 3000)


@pytest.mark.slow
@pytest.mark.parametrize("orientation", [1, 6])
def test_12_megapixel_jpeg_loads_in_well_under_half_a_second(orientation: int) -> None:
    data = _twelve_megapixel_jpeg(orientation)
    best = min(_timed(lambda: read_photo_bytes(data, "big.jpg")) for _ in range(3))
    assert best < 0.5


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
