"""Which true dots a photo actually shows: the ``visible`` column of the truth.

A dot that exists in the skin is not always in the photo: hair lies over it, or
it has faded (or been blurred by the lens) below what any method can tell from
skin. Counting such dots as misses scores a perfect detector below 1, so the
truth marks them ``visible: false`` and the scoring (``models.scoring``) counts
them neither as hits nor as misses.

A dot is visible when both hold (thresholds in ``configs/flags.yaml``):

* ``hair_cover`` < ``visible_max_hair_cover``: the mean hair coverage over the
  dot's disc (the renderer's alpha of hair over skin, 19 samples within the
  half-density radius);
* ``contrast_photo`` >= ``speck_dl``: in the finished photo (light, noise, the
  camera's sharpening and noise reduction, JPEG), the dot's darkness against
  the skin around it (median L* of three rings at 2-3 radii, hair and other dots
  left out, minus the mean L* of its core) is beyond what
  ``visible_min_speck_quantile`` percent of bare-skin places of the same photo
  show by the same measure at the same size. Below it the photo shows the dot
  no more clearly than its own pores, specks and noise: even a method told
  where to look could not say it is there without also finding the skin's own
  specks everywhere else.
* ``contrast_seen`` >= ``visible_min_contrast_dl``: the dot's core contrast
  on the skin (``contrast_dL``) as the camera's optics render it, before light,
  noise and JPEG: attenuated by the lens blur at that point of the frame (the
  same depth-of-field ramp as ``data.synth.camera.photograph``) and the
  resampling into the image. A small dot under a wide blur loses most of its
  contrast; a large one keeps it. Hair is not part of it: that is ``hair_cover``.

Hair has the same question. A light strand lying on skin of its own lightness and
hue (blond or grey hair on light skin, red hair on ruddy skin), and a fine strand
that the camera's noise reduction, blur and JPEG wash out, is in the skin but not
in the photo: no method and no reviewer can say from the pixels whether it is hair
or scalp. :func:`unseen_hair` compares, in the finished photo, each hair pixel's
colour offset from the bare skin around it (averaged along the strand) with the
same measure for the same strand shapes laid over the photo's own bare skin, the
way the dots' photo test does. Hair below ``hair_visible_quantile`` percent of
those is labelled 255 by the truth (not labelled: neither hair nor scalp in any
pixel score) and counted as scalp by the photo's metrics, which say what the photo
shows.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike

from data.geometry import apply_homography

__all__ = [
    "disc_mean",
    "defocus_sigma_px",
    "image_px_per_mm",
    "photo_contrast",
    "photo_lstar",
    "seen_contrast",
    "speck_levels",
    "unseen_hair",
    "visible",
]

# 1 + 6 + 12 sample points within the unit disc (centre, two rings)
_R = np.concatenate([[0.0], np.full(6, 0.5), np.full(12, 0.9)])
_A = np.concatenate(
    [[0.0], np.linspace(0, 2 * np.pi, 6, endpoint=False), np.linspace(0, 2 * np.pi, 12, endpoint=False) + np.pi / 12]
)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mx = np.ascontiguousarray(x, np.float32).reshape(1, -1)
    my = np.ascontiguousarray(y, np.float32).reshape(1, -1)
    out = [
        cv2.remap(image, mx[:, i : i + 32000], my[:, i : i + 32000], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        for i in range(0, mx.shape[1], 32000)
    ]
    flat = np.concatenate(out, axis=1) if out else np.zeros((1, 0), np.float32)
    return flat.reshape(np.shape(x))


def disc_mean(image: np.ndarray, centres_px: np.ndarray, radius_px: np.ndarray) -> np.ndarray:
    """(N,) mean of ``image`` (HxW float32) over discs, from 19 bilinear samples each."""
    c = np.asarray(centres_px, np.float64).reshape(-1, 2)
    if len(c) == 0:
        return np.zeros(0)
    r = np.asarray(radius_px, np.float64).reshape(-1, 1)
    x = c[:, :1] + r * _R[None, :] * np.cos(_A)[None, :]
    y = c[:, 1:] + r * _R[None, :] * np.sin(_A)[None, :]
    return _bilinear(np.ascontiguousarray(image, np.float32), x, y).astype(np.float64).mean(axis=1)


def image_px_per_mm(plane_to_image: np.ndarray, xy_mm: np.ndarray, step_mm: float = 0.05) -> np.ndarray:
    """(N,) local scale sqrt|det J| of the plane -> image homography at plane points (finite differences)."""
    xy = np.asarray(xy_mm, np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0)
    hm = np.asarray(plane_to_image, np.float64)
    o = apply_homography(hm, xy)
    dx = (apply_homography(hm, xy + [step_mm, 0.0]) - o) / step_mm
    dy = (apply_homography(hm, xy + [0.0, step_mm]) - o) / step_mm
    return np.sqrt(np.abs(dx[:, 0] * dy[:, 1] - dx[:, 1] * dy[:, 0]))


def defocus_sigma_px(xy_px: np.ndarray, size: tuple[int, int], sigma_max_px: float, azimuth_rad: float) -> np.ndarray:
    """(N,) Gaussian blur sigma at image points under the camera's depth-of-field ramp.

    The camera blends the sharp and the blurred frame by ``t`` (0 at the sharp
    side, 1 at the far side); for a compact dot the blend's peak loss is close
    to a Gaussian blur of ``t * sigma_max`` and this is what is returned.
    """
    w, h = size
    xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
    if sigma_max_px < 0.3 or len(xy) == 0:
        return np.zeros(len(xy))
    ca, sa = abs(np.cos(azimuth_rad)), abs(np.sin(azimuth_rad))
    t = np.clip(xy[:, 0] / max(w - 1, 1) * ca + xy[:, 1] / max(h - 1, 1) * sa, 0, 1)
    t /= max(min(1.0, ca + sa), 1e-6)
    return np.clip(t, 0, 1) * sigma_max_px


def seen_contrast(
    contrast_dl: ArrayLike, radius_px: ArrayLike, blur_sigma_px: ArrayLike, resample_sigma_px: float = 0.29
) -> np.ndarray:
    """(N,) the dot's centre darkness as the optics render it.

    A compact spot of Gaussian sigma ``s`` blurred by ``b`` keeps
    ``s^2 / (s^2 + b^2)`` of its peak; ``s`` is the half-density radius / 1.18
    (the half-maximum radius of a Gaussian), ``b^2`` the lens blur at that
    point plus the bilinear resampling of the plane raster into the image
    (``resample_sigma_px``: the sd of a uniform pixel offset, 1/sqrt(12)).
    ``contrast_dl`` is the dot's core contrast on the skin (the ``contrast_dL``
    truth, measured before hair, light and camera).
    """
    s2 = (np.maximum(np.asarray(radius_px, np.float64), 0.05) / 1.18) ** 2
    b2 = np.asarray(blur_sigma_px, np.float64) ** 2 + resample_sigma_px**2
    return np.asarray(contrast_dl, np.float64) * s2 / (s2 + b2)


_RING_K = np.repeat([2.0, 2.5, 3.0], 24)
_RING_A = np.tile(np.linspace(0, 2 * np.pi, 24, endpoint=False), 3)


def photo_lstar(photo: np.ndarray) -> np.ndarray:
    """HxW float32 L* (D65) of an sRGB8 photo (HxWx3, RGB order), through a 256-entry table."""
    from data.colour import lstar_from_luminance, srgb_to_linear

    lin = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)
    y = np.take(lin * np.float32(0.2126), photo[..., 0])
    y += np.take(lin * np.float32(0.7152), photo[..., 1])
    y += np.take(lin * np.float32(0.0722), photo[..., 2])
    return lstar_from_luminance(y).astype(np.float32)


def _row_median(values: np.ndarray) -> np.ndarray:
    """Median of each row over its finite entries (NaN where none): one sort, no masked arrays."""
    v = np.sort(values, axis=1)  # NaNs last
    k = np.isfinite(v).sum(axis=1)
    rows = np.arange(len(v))
    lo, hi = np.maximum((k - 1) // 2, 0), np.maximum(k // 2, 0)
    out = 0.5 * (v[rows, np.minimum(lo, v.shape[1] - 1)] + v[rows, np.minimum(hi, v.shape[1] - 1)])
    return np.where(k > 0, out, np.nan)


def photo_contrast(lstar: np.ndarray, centres_px: np.ndarray, radius_px: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """(N,) darkness in the finished photo (``lstar``: its HxW L*, :func:`photo_lstar`): the median
    L* of three rings at 2, 2.5 and 3 radii (24 nearest-pixel samples each; samples on ``exclude``
    pixels, HxW bool, left out) minus the mean L* of the core (19 samples within 0.6 radius). NaN
    where every ring sample is excluded."""
    c = np.asarray(centres_px, np.float64).reshape(-1, 2)
    if len(c) == 0:
        return np.zeros(0)
    h, w = lstar.shape
    r = np.maximum(np.asarray(radius_px, np.float64).reshape(-1, 1), 0.7)

    def at(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.clip(np.floor(y + 0.5).astype(np.int64), 0, h - 1),
            np.clip(np.floor(x + 0.5).astype(np.int64), 0, w - 1),
        )

    core_r = np.maximum(0.6 * r, 0.5)
    core = lstar[at(c[:, :1] + core_r * _R * np.cos(_A), c[:, 1:] + core_r * _R * np.sin(_A))].mean(axis=1)
    ij = at(c[:, :1] + r * _RING_K * np.cos(_RING_A), c[:, 1:] + r * _RING_K * np.sin(_RING_A))
    ring = lstar[ij].astype(np.float64)
    ring[exclude[ij]] = np.nan
    return _row_median(ring) - core


def speck_levels(
    lstar: np.ndarray,
    radius_px: np.ndarray,
    bare: np.ndarray,
    exclude: np.ndarray,
    quantile: float,
    max_sites: int = 20000,
) -> np.ndarray:
    """(N,) for each radius, the ``quantile`` percentile of :func:`photo_contrast` over bare-skin
    places of the photo (``lstar``: its L*) at that radius: what the skin's own specks reach at the
    dot's size.

    Places: a regular grid over ``bare`` (HxW bool: scalp away from dots and hair), at most
    ``max_sites``; radii are grouped in steps of 40%. NaN where the photo has too few bare places
    (under 200) to say.
    """
    r = np.maximum(np.asarray(radius_px, np.float64).reshape(-1), 0.7)
    out = np.full(len(r), np.nan)
    if len(r) == 0:
        return out
    ys, xs = np.nonzero(bare)
    if len(xs) < 200:
        return out
    step = max(1, len(xs) // max_sites)
    sites = np.column_stack([xs[::step], ys[::step]]).astype(np.float64)
    groups = np.round(np.log(r) / np.log(1.4)).astype(np.int64)
    for g in np.unique(groups):
        rg = 1.4**g
        c = photo_contrast(lstar, sites, np.full(len(sites), rg), exclude)
        c = c[np.isfinite(c)]
        if len(c) >= 200:
            out[groups == g] = np.percentile(c, quantile)
    return out


def visible(
    hair_cover: np.ndarray,
    contrast_seen: np.ndarray,
    *,
    max_hair_cover: float,
    min_contrast_dl: float,
    contrast_photo: np.ndarray | None = None,
    speck_dl: np.ndarray | None = None,
) -> np.ndarray:
    """(N,) bool: the photo shows the dot (see the module docstring). The photo test applies where
    ``contrast_photo`` and ``speck_dl`` are given and finite."""
    out = (np.asarray(hair_cover) < max_hair_cover) & (np.asarray(contrast_seen) >= min_contrast_dl)
    if contrast_photo is not None and speck_dl is not None:
        cp, sp = np.asarray(contrast_photo, np.float64), np.asarray(speck_dl, np.float64)
        out &= ~(np.isfinite(sp) & ~(np.nan_to_num(cp, nan=-np.inf) >= sp))
    return out


def _box_mean(values: np.ndarray, weight: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over the ``weight``-ed pixels of each size x size window, and the weight there."""
    k = (int(size), int(size))
    den = cv2.boxFilter(weight, cv2.CV_32F, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    num = cv2.boxFilter(values * weight, cv2.CV_32F, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    return num / np.maximum(den, np.float32(1e-6)), den


def unseen_hair(
    photo: np.ndarray,
    hair: np.ndarray,
    bare: np.ndarray,
    quantile: float,
    *,
    reference_px: int = 31,
    strand_px: int = 5,
    min_places: int = 500,
) -> np.ndarray:
    """HxW bool: the truth's hair pixels that the finished photo shows no more clearly than its own bare skin.

    ``photo`` HxWx3 sRGB8 (RGB order), ``hair`` the truth's hair pixels, ``bare`` its bare skin (scalp
    outside every dot). Each pixel's colour offset from the bare skin around it (CIELAB, the mean of
    the bare pixels of a ``reference_px`` window) is averaged over the hair pixels of a ``strand_px``
    window: along a strand the offset adds up and the noise averages out. The same measure is taken
    for the same strand shapes laid over bare skin elsewhere in the photo (the hair mask moved by
    about a reference window); a hair pixel whose offset is below the ``quantile`` percentile of
    these is unseen. Without enough bare skin around a pixel, or enough places to compare with,
    nothing is called unseen.
    """
    hair = np.asarray(hair, bool)
    if not hair.any():
        return np.zeros_like(hair)
    lab = cv2.cvtColor(np.asarray(photo, np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)
    w_bare = np.asarray(bare, bool).astype(np.float32)
    w_hair = hair.astype(np.float32)
    # stand-in strands: the hair mask shifted onto bare skin away from any real hair
    far = w_bare * (cv2.dilate(w_hair, np.ones((5, 5), np.uint8)) == 0)
    shift = reference_px // 2 + strand_px
    w_place = np.zeros_like(w_hair)
    for dy, dx in ((0, shift), (shift, 0), (shift, shift), (0, 3 * shift)):
        w_place = np.roll(w_hair, (dy, dx), axis=(0, 1)) * far
        if np.count_nonzero(w_place) >= min_places:
            break
    else:
        return np.zeros_like(hair)
    e_hair = np.zeros(hair.shape, np.float32)
    e_place = np.zeros(hair.shape, np.float32)
    for c in range(3):
        ref, n_ref = _box_mean(lab[..., c], w_bare, reference_px)
        d = lab[..., c] - ref
        e_hair += np.square(_box_mean(d, w_hair, strand_px)[0])
        e_place += np.square(_box_mean(d, w_place, strand_px)[0])
    judged = n_ref >= reference_px  # at least a reference window's width of bare pixels around
    floor = (
        np.percentile(np.sqrt(e_place[(w_place > 0) & judged]), quantile) if (judged & (w_place > 0)).any() else np.inf
    )
    return hair & judged & (np.sqrt(e_hair) < floor)
