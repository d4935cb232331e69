"""Stage 1 of assessing a photo: read the file, validate it, hand back sRGB pixels.

Every later stage (quality, calibration, segmentation, dot colour) works on one
kind of input: an ``H x W x 3`` ``uint8`` sRGB array, upright as the camera held
it. This package turns whatever a clinic uploads into that, or refuses it with a
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
  GPS position, maker notes, serial numbers and the like never leave this package.

The path entry point (:func:`load_photo`) reads the file once and delegates to
:func:`read_photo_bytes`, which the web app calls with uploaded bytes; the
``sha256`` (the photo's identity in storage) is computed from those same bytes.

The package, one topic a module: :mod:`.errors` (:class:`PhotoError`, :class:`PhotoTooLarge`),
:mod:`.limits` (:class:`LoadSettings`, the pixel-count guard and the truncation guard with its
process-wide state), :mod:`.header` (identification from the header alone, pixel formats and bit
depth: :func:`read_photo_header`), :mod:`.exif` (orientation and capture time), :mod:`.decode`
(the first frame, upright; 16-bit samples through OpenCV), :mod:`.colour` (alpha, palettes, CMYK
and ICC profiles to sRGB) and :mod:`.load` (:class:`Photo`, :func:`load_photo`,
:func:`read_photo_bytes`).
"""

from __future__ import annotations

from pipeline.one_photo.loading.errors import PhotoError, PhotoTooLarge
from pipeline.one_photo.loading.header import SUPPORTED_FORMATS, PhotoHeader, read_photo_header
from pipeline.one_photo.loading.limits import LoadSettings
from pipeline.one_photo.loading.load import Photo, load_photo, read_photo_bytes

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
