"""pipeline.one_photo.loading: EXIF orientation (8- and 16-bit), capture time, and that no other metadata leaks."""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from loading_helpers import _encoded, _exif_with_dates, _pattern, _quadrants, _write
from PIL import Image

from pipeline.one_photo.loading import load_photo, read_photo_bytes

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
