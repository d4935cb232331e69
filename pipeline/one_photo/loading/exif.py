"""The little metadata kept from the EXIF: the orientation (1-8) and the capture time, with its
UTC offset when the file states one. Broken EXIF never costs the photo."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from PIL import Image

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
