"""Settings of the two-photo stages (registration, dot linking, what a change must exceed),
and how a failed registration is told to the user."""

from __future__ import annotations

from pydantic import Field

from data.config import Settings, load_settings


class LinkSettings(Settings):
    """How dots of two registered photos are paired (lengths in units of the BEFORE dots'
    median nearest-neighbour spacing ``s``; SMP dots are ~1 mm apart, so ``s`` ~ 1 mm)."""

    #: First assignment: a pair is allowed when the two centres are closer than this (x s).
    #: Well below 0.5 s, so a dot is never linked to its neighbour's place.
    gate: float = Field(0.4, gt=0, le=1)
    #: Fit a smooth residual warp on the first links, then link again with a tighter gate.
    warp: bool = True
    #: Length scale of the smooth warp (Gaussian RBF), x s: skin stretches over millimetres, not per dot.
    warp_scale: float = Field(6.0, gt=0)
    #: Regularisation of the warp (RBF ``smoothing``; larger = smoother, ~ noise / signal variance).
    warp_smoothing: float = Field(2.0, ge=0)
    #: Each warp value is solved from this many nearest links (bounds the cost on 20 000 dots).
    warp_neighbors: int = Field(48, ge=8)
    #: Fewer first links than this: no warp, the homography alone is used.
    min_warp_links: int = Field(20, ge=4)
    #: Second gate = this many robust sigmas of the warped residuals ...
    relink_sigmas: float = Field(5.0, gt=0)
    #: ... but never tighter than this (x s) nor wider than ``gate``.
    relink_min_gate: float = Field(0.15, gt=0)
    #: Dots closer than this (x s) to the edge of the other photo are neither "new" nor "lost"
    #: (a dot cut by the frame is not reliably detected).
    edge_margin: float = Field(0.5, ge=0)


class ChangeSettings(Settings):
    """What a change between two photos must exceed before a report calls it better or worse:
    the 90th percentile of how far a measured change is from the true one between two photos of
    one client (scripts/bench_change.py; the same 90% as every range the product reports).
    Smaller changes read "within what two photos of one scalp differ by"."""

    #: Show-through, as a fraction (0.25: 25 percentage points).
    show_through: float = Field(0.25, ge=0, le=1)
    #: Dot density, as a share of the larger of the two photos' densities.
    dot_density_relative: float = Field(0.86, ge=0)


class RegisterSettings(Settings):
    """How AFTER is registered to BEFORE (``configs/compare/default.yaml``)."""

    #: Features are found on a copy whose longer side is at most this (px); the homography
    #: is scaled back to full resolution.
    feature_max_side: int = Field(1600, ge=200)
    #: CLAHE on the grey working copy: evens out exposure, white balance and light gradients.
    clahe_clip: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(8, ge=1)
    #: Keep at most this many SIFT keypoints per photo (strongest first).
    max_features: int = Field(8000, ge=100)
    #: SIFT contrast threshold (OpenCV default 0.04); lower finds features on smooth skin.
    sift_contrast: float = Field(0.02, gt=0)
    #: Lowe's ratio test: best match / second best distance must be below this.
    ratio: float = Field(0.8, gt=0, lt=1)
    #: MAGSAC++ inlier threshold, px of the working copy.
    ransac_threshold_px: float = Field(3.0, gt=0)
    ransac_confidence: float = Field(0.9999, gt=0, lt=1)
    ransac_max_iters: int = Field(10000, ge=100)
    #: Fewer feature inliers than this: the photos cannot be registered.
    min_inliers: int = Field(12, ge=4)
    #: Fewer inliers than this still registers, with a warning - unless the dots contradict it.
    warn_inliers: int = Field(40, ge=4)
    #: The scale between the photos must lie within [1 / x, x].
    max_scale_change: float = Field(3.0, gt=1)
    #: The photos must share at least this fraction of the BEFORE photo's area.
    min_overlap: float = Field(0.05, gt=0, le=1)
    #: Refine on the dots when both photos' dot centres are given (close-ups).
    refine_with_dots: bool = True
    #: Dot pairs for the refinement: mutual nearest neighbours closer than this (x the BEFORE
    #: dots' median nearest-neighbour spacing).
    dot_gate: float = Field(0.35, gt=0, le=1)
    #: MAGSAC++ threshold of the dot fit (x spacing): dots move a little with the skin.
    dot_threshold: float = Field(0.12, gt=0)
    #: A pair closer than this (x spacing) after the fit is "tight"; chance pairs within the gate
    #: rarely are ((0.1 / 0.35)^2 = 8 % of them).
    dot_tight: float = Field(0.1, gt=0)
    #: The dots confirm a homography when at least this fraction of the pairs is tight.
    min_tight_fraction: float = Field(0.5, gt=0, le=1)
    dot_iterations: int = Field(10, ge=1)
    #: Fewer tight dot pairs than this: the dots do not confirm a homography.
    min_dot_pairs: int = Field(12, ge=4)
    #: When features fail (or the dot refinement pairs fewer than ``pattern_fallback_fraction``
    #: of the sparser photo's dots), search the dot patterns themselves (close-ups only).
    pattern_search: bool = True
    pattern_fallback_fraction: float = Field(0.3, ge=0, le=1)
    #: Dots (nearest the centre) of each pattern whose triangles are looked up in the other ...
    pattern_anchors: int = Field(300, ge=10)
    #: ... among the triangles of this many dots nearest the other pattern's centre.
    pattern_search_dots: int = Field(3000, ge=50)
    #: Two triangles have the same shape when their side ratios differ by less than this.
    pattern_shape_tolerance: float = Field(0.02, gt=0)
    #: Best vote cells checked by pairing dots.
    pattern_candidates: int = Field(8, ge=1)
    link: LinkSettings = LinkSettings()
    #: What a before/after must exceed to be called a change (not registration: kept here so that one
    #: file, configs/compare/default.yaml, holds what ``smp compare`` decides).
    change: ChangeSettings = ChangeSettings()


def load_register_settings(path=None, overrides=()) -> RegisterSettings:
    """Settings from ``path`` (default ``configs/compare/default.yaml``) plus ``--set`` overrides."""
    return load_settings(RegisterSettings, path, overrides, default="compare/default.yaml")


def retake_advice(photo: str = "the after photo", reference: str = "the before photo") -> str:
    """What a clinic can do when ``photo`` cannot be registered to ``reference`` (the warnings and
    reports of comparisons and timelines say it)."""
    return (
        f"retake {photo} of the same region from the same distance and angle, with the card in frame and "
        f"at least half of {reference}'s scalp in view"
    )


#: The advice for a before/after comparison.
RETAKE_ADVICE = retake_advice()


class RegistrationError(ValueError):
    """The two photos cannot be registered; the message says why, in one line."""
