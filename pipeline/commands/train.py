"""``smp train``: train the segmentation + dot network, tracked in MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from data.config import load_settings
from pipeline.errors import UserError

HELP = """\
Train the network that separates background / scalp / hair and finds SMP dot centres.
Settings come from a YAML under configs/train/ (--config) with --set overrides; the
resolved config, per-epoch metrics, the dataset manifests, validation pictures and the
model go to MLflow (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI or
tracking.tracking_uri says otherwise), and the model is registered as smp-segmenter;
the 'champion' alias moves only when the new model beats the current champion on a fixed
gate suite by a stated margin (tracking.gate; a store's first champion is the bundled
model), and the decision is printed and logged. --init starts from a model's weights,
e.g. --init models:/smp-segmenter@champion to fine-tune the champion on reviewer
labels exported by the web app (docs/review.md). Checkpoints go to out_dir (last.pt, best.pt); --resume continues a
stopped run. Runs under torchrun for data-parallel training (DDP).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the segmentation + dot model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="training YAML (default configs/train/default.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set optim.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--init",
        metavar="MODEL",
        help="start from these weights: a model file, 'bundled', or a "
        "registry URI such as models:/smp-segmenter@champion (same as --set init_weights=MODEL)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in out_dir from last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data.manifest import ManifestError
    from models.checkpoint import CheckpointError
    from models.train import TrainSettings, train

    overrides = list(args.overrides) + ([f"init_weights={args.init}"] if args.init else [])
    cfg = load_settings(TrainSettings, args.config, overrides, default="train/default.yaml")
    try:
        res = train(cfg, resume=args.resume, progress=not args.quiet)
    except (ManifestError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    if res.run_id is None and not res.history:
        return 0
    s = res.summary
    print(
        f"best model: {res.best_model} (score {res.best_score:.4f}, {res.epochs_run} epochs"
        f"{', stopped early' if res.stopped_early else ''})"
    )
    print(
        f"validation: mIoU scalp/hair {s.get('miou_scalp_hair', float('nan')):.4f}, "
        f"dot F1 {s.get('dot_f1', float('nan')):.4f}"
    )
    if res.run_id:
        print(
            f"mlflow run {res.run_id}; registered version {res.registered_version or '-'}"
            f"{' (champion)' if res.champion else ''}"
        )
    if res.champion_decision:
        print(f"champion gate: {res.champion_decision}")
    return 0
