"""Augmentation preset: photo, class mask and dot keypoints transformed together.

The preset is an albumentations 2.0.8 ``Compose`` built from an
:class:`AugmentSettings` object. It has three groups of transforms:

* geometric (image, masks and keypoints): horizontal/vertical flips, 90 degree
  rotations, an affine warp (isotropic scale, rotation, shear) and a mild
  perspective warp;
* photometric (image only): brightness/contrast, hue/saturation, RGB shift,
  colour temperature (Planckian jitter), gamma; and, when asked for, exposure and
  white balance in linear light (:class:`ExposureSettings`, drawn from the caller's
  generator before the rest);
* degradations (image only): one of Gaussian/motion/defocus blur, Gaussian noise,
  JPEG re-compression.

Pixel convention. Dot positions in this project use OpenCV's convention: the
centre of pixel ``(i, j)`` is at ``x = j, y = i`` (integers). albumentations 2.x
uses the same convention for keypoints (a horizontal flip maps ``x`` to
``W - 1 - x``; affine and perspective warps go through ``cv2.warpAffine`` /
``cv2.warpPerspective`` whose matrices also refer to integer pixel centres), so
no half-pixel shift is applied anywhere; ``tests/test_augment.py`` checks this to
sub-pixel accuracy.

Randomness. albumentations keeps its own random state. :meth:`Augmenter.__call__`
draws a seed from the caller's ``numpy.random.Generator`` and installs fresh
generators in the pipeline before every call, so a result depends only on the
caller's generator state. One :class:`Augmenter` must not be shared between
threads (DataLoader worker processes each have their own copy, which is fine).

Masks. Class masks (and any extra masks such as per-dot instance masks) are
warped with nearest-neighbour interpolation; pixels that geometric warps bring
in from outside the input get ``fill_mask`` (255, "ignore").
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402  (the environment variable must be set first)
import cv2  # noqa: E402

from data.config import NonNegativeRange, PositiveRange, Range, Settings  # noqa: E402
from data.photometry import exposure_lut  # noqa: E402  (re-exported: the augmentation's exposure table)

__all__ = [
    "IGNORE",
    "LABEL_FIELD",
    "FlipSettings",
    "AffineSettings",
    "PerspectiveSettings",
    "ColourSettings",
    "ExposureSettings",
    "BlurSettings",
    "NoiseSettings",
    "JpegSettings",
    "AugmentSettings",
    "Augmented",
    "Augmenter",
    "build_compose",
    "exposure_lut",
]

#: Mask value meaning "no label here"; used for pixels brought in by warps.
IGNORE = 255
#: Name of the keypoint label field carrying each dot's index in the input list.
LABEL_FIELD = "dot_index"


class FlipSettings(Settings):
    """Mirror and quarter-turn symmetries (exact: no resampling)."""

    horizontal_p: float = Field(0.5, ge=0.0, le=1.0)
    vertical_p: float = Field(0.5, ge=0.0, le=1.0)
    rot90_p: float = Field(0.5, ge=0.0, le=1.0)
    """Probability of a random multiple of 90 degrees (swaps H and W on non-square input)."""


class AffineSettings(Settings):
    """Isotropic scale, rotation and shear about the image centre."""

    p: float = Field(0.7, ge=0.0, le=1.0)
    scale: PositiveRange = (0.85, 1.15)
    """Zoom factor; > 1 enlarges content (px_per_mm is multiplied by it)."""
    rotate_deg: Range = (-45.0, 45.0)
    shear_deg: Range = (-5.0, 5.0)

    @model_validator(mode="after")
    def _limits(self) -> AffineSettings:
        if max(abs(v) for v in self.shear_deg) >= 45:
            raise ValueError("shear_deg must lie within (-45, 45)")
        return self


class PerspectiveSettings(Settings):
    """Mild keystone (camera tilt) distortion; ``scale`` as in albumentations."""

    p: float = Field(0.3, ge=0.0, le=1.0)
    scale: NonNegativeRange = (0.01, 0.05)
    """Corner displacement as a fraction of the image size."""


class ColourSettings(Settings):
    """Lighting and colour changes (image only)."""

    brightness_contrast_p: float = Field(0.7, ge=0.0, le=1.0)
    brightness: Range = (-0.2, 0.2)
    contrast: Range = (-0.2, 0.2)
    hue_saturation_p: float = Field(0.3, ge=0.0, le=1.0)
    hue_shift: Range = (-4.0, 4.0)
    """Hue shift in OpenCV hue units (1 unit = 2 degrees for uint8 images)."""
    saturation_shift: Range = (-15.0, 15.0)
    value_shift: Range = (-10.0, 10.0)
    rgb_shift_p: float = Field(0.3, ge=0.0, le=1.0)
    rgb_shift: Range = (-10.0, 10.0)
    """Additive shift per channel, uint8 units, drawn independently for R, G, B."""
    temperature_p: float = Field(0.3, ge=0.0, le=1.0)
    temperature_kelvin: tuple[int, int] = (3500, 9000)
    """Planckian (black-body) illuminant range; albumentations allows 3000-15000 K."""
    gamma_p: float = Field(0.3, ge=0.0, le=1.0)
    gamma_percent: PositiveRange = (80.0, 120.0)
    """Gamma x 100 (albumentations' ``gamma_limit`` unit)."""

    @model_validator(mode="after")
    def _limits(self) -> ColourSettings:
        lo, hi = self.temperature_kelvin
        if not (3000 <= lo <= hi <= 15000):
            raise ValueError("temperature_kelvin must be a range within [3000, 15000]")
        return self


class ExposureSettings(Settings):
    """The same scene taken differently, in linear light (image only): exposure ``2**stops`` and a
    white-balance error (red and blue gains against green). Off by default (``p`` 0): the
    segmenter's recipe turns it on so that a photo one stop over or under, or warm or cold, gives
    the same mask (issue: a segmenter that generalises)."""

    p: float = Field(0.0, ge=0.0, le=1.0)
    stops: Range = (-1.0, 1.0)
    wb_gain: PositiveRange = (0.85, 1.15)

    def gains(self, rng: np.random.Generator) -> np.ndarray:
        """(3,) linear RGB gains of one draw."""
        e = 2.0 ** rng.uniform(*self.stops)
        return e * np.array([rng.uniform(*self.wb_gain), 1.0, rng.uniform(*self.wb_gain)])


class BlurSettings(Settings):
    """One of Gaussian, motion or defocus blur, kept small (dots are 2-15 px wide)."""

    p: float = Field(0.3, ge=0.0, le=1.0)
    gaussian_sigma: PositiveRange = (0.3, 1.2)
    motion_kernel: tuple[int, int] = (3, 5)
    """Odd kernel sizes (pixels) of the motion-blur line."""
    defocus_radius: tuple[int, int] = (1, 3)
    defocus_alias_blur: PositiveRange = (0.1, 0.3)

    @model_validator(mode="after")
    def _limits(self) -> BlurSettings:
        lo, hi = self.motion_kernel
        if lo < 3 or hi < lo or lo % 2 == 0 or hi % 2 == 0:
            raise ValueError("motion_kernel must be odd sizes >= 3, low <= high")
        lo, hi = self.defocus_radius
        if lo < 1 or hi < lo:
            raise ValueError("defocus_radius must be >= 1, low <= high")
        return self


class NoiseSettings(Settings):
    """Additive Gaussian sensor noise."""

    p: float = Field(0.3, ge=0.0, le=1.0)
    std: NonNegativeRange = (0.005, 0.03)
    """Noise standard deviation as a fraction of the maximum pixel value."""

    @model_validator(mode="after")
    def _limits(self) -> NoiseSettings:
        if self.std[1] > 1:
            raise ValueError("std must lie within [0, 1]")
        return self


class JpegSettings(Settings):
    """JPEG re-compression artefacts."""

    p: float = Field(0.3, ge=0.0, le=1.0)
    quality: tuple[int, int] = (60, 95)

    @model_validator(mode="after")
    def _limits(self) -> JpegSettings:
        lo, hi = self.quality
        if not (1 <= lo <= hi <= 100):
            raise ValueError("quality must be a range within [1, 100]")
        return self


class AugmentSettings(Settings):
    """Strengths of the training augmentation; ``mode: none`` turns all of it off.

    The defaults are the training preset. ``AugmentSettings(mode="none")`` (or
    :meth:`none`) is the evaluation setting: the pipeline then only crops.
    """

    mode: Literal["train", "none"] = "train"
    flip: FlipSettings = FlipSettings()
    affine: AffineSettings = AffineSettings()
    perspective: PerspectiveSettings = PerspectiveSettings()
    colour: ColourSettings = ColourSettings()
    exposure: ExposureSettings = ExposureSettings()
    blur: BlurSettings = BlurSettings()
    noise: NoiseSettings = NoiseSettings()
    jpeg: JpegSettings = JpegSettings()

    @classmethod
    def none(cls) -> AugmentSettings:
        """The evaluation setting: no augmentation at all."""
        return cls(mode="none")

    def context_factor(self) -> float:
        """How much larger than the output a square input window must be.

        A crop of side ``s`` taken from the centre of the augmented window covers,
        before the warp, at most ``s * context_factor()`` pixels of the window, so
        an input window that large never shows empty corners (rotation, shear and
        zoom-out are covered; the perspective warp only zooms in with
        ``keep_size``). 1.0 when there is no affine warp.
        """
        if self.mode == "none" or self.affine.p == 0:
            return 1.0
        lo, hi = self.affine.rotate_deg
        angles = np.deg2rad(np.append(np.linspace(lo, hi, 361), [45.0, -45.0, 135.0, -135.0]))
        angles = angles[(angles >= math.radians(lo)) & (angles <= math.radians(hi))]
        spread = float(np.max(np.abs(np.cos(angles)) + np.abs(np.sin(angles))))
        shear = math.tan(math.radians(max(abs(v) for v in self.affine.shear_deg)))
        return spread * (1.0 + shear) / min(self.affine.scale)


def _geometric(cfg: AugmentSettings) -> list[A.BasicTransform]:
    fill_mask = IGNORE
    out: list[A.BasicTransform] = [
        A.HorizontalFlip(p=cfg.flip.horizontal_p),
        A.VerticalFlip(p=cfg.flip.vertical_p),
        A.RandomRotate90(p=cfg.flip.rot90_p),
        A.Affine(
            scale=cfg.affine.scale,
            rotate=cfg.affine.rotate_deg,
            shear=cfg.affine.shear_deg,
            keep_ratio=True,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=fill_mask,
            p=cfg.affine.p,
        ),
        A.Perspective(
            scale=cfg.perspective.scale,
            keep_size=True,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=fill_mask,
            p=cfg.perspective.p,
        ),
    ]
    return out


def _photometric(cfg: AugmentSettings) -> list[A.BasicTransform]:
    c = cfg.colour
    return [
        A.RandomBrightnessContrast(brightness_limit=c.brightness, contrast_limit=c.contrast, p=c.brightness_contrast_p),
        A.HueSaturationValue(
            hue_shift_limit=c.hue_shift,
            sat_shift_limit=c.saturation_shift,
            val_shift_limit=c.value_shift,
            p=c.hue_saturation_p,
        ),
        A.RGBShift(r_shift_limit=c.rgb_shift, g_shift_limit=c.rgb_shift, b_shift_limit=c.rgb_shift, p=c.rgb_shift_p),
        A.PlanckianJitter(mode="blackbody", temperature_limit=c.temperature_kelvin, p=c.temperature_p),
        A.RandomGamma(gamma_limit=c.gamma_percent, p=c.gamma_p),
    ]


def _degradations(cfg: AugmentSettings) -> list[A.BasicTransform]:
    b = cfg.blur
    return [
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=0, sigma_limit=b.gaussian_sigma, p=1.0),
                A.MotionBlur(blur_limit=b.motion_kernel, allow_shifted=False, p=1.0),
                A.Defocus(radius=b.defocus_radius, alias_blur=b.defocus_alias_blur, p=1.0),
            ],
            p=b.p,
        ),
        A.GaussNoise(std_range=cfg.noise.std, mean_range=(0.0, 0.0), per_channel=True, p=cfg.noise.p),
        A.ImageCompression(compression_type="jpeg", quality_range=cfg.jpeg.quality, p=cfg.jpeg.p),
    ]


def build_compose(cfg: AugmentSettings, output_size: tuple[int, int] | None = None) -> A.Compose:
    """The albumentations pipeline for ``cfg``.

    ``output_size`` ``(height, width)`` appends a centre crop (the augmented
    window is cut down to the training crop). Keypoints are ``"xy"`` with a label
    field ``dot_index`` and ``remove_invisible=True``; ``strict=True`` makes
    albumentations refuse unknown arguments instead of warning.
    """
    transforms: list[A.BasicTransform] = []
    if cfg.mode == "train":
        transforms += _geometric(cfg) + _photometric(cfg) + _degradations(cfg)
    if output_size is not None:
        transforms.append(A.CenterCrop(height=int(output_size[0]), width=int(output_size[1]), p=1.0))
    if not transforms:
        transforms.append(A.NoOp(p=1.0))  # an empty Compose warns that nothing handles the keypoints
    return A.Compose(
        transforms,
        keypoint_params=A.KeypointParams(format="xy", label_fields=[LABEL_FIELD], remove_invisible=True),
        strict=True,
        save_applied_params=True,
    )


@dataclass(frozen=True)
class Augmented:
    """The result of one augmentation call."""

    image: np.ndarray
    """HxWx3 uint8 RGB."""
    mask: np.ndarray
    """HxW class mask (input dtype), ``IGNORE`` where warps brought in empty space."""
    points: np.ndarray
    """Nx2 float64 positions (OpenCV pixel-centre convention) of the surviving dots."""
    kept: np.ndarray
    """N int64 indices into the input point list of the surviving dots (same order as ``points``)."""
    scale: float
    """Local linear magnification at the output centre (multiply px_per_mm by it)."""
    masks: tuple[np.ndarray, ...] = ()
    """Extra masks (e.g. per-dot instance masks) warped like ``mask``."""


def _local_scale(matrix: np.ndarray, at: tuple[float, float]) -> float:
    """sqrt(|det J|) of the homography ``matrix`` at point ``at`` (x, y)."""
    h = np.asarray(matrix, dtype=np.float64)
    x, y = at
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    jac = np.array([[h[0, 0] - u * h[2, 0], h[0, 1] - u * h[2, 1]], [h[1, 0] - v * h[2, 0], h[1, 1] - v * h[2, 1]]]) / w
    return float(math.sqrt(abs(np.linalg.det(jac))))


def _applied_scale(applied: Sequence[tuple[str, dict]], shape: tuple[int, int]) -> float:
    """Magnification of the geometric transforms that ran, evaluated at the image centre."""
    height, width = shape
    centre = (width / 2 - 0.5, height / 2 - 0.5)
    scale = 1.0
    for name, params in applied:
        if name == "Affine":
            scale *= _local_scale(params["matrix"], centre)
        elif name == "Perspective":
            shape_now = params.get("shape", (height, width))
            h_now, w_now = int(shape_now[0]), int(shape_now[1])
            resize = np.diag([w_now / params["max_width"], h_now / params["max_height"], 1.0])
            scale *= _local_scale(resize @ params["matrix"], (w_now / 2 - 0.5, h_now / 2 - 0.5))
    return scale


@dataclass(frozen=True)
class Augmenter:
    """Callable preset: ``Augmenter.build(settings)(image, mask, points, rng)``."""

    settings: AugmentSettings
    compose: A.Compose
    output_size: tuple[int, int] | None = None

    @classmethod
    def build(cls, settings: AugmentSettings, output_size: tuple[int, int] | None = None) -> Augmenter:
        """Build the pipeline once; ``output_size`` (h, w) adds the final centre crop."""
        return cls(settings, build_compose(settings, output_size), output_size)

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        points: np.ndarray,
        rng: np.random.Generator,
        *,
        masks: Sequence[np.ndarray] = (),
    ) -> Augmented:
        """Augment one window.

        ``image`` HxWx3 uint8 RGB, ``mask`` HxW (uint8 classes), ``points`` Kx2
        (x, y) in OpenCV pixel convention, ``masks`` extra HxW masks (uint8/uint16).
        Points outside ``[0, W) x [0, H)`` are treated as invisible. All random
        draws come from ``rng``.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        h, w = mask.shape[:2]
        inside = np.flatnonzero(
            np.all(np.isfinite(pts), axis=1) & (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        )
        seed = int(rng.integers(0, 2**63 - 1))
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        ex = self.settings.exposure
        if self.settings.mode == "train" and ex.p > 0 and rng.random() < ex.p:
            image = cv2.LUT(np.ascontiguousarray(image), exposure_lut(ex.gains(rng)))
        data: dict = {"image": image, "mask": mask, "keypoints": pts[inside], LABEL_FIELD: inside}
        if masks:
            data["masks"] = list(masks)
        out = self.compose(**data)
        kp = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
        kept = np.asarray(out[LABEL_FIELD], dtype=np.int64).reshape(-1)
        scale = _applied_scale(out.get("applied_transforms", ()), (h, w))
        extra = tuple(np.asarray(m) for m in out["masks"]) if masks else ()
        return Augmented(image=out["image"], mask=out["mask"], points=kp, kept=kept, scale=scale, masks=extra)
