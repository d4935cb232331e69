"""Dot flags (``blue_shift``, ``faded``, ``spread``) from measured dot values.

One rule set, read from ``configs/flags.yaml``, decides the flags of the
synthetic ground truth and of the pipeline's measurements, so that a flag means
the same thing on both sides of every benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from data.config import Settings, load_settings


class FlagSettings(Settings):
    """Thresholds for dot flags and the show-through metric (rationale in the YAML)."""

    blue_index_min: float = Field(gt=0)
    faded_contrast_dl_max: float = Field(gt=0)
    spread_diameter_mm_min: float = Field(gt=0)
    show_through_dl: float = Field(gt=0)
    viewing_sigma_mm: float = Field(gt=0)
    #: Truth and measurement alike: a dot is visible only with less hair over its disc than this ...
    visible_max_hair_cover: float = Field(0.5, gt=0, le=1)
    #: ... and a centre darkness (skin L* - dot L*, as the optics render it) of at least this.
    visible_min_contrast_dl: float = Field(3.0, gt=0)
    #: ... and, in the finished photo, a darkness beyond what this percentile of the photo's bare-skin
    #: places shows at the same size (its own specks; data.synth.visibility). None: no photo test.
    visible_min_speck_quantile: float | None = Field(99.9, gt=50, lt=100)
    #: Truth: a hair pixel is in the photo only when its colour offset from the skin around it, along the
    #: strand, is beyond this percentile of the same measure on the photo's bare skin
    #: (data.synth.visibility.unseen_hair). None: no such test.
    hair_visible_quantile: float | None = Field(99.0, gt=50, lt=100)
    #: A dot's colour (and so a flag) is measured only when its half-maximum diameter spans this many px.
    measurable_min_diameter_px: float = Field(8.0, gt=0)
    #: A core darker than this L* carries no hue the camera can read: no blue flag there.
    blue_min_lstar: float = Field(12.0, ge=0, lt=100)
    #: Scoring: a flag is scored only on dots whose true value lies at least this far from the flag's
    #: threshold (blue index in b*, contrast in L*, diameter in mm); closer, the truth itself is undecided.
    flag_margin_blue_index: float = Field(2.0, ge=0)
    flag_margin_contrast_dl: float = Field(2.0, ge=0)
    flag_margin_diameter_mm: float = Field(0.05, ge=0)


def load_flag_settings(path=None, overrides=()) -> FlagSettings:
    return load_settings(FlagSettings, path, overrides, default="flags.yaml")


@dataclass(frozen=True)
class DotFlags:
    blue_shift: np.ndarray
    faded: np.ndarray
    spread: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"blue_shift": self.blue_shift, "faded": self.faded, "spread": self.spread}


def _hued(blue_index: np.ndarray, lstar: np.ndarray | None, rules: FlagSettings) -> np.ndarray:
    """The blue index where the core is light enough to carry a hue (``blue_min_lstar``), NaN elsewhere."""
    bi = np.asarray(blue_index, dtype=float)
    if lstar is None:
        return bi
    return np.where(np.nan_to_num(np.asarray(lstar, dtype=float), nan=-np.inf) >= rules.blue_min_lstar, bi, np.nan)


def flag_dots(
    blue_index: np.ndarray,
    contrast_dl: np.ndarray,
    diameter_mm: np.ndarray,
    rules: FlagSettings,
    lstar: np.ndarray | None = None,
) -> DotFlags:
    """Apply the thresholds; NaN values never raise a flag. ``lstar``: the dots' core L*; a core darker
    than ``blue_min_lstar`` carries no hue (``blue_shift`` is never raised there)."""
    bi = _hued(blue_index, lstar, rules)
    dl = np.asarray(contrast_dl, dtype=float)
    d = np.asarray(diameter_mm, dtype=float)
    with np.errstate(invalid="ignore"):
        return DotFlags(
            blue_shift=np.nan_to_num(bi, nan=-np.inf) >= rules.blue_index_min,
            faded=np.nan_to_num(dl, nan=np.inf) < rules.faded_contrast_dl_max,
            spread=np.nan_to_num(d, nan=-np.inf) >= rules.spread_diameter_mm_min,
        )


def decided_flags(
    blue_index: np.ndarray,
    contrast_dl: np.ndarray,
    diameter_mm: np.ndarray,
    rules: FlagSettings,
    lstar: np.ndarray | None = None,
) -> DotFlags:
    """Where each flag's truth is decided: the value at least ``flag_margin_*`` from the flag's threshold
    (NaN: undecided). A flag on a continuous value (a dot's blueness, contrast, size) has dots on both
    sides of its threshold by any small amount; a measurement through a camera, however good, cannot
    put those on the right side, so the scoring counts them neither way (as it does invisible dots)."""

    def far(v: np.ndarray, threshold: float, margin: float) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.isfinite(v) & (np.abs(v - threshold) >= margin)

    return DotFlags(
        blue_shift=far(_hued(blue_index, lstar, rules), rules.blue_index_min, rules.flag_margin_blue_index),
        faded=far(contrast_dl, rules.faded_contrast_dl_max, rules.flag_margin_contrast_dl),
        spread=far(diameter_mm, rules.spread_diameter_mm_min, rules.flag_margin_diameter_mm),
    )


def measurable_dots(diameter_px: np.ndarray, rules: FlagSettings) -> np.ndarray:
    """(N,) bool: dots whose half-maximum diameter in the photo is large enough to measure a colour."""
    d = np.nan_to_num(np.asarray(diameter_px, dtype=float), nan=0.0)
    return d >= rules.measurable_min_diameter_px
