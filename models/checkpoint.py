"""Checkpoints: state_dict plus the resolved settings, never a pickled module.

Two kinds of file, both read with ``torch.load(weights_only=True)`` so that a
checkpoint from an untrusted source cannot run code:

* a *model file* (``format: smp-segmenter/1``): the network's settings (plain
  dict), its ``state_dict`` and free-form metadata (what it was trained on, its
  validation figures). This is what the pipeline, ``smp evaluate``, MLflow and
  the bundled weights use.
* a *training state* (``format: smp-training-state/1``): a model file's content
  plus optimiser, schedule, gradient scaler, epoch, best score, history and RNG
  states, so that ``smp train --resume`` continues where a run stopped.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data.config import ConfigError
from models.network import ModelSettings, SegDotNet, build_model

MODEL_FORMAT = "smp-segmenter/1"
STATE_FORMAT = "smp-training-state/1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt or of the wrong kind (one-line message)."""


@dataclass(frozen=True)
class LoadedModel:
    model: SegDotNet
    settings: ModelSettings
    meta: dict[str, Any]
    path: Path
    sha256: str


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_save(obj: dict, path: Path) -> Path:
    """Write to a temporary name and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _settings_dict(model: torch.nn.Module) -> dict[str, Any]:
    """The network's settings as plain data; a backbone weights path is dropped (the
    weights are in the state_dict, and the file may not exist where the model is used)."""
    module = model.module if hasattr(model, "module") else model
    return module.settings.model_copy(update={"backbone_weights": None}).model_dump(mode="json")


def save_model(path: str | Path, model: SegDotNet, meta: dict[str, Any] | None = None) -> Path:
    """Save a model file (settings + state_dict + metadata)."""
    return _atomic_save({"format": MODEL_FORMAT, "model_settings": _settings_dict(model),
                         "state_dict": _plain_state(model), "meta": dict(meta or {})}, Path(path))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or not a torch file at all
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict) or obj.get("format") not in (MODEL_FORMAT, STATE_FORMAT):
        raise CheckpointError(f"{path}: not an smp-assess checkpoint (format {obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r})")
    return obj


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file (or the model inside a training state), in eval mode."""
    path = Path(path)
    obj = _read(path)
    try:
        settings = ModelSettings(**obj["model_settings"])
    except Exception as exc:
        raise CheckpointError(f"{path}: its model settings are invalid: {str(exc).splitlines()[0]}") from None
    model = build_model(settings)
    missing, unexpected = model.load_state_dict(obj["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the network (missing {len(missing)}, "
                              f"unexpected {len(unexpected)}, e.g. {(list(missing) + list(unexpected))[:2]})")
    model.to(device).eval()
    return LoadedModel(model, settings, dict(obj.get("meta", {})), path, file_sha256(path))


def save_training_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: Any, *, epoch: int, best_score: float,
                        bad_epochs: int, history: list[dict[str, float]], meta: dict[str, Any]) -> Path:
    return _atomic_save({
        "format": STATE_FORMAT, "model_settings": _settings_dict(model),
        "state_dict": _plain_state(model), "meta": dict(meta),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": int(epoch), "best_score": float(best_score), "bad_epochs": int(bad_epochs),
        "history": list(history), "torch_rng": torch.get_rng_state(),
    }, Path(path))


def load_training_state(path: str | Path) -> dict[str, Any]:
    obj = _read(Path(path))
    if obj["format"] != STATE_FORMAT:
        raise CheckpointError(f"{path}: a model file, not a training state: cannot resume from it")
    return obj


def check_resume_compatible(state: dict[str, Any], settings: ModelSettings, path: Path) -> None:
    saved = ModelSettings(**state["model_settings"])
    if saved != settings.model_copy(update={"backbone_weights": None}):
        raise ConfigError(f"model: the run in {path.parent} was started with other model settings; "
                          "use a new out_dir or the same config to resume")


def resolve_model(ref: str | Path) -> Path:
    """A model reference -> a local model file.

    ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and ``runs:/...`` are
    downloaded from the tracking server; anything else is a path. MLflow is
    imported only for those (it costs ~200 MB of memory in every process).
    """
    ref = str(ref)
    if not ref.startswith(("models:/", "runs:/")):
        p = Path(ref)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such model file")
        return p
    import mlflow

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
    except Exception as exc:
        raise FileNotFoundError(f"{ref}: cannot fetch this model from {mlflow.get_tracking_uri()} "
                                f"({str(exc).splitlines()[0][:160]})") from None
    found = sorted(local.rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"{ref}: the model holds no checkpoint file")
    return found[0]
