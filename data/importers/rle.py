"""COCO run-length encoding: uncompressed count lists and the compressed string form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# pycocotools is not a dependency (it needs a C build), and the codec is small, so it is
# written here in numpy/Python from the COCO format description: counts alternate between runs
# of 0 and 1 starting with 0, over the pixels in column-major (Fortran) order; the compressed
# string stores each count (from the fourth on, as the difference to the count two places
# before) in 5-bit groups, low bits first, as characters 48 + (group | 0x20 if more follow),
# the last group's 0x10 bit being the sign.


def _runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a 1-D boolean array, starting with a (possibly empty) run of False."""
    flat = np.asarray(flat, dtype=bool).ravel()
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], edges, [flat.size])))
    runs = counts.tolist()
    return [0, *runs] if flat[0] else runs


def _unruns(counts: Sequence[int], n: int) -> np.ndarray:
    """Inverse of :func:`_runs`: a boolean array of length ``n``."""
    c = np.asarray(counts, dtype=np.int64).ravel()
    if c.size and c.min() < 0:
        raise ValueError("run lengths must not be negative")
    if int(c.sum()) != n:
        raise ValueError(f"run lengths add up to {int(c.sum())} pixels, expected {n}")
    values = (np.arange(c.size) % 2).astype(bool)
    return np.repeat(values, c)


def rle_encode(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts of a 2-D boolean mask (column-major, first run is 0s)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    return _runs(m.astype(bool).ravel(order="F"))


def rle_decode(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """HxW boolean mask from COCO uncompressed RLE counts (``ValueError`` if they do not fit)."""
    flat = _unruns(counts, height * width)
    return flat.reshape((width, height)).T.copy()


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """COCO compressed RLE string of uncompressed counts (pycocotools' ``rleToString``)."""
    out: list[str] = []
    cnts = [int(c) for c in counts]
    for i, count in enumerate(cnts):
        x = count - cnts[i - 2] if i > 2 else count
        more = True
        while more:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers stay negative
            more = x != -1 if group & 0x10 else x != 0
            out.append(chr(48 + (group | 0x20 if more else group)))
    return "".join(out)


def rle_counts_from_string(text: str) -> list[int]:
    """Uncompressed counts of a COCO compressed RLE string (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x = 0
        shift = 0
        while True:
            if pos >= len(text):
                raise ValueError("compressed RLE string ends in the middle of a number")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {text[pos]!r} at {pos} is not COCO RLE")
            pos += 1
            x |= (code & 0x1F) << shift
            shift += 5
            if not code & 0x20:
                if code & 0x10:
                    x |= -1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError("compressed RLE string decodes to a negative run")
        counts.append(x)
    return counts
