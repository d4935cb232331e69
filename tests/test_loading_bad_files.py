"""pipeline.one_photo.loading: bad files (truncated, empty, not photos, missing, bombs) and the pixel limits."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from loading_helpers import _encoded, _pattern, _write
from PIL import Image, ImageFile

from pipeline.one_photo.loading import LoadSettings, PhotoError, load_photo, read_photo_bytes

# ---------------------------------------------------------------------------
# helpers


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
