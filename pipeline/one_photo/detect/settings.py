"""The dot stage's settings (:class:`DetectSettings`) and the scales it supports
(:func:`resample_factor`, :class:`ScaleOutOfRange`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from data.config import PositiveRange, Settings


class DetectSettings(Settings):
    """How dots are detected and decided (lengths in mm on the scalp)."""

    #: The scale every photo is resampled to before detection.
    canonical_px_per_mm: float = Field(16.0, gt=0)
    #: Supported scales of the photo; outside them dot metrics are null with a warning.
    min_px_per_mm: float = Field(8.0, gt=0)
    max_px_per_mm: float = Field(128.0, gt=0)
    #: Radii searched by the scale space (settled 0.10 mm to spread 0.7 mm diameters).
    radius_mm: PositiveRange = (0.04, 0.35)
    n_scales: int = Field(5, ge=2, le=9)
    #: Two peaks within this share of a stronger blob's radius (sqrt(2) sigma) are one dot (0: off).
    blob_merge: float = Field(0.0, ge=0, le=2)
    #: Of two admitted dots, the weaker is the same dot when its centre lies within this share of the
    #: stronger one's half-maximum semi-major axis (0: only ``dots.min_separation_mm`` applies).
    footprint_merge: float = Field(0.9, ge=0, le=2)
    #: The hair the dot stage leaves out: the segmenter's (``segmenter``), thin long dark ridges found
    #: in the photo (``strands``), or both.
    hair: Literal["segmenter", "strands", "both"] = "strands"
    #: A dark run this long and straight, narrower than ``strand_width_mm``, is a strand too
    #: (0: only long thin components)
    strand_line_mm: float = Field(0.7, ge=0)
    strand_width_mm: float = Field(0.25, gt=0)
    #: Light (blond, grey) strands narrower than this are found by a white top-hat (0: off)
    light_hair_mm: float = Field(0.45, ge=0)
    #: How a candidate becomes a dot: ``rules`` (the physical floors below plus fixed thresholds on
    #: significance and the strand tests), ``ranker`` (the rules corrected by the learned ranking of
    #: models/dot_ranker.py: see ``ranker_threshold`` and ``ranker_veto``), ``floors`` (every candidate
    #: the floors admit: for training the ranker and for looking at what the floors alone let through).
    #: The default stays ``rules``: measured on the benchmark, the ranker finds more faint dots in hard
    #: close-ups but reports more false dots on untreated scalps (docs/dots.md).
    decision: Literal["ranker", "rules", "floors"] = "rules"
    #: The ranker's weights (None: the bundled models/weights/dot-ranker.npz) and the probability at
    #: which a candidate is reported (None: the threshold chosen when it was trained).
    ranker: str | None = None
    ranker_threshold: float | None = Field(None, gt=0, lt=1)
    #: A candidate the rules (``min_significance``, the strand tests) admit is reported unless the
    #: ranker's probability is under this (None: the ranker's threshold, i.e. the ranker alone decides).
    ranker_veto: float | None = Field(0.05, ge=0, lt=1)
    #: The learned second look at the pixels around each candidate (models/dot_patch.py): a candidate
    #: the rules admit is refused when the network's probability is under ``patch_veto`` (None: the
    #: veto chosen when it was trained). It only ever refuses. ``patch_model``: its weights (None: the
    #: bundled ones); ``patch_look: false`` turns it off.
    patch_look: bool = True
    patch_veto: float | None = Field(None, gt=0, lt=1)
    patch_model: str | None = None
    #: Measure-and-re-centre passes when the decided dots of a photo finer than the canonical scale are
    #: re-centred on its own pixels. A centroid in a round window creeps along an elongated dot by
    #: about a radius per pass; measured on the fresh-dot macros (30-60 px/mm), 2 passes left 14% of
    #: isolated dots more than 0.1 mm from their centre (the photo's own darkness centroid: 1%).
    fine_recentre_passes: int = Field(4, ge=1, le=8)
    #: Where candidates come from: the scale space, the model's proposals (when a model runs), or both.
    candidates: Literal["scale_space", "model", "both"] = "both"
    #: A candidate needs a filter response of this many local noise sd (it is only a place to look).
    candidate_significance: float = Field(4.0, gt=0)
    #: A reported dot is at least this much darker than its skin (L*), and never less than the
    #: visibility floor of configs/flags.yaml: pores and follicle openings reach 2-10 L*.
    min_contrast_dl: float = Field(6.0, ge=0)
    #: The decision: response over the skin's texture noise at the dot's scale ...
    min_significance: float = Field(6.0, gt=0)
    #: ... or this much where the learned model scores the place at least ``model_support``
    #: (a second opinion; it never lowers the contrast floor, the size or the hair rule).
    min_significance_supported: float = Field(6.0, gt=0)
    model_support: float = Field(0.3, gt=0, le=1)
    #: Half-maximum diameter of a dot (SMP needles make 0.1-0.6 mm dots; spread ones reach ~0.9 mm).
    diameter_mm: PositiveRange = (0.07, 1.0)
    #: Longer than this ratio of axes is a strand, not a dot (fresh dots reach 2 : 1).
    max_elongation: float = Field(2.6, gt=1)
    #: Darkness beyond the dot's end along its long axis, share of its centre darkness.
    max_continuation: float = Field(0.45, gt=0)
    #: Ratio of the Hessian's eigenvalues at the dot's scale (1 a round blob, 0 a straight ridge);
    #: a 2 : 1 dot reads ~0.4 at its own width, a strand < 0.2.
    min_curvature_ratio: float = Field(0.3, ge=0, lt=1)
    #: Above this ratio a candidate is a blob whatever lies beyond it (a round dot among neighbours).
    blob_curvature_ratio: float = Field(0.6, ge=0, le=1)
    #: The skin's texture is measured again without the neighbourhoods of structures this many times
    #: above it (clear dots, which would otherwise count as texture in a dense field), this many
    #: times. Pores, creases and specks stay in: they are the texture a dot must stand out of.
    noise_exclude: float = Field(5.0, gt=1)
    #: ``blobs``: the texture is the typical response of the skin's own blobs at the dot's scale
    #: (pores, specks: the median of the filter's local maxima in ~2 mm blocks, so the dots among
    #: them do not count), never below the RMS of the filter; ``rms``: the RMS alone.
    texture: Literal["blobs", "rms"] = "blobs"
    noise_passes: int = Field(1, ge=0, le=3)
    #: Pixels darker than their surroundings (a ~1.5 mm median) by this much are pigment: left out of
    #: the texture (with each scale's sigma around them) whatever their response, and the texture is
    #: then the dark side of the skin between them (a dense field of dots would otherwise be its own
    #: texture). None: structures are left out by their response only.
    texture_max_dl: float | None = Field(10.0, gt=0)
    #: Width of the neighbourhood over which the skin's texture noise is measured.
    noise_sigma_mm: float = Field(1.0, gt=0)
    #: A structure left out of the texture by its response takes this many of its scale's sigmas
    #: around it along
    exclude_reach: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> DetectSettings:
        if not self.min_px_per_mm < self.canonical_px_per_mm < self.max_px_per_mm:
            raise ValueError("need min_px_per_mm < canonical_px_per_mm < max_px_per_mm")
        return self


class ScaleOutOfRange(ValueError):
    """The photo's scale is outside the range where dots can be measured."""


def resample_factor(px_per_mm: float, settings: DetectSettings) -> float:
    """Canonical px per photo px; :class:`ScaleOutOfRange` outside the supported scales."""
    if not (settings.min_px_per_mm <= px_per_mm <= settings.max_px_per_mm):
        raise ScaleOutOfRange(
            f"{px_per_mm:.1f} px/mm is outside the supported range for dots "
            f"({settings.min_px_per_mm:g}-{settings.max_px_per_mm:g} px/mm)"
        )
    return settings.canonical_px_per_mm / px_per_mm
