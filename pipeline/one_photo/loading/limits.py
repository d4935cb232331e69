"""How strict loading is (:class:`LoadSettings`) and the guards that hold before any pixel is
decoded: the pixel count (the decompression-bomb guard) and Pillow's truncated-data flag kept off
during our loads. The truncation guard's state is process-wide and lives here only; a forked child
re-creates it (``os.register_at_fork``)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import ImageFile
from pydantic import PositiveInt

from data.config import Settings
from pipeline.one_photo.loading.errors import PhotoError, PhotoTooLarge


class LoadSettings(Settings):
    """How strict loading is.

    ``max_pixels`` is the decompression-bomb guard, checked from the header
    before decoding. Pillow has its own process-wide guard as well
    (``PIL.Image.MAX_IMAGE_PIXELS``, refusing above twice its value, about 179
    megapixels by default); a limit above that also needs Pillow's raised.
    """

    max_pixels: PositiveInt = 100_000_000
    allow_grayscale: bool = True


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
