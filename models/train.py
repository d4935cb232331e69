"""Training of the segmentation + dot network: ``smp train``.

One function, :func:`train`, runs a whole training from a validated
:class:`~models.train_settings.TrainSettings`: seeded data loading with random crops and the
augmentation preset, AdamW with warm-up and cosine decay, mixed precision on
GPU, per-epoch validation with the same tiled inference the pipeline uses,
checkpoints with resume or a start from another checkpoint's weights
(``init_weights``, some heads re-initialised), early stopping, and an MLflow run (params, metrics per
epoch, the manifest as an input, artifacts, system metrics, the model, its
registration). Under ``torchrun`` it runs data-parallel (DDP: gloo on CPU, NCCL
on GPU); only rank 0 validates, writes files and talks to MLflow.

Data loading runs in ``num_workers`` worker processes (one by default on CPU:
the next batch is decoded and augmented while the network computes), each
with one torch thread and its own seeded generator
(:class:`data.dataset.WorkerInit`); the batches do not depend on the number
of workers (each item draws from its own generator of seed, epoch and index).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from data.config import ConfigError
from data.dataset import EpochKeys, SeededSampler, SmpDataset, WorkerInit
from data.manifest import Manifest, read_manifest
from models.bundled import DEFAULT_WEIGHTS
from models.checkpoint import (
    InitWeights,
    check_resume_compatible,
    init_from_checkpoint,
    load_training_state,
    resolve_model,
    save_model,
    save_training_state,
)
from models.evaluate import evaluate, selection_score, write_report
from models.losses import total_loss
from models.network import SegDotNet, build_model
from models.train_settings import OptimSettings, TrainSettings


@dataclass(frozen=True)
class TrainResult:
    best_model: Path
    best_score: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]]
    run_id: str | None
    registered_version: str | None
    champion: bool
    summary: dict[str, float]
    champion_decision: str = ""
    """The gate's sentence: why this version is or is not champion (empty when nothing was registered)."""


@dataclass
class TrainState:
    """Where a training stands between epochs: the epoch it starts at, the best validation score and the
    epochs since it improved (early stopping), the per-epoch records; all kept in last.pt for a resume."""

    start_epoch: int = 0
    best: float = -math.inf
    bad: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    init_meta: dict | None = None
    """Where the weights came from (``init_weights``), recorded in every checkpoint of the run."""


# ----------------------------------------------------------------------------- set-up


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device: 'cuda' asked for but no GPU is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # third-party code only; ours takes explicit Generators
    torch.manual_seed(seed)


def _lr_lambda(o: OptimSettings):
    total = o.epochs * o.steps_per_epoch

    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        t = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def _manifests(s: TrainSettings) -> tuple[Manifest, Manifest]:
    train_m = read_manifest(s.train_manifest, split="train")
    val_m = (
        read_manifest(s.val_manifest, split="val") if s.val_manifest else read_manifest(s.train_manifest, split="val")
    )
    if len(train_m) == 0:
        raise ConfigError(f"train_manifest: {s.train_manifest} has no 'train' rows")
    if len(val_m) == 0:
        raise ConfigError(f"val_manifest: no 'val' rows in {s.val_manifest or s.train_manifest}")
    return train_m, val_m


def _sampler(s: TrainSettings, n: int, rank: int, world: int) -> EpochKeys:
    """The items of each epoch as ``(epoch, index)`` keys (persistent workers see the epoch)."""
    inner: Sampler[int]
    if world > 1:
        inner = DistributedSampler(
            range(n),  # type: ignore[arg-type]  # torch stubs: any Sized works (len only)
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=s.seed,
        )
    else:
        inner = SeededSampler(n, s.optim.steps_per_epoch * s.batch_size, s.seed)
    return EpochKeys(inner)


def _loader(s: TrainSettings, dataset: SmpDataset, sampler: EpochKeys, device: torch.device) -> DataLoader:
    workers = s.workers(device)
    extra: dict[str, Any] = {}
    if workers > 0:
        # persistent: no restart per epoch, and each worker keeps its decoded-photo cache
        extra = {"worker_init_fn": WorkerInit(s.seed), "persistent_workers": True, "prefetch_factor": 2}
    return DataLoader(
        dataset,
        batch_size=s.batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(s.seed),
        **extra,
    )


def _init_weights(s: TrainSettings, model: torch.nn.Module) -> InitWeights:
    """Load ``s.init_weights`` into the freshly built ``model`` (``reinit_heads`` kept fresh)."""
    ref = str(s.init_weights)
    if ref == "bundled":
        return init_from_checkpoint(model, DEFAULT_WEIGHTS, s.reinit_heads, ref=ref)
    if ref.startswith(("models:/", "runs:/")):
        from models.registry import resolve_model as resolve_registered

        return init_from_checkpoint(model, resolve_registered(ref, s.tracking.tracking_uri), s.reinit_heads, ref=ref)
    return init_from_checkpoint(model, resolve_model(ref), s.reinit_heads, ref=ref)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _dataset(s: TrainSettings, train_m: Manifest) -> SmpDataset:
    """The training items: random crops of ``train_m`` under the augmentation preset, normalised for the model."""
    return SmpDataset(
        train_m,
        s.data.model_copy(
            update={
                "mode": "train",
                "seed": s.seed,
                "input_norm": s.model.input_norm,
                "input_norm_percentile": s.model.input_norm_percentile,
                "global_long_side": s.model.global_long_side,
                "closeup_px_per_mm": s.model.closeup_px_per_mm,
            }
        ),
        s.augment,
    )


def _model(
    s: TrainSettings, device: torch.device, *, resume: bool, announce: bool
) -> tuple[SegDotNet, InitWeights | None]:
    """The network on ``device``: fresh, or from ``init_weights`` (not on a resume: last.pt holds the weights)."""
    model = build_model(s.model)
    init = _init_weights(s, model) if s.init_weights and not resume else None
    if init is not None and announce:
        print(
            f"[train] weights from {s.init_weights} ({init.loaded} tensors; "
            f"{init.reinitialised} re-initialised under {', '.join(init.reinit_heads) or '-'})",
            flush=True,
        )
    model = model.to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model, init


def _parallel(model: SegDotNet, world: int, local_rank: int, device: torch.device) -> torch.nn.Module:
    """What the training steps call: ``model`` itself, or its DDP wrapper under torchrun."""
    if world <= 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)


def _resume(
    s: TrainSettings,
    model: SegDotNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> TrainState:
    """Restore the run in ``out_dir`` from its last.pt: weights, optimiser, schedule, torch's random state,
    and where the training stood."""
    out = Path(s.out_dir)
    last_path = out / "last.pt"
    if not last_path.exists():
        raise ConfigError(f"out_dir: nothing to resume in {out} (no last.pt)")
    saved = load_training_state(last_path)
    check_resume_compatible(saved, s.model, last_path)
    model.load_state_dict(saved["state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    return TrainState(
        start_epoch=saved["epoch"] + 1,
        best=saved["best_score"],
        bad=saved["bad_epochs"],
        history=list(saved["history"]),
        init_meta=saved.get("meta", {}).get("init"),  # the run's start, kept in all its checkpoints
    )


# ----------------------------------------------------------------------------- training


def make_optimizer(
    model: torch.nn.Module, optim: OptimSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay on the weights only (not biases or norms), warm-up then cosine decay."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(optim))


def train_one_epoch(
    net: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    s: TrainSettings,
    device: torch.device,
    *,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """One pass over ``loader``: the mean of each loss part (``train_<part>``), the learning rate at the
    end and the epoch's seconds. ``net`` is the model or its DDP wrapper; gradients are clipped on its
    parameters (the same tensors either way)."""
    net.train()
    use_amp = s.amp and device.type == "cuda"
    t0 = time.perf_counter()
    sums: dict[str, float] = {}
    steps = 0
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc=f"epoch {epoch + 1}/{s.optim.epochs}", leave=False, unit="batch")
    for batch in it:
        batch = _to(batch, device)
        image = batch["image"]
        if device.type == "cpu":
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = net(image)
        outputs = {k: v.float() for k, v in outputs.items()}
        loss, parts = total_loss(outputs, batch, s.loss)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch + 1}: the loss is {loss.item()} (lower optim.lr?)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), s.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        steps += 1
        for k, v in {"loss": loss, **parts}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        if progress and hasattr(it, "set_postfix"):
            it.set_postfix(loss=f"{float(loss):.4f}")
    record = {f"train_{k}": v / max(steps, 1) for k, v in sums.items()}
    record["lr"] = cast(float, scheduler.get_last_lr()[0])  # the optimizer's lr is a float
    record["epoch_seconds"] = time.perf_counter() - t0
    return record


def evaluate_epoch(
    model: SegDotNet,
    val_m: Manifest,
    s: TrainSettings,
    state: TrainState,
    record: dict[str, float],
    *,
    epoch: int,
    device: torch.device,
    log: bool,
) -> tuple[dict[str, float], bool]:
    """Validate ``model`` after an epoch (rank 0 only): the ``val_*`` figures and the selection score join
    ``record``, which joins the history and, with ``log``, the MLflow run; the best score and the epochs
    without improvement (early stopping) move. Returns the validation summary and whether the score improved."""
    ev = evaluate(model, val_m, s.eval, device=device)
    score = selection_score(ev.summary)
    record.update({f"val_{k}": v for k, v in ev.summary.items() if v == v})
    record["val_score"] = score
    improved = score > state.best + s.early_stop.min_delta
    if improved:
        state.best, state.bad = score, 0
    else:
        state.bad += 1
    state.history.append({"epoch": epoch + 1, **record})
    if log:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in record.items()}, step=epoch + 1)
    return ev.summary, improved


def save_checkpoints(
    s: TrainSettings,
    model: SegDotNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    state: TrainState,
    summary: dict[str, float],
    train_m: Manifest,
    *,
    epoch: int,
    improved: bool,
) -> None:
    """best.pt (the model) when the epoch improved the score; last.pt (the training state to resume from) always."""
    out = Path(s.out_dir)
    if improved:
        save_model(out / "best.pt", model, meta=_meta(s, epoch, summary, train_m, state.init_meta))
    save_training_state(
        out / "last.pt",
        model,
        optimizer,
        scheduler,
        None,  # no loss scaler: bfloat16 autocast needs no loss scaling
        epoch=epoch,
        best_score=state.best,
        bad_epochs=state.bad,
        history=state.history,
        meta=_meta(s, epoch, summary, train_m, state.init_meta),
    )


def train(s: TrainSettings, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run a training described by ``s``; returns where the best model is and its figures.

    In the shape of torchvision's reference scripts: set up (processes, device, seed, data, model,
    optimiser, resume), then per epoch :func:`train_one_epoch`, :func:`evaluate_epoch` and
    :func:`save_checkpoints`, then :func:`_finish` (final validation, artifacts, registration)."""
    rank, world, local_rank = _distributed()
    device = _device(s.device, local_rank)
    if s.threads:
        torch.set_num_threads(s.threads)
    _seed_everything(s.seed + rank)
    train_m, val_m = _manifests(s)
    dataset = _dataset(s, train_m)
    sampler = _sampler(s, len(dataset), rank, world)
    loader = _loader(s, dataset, sampler, device)
    model, init = _model(s, device, resume=resume, announce=progress and rank == 0)
    net = _parallel(model, world, local_rank, device)
    optimizer, scheduler = make_optimizer(model, s.optim)
    if resume:
        state = _resume(s, model, optimizer, scheduler)
    else:
        state = TrainState(init_meta=init.as_meta() if init is not None else None)

    run = _start_run(s, train_m, val_m, resume, state.init_meta) if rank == 0 else None
    stopped_early = False
    epoch = state.start_epoch - 1
    t_start = time.perf_counter()
    try:
        for epoch in range(state.start_epoch, s.optim.epochs):
            if _should_stop(s, state, t_start):
                stopped_early = True
                break
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)  # the items' epoch travels with their keys to the workers
            record = train_one_epoch(
                net, loader, optimizer, scheduler, s, device, epoch=epoch, progress=progress and rank == 0
            )
            if rank == 0:
                summary, improved = evaluate_epoch(
                    model, val_m, s, state, record, epoch=epoch, device=device, log=run is not None
                )
                save_checkpoints(
                    s, model, optimizer, scheduler, state, summary, train_m, epoch=epoch, improved=improved
                )
                if progress:
                    _print_epoch(epoch, record, summary, improved)
            if world > 1:
                state.bad = _share_bad_epochs(state.bad, device)
        else:
            epoch = s.optim.epochs - 1
        best_path = Path(s.out_dir) / "best.pt"
        if rank != 0:
            return TrainResult(best_path, state.best, epoch + 1, stopped_early, state.history, None, None, False, {})
        return _finish(s, run, val_m, best_path, state.best, epoch, stopped_early, state.history, device)
    finally:
        _close(run, world)


def _should_stop(s: TrainSettings, state: TrainState, t_start: float) -> bool:
    """Early stopping: ``patience`` epochs without a better score, or the run's ``max_minutes`` spent."""
    if state.bad >= s.early_stop.patience:
        return True
    return bool(s.optim.max_minutes and time.perf_counter() - t_start > 60 * s.optim.max_minutes)


def _share_bad_epochs(bad: int, device: torch.device) -> int:
    """Rank 0's count of epochs without improvement, on every rank (they stop together)."""
    flag = torch.tensor([bad], device=device)
    dist.broadcast(flag, src=0)
    return int(flag.item())


def _print_epoch(epoch: int, record: dict[str, float], summary: dict[str, float], improved: bool) -> None:
    print(
        f"[train] epoch {epoch + 1}: loss {record.get('train_loss', float('nan')):.4f} "
        f"val mIoU {summary.get('miou_scalp_hair', float('nan')):.4f} "
        f"dot F1 {summary.get('dot_f1', float('nan')):.4f} score {record['val_score']:.4f}"
        f"{' (best)' if improved else ''} {record['epoch_seconds']:.0f} s",
        flush=True,
    )


def _close(run: Any, world: int) -> None:
    """End the MLflow run (rank 0) and leave the process group (under torchrun)."""
    if run is not None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run()
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def _meta(
    s: TrainSettings, epoch: int, summary: dict[str, float], train_m: Manifest, init_meta: dict | None = None
) -> dict:
    meta = {
        "name": s.name,
        "epoch": epoch + 1,
        "seed": s.seed,
        "trained_on": str(s.train_manifest),
        "train_images": len(train_m),
        "sources": sorted({r.source for r in train_m}),
        "val_summary": {k: float(v) for k, v in summary.items() if v == v},
        "torch": str(torch.__version__),
    }
    if init_meta is not None:
        meta["init"] = dict(init_meta)
    return meta


def _start_run(s: TrainSettings, train_m: Manifest, val_m: Manifest, resume: bool, init_meta: dict | None = None):
    import mlflow

    from models.registry import flatten, log_manifest_input, use_experiment

    use_experiment(s.tracking.experiment, s.tracking.tracking_uri)
    run = mlflow.start_run(run_name=s.name, log_system_metrics=s.tracking.system_metrics)
    params = flatten(s.model_dump(mode="json"))
    params["resumed"] = str(resume)
    if init_meta is not None:
        params["init_weights_sha256"] = str(init_meta["sha256"])
        params["init_weights_file"] = str(init_meta["path"])
        params["init_tensors_loaded"] = str(init_meta["loaded"])
        params["init_tensors_reinitialised"] = str(init_meta["reinitialised"])
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
        mlflow.log_params(dict(list(params.items())[i : i + 100]))
    mlflow.log_text(yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False), "config/resolved.yaml")
    log_manifest_input(train_m.to_frame(), str(s.train_manifest), "training", "train")
    log_manifest_input(val_m.to_frame(), str(s.val_manifest or s.train_manifest), "validation", "val")
    return run


def _finish(
    s: TrainSettings,
    run,
    val_m: Manifest,
    best_path: Path,
    best: float,
    epoch: int,
    stopped_early: bool,
    history: list,
    device: torch.device,
) -> TrainResult:
    """Final validation of the best model, artifacts, model logging and registration."""
    from models.checkpoint import load_model

    if not best_path.exists():
        raise FloatingPointError("no epoch produced a valid model")
    loaded = load_model(best_path, device=device)
    ev = evaluate(
        loaded.model,
        val_m,
        s.eval.model_copy(update={"max_images": None}),
        device=device,
        keep_samples=s.tracking.overlays,
    )
    score = selection_score(ev.summary)
    report_dir = Path(s.out_dir) / "validation"
    written = write_report(ev, report_dir)
    run_id, version, champion, decision = None, None, False, ""
    if run is not None:
        import mlflow

        from models.registry import log_and_register

        mlflow.log_metrics({f"final_val_{k}": float(v) for k, v in ev.summary.items() if v == v})
        mlflow.log_metric("final_val_score", score)
        for p in written:
            mlflow.log_artifact(str(p), artifact_path="validation")
        mlflow.log_artifact(str(best_path), artifact_path="checkpoint")
        reg = log_and_register(
            best_path,
            score=score,
            register=s.tracking.register_version,
            model_name=s.tracking.registered_name,
            extra_tags={"arch": loaded.settings.arch, "run_name": s.name},
            gate=s.tracking.gate,
        )
        mlflow.set_tags({"model_uri": reg.model_uri, "registered_version": reg.version, "champion": str(reg.champion)})
        run_id, version, champion = run.info.run_id, reg.version or None, reg.champion
        decision = reg.decision.sentence if reg.decision is not None else ""
    return TrainResult(
        best_path, score, epoch + 1, stopped_early, history, run_id, version, champion, ev.summary, decision
    )
