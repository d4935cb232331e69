"""Settings of the synthetic scalp-photo generator (``configs/synth/*.yaml``).

Every ``*Range`` field is a closed interval from which one value is drawn per
image (or per client, or per dot, as its docstring says) with the seeded
``numpy.random.Generator`` handed to the generator. Units are in the names.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from data.config import NonNegativeRange, PositiveRange, Range, Settings, UnitRange

HairColour = Literal["black", "brown", "blond", "grey"]
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

    @model_validator(mode="after")
    def _physical(self) -> "CameraSettings":
        if self.tilt_deg[0] < 0 or self.tilt_deg[1] >= 60:
            raise ValueError("tilt_deg must lie within [0, 60)")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError("jpeg_quality must lie within [1, 100]")
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

    @model_validator(mode="after")
    def _types(self) -> "SkinSettings":
        lo, hi = self.fitzpatrick
        if not (1 <= lo <= hi <= 6):
            raise ValueError("fitzpatrick must be a range within [1, 6]")
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

    @model_validator(mode="after")
    def _nonneg(self) -> "HairSettings":
        if not self.patterns or not self.colours:
            raise ValueError("patterns and colours must not be empty")
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

    @model_validator(mode="after")
    def _diam(self) -> "DotSettings":
        if self.diameter_mm[1] > 2.0:
            raise ValueError("diameter_mm above 2 mm is not an SMP dot")
        if not self.palette:
            raise ValueError("palette must name at least one pigment shade")
        return self


class CardSettings(Settings):
    probability: float = Field(1.0, ge=0, le=1)
    marker_id: tuple[int, int] = (0, 49)
    scale: PositiveRange = (1.0, 1.0)
    """Rendered size relative to the printed card (1.0 = SMP-CARD-1)."""


class GlobalSettings(Settings):
    head_width_mm: PositiveRange = (145.0, 165.0)
    views: list[Literal["top", "crown", "front", "back", "left", "right"]] = [
        "top", "crown", "front", "back", "left", "right"]


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
    def _counts(self) -> "SeriesSettings":
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
    def _view_scale(self) -> "SynthSettings":
        lo, hi = self.camera.px_per_mm
        allowed = (8.0, 40.0) if self.view == "closeup" else (1.0, 6.0)
        if lo < allowed[0] or hi > allowed[1]:
            raise ValueError(
                f"camera.px_per_mm [{lo}, {hi}] is impossible for a {self.view} view "
                f"(allowed {allowed[0]}-{allowed[1]} px/mm)")
        return self
