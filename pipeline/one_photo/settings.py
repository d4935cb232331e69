"""Everything ``smp assess`` can be told: the settings of one photo's assessment, one section per
stage (``configs/assess/default.yaml`` writes every key with its default)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from data.config import Settings, load_settings
from pipeline.one_photo.calibration import CalibrationSettings
from pipeline.one_photo.detect import DetectSettings
from pipeline.one_photo.dots import (
    DotSettings,
)
from pipeline.one_photo.loading import LoadSettings
from pipeline.one_photo.quality import (
    QualitySettings,
)

__all__ = ["AssessSettings", "SegmentSettings", "load_assess_settings"]


class SegmentSettings(Settings):
    #: ``model`` (the network; falls back to ``classical`` with a warning if it cannot load) or ``classical``.
    method: Literal["model", "classical"] = "model"
    #: Model file or registry URI (``models:/smp-segmenter@champion``); empty = the bundled model.
    model: str = ""
    device: str = "cpu"
    #: Torch threads (0 = torch's default).
    threads: int = Field(0, ge=0)
    #: Largest tile edge in px; the photo is split into equal tiles no larger than this (models.inference).
    tile: int = Field(1536, ge=128)
    overlap: int = Field(128, ge=0)
    dot_threshold: float = Field(0.3, gt=0, lt=1)
    #: Photos finer than this are segmented at ``detect.canonical_px_per_mm`` (the network saw 8-40 px/mm).
    max_px_per_mm: float = Field(16.0, gt=0)
    #: Close-ups coarser than this are enlarged to ``detect.canonical_px_per_mm`` before segmenting (0: never).
    min_px_per_mm: float = Field(16.0, ge=0)
    #: Network arithmetic: ``auto`` (bfloat16 on CPUs that multiply it in hardware, float16 on CUDA, else
    #: float32), ``float32``, ``bfloat16``, ``float16`` (CUDA only). The one used is recorded in the model block.
    #: The values of ``models.inference.Precision``, spelled here so the settings do not import torch.
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="after")
    def _scales(self) -> SegmentSettings:
        if self.min_px_per_mm > self.max_px_per_mm:
            raise ValueError("need min_px_per_mm <= max_px_per_mm")
        return self


class AssessSettings(Settings):
    """Everything ``smp assess`` can be told (``configs/assess/default.yaml``)."""

    #: ``closeup`` / ``global``, or ``auto``: close-up when the scale is >= ``closeup_min_px_per_mm``.
    view: Literal["auto", "closeup", "global"] = "auto"
    closeup_min_px_per_mm: float = Field(7.0, gt=0)
    #: Without any scale, the close-up scale assumed for the skin and show-through neighbourhoods
    #: only (no dots are detected and no mm figures are reported).
    assumed_closeup_px_per_mm: float = Field(20.0, gt=0)
    load: LoadSettings = LoadSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    segment: SegmentSettings = SegmentSettings()
    detect: DetectSettings = DetectSettings()
    dots: DotSettings = DotSettings()
    quality: QualitySettings = QualitySettings()
    #: Write overlay.png (the slowest output on 12 MP photos).
    overlay: bool = True


def load_assess_settings(path=None, overrides=()) -> AssessSettings:
    return load_settings(AssessSettings, path, overrides, default="assess/default.yaml")
