"""Camera and light: pose (homography), illuminant, exposure, blur, noise, colour
cast, in-camera noise reduction and sharpening, JPEG.

The scene is reflectance on the scalp plane; the camera turns it into the
8-bit sRGB photo a clinic would take. Each step is a separate pure function
so that tests can check them one by one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from data.colour import linear_to_srgb, luminance_lstar
from data.geometry import apply_homography, homography_jacobian
from data.synth.fields import smooth_field
from data.synth.settings import CameraSettings

_XYZ_TO_LIN = np.array(
    [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560], [0.0556434, -0.2040259, 1.0572252]]
)


@dataclass(frozen=True)
class CameraParams:
    px_per_mm: float
    rotation_deg: float
    tilt_deg: float
    tilt_azimuth_deg: float
    focal_px: float
    dof_blur_mm: float
    illuminant_kelvin: float
    white_balance_error: float
    gradient: float
    gradient_angle_deg: float
    exposure_ev: float
    read_noise: float
    shot_noise: float
    jpeg_quality: int
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Gains on linear R, G, B left after white balance (unit luminance)."""
    sharpen_amount: float = 0.0
    detail_radius_px: float = 1.0
    denoise_threshold: float = 0.0
    macro: bool = False
    """A phone macro: strong tilt and shallow depth of field (``tilt_deg``, ``dof_blur_mm``)."""


def draw_camera(rng: np.random.Generator, s: CameraSettings, width: int) -> CameraParams:
    cam = _draw_basic(rng, s, width)
    # camera looks, drawn after the basic pose and light (same order for every image)
    mag = rng.uniform(*s.colour_cast)
    hue = rng.uniform(0.0, 2 * np.pi)
    cast = np.exp(mag * np.cos(hue + np.array([0.0, -2 * np.pi / 3, 2 * np.pi / 3])))
    cast /= cast @ np.array([0.2126, 0.7152, 0.0722])
    sharpen = rng.random() < s.sharpen_probability
    amount = rng.uniform(*s.sharpen_amount)
    radius = rng.uniform(*s.detail_radius_px)
    denoise = rng.random() < s.denoise_probability
    threshold = rng.uniform(*s.denoise_threshold)
    macro = rng.random() < s.macro_probability
    tilt = rng.uniform(*s.macro_tilt_deg)
    dof = rng.uniform(*s.macro_dof_blur_mm)
    extra = dict(
        colour_cast=tuple(float(v) for v in cast),
        sharpen_amount=float(amount) if sharpen else 0.0,
        detail_radius_px=float(radius),
        denoise_threshold=float(threshold) if denoise else 0.0,
        macro=bool(macro),
    )
    if macro:
        extra.update(tilt_deg=float(tilt), dof_blur_mm=float(dof))
    return CameraParams(**{**asdict(cam), **extra})


def _draw_basic(rng: np.random.Generator, s: CameraSettings, width: int) -> CameraParams:
    return CameraParams(
        px_per_mm=float(rng.uniform(*s.px_per_mm)),
        rotation_deg=float(rng.uniform(*s.rotation_deg)),
        tilt_deg=float(rng.uniform(*s.tilt_deg)),
        tilt_azimuth_deg=float(rng.uniform(0, 360)),
        focal_px=float(rng.uniform(*s.focal_px_per_width) * width),
        dof_blur_mm=float(rng.uniform(*s.dof_blur_mm)),
        illuminant_kelvin=float(rng.uniform(*s.illuminant_kelvin)),
        white_balance_error=float(rng.uniform(*s.white_balance_error)),
        gradient=float(rng.uniform(*s.illumination_gradient)),
        gradient_angle_deg=float(rng.uniform(0, 360)),
        exposure_ev=float(rng.uniform(*s.exposure_ev)),
        read_noise=float(rng.uniform(*s.read_noise)),
        shot_noise=float(rng.uniform(*s.shot_noise)),
        jpeg_quality=int(round(rng.uniform(*s.jpeg_quality))),
    )


def _rot(axis: int, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def plane_to_image(
    cam: CameraParams,
    size: tuple[int, int],
    centre_mm: tuple[float, float],
) -> np.ndarray:
    """3x3 homography from scalp-plane mm to image pixels.

    A pinhole camera looks at the plane point ``centre_mm`` along an axis tilted
    by ``tilt_deg`` (towards ``tilt_azimuth_deg``) and rolled by ``rotation_deg``.
    Its distance is chosen so that the scale at the image centre, sqrt|det J|,
    equals ``px_per_mm`` exactly.
    """
    w, h = size
    az = np.deg2rad(cam.tilt_azimuth_deg)
    r = _rot(2, np.deg2rad(cam.rotation_deg)) @ _rot(2, -az) @ _rot(0, np.deg2rad(cam.tilt_deg)) @ _rot(2, az)
    k = np.array([[cam.focal_px, 0, w / 2.0], [0, cam.focal_px, h / 2.0], [0, 0, 1]])
    shift = np.array([[1, 0, -centre_mm[0]], [0, 1, -centre_mm[1]], [0, 0, 1]])

    def homography(dist: float) -> np.ndarray:
        return k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, dist]]) @ shift

    probe = homography(1000.0)
    scale = np.sqrt(abs(np.linalg.det(homography_jacobian(probe, np.array(centre_mm)))))
    hmat = homography(1000.0 * scale / cam.px_per_mm)
    return hmat / hmat[2, 2]


def illuminant_rgb(kelvin: float) -> np.ndarray:
    """Linear sRGB of a Planckian illuminant, relative to D65 (D65 -> [1, 1, 1]).

    Chromaticity from the cubic-spline fit of the Planckian locus of Kim et al.
    (2002), valid 1667-25000 K.
    """
    t = float(np.clip(kelvin, 1667, 25000))
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    xyz = np.array([x / y, 1.0, (1 - x - y) / y])
    rgb = _XYZ_TO_LIN @ xyz
    rgb = np.clip(rgb, 1e-3, None)
    return rgb / (rgb @ np.array([0.2126, 0.7152, 0.0722]))


def _light_grid(cam: CameraParams, gh: int, gw: int) -> np.ndarray:
    """The light field (fall-off times vignetting) on a ``gh`` x ``gw`` grid spanning the frame."""
    a = np.deg2rad(cam.gradient_angle_deg)
    ys = np.linspace(-0.5, 0.5, gh, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, gw, dtype=np.float32)[None, :]
    ramp = xs * np.float32(np.cos(a)) + ys * np.float32(np.sin(a))
    vignette = 1.0 - 0.25 * (xs * xs + ys * ys)
    return ((1.0 - cam.gradient * (ramp + 0.5)) * vignette).astype(np.float32)


def light_field(cam: CameraParams, shape: tuple[int, int], tint: np.ndarray | None = None) -> np.ndarray:
    """HxW relative irradiance: a linear fall-off plus mild lens vignetting.

    With ``tint`` (3 values, e.g. the illuminant colour times a gain) the result
    is HxWx3, the field times the tint, made in the same single upsampling pass.
    The field is smooth, so it is computed on a 1/8 grid and upsampled.
    """
    h, w = shape
    small = _light_grid(cam, max(2, h // 8), max(2, w // 8))
    if tint is not None:
        small = small[..., None] * np.asarray(tint, np.float32)[None, None, :]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def defocus(img: np.ndarray, cam: CameraParams, sigma_max_px: float) -> np.ndarray:
    """Depth-of-field blur growing across the frame along the tilt direction.

    The sharp and the fully blurred image are blended by a ramp (focus at one
    side of the frame, most defocus at the other), the usual look of a tilted
    close-up at short focus distance. Below 0.3 px of blur nothing visible
    changes and the image is returned as is.
    """
    if sigma_max_px < 0.3:
        return img
    h, w = img.shape[:2]
    blurred = cv2.GaussianBlur(img, (0, 0), sigma_max_px)
    a = np.deg2rad(cam.tilt_azimuth_deg + cam.rotation_deg)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    t = np.clip(xs * np.float32(abs(np.cos(a))) + ys * np.float32(abs(np.sin(a))), 0, 1)
    t *= np.float32(1.0 / max(float(t.max()), 1e-6))
    # one fused pass: (1 - t) * sharp + t * blurred (weights sum to one), into the blur's buffer
    return cv2.blendLinear(img, blurred, np.float32(1.0) - t, t, dst=blurred)


# 16-bit linear -> 8-bit sRGB lookup, exact to the 8-bit output
_SRGB_LUT = np.round(255.0 * linear_to_srgb(np.linspace(0.0, 1.0, 65536))).astype(np.uint8)


def encode_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear RGB (clipped to [0, 1]) -> 8-bit sRGB through a 16-bit lookup table."""
    return np.take(_SRGB_LUT, _quantise16(linear * np.float32(65535.0)))


def _quantise16(scaled: np.ndarray) -> np.ndarray:
    scaled += np.float32(0.5)
    np.clip(scaled, 0, 65535, out=scaled)
    return scaled.astype(np.uint16)


def _normal_table(levels: int = 256) -> np.ndarray:
    """Standard-normal values at the centres of ``levels`` equal-probability bins.

    A uniformly random byte looked up in this table is a standard-normal draw
    quantised to 256 levels (rescaled to unit variance). For sensor noise that
    is indistinguishable from continuous draws and several times cheaper than
    ``Generator.standard_normal`` on tens of millions of values.
    """
    from scipy.special import ndtri

    z = ndtri((np.arange(levels) + 0.5) / levels)
    return (z / z.std()).astype(np.float32).reshape(levels, 1)


_NORMAL_LUT = _normal_table()


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """float32 array of (256-level quantised) standard-normal draws from ``rng`` (into ``out``)."""
    codes = np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape)
    if len(shape) == 3 and shape[2] <= 4:
        return cv2.LUT(codes, _NORMAL_LUT, dst=out)
    if out is None:
        return _NORMAL_LUT[codes, 0]
    np.take(_NORMAL_LUT[:, 0], codes, out=out)
    return out


def expose(
    radiance: np.ndarray,
    cam: CameraParams,
    rng: np.random.Generator,
    gain_applied: bool = False,
    scratch: tuple[np.ndarray, ...] = (),
) -> np.ndarray:
    """Radiance -> white-balanced, noisy linear camera RGB (float32, in place).

    ``gain_applied``: the exposure gain (``exposure_gain``) is already in ``radiance``.
    ``scratch``: up to two dead float32 arrays of ``radiance``'s shape to reuse for the
    noise and its standard deviation (fresh memory costs as much as the arithmetic).
    """
    spare = [a for a in scratch if a.shape == radiance.shape and a.dtype == np.float32 and a is not radiance]
    illum = illuminant_rgb(cam.illuminant_kelvin)
    # the camera's white balance corrects only part of the cast
    wb = illum ** -(1.0 - cam.white_balance_error)
    wb = (wb / (wb @ np.array([0.2126, 0.7152, 0.0722]))).astype(np.float32)
    if not gain_applied:
        radiance *= exposure_gain(cam)
    # sensor noise: shot (signal dependent) + read, drawn once per pixel and channel
    noise = gaussian_noise(rng, radiance.shape, out=spare.pop() if spare else None)
    sd = np.maximum(radiance, np.float32(0.0), out=spare.pop() if spare else None)
    sd *= np.float32(cam.shot_noise**2)
    sd += np.float32(cam.read_noise**2)
    cv2.sqrt(sd, dst=sd)
    noise *= sd
    del sd
    radiance += noise
    radiance *= wb
    return radiance


def exposure_gain(cam: CameraParams) -> np.float32:
    return np.float32(0.82 * 2.0**cam.exposure_ev)


# --------------------------------------------------------------------------- strip-wise photograph


def _strip_warp(mat: np.ndarray, y0: int) -> np.ndarray:
    """``mat`` (3x3, source -> full image) followed by a shift of the image rows by ``-y0``."""
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -float(y0)], [0.0, 0.0, 1.0]]) @ mat


def photograph(
    albedo: np.ndarray,
    shine: np.ndarray,
    plane_to_px: np.ndarray,
    size: tuple[int, int],
    cam: CameraParams,
    rng: np.random.Generator,
    *,
    clean_lstar: np.ndarray,
    strip_rows: int = 128,
) -> np.ndarray:
    """Warp a plane raster into the camera and expose it, one band of rows at a time.

    Does what ``warpPerspective`` + ``light_field`` + ``defocus`` + ``expose`` +
    ``encode_srgb8`` do on whole frames, but every float temporary is a strip of
    ``strip_rows`` rows (plus the blur's margin), so a 12-megapixel photo never
    allocates a full-frame float image: fresh memory costs as much as arithmetic
    on these machines, and strips stay in cache. Row bands overlap by the blur
    radius, so the blur is the same as on the whole frame.

    ``albedo`` (plane HxWx3 float32 linear reflectance) and ``shine`` (plane HxW
    float32 oily sheen strength) are read only. ``clean_lstar`` (image HxW
    float32) receives the noiseless, unlit L* of the warped albedo. Returns the
    HxWx3 uint8 sRGB photo. Random draws: the sparkle field, then the sensor
    noise strip by strip (row order).
    """
    w, h = size
    warp: dict[str, Any] = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # specular sparkle: where the oily sheen catches the light
    sparkle = smooth_field(rng, (h, w), 0.6 * cam.px_per_mm)
    sparkle -= np.float32(0.5)
    np.maximum(sparkle, np.float32(0.0), out=sparkle)
    sparkle *= np.float32(0.12)
    # light x illuminant x exposure gain: a smooth field on a 1/8 grid, resampled per strip
    illum = illuminant_rgb(cam.illuminant_kelvin).astype(np.float32)
    small = _light_grid(cam, max(2, h // 8), max(2, w // 8))[..., None] * (illum * exposure_gain(cam))
    gh, gw = small.shape[:2]
    sx, sy = gw / w, gh / h
    # defocus: blend of sharp and blurred by a ramp along the tilt direction
    sigma = cam.dof_blur_mm * cam.px_per_mm
    blur = sigma >= 0.3
    margin = int(np.ceil(4.0 * sigma)) + 1 if blur else 0
    a = np.deg2rad(cam.tilt_azimuth_deg + cam.rotation_deg)
    ca, sa = np.float32(abs(np.cos(a))), np.float32(abs(np.sin(a)))
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    ys_all = np.linspace(0, 1, h, dtype=np.float32)
    t_max = max(float(cast("float | np.float32", min(1.0, ca + sa))), 1e-6)
    # white balance corrects only part of the illuminant's cast
    wb = illuminant_rgb(cam.illuminant_kelvin) ** -(1.0 - cam.white_balance_error)
    wb = (wb / (wb @ np.array([0.2126, 0.7152, 0.0722]))).astype(np.float32)
    wb *= np.asarray(cam.colour_cast, np.float32)  # off-locus cast (mixed or fluorescent light)
    shot2, read2 = np.float32(cam.shot_noise**2), np.float32(cam.read_noise**2)

    photo = np.empty((h, w, 3), np.uint8)
    for y0 in range(0, h, strip_rows):
        y1 = min(h, y0 + strip_rows)
        ya, yb = max(0, y0 - margin), min(h, y1 + margin)
        rows = yb - ya
        # albedo and shine are float32, which warpPerspective keeps
        rad = cast(NDArray[np.float32], cv2.warpPerspective(albedo, _strip_warp(plane_to_px, ya), (w, rows), **warp))
        inner = slice(y0 - ya, y1 - ya)
        clean_lstar[y0:y1] = luminance_lstar(rad[inner])
        spec = cast(NDArray[np.float32], cv2.warpPerspective(shine, _strip_warp(plane_to_px, ya), (w, rows), **warp))
        spec *= sparkle[ya:yb]
        rad += spec[..., None]
        lmat = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, (ya + 0.5) * sy - 0.5]])
        rad *= cv2.warpAffine(
            small, lmat, (w, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )
        if blur:
            blurred = cv2.GaussianBlur(rad, (0, 0), sigma)[inner]
            t = np.clip(xs * ca + ys_all[y0:y1, None] * sa, 0, 1)
            t *= np.float32(1.0 / t_max)
            rad = cast(
                NDArray[np.float32],  # float32 blend of float32 frames
                cv2.blendLinear(np.ascontiguousarray(rad[inner]), blurred, np.float32(1.0) - t, t),
            )
        else:
            rad = np.ascontiguousarray(rad[inner])
        # sensor noise: shot (signal dependent) + read, one draw per pixel and channel
        noise = gaussian_noise(rng, rad.shape)
        sd = np.maximum(rad, np.float32(0.0))
        sd *= shot2
        sd += read2
        cv2.sqrt(sd, dst=sd)
        noise *= sd
        rad += noise
        rad *= wb
        rad *= np.float32(65535.0)
        np.take(_SRGB_LUT, _quantise16(rad), out=photo[y0:y1])
    isp_detail(photo, cam.sharpen_amount, cam.detail_radius_px, cam.denoise_threshold)
    return photo


def isp_detail(photo: np.ndarray, amount: float, radius_px: float, threshold: float, strip_rows: int = 256) -> None:
    """In-camera noise reduction and sharpening on the 8-bit luma, in place.

    The luma is split into a base (Gaussian, sigma ``radius_px``) and a detail band
    ``d`` (clamped to +-127 levels). Noise reduction cores the detail,
    ``d * d^2 / (d^2 + threshold^2)``: what is below ``threshold`` levels (noise,
    fine low-contrast texture) is flattened, the smeared look of a phone, while
    edges stay. Sharpening multiplies the detail by ``1 + amount`` (the unsharp
    mask, whose overshoot is the halo at edges). Both are one 256-entry table from
    detail to luma change, which is added to all three channels as an ISP does in
    YCbCr; the last step runs in strips of rows to stay in cache.
    """
    if amount <= 0 and threshold <= 0:
        return
    luma = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    base = cv2.GaussianBlur(luma, (0, 0), radius_px)
    detail = cv2.addWeighted(luma, 1.0, base, -1.0, 128.0)  # d + 128, saturated to 0..255
    del base
    d = np.arange(256, dtype=np.float64) - 128.0
    cored = d * d * d / (d * d + threshold**2) if threshold > 0 else d
    table = np.round(cored * (1.0 + amount) - d).astype(np.int16).reshape(1, 256)
    delta = cv2.LUT(detail, table)
    for y0 in range(0, photo.shape[0], strip_rows):
        dl = delta[y0 : y0 + strip_rows]
        strip = photo[y0 : y0 + strip_rows]
        cv2.add(strip, cv2.merge([dl, dl, dl]), dst=strip, dtype=cv2.CV_8U)


def points_in_frame(
    points_mm: dict[str, np.ndarray],
    plane_to_px: np.ndarray,
    size: tuple[int, int],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Of each kind of plane point (mm), those a photo of ``size`` shows: (mm, image px) pairs."""
    w, h = size
    out = {}
    for kind, xy in points_mm.items():
        xy = np.asarray(xy, float).reshape(-1, 2)
        p = apply_homography(plane_to_px, xy) if len(xy) else np.zeros((0, 2))
        keep = (p[:, 0] >= -0.5) & (p[:, 0] < w - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] < h - 0.5)
        out[kind] = (xy[keep], p[keep])
    return out
