"""A photo's bytes without its metadata, for every copy that leaves the server.

Clinic photos carry the camera's make and serial number, its GPS position, maker notes,
XMP and comments. The loader (:mod:`pipeline.one_photo.loading`) keeps none of them, but a copy
of the *file* (the review export's ``photo.jpg``) would carry them all. This module
writes such copies:

* **JPEG**: lossless; the file is rewritten segment by segment up to the end of its
  first image. Kept: the image data and the tables that decode it, JFIF (APP0), the
  ICC profile (APP2 ``ICC_PROFILE``) and Adobe's colour-transform flag (APP14).
  Dropped: EXIF and XMP (APP1), every other APPn, comments, and anything after the
  first image (the second pictures of an MPO, trailing bytes).
* **PNG**: lossless; the critical chunks and the colour chunks (``gAMA``, ``cHRM``,
  ``sRGB``, ``iCCP``, ``sBIT``, ``tRNS``, ``bKGD``, ``pHYs``) are kept, text, time,
  ``eXIf`` and unknown ancillary chunks dropped.
* **Anything else** (TIFF, WebP): the upright pixels as the loader reads them, as a PNG.

The one piece of metadata that decides what the pixels mean, the EXIF **orientation**,
is written back alone (a minimal EXIF with that one tag) when it is not 1, so that the
copy is read upright like the original and the dots' coordinates still fit it.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

__all__ = ["clean_photo_bytes"]

_TAG_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD", b"pHYs"}
#: markers without a length field
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _exif_orientation_only(orientation: int) -> bytes:
    """A minimal EXIF block (``Exif\\0\\0`` + TIFF) holding only the orientation tag."""
    exif = Image.Exif()
    exif[_TAG_ORIENTATION] = orientation
    return exif.tobytes()


def _jpeg(data: bytes, orientation: int) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    out = [b"\xff\xd8"]
    if orientation != 1:
        payload = _exif_orientation_only(orientation)
        out.append(b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload)
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            out.append(data[i : i + 2])
            i += 2
            continue
        if marker == 0xD9:
            out.append(b"\xff\xd9")
            return b"".join(out)
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        segment = data[i : i + 2 + length]
        if marker == 0xDA:  # start of scan: the rest up to the first end of image is this image
            end = data.find(b"\xff\xd9", i + 2 + length)
            if end < 0:
                raise ValueError("JPEG: no end of image")
            out.append(data[i : end + 2])
            return b"".join(out)
        body = segment[4:]
        keep = (
            marker == 0xE0
            or (marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00"))
            or marker == 0xEE
            or not (0xE0 <= marker <= 0xEF or marker == 0xFE)
        )
        if keep:
            out.append(segment)
        i += 2 + length
    raise ValueError("JPEG: no image data")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(data: bytes, orientation: int) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG stream")
    out = [_PNG_SIGNATURE]
    i = len(_PNG_SIGNATURE)
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        chunk = data[i : i + 12 + length]
        if kind in _PNG_KEEP:
            if kind == b"IDAT" and orientation != 1 and not any(c[4:8] == b"eXIf" for c in out[1:]):
                out.append(_png_chunk(b"eXIf", _exif_orientation_only(orientation)[6:]))  # no "Exif\0\0"
            out.append(chunk)
        if kind == b"IEND":
            return b"".join(out)
        i += 12 + length
    raise ValueError("PNG: no end chunk")


def clean_photo_bytes(data: bytes) -> tuple[bytes, str]:
    """``(bytes, extension)`` of the photo in ``data`` without metadata (see the module docstring).
    Raises :class:`pipeline.one_photo.loading.PhotoError` for what the loader would refuse."""
    from pipeline.one_photo.loading import read_photo_bytes, read_photo_header

    header = read_photo_header(data, "photo")
    if header.format == "JPEG":
        return _jpeg(data, header.orientation), ".jpg"
    if header.format == "PNG":
        return _png(data, header.orientation), ".png"
    photo = read_photo_bytes(data, "photo")
    buf = io.BytesIO()
    Image.fromarray(photo.rgb).save(buf, format="PNG")
    return buf.getvalue(), ".png"
