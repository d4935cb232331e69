"""What a photo's header says, before any pixel is decoded: the format (by content, the accepted
plugins only; anything else refused by name), the stored size and orientation
(:func:`read_photo_header`), the pixel format and the bit depth."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

from pipeline.one_photo.loading.errors import PhotoError, PhotoTooLarge, _brief
from pipeline.one_photo.loading.exif import _TIFF_BITS_PER_SAMPLE, _read_exif
from pipeline.one_photo.loading.limits import _bomb_reason

#: Pillow format names accepted. MPO is what Pillow calls a JPEG that carries
#: extra pictures (depth maps, previews); phones write them routinely.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP"})
_SUPPORTED_TEXT = "use JPEG, PNG, TIFF or WebP"
# Pillow's plugins to try first: the accepted formats only. (MPO files are
# produced by the JPEG plugin's factory, so "JPEG" covers them.)
_OPEN_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP")


@dataclass(frozen=True)
class PhotoHeader:
    """What a photo's header says, before any pixel is decoded: its format, stored size and EXIF
    orientation (1-8; 1 when there is none, or none before the pixels)."""

    format: str
    width: int
    height: int
    orientation: int = 1


def read_photo_header(data: bytes, name: str) -> PhotoHeader:
    """Format and size of a photo held in memory from its header alone (cheap whatever the photo's
    size: nothing is decoded). Raises :class:`PhotoError` as :func:`read_photo_bytes` does for
    what is not a photo of an accepted format, :class:`PhotoTooLarge` above Pillow's own guard;
    a photo that passes may still fail to decode."""
    if len(data) == 0:
        raise PhotoError(name, "file is empty")
    with _opened(bytes(data), name) as im:
        return PhotoHeader(
            format=str(im.format),
            width=int(im.size[0]),
            height=int(im.size[1]),
            orientation=_read_exif(im, load=False)[0],
        )


@contextmanager
def _opened(data: bytes, name: str) -> Iterator[Image.Image]:
    """Open lazily (header only) with the accepted plugins; refuse anything else by name."""
    try:
        # Pillow warns between MAX_IMAGE_PIXELS and twice that; our own guard
        # (max_pixels) decides, so the warning is noise here. (catch_warnings
        # is process-wide; at worst another thread misses this one warning.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError:
        raise PhotoError(name, _describe_unreadable(data)) from None
    except Image.DecompressionBombError as exc:
        count = re.search(r"\((\d+) pixels\)", str(exc))
        raise PhotoTooLarge(name, _bomb_reason(str(exc)), int(count.group(1)) if count else None) from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many kinds on malformed headers.
        raise PhotoError(name, f"corrupt image header ({_brief(str(exc))})") from None
    with im:
        if im.format not in SUPPORTED_FORMATS:
            raise PhotoError(name, f"{im.format} images are not supported ({_SUPPORTED_TEXT})")
        yield im


# File signatures, for naming what Pillow could not open (never to accept a file).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}


def _describe_unreadable(data: bytes) -> str:
    """Why the accepted plugins could not open ``data``, in the user's terms."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return f"truncated or corrupt {fmt} data (header could not be read)"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "truncated or corrupt WEBP data (header could not be read)"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return f"HEIC/HEIF photos are not supported ({_SUPPORTED_TEXT}; export the photo as JPEG)"
        if brand in {b"avif", b"avis"}:
            return f"AVIF images are not supported ({_SUPPORTED_TEXT})"
    other = _identify_any(data)
    if other is not None:
        return f"{other} images are not supported ({_SUPPORTED_TEXT})"
    text = _as_text(data[:512])
    if text is not None:
        head = text.lstrip("\ufeff \t\r\n").lower()
        if head.startswith(("<!doctype html", "<html")):
            return "not an image file (looks like a web page)"
        return "not an image file (starts with text)"
    return "not an image file (content not recognised)"


def _identify_any(data: bytes) -> str | None:
    """The format name any Pillow plugin gives ``data`` (header only, never decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.format
    except Exception:  # Only naming the format; any failure means "unknown".
        return None


def _as_text(sample: bytes) -> str | None:
    """``sample`` decoded if it reads as printable UTF-8 text, else None."""
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            text = sample[: len(sample) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    if text and all(ch.isprintable() or ch in "\t\r\n\f\ufeff" for ch in text):
        return text
    return None


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, which must come first."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 26:
        return data[24], data[25]
    return None


_PNG_METADATA_CHUNKS = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})


def _png_metadata_after_pixels(data: bytes) -> bool:
    """Whether a PNG may hold EXIF (an ``eXIf`` or text chunk) after its image data.

    Walks the chunk list (lengths and names only, nothing inflated); a list that cannot be
    walked to its end answers True, so that the full decode finds out what is wrong.
    """
    pos, seen_pixels = 8, False
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND":
            return False
        seen_pixels = seen_pixels or kind == b"IDAT"
        if seen_pixels and kind in _PNG_METADATA_CHUNKS:
            return True
        pos += 12 + length
    return True


# Pillow modes a photo may arrive in; 32-bit integer ("I") and float ("F")
# scientific images and exotic colour spaces are refused before decoding.
_ACCEPTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I;16", "I;16L", "I;16B", "I;16N"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N"})


def _is_grayscale(im: Image.Image, png_header: tuple[int, int] | None) -> bool:
    if png_header is not None and png_header[1] in (0, 4):
        # Pillow opens 16-bit gray+alpha PNG as "RGBA"; the header knows better.
        return True
    return im.mode in _GRAY_MODES


def _bit_depth(im: Image.Image, png_header: tuple[int, int] | None) -> Literal[8, 16]:
    if im.mode.startswith("I;16"):
        return 16
    if png_header is not None:
        return 16 if png_header[0] == 16 else 8
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE, 8)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return 16 if bits and max(int(b) for b in bits) == 16 else 8
    return 8
