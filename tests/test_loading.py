"""Tests of pipeline.one_photo.loading: every photo is built here, in tmp_path, by PIL/cv2/numpy."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import struct
import time
import warnings
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile
from pydantic import ValidationError

from pipeline.errors import UserError
from pipeline.one_photo.loading import LoadSettings, Photo, PhotoError, load_photo, read_photo_bytes

# ---------------------------------------------------------------------------
# helpers


def _write(path: Path, img: Image.Image, fmt: str, **params) -> Path:
    img.save(path, fmt, **params)
    return path


def _encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _pattern(width: int = 40, height: int = 30) -> np.ndarray:
    """Deterministic RGB test pattern with every channel varying."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 6 % 256, y * 8 % 256, (x + y) * 3 % 256]).astype(np.uint8)


def _quadrants(width: int = 64, height: int = 48) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    a[:h, :w] = (255, 0, 0)
    a[:h, w:] = (0, 255, 0)
    a[h:, :w] = (0, 0, 255)
    a[h:, w:] = (255, 255, 255)
    return a


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds only a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _rgb_icc(description: str, red, green, blue, gamma: float) -> bytes:
    """A minimal ICC v2 matrix/TRC display profile (what Display P3 or Adobe RGB are)."""

    def xyz(v) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    ascii_ = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + struct.pack(">IIHB", 0, 0, 0, 0) + b"\0" * 67
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
        + b"\0" * 12  # date
        + b"acsp"
        + b"\0" * 28  # platform, flags, manufacturer, model, attributes, intent
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)  # PCS illuminant D50
        + b"\0" * 48  # creator, profile id, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


# Display-P3 colorants adapted to D50 (as in Apple's profile), with a plain 2.2 gamma.
_P3_COLORANTS = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
# XYZ (D50) -> linear sRGB, Bradford-adapted (Lindbloom); what lcms's built-in sRGB inverts to.
_XYZ50_TO_SRGB = np.array(
    [[3.1338561, -1.6168667, -0.4906146], [-0.9787684, 1.9161415, 0.0334540], [0.0719453, -0.2289914, 1.4052427]]
)


def _expected_p3_to_srgb(rgb: tuple[int, int, int]) -> np.ndarray:
    q = lambda v: round(v * 65536) / 65536  # noqa: E731 - the profile stores s15Fixed16
    colorants = np.array([[q(c) for c in col] for col in _P3_COLORANTS]).T
    gamma = round(2.2 * 256) / 256
    linear = (np.asarray(rgb) / 255.0) ** gamma
    srgb_linear = np.clip(_XYZ50_TO_SRGB @ (colorants @ linear), 0, 1)
    encoded = np.where(srgb_linear <= 0.0031308, 12.92 * srgb_linear, 1.055 * srgb_linear ** (1 / 2.4) - 0.055)
    return np.round(encoded * 255)


def _exif_with_dates(original: str | None = None, offset: str | None = None, plain: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if plain is not None:
        exif[0x0132] = plain
    if original is not None:
        exif.get_ifd(0x8769)[0x9003] = original
    if offset is not None:
        exif.get_ifd(0x8769)[0x9011] = offset
    return exif


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
# orientation


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [
        (3, (64, 48), (40, 56)),  # 180 degrees: red lands bottom-right
        (6, (48, 64), (8, 40)),  # 90 degrees clockwise: red lands top-right
        (8, (48, 64), (56, 8)),  # 90 degrees counter-clockwise: red lands bottom-left
    ],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, size, red_at) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _write(tmp_path / "turned.jpg", Image.fromarray(_quadrants()), "JPEG", quality=95, exif=exif)
    photo = load_photo(path)
    assert (photo.width, photo.height) == size
    assert photo.rgb.shape == (size[1], size[0], 3)
    row, col = red_at
    assert np.abs(photo.rgb[row, col].astype(int) - (255, 0, 0)).max() <= 12


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_orientation_matches_pillow_for_8bit(tmp_path: Path, orientation: int, fmt: str) -> None:
    # 16-bit pixels come from OpenCV, 8-bit ones from Pillow's exif_transpose: same result.
    values = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    exif = Image.Exif()
    exif[0x0112] = orientation
    params = {"tiffinfo": {0x0112: orientation}} if fmt == "TIFF" else {"exif": exif}
    eight = load_photo(_write(tmp_path / "eight.img", Image.fromarray(values), fmt, **params))
    deep = Image.fromarray(values.astype(np.uint16) * 257)
    sixteen = load_photo(_write(tmp_path / "sixteen.img", deep, fmt, **params))
    assert sixteen.bit_depth == 16
    np.testing.assert_array_equal(sixteen.rgb, eight.rgb)
    assert (eight.width, eight.height) == ((3, 4) if orientation >= 5 else (4, 3))


def _png_chunks(data: bytes) -> list[bytes]:
    """A PNG's chunks, each whole (length, name, body, CRC)."""
    out, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        out.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return out


@pytest.mark.parametrize("exif_after_pixels", [False, True])
def test_16bit_png_exif_is_read_before_or_after_the_pixels(tmp_path: Path, exif_after_pixels: bool) -> None:
    # without EXIF after the pixels, the header's is used and Pillow is not asked to decode the PNG as well
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).save(buf, "PNG", exif=exif)
    chunks = _png_chunks(buf.getvalue())
    if exif_after_pixels:
        moved = next(c for c in chunks if c[4:8] == b"eXIf")
        chunks.remove(moved)
        chunks.insert(len(chunks) - 1, moved)  # just before IEND
    photo = read_photo_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks), "late.png")
    assert photo.bit_depth == 16 and (photo.width, photo.height) == (3, 4)


def test_16bit_tiff_orientation(tmp_path: Path) -> None:
    gray16 = np.zeros((3, 4), np.uint16)
    gray16[0, 0] = 65535  # top-left of the stored image
    photo = load_photo(_write(tmp_path / "turned.tif", Image.fromarray(gray16), "TIFF", tiffinfo={0x0112: 6}))
    assert (photo.width, photo.height) == (3, 4)
    assert photo.rgb[0, 2, 0] == 255 and photo.rgb.sum() == 255 * 3  # now top-right


# ---------------------------------------------------------------------------
# colour: ICC, grayscale, CMYK, alpha, palette


def test_embedded_srgb_profile_is_skipped(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = _pattern()
    photo = load_photo(_write(tmp_path / "srgb.png", Image.fromarray(pixels), "PNG", icc_profile=srgb))
    np.testing.assert_array_equal(photo.rgb, pixels)
    assert photo.icc_converted is False and photo.notes == ()


def test_embedded_wide_gamut_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    icc = _rgb_icc("Test P3", *_P3_COLORANTS, gamma=2.2)
    colours = [(200, 100, 50), (180, 60, 60), (128, 128, 128), (40, 160, 220)]
    pixels = np.array([colours], np.uint8)
    photo = load_photo(_write(tmp_path / "p3.png", Image.fromarray(pixels), "PNG", icc_profile=icc))
    assert photo.icc_converted is True
    assert "embedded ICC profile 'Test P3' converted to sRGB" in photo.notes
    for i, colour in enumerate(colours):
        expected = _expected_p3_to_srgb(colour)
        assert np.abs(photo.rgb[0, i].astype(int) - expected).max() <= 2, (colour, photo.rgb[0, i], expected)
    # A saturated colour really moves (sRGB needs more saturation to show the same colour).
    assert np.abs(photo.rgb[0, 0].astype(int) - colours[0]).max() >= 8


def test_unusable_embedded_profile_keeps_pixels_and_says_so(tmp_path: Path) -> None:
    pixels = _pattern()
    path = _write(tmp_path / "badicc.png", Image.fromarray(pixels), "PNG", icc_profile=b"not a profile" * 20)
    photo = load_photo(path)
    np.testing.assert_array_equal(photo.rgb, pixels)
    assert photo.icc_converted is False
    assert any("colours may be off" in note for note in photo.notes)


def test_grayscale_jpeg_is_replicated_and_noted(tmp_path: Path) -> None:
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    photo = load_photo(_write(tmp_path / "gray.jpg", Image.fromarray(gray), "JPEG", quality=95))
    assert photo.source_mode == "L" and photo.rgb.shape == (16, 32, 3)
    assert (photo.rgb == photo.rgb[..., :1]).all()
    assert "grayscale photo: colour measurements are not meaningful" in photo.notes


def test_grayscale_can_be_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "gray.png", Image.new("L", (8, 8), 100), "PNG")
    with pytest.raises(PhotoError, match=r"gray\.png: grayscale photo refused"):
        load_photo(path, LoadSettings(allow_grayscale=False))


def test_cmyk_jpeg_is_converted_to_srgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 8), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (8, 0, 16, 8))  # no cyan, full magenta and yellow: red
    photo = load_photo(_write(tmp_path / "print.jpg", cmyk, "JPEG", quality=95))
    assert photo.source_mode == "CMYK"
    assert np.abs(photo.rgb[4, 2].astype(int) - (255, 255, 255)).max() <= 6
    assert np.abs(photo.rgb[4, 12].astype(int) - (255, 0, 0)).max() <= 10
    assert any(note.startswith("CMYK converted to sRGB") for note in photo.notes)


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)
    rgba[0, 1] = (200, 0, 0, 128)
    rgba[1, :] = (0, 0, 0, 0)
    photo = load_photo(_write(tmp_path / "alpha.png", Image.fromarray(rgba), "PNG"))
    assert photo.source_mode == "RGBA"
    assert tuple(photo.rgb[0, 0]) == (200, 0, 0)
    np.testing.assert_allclose(photo.rgb[0, 1], (227, 127, 127), atol=1)
    assert tuple(photo.rgb[1, 0]) == (255, 255, 255)
    assert "alpha channel dropped (composited on white)" in photo.notes


def test_opaque_alpha_is_dropped_silently(tmp_path: Path) -> None:
    rgba = np.dstack([_pattern(), np.full((30, 40), 255, np.uint8)])
    photo = load_photo(_write(tmp_path / "opaque.png", Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(photo.rgb, rgba[..., :3])
    assert photo.notes == ()


def test_gray_alpha_png(tmp_path: Path) -> None:
    la = Image.new("LA", (2, 1), (50, 255))
    la.putpixel((1, 0), (50, 0))
    photo = load_photo(_write(tmp_path / "la.png", la, "PNG"))
    assert tuple(photo.rgb[0, 0]) == (50, 50, 50) and tuple(photo.rgb[0, 1]) == (255, 255, 255)
    assert "alpha channel dropped (composited on white)" in photo.notes
    assert "grayscale photo: colour measurements are not meaningful" in photo.notes


def test_palette_png_is_expanded(tmp_path: Path) -> None:
    pixels = _quadrants(8, 6)
    pal = Image.fromarray(pixels).quantize(colors=4)
    photo = load_photo(_write(tmp_path / "pal.png", pal, "PNG"))
    assert photo.source_mode == "P"
    np.testing.assert_array_equal(photo.rgb, pixels)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 90, 80, 70])
    pal.putpixel((1, 0), 1)
    photo = load_photo(_write(tmp_path / "pal.png", pal, "PNG", transparency=1))
    assert tuple(photo.rgb[0, 0]) == (10, 20, 30) and tuple(photo.rgb[0, 1]) == (255, 255, 255)
    assert "alpha channel dropped (composited on white)" in photo.notes


# ---------------------------------------------------------------------------
# bad files


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    data = _encoded(Image.fromarray(_pattern(400, 300)), "JPEG", quality=95)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoError, match=r"^.*photo\.jpg: truncated or corrupt JPEG data"):
        load_photo(path)


def test_truncated_jpeg_is_refused_even_if_pillow_was_told_to_allow_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _encoded(Image.fromarray(_pattern(400, 300)), "JPEG", quality=95)
    with pytest.raises(PhotoError, match="truncated or corrupt JPEG data"):
        read_photo_bytes(data[: len(data) // 2], "photo.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_truncated_files_are_refused(fmt: str, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encoded(Image.fromarray(noise), fmt)
    with pytest.raises(PhotoError, match=rf"cut{suffix}: .*(truncated|corrupt)"):
        read_photo_bytes(data[: len(data) // 2], f"cut{suffix}")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"")
    with pytest.raises(PhotoError, match=r"x\.jpg: file is empty$"):
        load_photo(path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("Client notes: touch-up in six weeks.\nBring the before photos.\n")
    with pytest.raises(PhotoError, match=r"notes\.jpg: not an image file \(starts with text\)$"):
        load_photo(path)


def test_html_page_saved_as_jpg() -> None:
    with pytest.raises(PhotoError, match=r"not an image file \(looks like a web page\)"):
        read_photo_bytes(b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "download.jpg")


def test_random_bytes() -> None:
    data = bytes(range(256)) * 4
    with pytest.raises(PhotoError, match=r"blob\.jpg: not an image file \(content not recognised\)"):
        read_photo_bytes(data, "blob.jpg")


def test_heic_is_named() -> None:
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(PhotoError, match="HEIC/HEIF photos are not supported"):
        read_photo_bytes(data, "IMG_0001.HEIC")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    with pytest.raises(PhotoError, match=r"x\.jpg: no such file$") as info:
        load_photo(path)
    assert str(path) in str(info.value)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match="is a folder"):
        load_photo(tmp_path)


def test_decompression_bomb_is_refused_from_the_header_quickly(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_png_claiming(60000, 60000))
    decoded = []
    real_load = Image.Image.load

    def counting_load(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(self.size)
        return real_load(self, *args, **kwargs)

    Image.Image.load = counting_load  # type: ignore[method-assign]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            expected = r"big\.png: 3600000000 pixels is over the limit of \d+ \(decompression bomb guard\)"
            with pytest.raises(PhotoError, match=expected):
                load_photo(path)
    finally:
        Image.Image.load = real_load  # type: ignore[method-assign]
    assert decoded == [], "refused from the header: no pixel decoded"


def test_our_pixel_limit_applies_below_pillows_own() -> None:
    # 120 megapixels: over our default 100 MP limit, under Pillow's hard limit (~179 MP),
    # where Pillow would only warn. No warning escapes, and our limit is named.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PhotoError, match=r"big\.png: 120000000 pixels is over the limit of 100000000"):
            read_photo_bytes(_png_claiming(12000, 10000), "big.png")


def test_pixel_limit_is_a_setting(tmp_path: Path) -> None:
    path = _write(tmp_path / "small.png", Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(PhotoError, match=r"small\.png: 10000 pixels is over the limit of 9999"):
        load_photo(path, LoadSettings(max_pixels=9999))
    assert load_photo(path, LoadSettings(max_pixels=10000)).width == 100


# ---------------------------------------------------------------------------
# metadata and privacy


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_capture_time_from_datetime_original(tmp_path: Path, fmt: str) -> None:
    exif = _exif_with_dates(original="2024:05:06 07:08:09", plain="2025:01:01 00:00:00")
    photo = load_photo(_write(tmp_path / "dated.img", Image.new("RGB", (8, 8)), fmt, exif=exif))
    assert photo.capture_time == datetime(2024, 5, 6, 7, 8, 9)
    assert photo.capture_time.tzinfo is None


def test_capture_time_with_offset(tmp_path: Path) -> None:
    exif = _exif_with_dates(original="2024:05:06 07:08:09", offset="+02:00")
    photo = load_photo(_write(tmp_path / "dated.jpg", Image.new("RGB", (8, 8)), "JPEG", exif=exif))
    assert photo.capture_time == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))


def test_capture_time_falls_back_to_datetime(tmp_path: Path) -> None:
    exif = _exif_with_dates(plain="2023:12:31 23:59:58")
    photo = load_photo(_write(tmp_path / "dated.jpg", Image.new("RGB", (8, 8)), "JPEG", exif=exif))
    assert photo.capture_time == datetime(2023, 12, 31, 23, 59, 58)


@pytest.mark.parametrize("bad", ["yesterday", "0000:00:00 00:00:00", "2024:13:45 25:61:00", ""])
def test_bad_capture_time_is_none(tmp_path: Path, bad: str) -> None:
    exif = _exif_with_dates(original=bad, offset="+99:99")
    photo = load_photo(_write(tmp_path / "dated.jpg", Image.new("RGB", (8, 8)), "JPEG", exif=exif))
    assert photo.capture_time is None


def test_corrupt_exif_does_not_cost_the_photo() -> None:
    jpeg = _encoded(Image.fromarray(_pattern()), "JPEG", quality=95)
    junk = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(range(200))
    app1 = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow may warn about the EXIF; that is fine
        photo = read_photo_bytes(jpeg[:2] + app1 + jpeg[2:], "junk_exif.jpg")
    assert photo.capture_time is None and photo.rgb.shape == (30, 40, 3)


def test_no_gps_or_other_exif_reaches_the_photo(tmp_path: Path) -> None:
    exif = _exif_with_dates(original="2024:05:06 07:08:09")
    exif[0x010F] = "SecretCam Maker"
    exif[0x0131] = "SecretSoftware 1.0"
    exif.get_ifd(0x8769)[0xA431] = "SERIAL-12345"  # body serial number
    exif.get_ifd(0x8769)[0x927C] = b"MAKERNOTE-BLOB"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (51.0, 30.0, 26.64), "W", (0.0, 7.0, 39.0)
    path = _write(tmp_path / "gps.jpg", Image.fromarray(_pattern()), "JPEG", exif=exif)
    assert b"SERIAL-12345" in path.read_bytes()  # the file really carries it

    photo = load_photo(path)
    assert photo.capture_time == datetime(2024, 5, 6, 7, 8, 9)
    assert {f.name for f in dataclasses.fields(photo)} == {
        "rgb",
        "path",
        "sha256",
        "width",
        "height",
        "source_mode",
        "bit_depth",
        "capture_time",
        "icc_converted",
        "notes",
    }
    text = repr(photo) + " ".join(str(getattr(photo, f.name)) for f in dataclasses.fields(photo) if f.name != "rgb")
    for secret in ("GPS", "51.0", "26.64", "SecretCam", "SecretSoftware", "SERIAL", "MAKERNOTE"):
        assert secret not in text.replace(str(photo.path), ""), secret
    assert not hasattr(photo, "__dict__") or set(vars(photo)) == {f.name for f in dataclasses.fields(photo)}
    assert type(photo.rgb) is np.ndarray  # a bare array, no metadata-carrying subclass


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
