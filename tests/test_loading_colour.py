"""pipeline.one_photo.loading: colour to sRGB (ICC profiles, grayscale, CMYK, alpha, palettes)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from loading_helpers import _pattern, _quadrants, _write
from PIL import Image, ImageCms

from pipeline.one_photo.loading import LoadSettings, PhotoError, load_photo

# ---------------------------------------------------------------------------
# helpers


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
