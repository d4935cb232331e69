"""Stage 1 of assessing a photo: read the file, validate it, hand back sRGB pixels.

Every later stage (quality, calibration, segmentation, dot colour) works on one
kind of input: an ``H x W x 3`` ``uint8`` sRGB array, upright as the camera held
it. This module turns whatever a clinic uploads into that, or refuses it with a
one-line reason (:class:`PhotoError`) that the CLI and the web app show as is.

What "robustly" means here:

* The format is decided by the file's content (Pillow's identification), never
  by its extension. Only JPEG (and MPO, the multi-picture JPEG many phones
  write), PNG, TIFF and WebP are accepted; anything else is refused by name.
* Decompression bombs are refused from the header, before any pixel is decoded.
* A truncated or corrupt file is an error, never a half-grey photo: Pillow is
  not allowed to pad truncated data during our load.
* EXIF orientation is applied, 16-bit photos are reduced to 8 bits with
  rounding, alpha is composited on white, palette/CMYK/grayscale photos are
  expanded to RGB and an embedded ICC profile is converted to sRGB. Each such
  conversion leaves a plain-language note on the :class:`Photo`, because some of
  them change what the colour measurements mean.
* Privacy: of all the metadata in the file only the capture time survives.
  GPS position, maker notes, serial numbers and the like never leave this module.

The path entry point (:func:`load_photo`) reads the file once and delegates to
:func:`read_photo_bytes`, which the web app calls with uploaded bytes; the
``sha256`` (the photo's identity in storage) is computed from those same bytes.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError
from pydantic import PositiveInt

from data.config import Settings
from pipeline.errors import UserError

__all__ = [
    "SUPPORTED_FORMATS",
    "LoadSettings",
    "Photo",
    "PhotoError",
    "PhotoHeader",
    "PhotoTooLarge",
    "load_photo",
    "read_photo_bytes",
    "read_photo_header",
]

#: Pillow format names accepted. MPO is what Pillow calls a JPEG that carries
#: extra pictures (depth maps, previews); phones write them routinely.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP"})
_SUPPORTED_TEXT = "use JPEG, PNG, TIFF or WebP"
# Pillow's plugins to try first: the accepted formats only. (MPO files are
# produced by the JPEG plugin's factory, so "JPEG" covers them.)
_OPEN_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP")

# EXIF tags used (numbers as in the EXIF 2.32 specification).
_TAG_ORIENTATION = 0x0112
_TAG_DATETIME = 0x0132  # IFD0: when the file was last changed
_TAG_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_DATETIME_DIGITIZED = 0x9004
_TAG_OFFSET_TIME = 0x9010
_TAG_OFFSET_TIME_ORIGINAL = 0x9011
_TAG_OFFSET_TIME_DIGITIZED = 0x9012
_TIFF_BITS_PER_SAMPLE = 258

_WHITE = (255, 255, 255, 255)
_GRAYSCALE_NOTE = "grayscale photo: colour measurements are not meaningful"

# Exact round(v / 257) for every 16-bit value: 65535 -> 255, 32896 -> 128.
# A 64 KiB table is both exact and faster than integer division per pixel.
_U16_TO_U8 = np.round(np.arange(65536, dtype=np.float64) / 257.0).astype(np.uint8)


class PhotoError(UserError):
    """A photo that cannot be used. ``str(err)`` is ``"<name>: <reason>"``, one line."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{_one_line(name)}: {_one_line(reason)}")

    def __reduce__(self) -> tuple[type[PhotoError], tuple[str, str]]:
        # Exceptions pickle as cls(*args); ours takes (name, reason), not the
        # message, so say so explicitly (batch workers send errors back pickled).
        return (type(self), (self.name, self.reason))


class PhotoTooLarge(PhotoError):
    """A photo refused for its pixel count (the decompression-bomb guard); ``pixels`` when known."""

    def __init__(self, name: str, reason: str, pixels: int | None = None) -> None:
        super().__init__(name, reason)
        self.pixels = pixels

    def __reduce__(self) -> tuple[type[PhotoError], tuple[str, str, int | None]]:  # type: ignore[override]
        return (type(self), (self.name, self.reason, self.pixels))


@dataclass(frozen=True)
class PhotoHeader:
    """What a photo's header says, before any pixel is decoded: its format, stored size and EXIF
    orientation (1-8; 1 when there is none, or none before the pixels)."""

    format: str
    width: int
    height: int
    orientation: int = 1


class LoadSettings(Settings):
    """How strict loading is.

    ``max_pixels`` is the decompression-bomb guard, checked from the header
    before decoding. Pillow has its own process-wide guard as well
    (``PIL.Image.MAX_IMAGE_PIXELS``, refusing above twice its value, about 179
    megapixels by default); a limit above that also needs Pillow's raised.
    """

    max_pixels: PositiveInt = 100_000_000
    allow_grayscale: bool = True


@dataclass(frozen=True, eq=False)
class Photo:
    """A validated photo: upright sRGB pixels plus the little metadata we keep.

    ``rgb`` is ``height x width x 3`` ``uint8``, C-contiguous and read-only.
    ``source_mode`` is Pillow's mode for the file (``"RGB"``, ``"L"``,
    ``"I;16"``, ``"CMYK"``...), ``bit_depth`` 8 or 16 per sample.
    ``capture_time`` is naive unless the file states its UTC offset.
    Equality is identity (arrays have no single truth value); compare
    ``sha256`` to know whether two photos are the same file.
    """

    rgb: np.ndarray = field(repr=False)
    path: str
    sha256: str
    width: int
    height: int
    source_mode: str
    bit_depth: int
    capture_time: datetime | None = None
    icc_converted: bool = False
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        rgb = self.rgb
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            raise ValueError("Photo.rgb must be an H x W x 3 uint8 array")
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"Photo.rgb is {rgb.shape[1]}x{rgb.shape[0]}, not {self.width}x{self.height}")


_DEFAULT_SETTINGS = LoadSettings()


def load_photo(path: str | os.PathLike[str], settings: LoadSettings = _DEFAULT_SETTINGS) -> Photo:
    """Read the file at ``path`` once and load it as :func:`read_photo_bytes` does."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise PhotoError(name, "no such file") from None
    except IsADirectoryError:
        raise PhotoError(name, "is a folder, not a photo file") from None
    except PermissionError:
        raise PhotoError(name, "cannot read the file (permission denied)") from None
    except OSError as exc:
        raise PhotoError(name, f"cannot read the file ({exc.strerror or exc})") from None
    return read_photo_bytes(data, name, settings)


def read_photo_header(data: bytes, name: str) -> PhotoHeader:
    """Format and size of a photo held in memory from its header alone (cheap whatever the photo's
    size: nothing is decoded). Raises :class:`PhotoError` as :func:`read_photo_bytes` does for
    what is not a photo of an accepted format, :class:`PhotoTooLarge` above Pillow's own guard;
    a photo that passes may still fail to decode."""
    if len(data) == 0:
        raise PhotoError(name, "file is empty")
    with _opened(bytes(data), name) as im:
        return PhotoHeader(format=str(im.format), width=int(im.size[0]), height=int(im.size[1]),
                           orientation=_read_exif(im, load=False)[0])


def read_photo_bytes(data: bytes, name: str, settings: LoadSettings = _DEFAULT_SETTINGS) -> Photo:
    """Validate and decode a photo held in memory; ``name`` is used in messages and as ``path``.

    Raises :class:`PhotoError` for anything that is not a usable photo.
    """
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray/memoryview from a web framework
    if len(data) == 0:
        raise PhotoError(name, "file is empty")
    sha256 = hashlib.sha256(data).hexdigest()
    notes: list[str] = []

    with _refuse_truncated_data(), _opened(data, name) as im:
        _check_pixel_count(im.size, name, settings)
        source_mode = im.mode
        if source_mode not in _ACCEPTED_MODES:
            raise PhotoError(name, f"pixel format {source_mode!r} is not supported (8- or 16-bit photos only)")
        png_header = _png_header(data)
        grayscale = _is_grayscale(im, png_header)
        if grayscale and not settings.allow_grayscale:
            raise PhotoError(name, "grayscale photo refused (colour photos are required)")
        bit_depth = _bit_depth(im, png_header)

        pixels, capture_time = _decode(im, data, name, bit_depth, grayscale, notes)
        if bit_depth == 16:
            notes.append("16-bit photo reduced to 8 bits")
        flat = _flatten(pixels, name, notes)
        if grayscale:
            notes.append(_GRAYSCALE_NOTE)
        rgb_image, icc_converted = _to_srgb(flat, im.info.get("icc_profile"), notes)
        rgb = np.asarray(rgb_image)

    # np.asarray copies Pillow's buffer once into a fresh array (backed by an
    # immutable bytes object); only make sure of the layout and lock it.
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    rgb.setflags(write=False)
    return Photo(
        rgb=rgb,
        path=name,
        sha256=sha256,
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
        source_mode=source_mode,
        bit_depth=bit_depth,
        capture_time=capture_time,
        icc_converted=icc_converted,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------
# Opening, identification, guards


def _one_line(text: str) -> str:
    """Escape control characters (newlines included) so a message stays on one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _brief(text: str, limit: int = 120) -> str:
    """A decoder's or library's message, whitespace collapsed, cut to ``limit``."""
    text = _one_line(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


_truncation_lock = threading.Lock()
_truncation_users = 0
_truncation_saved = False


def _after_fork_in_child() -> None:
    """A forked child (the web app's assessment process) has none of its parent's other threads: a
    load they were in the middle of is not running here, and the lock one of them held must not stay
    taken forever."""
    global _truncation_lock, _truncation_users
    if _truncation_users:
        ImageFile.LOAD_TRUNCATED_IMAGES = _truncation_saved
    _truncation_lock, _truncation_users = threading.Lock(), 0


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def _refuse_truncated_data() -> Iterator[None]:
    """Keep ``ImageFile.LOAD_TRUNCATED_IMAGES`` False while any of our loads runs.

    The flag is a Pillow module global. It is normally False and then nothing
    is touched; if some other code switched it on, it is switched off for the
    duration of our loads (reference-counted across threads) and restored.
    """
    global _truncation_users, _truncation_saved
    with _truncation_lock:
        if _truncation_users == 0:
            _truncation_saved = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _truncation_users += 1
    try:
        yield
    finally:
        with _truncation_lock:
            _truncation_users -= 1
            if _truncation_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _truncation_saved


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


def _check_pixel_count(size: tuple[int, int], name: str, settings: LoadSettings) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise PhotoError(name, f"image has no pixels ({width}x{height})")
    pixels = width * height
    if pixels > settings.max_pixels:
        raise PhotoTooLarge(
            name, f"{pixels} pixels is over the limit of {settings.max_pixels} (decompression bomb guard)", pixels
        )


def _bomb_reason(pillow_message: str) -> str:
    """Reword Pillow's DecompressionBombError, keeping the pixel count when it states one."""
    match = re.search(r"\((\d+) pixels\)", pillow_message)
    limit = re.search(r"limit of (\d+)", pillow_message)
    if match and limit:
        return f"{match.group(1)} pixels is over the limit of {limit.group(1)} (decompression bomb guard)"
    return "image is too large to decode safely (decompression bomb guard)"


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
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
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


@contextmanager
def _decoder_errors(name: str, fmt: str) -> Iterator[None]:
    """Turn any decoder failure into a PhotoError; never keep a partial image."""
    try:
        yield
    except (PhotoError, MemoryError):
        raise
    except Exception as exc:  # Decoders fail in many ways on hostile input.
        detail = _brief(str(exc))
        reason = f"truncated or corrupt {fmt} data" + (f" ({detail})" if detail else "")
        raise PhotoError(name, reason) from None


# ----------------------------------------------------------------------------
# Metadata


def _read_exif(im: Image.Image, load: bool = True) -> tuple[int, datetime | None]:
    """(orientation 1-8, capture time) from the EXIF; broken EXIF means neither.

    ``load=False``: only the EXIF already read with the header (a plugin that would decode
    the image to find more is not asked to)."""
    try:
        exif = im.getexif() if load else Image.Image.getexif(im)
        orientation = exif.get(_TAG_ORIENTATION, 1)
        sub = exif.get_ifd(_TAG_EXIF_IFD)
    except Exception:  # Corrupt EXIF must not cost the photo itself.
        return 1, None
    orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    candidates = (
        (sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_OFFSET_TIME_ORIGINAL)),
        (sub.get(_TAG_DATETIME_DIGITIZED), sub.get(_TAG_OFFSET_TIME_DIGITIZED)),
        (exif.get(_TAG_DATETIME), sub.get(_TAG_OFFSET_TIME)),
    )
    # Most to least specific; a malformed tag falls through to the next one.
    for stamp, offset in candidates:
        parsed = _parse_exif_datetime(stamp, offset)
        if parsed is not None:
            return orientation, parsed
    return orientation, None


_OFFSET_RE = re.compile(r"^([+-])(\d{2}):(\d{2})$")


def _parse_exif_datetime(stamp: object, offset: object) -> datetime | None:
    text = _exif_text(stamp)
    if text is None:
        return None
    for pattern in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            value = datetime.strptime(text, pattern)
            break
        except ValueError:
            continue
    else:
        return None  # includes the "0000:00:00 00:00:00" cameras write when unset
    match = _OFFSET_RE.match(_exif_text(offset) or "")
    if match:
        sign = -1 if match.group(1) == "-" else 1
        delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
        if delta < timedelta(hours=24):
            value = value.replace(tzinfo=timezone(sign * delta))
    return value


def _exif_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 \t\r\n") or None


# ----------------------------------------------------------------------------
# Pixels

def _orient_array(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` to an H x W [x C] array (a view; no copy).

    The same transforms as ``ImageOps.exif_transpose``, for pixels OpenCV decoded.
    """
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return np.rot90(a, -1)[::-1]
    if orientation == 8:
        return np.rot90(a, 1)
    return a


# Modes Pillow gives 16-bit files whose samples OpenCV should decode instead.
_CV2_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "L", "LA", "RGB", "RGBA"})


@functools.cache
def _cv2_orients(fmt: str) -> bool:
    """Whether OpenCV's ``fmt`` decoder already turns images upright under IMREAD_UNCHANGED.

    OpenCV documents IMREAD_UNCHANGED as ignoring orientation, and its PNG
    decoder does; its TIFF decoder (5.0) applies the TIFF Orientation tag all
    the same. Rather than trust one version's behaviour, probe it once with a
    1x2 16-bit image tagged "rotate 90 degrees" (orientation 6).
    """
    buf = io.BytesIO()
    probe = Image.fromarray(np.zeros((1, 2), np.uint16))
    if fmt == "TIFF":
        probe.save(buf, "TIFF", tiffinfo={_TAG_ORIENTATION: 6})
    else:
        exif = Image.Exif()
        exif[_TAG_ORIENTATION] = 6
        probe.save(buf, fmt, exif=exif)
    decoded = cv2.imdecode(np.frombuffer(buf.getvalue(), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    return decoded is not None and decoded.shape[:2] == (2, 1)


#: Samples converted from 16 to 8 bits at a time (4 MiB of 8-bit output).
_BAND_SAMPLES = 1 << 22


def _decode_16bit(
    data: bytes, size: tuple[int, int], grayscale: bool, orientation: int, name: str, fmt: str
) -> Image.Image:
    """Decode 16-bit samples with OpenCV, round to 8 bits, orient; an 8-bit L/LA/RGB/RGBA image."""
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise PhotoError(name, f"truncated or corrupt {fmt} data (16-bit samples could not be decoded)")
    # Compared regardless of axis order: Pillow reports TIFF sizes already
    # upright, other formats as stored, and OpenCV may or may not have turned it.
    if sorted(decoded.shape[:2]) != sorted(size):
        raise PhotoError(name, f"corrupt {fmt} data (decoders disagree about the image size)")
    if orientation != 1 and _cv2_orients(fmt):
        orientation = 1  # OpenCV already turned it upright
    if decoded.dtype not in (np.uint16, np.uint8):
        raise PhotoError(name, f"{decoded.dtype} samples are not supported")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if channels == 3:
        decoded = decoded[..., ::-1]  # BGR -> RGB (a view)
    elif channels == 4:
        decoded = decoded[..., [0, 3]] if grayscale else decoded[..., [2, 1, 0, 3]]
    elif channels not in (1, 2):
        raise PhotoError(name, f"{channels}-channel images are not supported")
    view = _orient_array(decoded, orientation)
    # One 8-bit upright array, written in place: the channel order, the orientation and
    # the exact rounding (a table lookup) in one pass, then the 16-bit samples are let go
    # before Pillow copies the result, so the peak is that of an 8-bit decode.
    eight = np.empty(view.shape, np.uint8)
    band = max(1, _BAND_SAMPLES // max(1, view[0].size))  # rows at a time: small temporaries
    for top in range(0, view.shape[0], band):
        rows = view[top:top + band]
        eight[top:top + band] = _U16_TO_U8[rows] if rows.dtype == np.uint16 else rows
    del decoded, view, rows
    return Image.fromarray(eight)


def _decode(
    im: Image.Image, data: bytes, name: str, bit_depth: int, grayscale: bool, notes: list[str]
) -> tuple[Image.Image, datetime | None]:
    """Decode the first frame, upright; also return the capture time. Any decoder failure is a PhotoError."""
    with _decoder_errors(name, im.format or "image"):
        n_frames = int(getattr(im, "n_frames", 1))
        if n_frames > 1:
            im.seek(0)
            notes.append(f"file holds {n_frames} images; the first was used")
        if bit_depth == 16 and im.mode in _CV2_16BIT_MODES:
            # Pillow reduces 16-bit RGB(A) to 8 bits by truncation, so OpenCV
            # decodes the samples and Pillow supplies only the metadata. Pillow
            # decodes a whole PNG to look for EXIF after the pixels; when the
            # chunk list shows there is none, that second decode (as large as
            # the 8-bit photo, and most of the time) is skipped. OpenCV's own
            # decode refuses truncated or corrupt data.
            late = im.format == "PNG" and _png_metadata_after_pixels(data)
            orientation, capture_time = _read_exif(im, load=im.format != "PNG" or late)
            return _decode_16bit(data, im.size, grayscale, orientation, name, im.format or "image"), capture_time
        im.load()
        # Read after load: some Pillow plugins (TIFF) turn the image upright
        # while loading and then drop the orientation tag.
        orientation, capture_time = _read_exif(im)
        if orientation != 1:
            ImageOps.exif_transpose(im, in_place=True)
        return im, capture_time


def _flatten(img: Image.Image, name: str, notes: list[str]) -> Image.Image:
    """Reduce any accepted mode to L, RGB or CMYK: alpha composited on white, palettes expanded."""
    mode = img.mode
    if mode in ("RGB", "L", "CMYK"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("RGBX", "YCbCr"):
        return img.convert("RGB")
    if mode in ("P", "PA"):
        notes.append("palette (indexed-colour) image expanded to RGB")
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return img
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        gray = mode in ("LA", "La")
        rgba = img.convert("RGBA")
        low, _ = rgba.getchannel("A").getextrema()
        if low < 255:
            # Transparent pixels have no scalp behind them; white keeps them
            # obviously "not skin" for every later stage.
            rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
            notes.append("alpha channel dropped (composited on white)")
        # A fully opaque alpha channel changes nothing, so it goes without a note.
        return rgba.convert("L" if gray else "RGB")
    raise PhotoError(name, f"pixel format {mode!r} is not supported")


def _to_srgb(img: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bool]:
    """Convert an L/RGB/CMYK image to sRGB RGB; True when an ICC profile was applied."""
    if img.mode == "CMYK":
        notes.append("CMYK converted to sRGB" + ("" if icc else " (no embedded profile: colours are approximate)"))
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            description = _profile_description(source)
            if _is_srgb(description) and img.mode in ("RGB", "L"):
                # Already sRGB (gray pixels tagged sRGB are neutral sRGB values):
                # skip a transform that would change nothing.
                return (img if img.mode == "RGB" else img.convert("RGB")), False
            # Relative colorimetric keeps in-gamut colours exact (what colour
            # measurement needs) and clips the rest; perceptual tables would
            # shift in-gamut colours too. Matrix profiles behave the same either way.
            converted = ImageCms.profileToProfile(
                img,
                source,
                ImageCms.createProfile("sRGB"),
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                outputMode="RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            notes.append(
                "embedded ICC profile could not be applied; colours may be off "
                f"({_brief(str(exc), 80) or type(exc).__name__})"
            )
        else:
            if converted is not None:
                notes.append(f"embedded ICC profile '{description}' converted to sRGB")
                return converted, True
    return (img if img.mode == "RGB" else img.convert("RGB")), False


def _profile_description(profile: ImageCms.ImageCmsProfile) -> str:
    try:
        text = ImageCms.getProfileDescription(profile) or ImageCms.getProfileName(profile)
    except ImageCms.PyCMSError:
        text = ""
    return _brief(text, 60) or "unnamed"


def _is_srgb(description: str) -> bool:
    lowered = description.lower()
    return "srgb" in lowered and "linear" not in lowered
