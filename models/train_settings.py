"""What ``smp train`` can be told (``configs/train/*.yaml``): the optimiser and its schedule, early
stopping, MLflow tracking, and the whole :class:`TrainSettings` (data, augmentation, model, loss,
evaluation, the champion gate)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from data.augment import AugmentSettings
from data.config import Settings
from data.dataset import DatasetSettings
from models.bundled import DEFAULT_WEIGHTS
from models.evaluate import EvalSettings
from models.gate import GateSettings
from models.losses import LossSettings
from models.network import ModelSettings

__all__ = ["EarlyStopSettings", "OptimSettings", "TrackingSettings", "TrainSettings"]


class OptimSettings(Settings):
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(30, ge=1)
    steps_per_epoch: int = Field(200, ge=1)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.02, ge=0, le=1)
    grad_clip: float = Field(5.0, gt=0)
    max_minutes: float | None = Field(None, gt=0)
    """Stop after the epoch during which this much wall time has passed (a time-boxed run)."""


class EarlyStopSettings(Settings):
    patience: int = Field(6, ge=1)
    """Epochs without a better validation score before training stops."""
    min_delta: float = Field(1e-3, ge=0)


class TrackingSettings(Settings):
    tracking_uri: str | None = None
    """None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory."""
    experiment: str = "smp-segmenter-train"
    register_version: bool = True
    """Register the model in the MLflow registry (and move champion if it is better)."""
    registered_name: str = "smp-segmenter"
    system_metrics: bool = True
    overlays: int = Field(3, ge=0)
    gate: GateSettings = GateSettings()
    """The fixed suite and margin a new version must beat the champion on to take the alias."""


class TrainSettings(Settings):
    name: str = "train"
    seed: int = 0
    train_manifest: Path
    """Manifest CSV (data/manifest.py); its ``train`` split is used for training."""
    val_manifest: Path | None = None
    """Validation manifest; None: the ``val`` split of ``train_manifest``."""
    out_dir: Path = Path("runs/train")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    """Mixed precision (bfloat16 autocast) on GPU; ignored on CPU."""
    batch_size: int = Field(8, ge=1)
    num_workers: int | None = Field(None, ge=0)
    """Data-loading worker processes (None: 1 on CPU, 4 on GPU; 0: load in the training process).
    Each worker runs torch on one thread; workers persist across epochs."""
    threads: int | None = Field(None, ge=1)
    """CPU threads for torch in the training process (None: torch's default)."""
    init_weights: str | None = None
    """Start from this checkpoint's weights (a model file or training state: a path, ``bundled`` for
    the bundled model of models/weights, or a registry URI ``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``runs:/...``). Not a resume: optimiser,
    schedule and epochs start afresh. Ignored by ``--resume`` (last.pt holds the weights)."""
    reinit_heads: tuple[str, ...] = ()
    """Parameter-name prefixes (e.g. ``dot_head``) that keep their fresh initialisation instead of
    the ``init_weights`` values; their shapes may differ from the checkpoint's."""
    model: ModelSettings = ModelSettings()
    loss: LossSettings = LossSettings()
    data: DatasetSettings = DatasetSettings()
    augment: AugmentSettings = AugmentSettings()
    optim: OptimSettings = OptimSettings()
    early_stop: EarlyStopSettings = EarlyStopSettings()
    eval: EvalSettings = EvalSettings(max_images=8)
    tracking: TrackingSettings = TrackingSettings()

    @field_validator("init_weights")
    @classmethod
    def _init_weights(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value == "bundled":
            if not DEFAULT_WEIGHTS.is_file():
                raise ValueError(f"the bundled model is missing ({DEFAULT_WEIGHTS})")
            return value
        if value.startswith(("models:/", "runs:/")):
            if len(value.split(":/", 1)[1].strip("/")) == 0:
                raise ValueError("a registry URI needs a model name, e.g. models:/smp-segmenter@champion")
            return value
        if not value or not Path(value).is_file():
            raise ValueError("no such checkpoint file")
        return value

    @field_validator("reinit_heads")
    @classmethod
    def _heads(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for head in value:
            parts = head.split(".")
            if not head or not all(p.isidentifier() or p.isdigit() for p in parts):
                raise ValueError(f"{head!r} is not a parameter-name prefix like dot_head or seg_head.out")
        if len(set(value)) != len(value):
            raise ValueError("names a head twice")
        return value

    @model_validator(mode="after")
    def _heads_need_weights(self) -> TrainSettings:
        if self.reinit_heads and self.init_weights is None:
            raise ValueError("reinit_heads: needs init_weights (without it every parameter is fresh)")
        return self

    def workers(self, device: torch.device) -> int:
        """Data-loading workers for ``device`` (``num_workers``, or its default)."""
        if self.num_workers is not None:
            return self.num_workers
        return 1 if device.type == "cpu" else 4
