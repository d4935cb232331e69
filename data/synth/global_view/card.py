"""The reference card in a global scene: where it lies (flat on the scalp or held beside the head) and its pasting."""

from __future__ import annotations

import cv2
import numpy as np

from data.card import CardSpec, marker_corners_mm, paper_rect_mm, render_card
from data.colour import srgb_to_linear
from data.synth.global_view.head import CRANIUM, EAR, FACE, NOSE, Head, Hits, Pose, _norm, _warp_at
from data.synth.settings import SynthSettings


def _paste_card(
    layers: list[tuple[np.ndarray, float | np.ndarray]],
    cover: np.ndarray,
    card: CardSpec,
    marker_id: int,
    affine: np.ndarray,
) -> None:
    """Composite the card into each (HxWx3 image, gain) of ``layers`` and into ``cover``, in place.

    ``affine`` (2x3) maps card mm to image pixels (OpenCV centre convention); the card's
    reflectance times ``gain`` (a number or an HxW map) is laid over each image with its
    coverage. Like
    :func:`data.synth.closeup.composite_card` but for a general affine, because a card
    lying on the curved scalp is foreshortened; only the card's box is touched.
    """
    a3 = np.vstack([affine, [0, 0, 1]])
    ppm = float(np.linalg.svd(affine[:, :2], compute_uv=False).max())
    raster = render_card(card, max(ppm, 0.5), marker_id=marker_id)
    m = a3 @ np.linalg.inv(raster.mm_to_pixel())
    hr, wr = raster.alpha.shape
    box = (m @ np.array([[-0.5, -0.5, 1], [wr, -0.5, 1], [wr, hr, 1], [-0.5, hr, 1]], float).T)[:2].T
    ph, pw = cover.shape
    x0, y0 = np.maximum(np.floor(box.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(box.max(axis=0)).astype(int) + 2, [pw, ph])
    if x1 <= x0 or y1 <= y0:
        return
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float) @ m
    size = (int(x1 - x0), int(y1 - y0))
    rgb = cv2.warpAffine(
        srgb_to_linear(raster.rgb).astype(np.float32),
        shift[:2],
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    al = cv2.warpAffine(
        raster.alpha, shift[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    for img, gain in layers:
        g = gain[y0:y1, x0:x1] if isinstance(gain, np.ndarray) else np.float32(gain)
        sub = img[y0:y1, x0:x1]
        sub *= (1.0 - al)[..., None]
        sub += rgb * (al * g)[..., None]
    np.maximum(cover[y0:y1, x0:x1], al, out=cover[y0:y1, x0:x1])


def _card_affine_on_scalp(
    head: Head, pose: Pose, warp, size, u: np.ndarray, scale: float, angle: float, card: CardSpec
) -> np.ndarray:
    """2x3 affine card mm -> image px of a card lying on the scalp's tangent plane at ``u``."""
    p, n = head.surface(u[None, :])
    p, n = p[0], n[0]
    t1 = np.cross(n, [0.0, 0.0, 1.0]) if abs(n[2]) < 0.95 else np.cross(n, [1.0, 0.0, 0.0])
    t1 /= _norm(t1)
    t2 = np.cross(n, t1)
    c, s = np.cos(angle), np.sin(angle)
    ex, ey = c * t1 + s * t2, -s * t1 + c * t2
    x0, y0, x1, y1 = paper_rect_mm(card)
    centre_mm = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    pts = np.stack([p, p + scale * ex, p + scale * ey])
    x, y, _ = pose.project(pts)
    x, y = _warp_at(warp, x, y, size)
    a = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]])
    # if the tangent basis came out mirrored in the image, flip the card's y axis
    if np.linalg.det(a) < 0:
        a[:, 1] *= -1
    t = np.array([x[0], y[0]]) - a @ centre_mm
    return np.column_stack([a, t])


def _place_card(
    rng,
    card: CardSpec,
    head: Head,
    pose: Pose,
    hits: Hits,
    warp,
    size,
    scale: float,
    scalp_u: np.ndarray,
    light_h: np.ndarray,
    light_c: np.ndarray,
    ambient: float,
):
    """Choose where the card is: flat on a camera-facing part of the scalp, or held beside
    the head facing the camera. Returns (affine card mm -> px, placement, card shading)."""
    w, h = size
    x0, y0, x1, y1 = paper_rect_mm(card)
    paper = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    marker = marker_corners_mm(card)
    ppm = pose.focal_px / pose.centre_cam[2]
    head_px = np.isin(hits.part, (CRANIUM, FACE, NOSE, EAR)).ravel()
    want_scalp = rng.random() < 0.5
    order = ("scalp", "beside") if want_scalp else ("beside", "scalp")
    for where in order:
        for _ in range(12):
            angle = rng.uniform(-np.pi, np.pi)
            if where == "scalp":
                if len(scalp_u) == 0:
                    break
                u = scalp_u[int(rng.integers(len(scalp_u)))]
                _, n = head.surface(u[None, :])
                if n[0] @ pose.to_camera_head < 0.6:
                    continue
                aff = _card_affine_on_scalp(head, pose, warp, size, u, scale, angle, card)
                shade = ambient + (1 - ambient) * max(float(n[0] @ light_h), 0.0)
            else:
                ang = np.deg2rad(rng.uniform(-25, 25))
                c, s = np.cos(ang), np.sin(ang)
                a = ppm * scale * np.array([[c, -s], [s, c]])
                centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
                pos = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h])
                aff = np.column_stack([a, pos - a @ centre])
                shade = ambient + (1 - ambient) * max(float(-light_c[2]), 0.0)
            mk = marker @ aff[:, :2].T + aff[:, 2]
            if not (
                (mk[:, 0] >= 2).all()
                and (mk[:, 0] <= w - 3).all()
                and (mk[:, 1] >= 2).all()
                and (mk[:, 1] <= h - 3).all()
            ):
                continue
            if where == "beside":
                pp = paper @ aff[:, :2].T + aff[:, 2]
                probe = np.clip(np.rint(pp), 0, [w - 1, h - 1]).astype(int)
                centre_px = np.clip(np.rint(pp.mean(0)), 0, [w - 1, h - 1]).astype(int)
                pts = np.vstack([probe, centre_px[None, :]])
                if head_px[pts[:, 1] * w + pts[:, 0]].any():
                    continue
            return aff, where, shade
    return None, None, 1.0


def add_card(
    rng: np.random.Generator,
    cfg: SynthSettings,
    card: CardSpec,
    head: Head,
    pose: Pose,
    hits: Hits,
    warp,
    size: tuple[int, int],
    scalp_u: np.ndarray,
    light_h: np.ndarray,
    light_c: np.ndarray,
    ambient: float,
    clean: np.ndarray,
    radiance: np.ndarray,
    light_map: np.ndarray,
) -> tuple[np.ndarray, dict]:
    """Maybe a card, on the scalp (foreshortened) or held beside the head, pasted into ``clean`` and
    ``radiance`` (in place); returns the card's coverage (HxW) and its truth."""
    w, h = size
    card_cover = np.zeros((h, w), np.float32)
    card_truth: dict = {"present": False}
    if rng.random() < cfg.card.probability:
        marker_id = int(rng.integers(cfg.card.marker_id[0], cfg.card.marker_id[1] + 1))
        scale = float(rng.uniform(*cfg.card.scale))
        affine, placement, card_shade = _place_card(
            rng, card, head, pose, hits, warp, size, scale, scalp_u, light_h, light_c, ambient
        )
        if affine is not None:
            _paste_card([(clean, 1.0), (radiance, card_shade * light_map)], card_cover, card, marker_id, affine)
            corners = marker_corners_mm(card)
            card_truth = {
                "present": True,
                "marker_id": marker_id,
                "scale": scale,
                "placement": placement,
                "marker_corners_px": corners @ affine[:, :2].T + affine[:, 2],
            }
    return card_cover, card_truth
