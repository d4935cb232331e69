"""The entry points: :func:`load_photo` (a path, read once) and :func:`read_photo_bytes` (bytes in
memory, as the web app has them), giving a validated :class:`Photo`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from pipeline.one_photo.loading.colour import _flatten, _to_srgb
from pipeline.one_photo.loading.decode import _decode
from pipeline.one_photo.loading.errors import PhotoError
from pipeline.one_photo.loading.header import _ACCEPTED_MODES, _bit_depth, _is_grayscale, _opened, _png_header
from pipeline.one_photo.loading.limits import LoadSettings, _check_pixel_count, _refuse_truncated_data

_GRAYSCALE_NOTE = "grayscale photo: colour measurements are not meaningful"


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
