"""Decoding the first frame, upright: Pillow for 8-bit photos, OpenCV for 16-bit samples (rounded,
not truncated, to 8 bits); any decoder failure is a :class:`PhotoError`, never a partial image."""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import cv2
import numpy as np
from PIL import Image, ImageOps

from pipeline.one_photo.loading.errors import PhotoError, _brief
from pipeline.one_photo.loading.exif import _TAG_ORIENTATION, _read_exif
from pipeline.one_photo.loading.header import _png_metadata_after_pixels

# Exact round(v / 257) for every 16-bit value: 65535 -> 255, 32896 -> 128.
# A 64 KiB table is both exact and faster than integer division per pixel.
_U16_TO_U8 = np.round(np.arange(65536, dtype=np.float64) / 257.0).astype(np.uint8)


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
        rows = view[top : top + band]
        eight[top : top + band] = _U16_TO_U8[rows] if rows.dtype == np.uint16 else rows
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
