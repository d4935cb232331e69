"""Close-up scenes: a few centimetres of scalp, dots resolvable (8-40 px/mm).

The scene is built on the scalp plane (a raster in plane millimetres) and
seen by a pinhole camera (a homography), so perspective, scale and the card
are geometrically exact. The same client scalp (skin texture, follicles,
dots) can be rendered again at a later visit with a new pose and light.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

import cv2
import numpy as np
import pandas as pd

from data.card import CardSpec, marker_corners_mm, render_card
from data.colour import RGB_TO_XYZ, blue_index, delta_e00, linear_rgb_to_lab, lstar_from_luminance, srgb_to_linear
from data.flags import FlagSettings
from data.geometry import apply_homography
from data.synth.camera import CameraParams, photograph, plane_to_image, points_in_frame
from data.synth.dots import (
    DotSet,
    core_means,
    core_pixels,
    darken_by_dots,
    dot_sprites,
    pick_fresh,
    place_dots,
    restyle_fresh,
    ring_samples,
    scab_dots,
    solve_strength,
)
from data.synth.fields import smooth_field
from data.synth.hair import Follicles, HairParams, draw_follicles, draw_hair, render_hair, thinning_map
from data.synth.scene import LOOKALIKE_COLUMNS, UNSEEN, Scene, dot_flags_table, lstar_of
from data.synth.settings import SynthSettings
from data.synth.skin import SkinParams, draw_skin, render_skin
from data.synth.visibility import (
    defocus_sigma_px,
    disc_mean,
    image_px_per_mm,
    photo_contrast,
    photo_lstar,
    seen_contrast,
    speck_levels,
    unseen_hair,
    visible,
)


@dataclass(frozen=True)
class Plane:
    """The rectangle of scalp a client's close-ups look at, and its raster."""

    width_mm: float
    height_mm: float
    px_per_mm: float

    @property
    def shape(self) -> tuple[int, int]:
        return int(np.ceil(self.height_mm * self.px_per_mm)), int(np.ceil(self.width_mm * self.px_per_mm))


@dataclass(frozen=True)
class ClientScalp:
    """What stays the same for one client's region between visits."""

    plane: Plane
    skin: SkinParams
    hair: HairParams
    follicles: Follicles
    dots: DotSet
    texture_seed: int
    palette: tuple[str, ...]


@dataclass(frozen=True)
class VisitState:
    """How the region looks at one visit (dot ageing, hair, redness)."""

    dots: DotSet  # the dots present now, with current strength/blue/radius
    contrast_dl: np.ndarray  # (N,) wanted core contrast of each present dot
    hair_length_scale: float
    extra_redness: float


@dataclass(frozen=True)
class CardPose:
    present: bool
    marker_id: int
    centre_mm: tuple[float, float]  # card-frame origin (marker top-left) on the plane
    angle_deg: float
    scale: float


def treated_map(rng: np.random.Generator, coverage: float, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """Coarse map of where the artist has worked: all, or one side of a soft edge."""
    if coverage >= 0.999:
        return np.ones(shape, bool)
    if coverage <= 0.0:
        return np.zeros(shape, bool)
    field = smooth_field(rng, shape, shape[0] / 2.5)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / np.array(shape[0] - 1.0)
    ramp = np.cos(ang) * xx + np.sin(ang) * yy + 0.08 * field
    return ramp <= np.quantile(ramp, coverage)


def new_client(
    rng: np.random.Generator,
    cfg: SynthSettings,
    plane: Plane,
    *,
    n_sessions: int = 1,
) -> ClientScalp:
    """Draw a client's scalp and the dots of ``n_sessions`` sessions."""
    skin = draw_skin(rng, cfg.skin)
    hair = draw_hair(rng, cfg.hair)
    dens = thinning_map(rng, hair.pattern, hair.thinning_strength, (48, 48))
    follicles = draw_follicles(rng, hair, plane.width_mm, plane.height_mm, dens)
    palette = tuple(cfg.dots.palette)
    coverage = float(rng.uniform(*cfg.dots.coverage))
    treated = treated_map(rng, coverage)
    spacing = float(rng.uniform(*cfg.dots.spacing_mm))
    diameter = float(rng.uniform(*cfg.dots.diameter_mm))
    dots = None
    for session in range(1, n_sessions + 1):
        # later sessions fill in between earlier dots: same spacing, new positions
        first = 0 if dots is None else int(dots.dot_id.max()) + 1
        new = (
            place_dots(
                rng,
                cfg.dots,
                plane.width_mm,
                plane.height_mm,
                treated,
                session,
                list(palette),
                first_id=first,
                spacing_mm=spacing * np.sqrt(n_sessions),
                diameter_mm=diameter,
            )
            if coverage > 0
            else None
        )
        if new is None:
            continue
        dots = new if dots is None else DotSet.concat(dots, new)
    if dots is None:
        dots = place_dots(rng, cfg.dots, plane.width_mm, plane.height_mm, np.zeros((2, 2), bool), 1, list(palette))
    return ClientScalp(
        plane=plane,
        skin=skin,
        hair=hair,
        follicles=follicles,
        dots=dots,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        palette=palette,
    )


def aged_single_visit(rng: np.random.Generator, cfg: SynthSettings, client: ClientScalp) -> VisitState:
    """A single photo: most dots as placed, a fraction aged (faded, blue, spread).

    Aged values are drawn to read clearly beyond the flag thresholds (faded: contrast
    3-6.5 L*, the flag under 9; blue: ``dots.aged_blue_od``, a blue index of 8-25, the
    flag from 5; spread: 0.56-0.9 mm, the flag from 0.45). The other dots are a
    continuum (the ink's per-dot colour jitter, the contrast range): the scoring leaves
    the dots within ``flag_margin_*`` of a threshold out (configs/flags.yaml).
    """
    dots = client.dots
    n = len(dots)
    contrast = rng.uniform(*cfg.dots.contrast_dl, n)
    aged = rng.random(n) < rng.uniform(*cfg.dots.aged_fraction)
    fresh = pick_fresh(rng, dots, float(rng.uniform(*cfg.dots.fresh_fraction)))  # days-old dots: not aged
    aged &= ~fresh
    kind = rng.integers(0, 3, n)
    blue = np.zeros(n)
    radius = dots.radius_mm.copy()
    soft = dots.softness.copy()
    fade = aged & (kind == 0)
    contrast[fade] = rng.uniform(3.0, 6.5, fade.sum())
    bl = aged & (kind == 1)
    blue[bl] = rng.uniform(*cfg.dots.aged_blue_od, bl.sum())
    sp = aged & (kind == 2)
    radius[sp] = rng.uniform(0.28, 0.45, sp.sum())
    soft[sp] = np.clip(soft[sp] * 2.0, 0.2, 0.6)
    contrast[sp] *= 0.8
    contrast[fresh] = rng.uniform(*cfg.dots.fresh_contrast_dl, int(fresh.sum()))
    dots = restyle_fresh(rng, cfg.dots, dots.with_(blue=blue, radius_mm=radius, softness=soft), fresh)
    return VisitState(dots=dots, contrast_dl=contrast, hair_length_scale=1.0, extra_redness=0.0)


def draw_card_pose(
    rng: np.random.Generator, cfg: SynthSettings, plane: Plane, image_footprint_mm: np.ndarray
) -> CardPose:
    """Put the card flat on the scalp inside the camera's footprint: the marker fully in view, or
    (``card.whole``) the whole card when the footprint holds it."""
    present = bool(rng.random() < cfg.card.probability)
    marker_id = int(rng.integers(cfg.card.marker_id[0], cfg.card.marker_id[1] + 1))
    angle = float(rng.uniform(-180, 180))
    scale = float(rng.uniform(*cfg.card.scale))
    lo, hi = image_footprint_mm.min(axis=0), image_footprint_mm.max(axis=0)
    # keep the marker (0-10 mm in card frame) plus a margin inside the footprint's inner box
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    right = 45.0 if cfg.card.whole else 13.0  # the paper's right edge, or the marker's margin
    corners = np.array([[-3, -3], [right, -3], [right, 13], [-3, 13]], float) * scale
    rot = corners @ np.array([[c, s], [-s, c]])
    inset = (0.03 if cfg.card.whole else 0.18) * (hi - lo)
    cmin, cmax = lo + inset - rot.min(axis=0), hi - inset - rot.max(axis=0)
    cmax = np.maximum(cmax, cmin)
    centre = rng.uniform(cmin, cmax)
    if cfg.card.whole:
        centre = _pull_inside(centre, rot, image_footprint_mm)
    return CardPose(present, marker_id, (float(centre[0]), float(centre[1])), angle, scale)


def _inside_convex(points: np.ndarray, polygon: np.ndarray, margin: float) -> bool:
    """Every point inside the convex ``polygon`` (either winding) by at least ``margin``."""
    edges = np.roll(polygon, -1, axis=0) - polygon
    rel = points[:, None, :] - polygon[None, :, :]
    cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
    dist = cross / np.linalg.norm(edges, axis=1)[None, :]
    return bool((dist >= margin).all() or (dist <= -margin).all())


def _pull_inside(
    centre: np.ndarray, card_corners: np.ndarray, footprint: np.ndarray, margin_mm: float = 1.0
) -> np.ndarray:
    """The drawn card origin moved towards where the card's middle is the footprint's middle, just
    far enough for every corner of the card (``card_corners``: relative to its origin) to lie
    inside the (possibly turned) frame; no random draw, so the rest of the scene is drawn as
    before. The middle itself when the card cannot fit."""
    middle = footprint.mean(axis=0) - card_corners.mean(axis=0)  # the card's own middle on the frame's
    for t in np.linspace(0.0, 1.0, 41):
        c = centre + t * (middle - centre)
        if _inside_convex(card_corners + c, footprint, margin_mm):
            return c
    return middle


def _card_to_plane(pose: CardPose) -> np.ndarray:
    """2x3 affine from card mm to plane mm."""
    c, s = np.cos(np.deg2rad(pose.angle_deg)), np.sin(np.deg2rad(pose.angle_deg))
    return np.array(
        [[c * pose.scale, -s * pose.scale, pose.centre_mm[0]], [s * pose.scale, c * pose.scale, pose.centre_mm[1]]]
    )


def composite_card(albedo: np.ndarray, card_cover: np.ndarray, card: CardSpec, pose: CardPose, plane: Plane) -> None:
    """Paste the printed card (as reflectance) onto the plane raster, in place."""
    raster = render_card(card, plane.px_per_mm * pose.scale, marker_id=pose.marker_id)
    # OpenCV pixel coordinates (pixel centre = integer): card raster px -> card mm -> plane px
    plane_px = np.array([[plane.px_per_mm, 0, -0.5], [0, plane.px_per_mm, -0.5], [0, 0, 1]])
    m = plane_px @ np.vstack([_card_to_plane(pose), [0, 0, 1]]) @ np.linalg.inv(raster.mm_to_pixel())
    h, w = raster.alpha.shape
    box = apply_homography(m, np.array([[0, 0], [w, 0], [w, h], [0, h]], float))
    x0, y0 = np.floor(box.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(box.max(axis=0)).astype(int) + 1
    ph, pw = card_cover.shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, pw), min(y1, ph)
    if x1 <= x0 or y1 <= y0:
        return
    half = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float) @ m
    size = (x1 - x0, y1 - y0)
    rgb = cv2.warpAffine(
        srgb_to_linear(raster.rgb).astype(np.float32),
        half[:2],
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    al = cv2.warpAffine(
        raster.alpha, half[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    sub = albedo[y0:y1, x0:x1]
    sub *= (1.0 - al)[..., None]
    sub += rgb * al[..., None]
    card_cover[y0:y1, x0:x1] = np.maximum(card_cover[y0:y1, x0:x1], al)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance Y of linear RGB rows (..., 3)."""
    return rgb @ RGB_TO_XYZ[1].astype(rgb.dtype)


def _own_contrast(
    albedo: np.ndarray, cov: np.ndarray, core_px: np.ndarray, owner: np.ndarray, taken: np.ndarray, n: int
) -> np.ndarray:
    """(n,) the L* the dots take from the scene at each dot's core, hair laid over: on each core pixel,
    the L* of the composite (``albedo``, hair over skin) with what the dots took from the skin's
    luminance (``taken``) given back where the hair (coverage ``cov``) does not hide it, minus the L*
    as it is; the mean over the dot's core pixels (``core_px`` flat indices, ``owner`` their dot). A dot
    on bare skin takes its ``contrast_dL``; one under hair, only what shows between the strands."""
    if n == 0:
        return np.zeros(0)
    y_now = _luminance(albedo.reshape(-1, 3)[core_px]).astype(np.float64)
    shown = taken * (1.0 - cov.reshape(-1)[core_px])
    gain = lstar_from_luminance(y_now + shown) - lstar_from_luminance(y_now)
    return np.bincount(owner, gain, minlength=n) / np.maximum(np.bincount(owner, minlength=n), 1)


def _bare_skin(mask: np.ndarray, xy_img: np.ndarray, radius_px: np.ndarray) -> np.ndarray:
    """HxW bool: the truth's scalp outside every dot's disc widened by half."""
    dots_u8 = np.zeros(mask.shape, np.uint8)
    for (x, y), r in zip(np.round(xy_img).astype(np.int64), np.ceil(1.5 * np.maximum(radius_px, 0.7)).astype(np.int64)):
        cv2.circle(dots_u8, (int(x), int(y)), int(r), 1, -1)
    return (mask == 1) & (dots_u8 == 0)


def _photo_evidence(
    photo: np.ndarray, bare_skin: np.ndarray, xy_img: np.ndarray, radius_px: np.ndarray, rules: FlagSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Each dot's darkness in the finished photo and the darkness the photo's bare skin shows at that
    size at ``rules.visible_min_speck_quantile`` percent of places (NaN, NaN without the photo test)."""
    n = len(xy_img)
    if rules.visible_min_speck_quantile is None or n == 0:
        return np.full(n, np.nan), np.full(n, np.nan)
    exclude = ~bare_skin  # hair, the card, and every dot's disc widened by half
    # sites whose core (0.6 radius) lies on bare skin
    reach = int(np.ceil(0.6 * np.percentile(np.maximum(radius_px, 0.7), 90)))
    bare = cv2.erode((~exclude).view(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, reach)) > 0
    lstar = photo_lstar(photo)
    contrast = photo_contrast(lstar, xy_img, radius_px, exclude)
    return contrast, speck_levels(lstar, radius_px, bare, exclude, rules.visible_min_speck_quantile)


def render_closeup(
    client: ClientScalp,
    visit: VisitState,
    cam: CameraParams,
    image_size: tuple[int, int],
    card: CardSpec,
    card_pose: CardPose,
    rng: np.random.Generator,
    rules: FlagSettings,
    view_centre_mm: tuple[float, float] | None = None,
) -> Scene:
    """Render one close-up photo of ``client`` at ``visit`` seen by ``cam``."""
    plane = client.plane
    shape = plane.shape
    ppm = plane.px_per_mm
    tex = np.random.default_rng(client.texture_seed)  # identical skin at every visit

    centre = view_centre_mm or (plane.width_mm / 2, plane.height_mm / 2)
    # plane mm -> image px, OpenCV convention (pixel centres at integer coordinates)
    h_img = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ plane_to_image(cam, image_size, centre)

    # --- skin (same texture every visit; redness varies) ---
    fol_px = client.follicles.xy_mm * ppm
    opening = np.where(client.follicles.has_hair, 0.35, 1.0)
    fresh = visit.dots.take(np.flatnonzero(visit.dots.fresh))  # reddened skin around fresh dots
    halos = (
        fresh.xy_mm * ppm - 0.5,
        (fresh.radius_mm * np.sqrt(fresh.elongation) + fresh.halo_mm) * ppm,
        fresh.halo_redness,
    )
    skin = render_skin(
        tex, client.skin, shape, ppm, fol_px, opening, extra_redness=visit.extra_redness, redness_spots=halos
    )
    bare = skin.albedo

    # --- dots ---
    dots = visit.dots
    sprites = dot_sprites(dots, shape, ppm)
    n = len(dots)
    flat_bare = bare.reshape(-1, 3)
    ring = ring_samples(dots, shape, ppm)
    ring_ok = ring >= 0
    skin_rgb = (
        (flat_bare[np.maximum(ring, 0)] * ring_ok[..., None]).sum(1) / np.maximum(ring_ok.sum(1), 1)[:, None]
        if n
        else np.zeros((0, 3))
    )
    cix = np.clip(np.round(dots.xy_mm * ppm - 0.5).astype(np.int64), 0, [shape[1] - 1, shape[0] - 1])
    in_scar = skin.scar[cix[:, 1], cix[:, 0]] if n else np.zeros(0)
    uptake = (
        np.where(
            in_scar > 0.3,
            client.skin.scar_pigment_uptake * np.random.default_rng(client.texture_seed + 1).uniform(0.6, 1.2, n),
            1.0,
        )[:n]
        if n
        else np.zeros(0)
    )
    strength = solve_strength(np.clip(skin_rgb, 1e-4, 1), dots.od_shape, dots.blue, visit.contrast_dl)
    dots = dots.with_(strength=strength)
    skin_l_plane = lstar_of(bare)
    # dotted skin = bare skin x exp(-optical density), computed in place on the skin raster
    albedo = bare
    del bare
    # each dot's core pixels: the skin's luminance there without and with the dots (its own signal)
    core_px, core_owner = core_pixels(sprites)
    y_bare = _luminance(albedo.reshape(-1, 3)[core_px])
    darken_by_dots(albedo, dots, sprites, uptake=uptake)
    taken = y_bare - _luminance(albedo.reshape(-1, 3)[core_px])
    del y_bare

    # per-dot truth colour: core mean of the dotted skin; skin: ring mean of bare skin
    core_rgb = core_means(albedo, sprites, n)
    del sprites
    scabs = scab_dots(rng, dots)  # crusts over some fresh dots: not dots, drawn after their truth colour
    darken_by_dots(albedo, scabs, dot_sprites(scabs, shape, ppm))

    # --- hair ---
    hp = client.hair
    hair_params = HairParams(
        **{**asdict(hp), "stubble_length_mm": tuple(v * visit.hair_length_scale for v in hp.stubble_length_mm)}
    )
    hair = render_hair(tex, hair_params, client.follicles, shape, ppm, loose_rng=rng)
    cov = hair.composite(albedo)
    own_core = _own_contrast(albedo, cov, core_px, core_owner, taken, n)
    del core_px, core_owner, taken
    # look-alikes the photo shows, counted into the skin's params (truth.json params.skin.lookalikes)
    # render_hair always sets the hair's marks
    marks = (
        {k: v / ppm for k, v in skin.marks.items()}
        | cast(dict[str, np.ndarray], hair.marks)
        | {"follicle_openings": client.follicles.xy_mm[~client.follicles.has_hair], "scabs": scabs.xy_mm}
    )
    from dataclasses import replace

    shown = points_in_frame(marks, h_img, image_size)
    client = replace(client, skin=replace(client.skin, lookalikes={k: len(mm) for k, (mm, _) in shown.items()}))
    lookalikes = pd.DataFrame(
        [(k, x, y, xm, ym) for k, (mm, px) in shown.items() for (xm, ym), (x, y) in zip(mm, px)],
        columns=LOOKALIKE_COLUMNS,
    )
    hair_mask = cov >= 0.5
    # how much of each dot's disc the hair hides (the `visible` truth)
    hair_cover = disc_mean(cov, dots.xy_mm * ppm - 0.5, dots.radius_mm * ppm) if n else np.zeros(0)
    label_cov = hair.label_coverage()
    del hair

    # --- card ---
    card_cover = np.zeros(shape, np.float32)
    if card_pose.present:
        composite_card(albedo, card_cover, card, card_pose, plane)

    # --- project to the image ---
    w, h = image_size
    m = h_img @ np.array([[1 / ppm, 0, 0.5 / ppm], [0, 1 / ppm, 0.5 / ppm], [0, 0, 1]])  # plane px -> image px
    warp: dict[str, Any] = dict(dsize=(w, h), borderMode=cv2.BORDER_REPLICATE)
    # the class truth follows the photo: hair and card coverage are warped with the photo's own
    # (bilinear) interpolation and cut at one half in the image, so a 1-px strand is labelled
    # where the photo shows it, not where nearest-neighbour sampling of the plane happens to land
    # (by the strands' footprint: a strand narrower than a pixel, or faint, is labelled along its line)
    mask: np.ndarray = cv2.warpPerspective(label_cov, m, flags=cv2.INTER_LINEAR, **warp) >= np.float32(0.5)
    mask = mask.view(np.uint8) + np.uint8(1)  # 1 scalp, 2 hair (uint8 all along: no int64 temporaries)
    del cov, label_cov
    if card_pose.present:
        mask[cv2.warpPerspective(card_cover, m, flags=cv2.INTER_LINEAR, **warp) >= np.float32(0.5)] = 0
    skin_l = cv2.warpPerspective(skin_l_plane, m, flags=cv2.INTER_LINEAR, **warp)
    del skin_l_plane
    # oily sheen, where there is no card (the card is matte)
    shine = skin.oil
    np.subtract(np.float32(1.0), card_cover, out=card_cover)
    shine *= card_cover
    del skin, card_cover

    # --- light and camera, strip by strip ---
    clean_l = np.empty((h, w), np.float32)
    photo = photograph(albedo, shine, m, (w, h), cam, rng, clean_lstar=clean_l)
    del albedo, shine

    # --- dot truth table ---
    xy_img = apply_homography(h_img, dots.xy_mm) if n else np.zeros((0, 2))
    lab = linear_rgb_to_lab(np.clip(core_rgb, 1e-6, 1))
    skin_lab = linear_rgb_to_lab(np.clip(skin_rgb, 1e-6, 1))
    hair_at = np.zeros(n, bool)
    if n:
        ij = np.clip(np.round(dots.xy_mm * ppm - 0.5).astype(int), 0, [shape[1] - 1, shape[0] - 1])
        hair_at = hair_mask[ij[:, 1], ij[:, 0]]
    table = pd.DataFrame(
        {
            "dot_id": dots.dot_id,
            "x": xy_img[:, 0],
            "y": xy_img[:, 1],
            "x_mm": dots.xy_mm[:, 0],
            "y_mm": dots.xy_mm[:, 1],
            "diameter_mm": dots.diameter_mm,
            "L": lab[:, 0],
            "a": lab[:, 1],
            "b": lab[:, 2],
            "skin_L": skin_lab[:, 0],
            "skin_a": skin_lab[:, 1],
            "skin_b": skin_lab[:, 2],
            "contrast_dL": skin_lab[:, 0] - lab[:, 0],
            "dE00": delta_e00(lab, skin_lab),
            "blue_index": blue_index(lab, skin_lab),
            "session": dots.session,
            "shade": np.array(client.palette)[dots.shade] if n else [],
            "merged_with": dots.merged_with,
            "hair_covered": hair_at,
            "in_scar": in_scar > 0.3,
            "hair_cover": hair_cover,
            "fresh": dots.fresh.astype(bool),
            "elongation": dots.elongation,
            "angle_deg": np.rad2deg(dots.angle),
            "scab": dots.scab > 0,
        }
    )
    # contrast as the optics render it, and whether the photo shows the dot at all
    # the short half-axis: blur takes an elongated dot's contrast across its narrow side
    r_img = dots.radius_mm / np.sqrt(np.maximum(dots.elongation, 1.0)) * image_px_per_mm(h_img, dots.xy_mm)
    blur = defocus_sigma_px(
        xy_img, (w, h), cam.dof_blur_mm * cam.px_per_mm, np.deg2rad(cam.tilt_azimuth_deg + cam.rotation_deg)
    )
    table["contrast_seen"] = seen_contrast(table["contrast_dL"].to_numpy(), r_img, blur)
    table["contrast_own"] = seen_contrast(own_core, r_img, blur)
    # ... and what the finished photo shows of it, against the photo's own bare-skin specks
    r_full = dots.radius_mm * image_px_per_mm(h_img, dots.xy_mm) if n else np.zeros(0)
    bare = _bare_skin(mask, xy_img, r_full)
    table["contrast_photo"], table["speck_dL"] = _photo_evidence(photo, bare, xy_img, r_full, rules)
    # hair the finished photo shows no more clearly than its own bare skin
    unseen = (
        unseen_hair(photo, mask == 2, bare, rules.hair_visible_quantile)
        if rules.hair_visible_quantile is not None
        else None
    )
    del bare
    table["visible"] = visible(
        table["hair_cover"].to_numpy(),
        table["contrast_seen"].to_numpy(),
        max_hair_cover=rules.visible_max_hair_cover,
        min_contrast_dl=rules.visible_min_contrast_dl,
        contrast_photo=table["contrast_photo"].to_numpy(),
        speck_dl=table["speck_dL"].to_numpy(),
    )
    inside = (table.x >= -0.5) & (table.x < w - 0.5) & (table.y >= -0.5) & (table.y < h - 0.5)
    table = table[inside]
    # a dot under the card is not in the photo: drop it from the truth
    under_card = (
        mask[np.clip(np.round(table.y).astype(int), 0, h - 1), np.clip(np.round(table.x).astype(int), 0, w - 1)] == 0
    )
    table = dot_flags_table(table[~under_card].reset_index(drop=True), rules)
    if unseen is not None:
        mask[unseen] = UNSEEN

    card_truth: dict = {"present": card_pose.present}
    if card_pose.present:
        corners_plane = np.array([_card_to_plane(card_pose) @ np.r_[p, 1] for p in marker_corners_mm(card)])
        card_truth.update(
            marker_id=card_pose.marker_id,
            scale=card_pose.scale,
            marker_corners_px=apply_homography(h_img, corners_plane),
        )
    params = {
        "skin": asdict(client.skin),
        "hair": asdict(hair_params),
        "camera": asdict(cam),
        "hair_strands": int(client.follicles.has_hair.sum()),
        "visit": {"hair_length_scale": visit.hair_length_scale, "extra_redness": visit.extra_redness},
    }
    return Scene(
        photo=photo,
        mask=mask,
        dots=table,
        clean_lstar=clean_l,
        skin_lstar=skin_l,
        plane_to_image=h_img,
        px_per_mm=cam.px_per_mm,
        view="closeup",
        params=params,
        card=card_truth,
        lookalikes=lookalikes,
    )


def footprint_mm(cam: CameraParams, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image corners on the plane (camera centred on the origin), and the homography."""
    w, h = image_size
    hm = plane_to_image(cam, image_size, (0.0, 0.0))
    return apply_homography(np.linalg.inv(hm), np.array([[0, 0], [w, 0], [w, h], [0, h]], float)), hm


def single_closeup(
    rng: np.random.Generator, cfg: SynthSettings, card: CardSpec, rules: FlagSettings, from_camera
) -> Scene:
    """One independent close-up photo (a new client), as in the training set.

    The plane raster is fitted to the camera's footprint; its axes follow the
    camera roll (the scene content has random orientation anyway), which keeps
    the raster no larger than needed.
    """
    size = (cfg.image.width, cfg.image.height)
    cam = from_camera(rng, cfg.camera, cfg.image.width)
    cam = CameraParams(**{**asdict(cam), "rotation_deg": 0.0})
    corners, _ = footprint_mm(cam, size)
    lo, hi = corners.min(axis=0) - 1.0, corners.max(axis=0) + 1.0
    plane = Plane(float(hi[0] - lo[0]), float(hi[1] - lo[1]), cam.px_per_mm)
    client = new_client(rng, cfg, plane, n_sessions=int(rng.integers(1, 3)))
    visit = aged_single_visit(rng, cfg, client)
    centre = (float(-lo[0]), float(-lo[1]))
    pose = draw_card_pose(rng, cfg, plane, corners - lo)
    return render_closeup(client, visit, cam, size, card, pose, rng, rules, view_centre_mm=centre)
