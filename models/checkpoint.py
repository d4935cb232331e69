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

Either kind can also start a new training (``init_weights``,
:func:`init_from_checkpoint`): its weights only, some heads re-initialised.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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
    module = cast(torch.nn.Module, model.module) if hasattr(model, "module") else model  # unwrap DDP
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _settings_dict(model: torch.nn.Module) -> dict[str, Any]:
    """The network's settings as plain data; a backbone weights path is dropped (the
    weights are in the state_dict, and the file may not exist where the model is used)."""
    module = cast(torch.nn.Module, model.module) if hasattr(model, "module") else model
    settings = cast(ModelSettings, module.settings)  # a SegDotNet's
    return settings.model_copy(update={"backbone_weights": None}).model_dump(mode="json")


def save_model(path: str | Path, model: SegDotNet, meta: dict[str, Any] | None = None) -> Path:
    """Save a model file (settings + state_dict + metadata)."""
    return _atomic_save(
        {
            "format": MODEL_FORMAT,
            "model_settings": _settings_dict(model),
            "state_dict": _plain_state(model),
            "meta": dict(meta or {}),
        },
        Path(path),
    )


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or not a torch file at all
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") not in (MODEL_FORMAT, STATE_FORMAT):
        raise CheckpointError(
            f"{path}: not an smp-assess checkpoint "
            f"(format {obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r})"
        )
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
        raise CheckpointError(
            f"{path}: weights do not fit the network (missing {len(missing)}, "
            f"unexpected {len(unexpected)}, e.g. {(list(missing) + list(unexpected))[:2]})"
        )
    model.to(device).eval()
    return LoadedModel(model, settings, dict(obj.get("meta", {})), path, file_sha256(path))


@dataclass(frozen=True)
class InitWeights:
    """What :func:`init_from_checkpoint` did (recorded in the run and the new checkpoint's meta)."""

    path: Path
    sha256: str
    reinit_heads: tuple[str, ...]
    loaded: int
    """Tensors of the state_dict taken from the checkpoint."""
    reinitialised: int
    """Tensors kept from the network's own initialisation (those under ``reinit_heads``)."""
    settings_changed: tuple[str, ...]
    """Model settings that differ from the checkpoint's (shapes permitting)."""
    source_meta: dict[str, Any]
    ref: str = ""
    """What was asked for (a path or a registry URI); ``path`` is the local file it resolved to."""

    def as_meta(self) -> dict[str, Any]:
        return {
            "weights": self.ref or str(self.path),
            "path": str(self.path),
            "sha256": self.sha256,
            "reinit_heads": list(self.reinit_heads),
            "loaded": self.loaded,
            "reinitialised": self.reinitialised,
            "settings_changed": list(self.settings_changed),
            "source_name": str(self.source_meta.get("name", "")),
            "source_epoch": self.source_meta.get("epoch"),
        }


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    """``key`` is ``prefix`` itself or inside it (on a dot boundary: ``dot_head`` is not ``dot_head2``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def init_from_checkpoint(
    model: torch.nn.Module, path: str | Path, reinit_heads: tuple[str, ...] | list[str] = (), ref: str = ""
) -> InitWeights:
    """Copy a checkpoint's weights into ``model`` except those under ``reinit_heads``.

    ``reinit_heads`` are state_dict name prefixes (``dot_head``, ``seg_head.out``);
    tensors under them keep the values ``model`` was built with (its fresh,
    seeded initialisation), whatever their shape in the checkpoint. Every other
    tensor of the model must be in the checkpoint with the same shape, and the
    checkpoint must hold nothing else; otherwise a :class:`CheckpointError`
    names the first offending tensor. A prefix that matches no tensor of the
    model is an error too (a misspelt head would silently be loaded).
    """
    path = Path(path)
    obj = _read(path)
    heads = tuple(reinit_heads)
    module = cast(torch.nn.Module, model.module) if hasattr(model, "module") else model
    target = module.state_dict()
    for head in heads:
        if not any(_under(k, (head,)) for k in target):
            tops = sorted({k.split(".", 1)[0] for k in target})
            raise CheckpointError(
                f"reinit_heads: {head!r} names no parameter of the network (its parts: {', '.join(tops)})"
            )
    source = obj["state_dict"]
    state: dict[str, torch.Tensor] = {}
    kept = 0
    for key, tensor in target.items():
        if _under(key, heads):
            state[key] = tensor
            kept += 1
            continue
        if key not in source:
            raise CheckpointError(
                f"init_weights: {path} has no tensor {key} (another network? re-initialise its head with reinit_heads)"
            )
        if tuple(source[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"init_weights: {key} has shape {tuple(source[key].shape)} in {path}, "
                f"{tuple(tensor.shape)} in the network (add its head to reinit_heads "
                "or use the checkpoint's model settings)"
            )
        state[key] = source[key]
    extra = sorted(k for k in source if k not in target and not _under(k, heads))
    if extra:
        raise CheckpointError(
            f"init_weights: {path} holds {len(extra)} tensors the network lacks "
            f"(e.g. {extra[0]}): another architecture?"
        )
    module.load_state_dict(state, strict=True)
    saved = dict(obj.get("model_settings") or {})
    mine = (
        cast(ModelSettings, module.settings).model_copy(update={"backbone_weights": None}).model_dump(mode="json")
        if hasattr(module, "settings")
        else {}
    )
    changed = tuple(sorted(k for k in mine if k in saved and saved[k] != mine[k]))
    return InitWeights(
        path, file_sha256(path), heads, len(state) - kept, kept, changed, dict(obj.get("meta") or {}), ref
    )


def save_training_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    *,
    epoch: int,
    best_score: float,
    bad_epochs: int,
    history: list[dict[str, float]],
    meta: dict[str, Any],
) -> Path:
    return _atomic_save(
        {
            "format": STATE_FORMAT,
            "model_settings": _settings_dict(model),
            "state_dict": _plain_state(model),
            "meta": dict(meta),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "epoch": int(epoch),
            "best_score": float(best_score),
            "bad_epochs": int(bad_epochs),
            "history": list(history),
            "torch_rng": torch.get_rng_state(),
        },
        Path(path),
    )


def load_training_state(path: str | Path) -> dict[str, Any]:
    obj = _read(Path(path))
    if obj["format"] != STATE_FORMAT:
        raise CheckpointError(f"{path}: a model file, not a training state: cannot resume from it")
    return obj


def check_resume_compatible(state: dict[str, Any], settings: ModelSettings, path: Path) -> None:
    saved = ModelSettings(**state["model_settings"])
    if saved != settings.model_copy(update={"backbone_weights": None}):
        raise ConfigError(
            f"model: the run in {path.parent} was started with other model settings; "
            "use a new out_dir or the same config to resume"
        )


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
        raise FileNotFoundError(
            f"{ref}: cannot fetch this model from {mlflow.get_tracking_uri()} ({str(exc).splitlines()[0][:160]})"
        ) from None
    found = sorted(local.rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"{ref}: the model holds no checkpoint file")
    return found[0]
