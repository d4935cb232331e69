"""Finding the card in a photo: the ArUco marker searched for (downscaled, then with
parameters for small blurred markers, then at full resolution), its corners and the card ->
image homography refined (:mod:`.edges`), the result a :class:`CardDetection`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from data.card import CardSpec, marker_corners_mm
from data.geometry import apply_homography, homography_jacobian
from pipeline.one_photo.calibration.common import _check_rgb, _frozen, _perimeter
from pipeline.one_photo.calibration.edges import _refine_corners, _refine_with_card
from pipeline.one_photo.calibration.settings import CalibrationSettings


@dataclass(frozen=True, eq=False)
class CardDetection:
    """The card's marker found in a photo.

    ``corners_px``: (4, 2) outer corners of the marker's black square, order TL, TR, BR, BL
    of the *card* (that of :func:`data.card.marker_corners_mm`), px. ``card_to_image``: 3x3
    homography from card mm to image px (normalised so that ``[2, 2] == 1``).
    ``marker_side_px``: mean side of the marker quadrilateral, px. ``foreshortening``: ratio
    of the singular values of the card -> image Jacobian at the marker centre (1 = square
    on). ``other_marker_ids``: further markers of the dictionary seen (the largest is used).
    """

    marker_id: int
    corners_px: NDArray[np.float64]
    card_to_image: NDArray[np.float64]
    marker_side_px: float
    foreshortening: float
    other_marker_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "corners_px", _frozen(self.corners_px))
        object.__setattr__(self, "card_to_image", _frozen(self.card_to_image))

    @property
    def image_to_card(self) -> NDArray[np.float64]:
        """3x3 homography from image px to card mm."""
        h = np.linalg.inv(self.card_to_image)
        return h / h[2, 2]


#: ``cv2.aruco.DetectorParameters`` overrides for the second search pass, for markers of
#: ~15-40 px that are blurred or foreshortened (whole-head photos): bits read on a finer
#: grid away from the cell borders, and more adaptive-threshold window sizes. On the
#: generator's global views this finds 29 of 30 cards instead of 24 (no false markers on
#: 16 photos without a card); it is only a fallback because it missed 1 of 16 close-up
#: cards that the defaults find.
_SMALL_MARKER_PARAMS: dict[str, float] = {
    "perspectiveRemovePixelPerCell": 8,
    "perspectiveRemoveIgnoredMarginPerCell": 0.3,
    "adaptiveThreshWinSizeStep": 4,
}


def _detector(dictionary: str, overrides: dict[str, float] | None = None) -> cv2.aruco.ArucoDetector:
    # Built per call (microseconds): no detector object is shared between threads.
    params = cv2.aruco.DetectorParameters()
    for key, value in (overrides or {}).items():
        setattr(params, key, value)
    return cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)), params)


def _detect(
    gray: NDArray[np.uint8], dictionary: str, overrides: dict[str, float] | None = None
) -> list[tuple[int, NDArray[np.float64]]]:
    corners, ids, _ = _detector(dictionary, overrides).detectMarkers(gray)
    if ids is None:
        return []
    return [(int(i), np.asarray(c, dtype=np.float64).reshape(4, 2)) for i, c in zip(ids.ravel(), corners)]


def find_card(rgb: ArrayLike, card: CardSpec, settings: CalibrationSettings | None = None) -> CardDetection | None:
    """Find the card's ArUco marker in an HxWx3 uint8 sRGB photo; None when there is none.

    Any id of the card's dictionary is accepted (the id names a card; it is recorded).
    When several markers are seen, the largest is used and the others are listed.
    The search runs on a grey copy downscaled to ``settings.detect_max_side``, first with
    OpenCV's default detector parameters, then (``small_marker_retry``) with parameters for
    small blurred markers, then (``full_resolution_retry``) at full resolution. The corners
    are refined at full resolution in linear light, and the homography from the marker is
    refined on the straight edges of the colour patches (``refine_with_patches``).
    """
    s = settings or CalibrationSettings()
    img = _check_rgb(rgb)
    h, w = img.shape[:2]
    gray = cast(NDArray[np.uint8], cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))  # uint8 RGB in, uint8 grey out
    dictionary = card.marker.dictionary
    passes: list[dict[str, float] | None] = [None] + ([_SMALL_MARKER_PARAMS] if s.small_marker_retry else [])
    factor = max(h, w) / float(s.detect_max_side)
    search = gray
    if factor > 1.0:
        size = (max(1, round(w / factor)), max(1, round(h / factor)))
        search = cast(NDArray[np.uint8], cv2.resize(gray, size, interpolation=cv2.INTER_AREA))  # keeps uint8
    sx, sy = w / search.shape[1], h / search.shape[0]
    found: list[tuple[int, NDArray[np.float64]]] = []
    for overrides in passes:
        # pixel centres: x_full + 0.5 = (x_small + 0.5) * sx
        found = [(i, (q + 0.5) * [sx, sy] - 0.5) for i, q in _detect(search, dictionary, overrides)]
        if found:
            break
    if not found and factor > 1.0 and s.full_resolution_retry:
        found = _detect(gray, dictionary)
    found = [(i, q) for i, q in found if 0 <= i < card.marker.id_count and np.all(np.isfinite(q))]
    if not found:
        return None
    found.sort(key=lambda item: -_perimeter(item[1]))
    marker_id, quad = found[0]
    corners = _refine_corners(img, quad)
    src = marker_corners_mm(card)
    hmat, _ = cv2.findHomography(src, corners, 0)
    if hmat is None or not np.all(np.isfinite(hmat)) or abs(hmat[2, 2]) < 1e-12:
        return None
    hmat = hmat / hmat[2, 2]
    if s.refine_with_patches:
        hmat = _refine_with_card(img, card, hmat, corners)
        corners = apply_homography(hmat, src)
    sv = np.linalg.svd(homography_jacobian(hmat, src.mean(axis=0)), compute_uv=False)
    foreshortening = float(sv[0] / sv[1]) if sv[1] > 0 else math.inf
    return CardDetection(
        marker_id=marker_id,
        corners_px=corners,
        card_to_image=hmat,
        marker_side_px=_perimeter(corners) / 4.0,
        foreshortening=foreshortening,
        other_marker_ids=tuple(i for i, _ in found[1:]),
    )
