"""Settings of the synthetic scalp-photo generator (``configs/synth/*.yaml``).

Every ``*Range`` field is a closed interval from which one value is drawn per
image (or per client, or per dot, as its docstring says) with the seeded
``numpy.random.Generator`` handed to the generator. Units are in the names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from data.config import NonNegativeRange, PositiveRange, Range, Settings, UnitRange

HairColour = Literal["black", "brown", "blond", "grey", "red"]
ThinningPattern = Literal["diffuse", "crown", "receding", "patches", "none"]
View = Literal["closeup", "global"]


class ImageSettings(Settings):
    width: int = Field(gt=15, le=12000)
    height: int = Field(gt=15, le=12000)
    format: Literal["jpg", "png"] = "jpg"


class CameraSettings(Settings):
    px_per_mm: PositiveRange
    """Scale at the image centre, pixels per millimetre of scalp."""
    rotation_deg: Range = (-180.0, 180.0)
    tilt_deg: Range = (0.0, 20.0)
    """Angle between the optical axis and the scalp normal (perspective)."""
    focal_px_per_width: PositiveRange = (1.0, 2.0)
    """Focal length in units of image width (about 28-60 mm equivalent)."""
    dof_blur_mm: NonNegativeRange = (0.0, 0.05)
    """Gaussian blur sigma (mm on the scalp) reached at the most defocused edge."""
    illuminant_kelvin: PositiveRange = (3000.0, 6500.0)
    white_balance_error: Range = (0.0, 0.25)
    """How far the camera's white balance is from the true illuminant (0 = perfect)."""
    illumination_gradient: UnitRange = (0.0, 0.4)
    """Relative fall-off of light across the frame."""
    exposure_ev: Range = (-0.6, 0.4)
    read_noise: NonNegativeRange = (0.001, 0.006)
    shot_noise: NonNegativeRange = (0.002, 0.012)
    jpeg_quality: Range = (78.0, 97.0)
    """JPEG quality of the written photo (OpenCV's encoder: 4:2:0 chroma subsampling)."""
    colour_cast: NonNegativeRange = (0.0, 0.0)
    """Off-locus colour cast (green/magenta, mixed light): relative channel gain error
    in a random chroma direction, left after white balance (0 = none)."""
    sharpen_probability: float = Field(0.0, ge=0, le=1)
    """Share of photos whose camera sharpens (unsharp mask on luma: halos at edges)."""
    sharpen_amount: NonNegativeRange = (0.3, 1.2)
    """Unsharp-mask gain: a step of height s gets over/undershoots of about amount x s / 4."""
    detail_radius_px: PositiveRange = (0.7, 2.0)
    """Gaussian sigma (photo pixels) of the detail band that sharpening boosts and
    noise reduction smears."""
    denoise_probability: float = Field(0.0, ge=0, le=1)
    """Share of photos with in-camera noise reduction (fine low-contrast detail smeared)."""
    denoise_threshold: NonNegativeRange = (1.5, 5.0)
    """Noise-reduction coring threshold, 8-bit luma levels: detail below it is flattened."""
    macro_probability: float = Field(0.0, ge=0, le=1)
    """Share of photos taken as a phone macro: oblique view, shallow depth of field."""
    macro_tilt_deg: Range = (20.0, 45.0)
    """Tilt of a phone macro (the phone held at an angle to reach the scalp)."""
    macro_dof_blur_mm: NonNegativeRange = (0.03, 0.12)
    """Blur sigma (mm on the scalp) at the most defocused edge of a phone macro."""

    @model_validator(mode="after")
    def _physical(self) -> CameraSettings:
        for name in ("tilt_deg", "macro_tilt_deg"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi >= 60:
                raise ValueError(f"{name} must lie within [0, 60)")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError("jpeg_quality must lie within [1, 100]")
        if self.colour_cast[1] > 0.5:
            raise ValueError("colour_cast above 0.5 is not a camera's cast")
        if self.sharpen_amount[1] > 4 or self.detail_radius_px[1] > 10:
            raise ValueError("sharpen_amount must be <= 4 and detail_radius_px <= 10")
        if self.denoise_threshold[1] > 40:
            raise ValueError("denoise_threshold above 40 luma levels erases the picture")
        return self


class SkinSettings(Settings):
    fitzpatrick: tuple[int, int] = (1, 6)
    """Fitzpatrick skin types drawn uniformly from this inclusive range."""
    tone_lab: dict[int, tuple[float, float, float]]
    """Mean scalp CIELAB per Fitzpatrick type."""
    tone_jitter_lab: tuple[float, float, float] = (3.0, 1.5, 2.0)
    mottling: Range = (0.02, 0.07)
    """Relative amplitude of low-frequency albedo variation."""
    pore_density_per_cm2: NonNegativeRange = (150.0, 450.0)
    pore_diameter_mm: PositiveRange = (0.04, 0.09)
    pore_depth: UnitRange = (0.05, 0.2)
    redness: UnitRange = (0.0, 0.3)
    """Baseline redness; a session adds fresh redness on top (series)."""
    oiliness: UnitRange = (0.0, 0.5)
    scar_probability: float = Field(0.15, ge=0, le=1)
    scar_width_mm: PositiveRange = (2.0, 7.0)
    scar_pigment_uptake: UnitRange = (0.35, 0.9)
    # --- look-alikes: skin features a dot detector must tell from SMP dots. Contrasts are
    # L* below the surrounding skin on skin of L* 60; they scale multiplicatively with the
    # skin's reflectance (shadows and melanin absorb a fraction of the light).
    crease_coverage: UnitRange = (0.0, 0.0)
    """Fraction of the frame with creased skin (a network of skin lines; 0 = none)."""
    crease_cell_mm: PositiveRange = (0.7, 1.6)
    """Mesh size of the skin-line network (the polygons between creases)."""
    crease_width_mm: PositiveRange = (0.03, 0.08)
    crease_contrast_dl: NonNegativeRange = (3.0, 8.0)
    junction_contrast_dl: NonNegativeRange = (10.0, 21.0)
    """Pits where three or more creases meet (and pores on creased skin)."""
    junctions_per_cm2: NonNegativeRange = (4.0, 15.0)
    """Dark junction pits per cm^2 of creased skin (the other crossings stay plain)."""
    wrinkles_per_cm2: NonNegativeRange = (0.0, 0.0)
    """Long folds (5-30 mm) per cm^2 of frame."""
    wrinkle_width_mm: PositiveRange = (0.08, 0.25)
    wrinkle_contrast_dl: NonNegativeRange = (4.0, 12.0)
    freckles_per_cm2: NonNegativeRange = (0.0, 0.0)
    freckle_diameter_mm: PositiveRange = (1.0, 4.0)
    freckle_contrast_dl: NonNegativeRange = (4.0, 12.0)
    naevi_per_cm2: NonNegativeRange = (0.0, 0.0)
    naevus_diameter_mm: PositiveRange = (1.0, 5.0)
    naevus_contrast_dl: NonNegativeRange = (12.0, 35.0)

    @model_validator(mode="after")
    def _types(self) -> SkinSettings:
        lo, hi = self.fitzpatrick
        if not (1 <= lo <= hi <= 6):
            raise ValueError("fitzpatrick must be a range within [1, 6]")
        for name in (
            "crease_contrast_dl",
            "junction_contrast_dl",
            "wrinkle_contrast_dl",
            "freckle_contrast_dl",
            "naevus_contrast_dl",
        ):
            if getattr(self, name)[1] >= 55:
                raise ValueError(f"{name} must stay below 55 L* (darker than black skin)")
        if self.crease_width_mm[1] > 0.5 or self.wrinkle_width_mm[1] > 1.0:
            raise ValueError("crease_width_mm must be <= 0.5 and wrinkle_width_mm <= 1.0")
        if self.crease_cell_mm[0] < 0.2:
            raise ValueError("crease_cell_mm below 0.2 mm is finer than skin lines")
        if self.freckles_per_cm2[1] > 20 or self.naevi_per_cm2[1] > 5:
            raise ValueError("freckles_per_cm2 must be <= 20 and naevi_per_cm2 <= 5")
        missing = [t for t in range(lo, hi + 1) if t not in self.tone_lab]
        if missing:
            raise ValueError(f"tone_lab lacks Fitzpatrick types {missing}")
        return self


class HairSettings(Settings):
    follicle_density_per_cm2: NonNegativeRange = (0.0, 180.0)
    """Density of hairs where the scalp is not thinning (healthy scalp ~ 150-250)."""
    patterns: list[ThinningPattern] = ["diffuse", "crown", "receding", "patches", "none"]
    thinning_strength: UnitRange = (0.3, 1.0)
    colours: list[HairColour] = ["black", "brown", "blond", "grey"]
    width_mm: PositiveRange = (0.05, 0.10)
    stubble_length_mm: PositiveRange = (0.3, 3.0)
    long_fraction: UnitRange = (0.0, 0.25)
    """Fraction of hairs that are long and lie over the scalp."""
    long_length_mm: PositiveRange = (8.0, 45.0)
    curl: Range = (0.0, 0.6)
    """Mean curvature of a strand, radians per 10 mm."""
    # --- look-alikes (drawn as hair: class 2 in the mask where the coverage is >= 0.5)
    cut_end_fraction: UnitRange = (0.0, 0.0)
    """Fraction of stubble shaved at the skin: only the cut end shows, a dark elongated point."""
    cut_end_length_mm: PositiveRange = (0.03, 0.15)
    """Visible length of a cut end beyond its width (the shaft cut obliquely)."""
    cut_end_width_mm: PositiveRange = (0.06, 0.12)
    fragments_per_cm2: NonNegativeRange = (0.0, 0.0)
    """Loose cut hair fragments lying on the scalp (after a haircut or shave)."""
    fragment_length_mm: PositiveRange = (0.1, 0.35)
    vellus_fraction: UnitRange = (0.0, 0.0)
    """Fraction of empty (miniaturised) follicles that still grow a fine, pale vellus hair."""
    vellus_length_mm: PositiveRange = (0.3, 2.0)
    vellus_width_mm: PositiveRange = (0.015, 0.04)

    @model_validator(mode="after")
    def _nonneg(self) -> HairSettings:
        if not self.patterns or not self.colours:
            raise ValueError("patterns and colours must not be empty")
        if self.cut_end_width_mm[1] > 0.3 or self.cut_end_length_mm[1] > 1.0:
            raise ValueError("cut_end_width_mm must be <= 0.3 and cut_end_length_mm <= 1.0")
        if self.fragment_length_mm[1] > 5.0 or self.fragments_per_cm2[1] > 100:
            raise ValueError("fragment_length_mm must be <= 5 and fragments_per_cm2 <= 100")
        if self.vellus_width_mm[1] > self.width_mm[1]:
            raise ValueError("vellus_width_mm must not exceed the terminal hair width_mm")
        return self


class PigmentShade(Settings):
    """An SMP pigment as optical density per linear RGB channel (relative shape)."""

    od_shape: tuple[float, float, float]
    weight: float = Field(1.0, gt=0)


class DotSettings(Settings):
    coverage: UnitRange = (0.5, 1.0)
    """Fraction of the frame's scalp that has been treated (0 = baseline)."""
    spacing_mm: PositiveRange = (0.8, 1.3)
    spacing_jitter: UnitRange = (0.15, 0.35)
    diameter_mm: PositiveRange = (0.10, 0.35)
    diameter_cv: UnitRange = (0.06, 0.18)
    edge_softness: UnitRange = (0.08, 0.3)
    """Width of the soft edge as a fraction of the radius."""
    irregularity: UnitRange = (0.03, 0.12)
    contrast_dl: PositiveRange = (18.0, 38.0)
    """Fresh dot contrast (skin L* minus dot-core L*)."""
    shade_jitter: UnitRange = (0.03, 0.1)
    merged_fraction: UnitRange = (0.0, 0.06)
    palette: dict[str, PigmentShade]
    aged_fraction: UnitRange = (0.0, 0.3)
    """Single images: fraction of dots drawn as aged (faded, blue-shifted or spread)."""
    aged_blue_od: PositiveRange = (1.2, 2.5)
    """Single images: blue-shift optical density of the aged dots drawn blue (data.synth.dots.BLUE_SHIFT_DIR).
    Measured on macro close-ups: these read at a blue index of 8-25 (a grey-blue dot; the flag is at 5),
    where 0.25-0.6 left 93% of them under the flag's threshold, so "aged blue" was no flag."""
    elongation: Range = (1.0, 1.3)
    """Healed dots: ratio of the long to the short axis (random orientation)."""
    fresh_fraction: UnitRange = (0.0, 0.0)
    """Single images: fraction of dots drawn fresh (days old), latest session first."""
    fresh_diameter_mm: PositiveRange = (0.2, 0.6)
    fresh_elongation: Range = (1.5, 2.0)
    """Fresh needle dots are often elongated (1.6-1.8 : 1 measured on clinic photos)."""
    fresh_edge_softness: UnitRange = (0.03, 0.1)
    """Fresh dots have sharp edges (fraction of the radius)."""
    fresh_contrast_dl: PositiveRange = (28.0, 45.0)
    fresh_redness: UnitRange = (0.2, 0.8)
    """Redness (erythema) of the skin around a fresh dot, on the skin's redness scale."""
    fresh_redness_mm: PositiveRange = (0.2, 0.6)
    """How far the redness reaches beyond the dot's edge."""
    scab_fraction: UnitRange = (0.0, 0.3)
    """Fraction of fresh dots carrying a scab (a dark red-brown crust over the dot)."""

    @model_validator(mode="after")
    def _diam(self) -> DotSettings:
        if self.diameter_mm[1] > 2.0 or self.fresh_diameter_mm[1] > 2.0:
            raise ValueError("diameter_mm above 2 mm is not an SMP dot")
        for name in ("elongation", "fresh_elongation"):
            lo, hi = getattr(self, name)
            if lo < 1.0 or hi > 4.0:
                raise ValueError(f"{name} must lie within [1, 4] (long / short axis)")
        if self.fresh_contrast_dl[1] > 80:
            raise ValueError("fresh_contrast_dl above 80 L* is impossible")
        if not self.palette:
            raise ValueError("palette must name at least one pigment shade")
        return self


class CardSettings(Settings):
    probability: float = Field(1.0, ge=0, le=1)
    marker_id: tuple[int, int] = (0, 49)
    scale: PositiveRange = (1.0, 1.0)
    """Rendered size relative to the printed card (1.0 = SMP-CARD-1)."""
    whole: bool = False
    """Keep the whole card, every colour patch included, in frame (by default only the marker is
    kept in view, as clinics' photos often cut patches off). Needs a frame of at least ~60 mm."""


class GlobalSettings(Settings):
    head_width_mm: PositiveRange = (145.0, 165.0)
    views: list[Literal["top", "crown", "front", "back", "left", "right"]] = [
        "top",
        "crown",
        "front",
        "back",
        "left",
        "right",
    ]


class SeriesSettings(Settings):
    sessions: tuple[int, int] = (2, 4)
    session_gap_days: Range = (7.0, 14.0)
    followups: tuple[int, int] = (4, 6)
    followup_gap_days: Range = (60.0, 240.0)
    half_life_days: PositiveRange = (300.0, 1500.0)
    """Per-client half-life of dot contrast."""
    dot_rate_sigma: Range = (0.1, 0.25)
    """Per-dot log-normal spread of the fading rate."""
    fast_fading_fraction: UnitRange = (0.0, 0.05)
    """Dots that fade at 2.5-4 times the client's rate."""
    blue_client_probability: float = Field(0.5, ge=0, le=1)
    blue_dot_fraction: UnitRange = (0.2, 0.6)
    blue_od_per_year: Range = (0.06, 0.2)
    """Growth of the blue-shift optical density of affected dots, per year."""
    spread_client_probability: float = Field(1.0, ge=0, le=1)
    """Clients with spreading dots at all (1: every client, as in the default series)."""
    spread_dot_fraction: UnitRange = (0.02, 0.1)
    spread_rate_mm_per_year: Range = (0.08, 0.25)
    touchup_probability: float = Field(0.4, ge=0, le=1)
    fresh_redness: UnitRange = (0.3, 0.8)
    redness_days: PositiveRange = (3.0, 8.0)
    hair_length_scale: PositiveRange = (0.3, 1.6)
    """Stubble length at a visit relative to the client's usual length."""
    px_per_mm_jitter: UnitRange = (0.0, 0.12)
    """Relative change of scale between visits (a new camera distance)."""
    view_shift_mm: Range = (0.0, 2.5)
    touchup_contrast_dl: float = Field(12.0, gt=0)
    """Region median contrast below which a touch-up is due (truth of the forecast)."""

    @model_validator(mode="after")
    def _counts(self) -> SeriesSettings:
        if not (1 <= self.sessions[0] <= self.sessions[1] <= 8):
            raise ValueError("sessions must be a range within [1, 8]")
        if not (0 <= self.followups[0] <= self.followups[1] <= 20):
            raise ValueError("followups must be a range within [0, 20]")
        if self.session_gap_days[0] <= 0 or self.followup_gap_days[0] <= 0:
            raise ValueError("gaps between visits must be positive")
        return self


class SynthSettings(Settings):
    view: View
    image: ImageSettings
    camera: CameraSettings
    skin: SkinSettings
    hair: HairSettings
    dots: DotSettings
    card: CardSettings = CardSettings()
    global_view: GlobalSettings = GlobalSettings()
    series: SeriesSettings = SeriesSettings()

    @model_validator(mode="after")
    def _view_scale(self) -> SynthSettings:
        lo, hi = self.camera.px_per_mm
        # close-ups: 8-40 px/mm (docs/design.md), phone macros reach 60 px/mm
        allowed = (8.0, 60.0) if self.view == "closeup" else (1.0, 6.0)
        if lo < allowed[0] or hi > allowed[1]:
            raise ValueError(
                f"camera.px_per_mm [{lo}, {hi}] is impossible for a {self.view} view "
                f"(allowed {allowed[0]}-{allowed[1]} px/mm)"
            )
        return self
