"""``smp evaluate``: score a model on labelled photos."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError

HELP = """\
Score a segmentation + dot model on the photos of a dataset manifest: IoU and Dice per
class (background, scalp, hair), dot precision / recall / F1 with a match radius in mm,
median localisation error in mm, a per-image table (evaluation.csv), summary.json, a
confusion matrix image and overlays. The run is recorded in MLflow (experiment
smp-segmenter-evaluate). --model takes a file or a registry URI such as
models:/smp-segmenter@champion; without it the bundled default model is used.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model on a labelled manifest", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model file or models:/NAME@ALIAS (default: the bundled model)")
    p.add_argument("--data", required=True, type=Path, help="manifest.csv of labelled photos")
    p.add_argument("--split", default=None, help="only rows of this split (train, val, test)")
    p.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder (default ./evaluation)")
    p.add_argument("--match-radius-mm", type=float, default=0.1, help="dot match radius in mm (default 0.1)")
    p.add_argument("--threshold", type=float, default=0.3, help="dot score threshold (default 0.3)")
    p.add_argument("--overlays", type=int, default=4, help="overlay pictures to write (default 4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--no-mlflow", action="store_true", help="do not record the run in MLflow")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from pydantic import ValidationError
    from tqdm import tqdm

    from data.config import ConfigError
    from data.manifest import ManifestError, read_manifest
    from models.bundled import default_model_path
    from models.checkpoint import CheckpointError, load_model
    from models.evaluate import EvalSettings, evaluate, selection_score, write_report
    from models.registry import resolve_model, tracking_uri

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no GPU is visible")
    try:
        settings = EvalSettings(match_radius_mm=args.match_radius_mm, threshold=args.threshold)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    try:
        manifest = read_manifest(args.data, split=args.split)
        path = resolve_model(args.model) if args.model else default_model_path()
        loaded = load_model(path, device=args.device)
    except (ManifestError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    if len(manifest) == 0:
        raise UserError(f"{args.data}: no rows{f' in split {args.split!r}' if args.split else ''}")
    bar = tqdm(total=len(manifest), desc="evaluate", unit="photo", file=sys.stderr)
    ev = evaluate(loaded.model, manifest, settings, device=args.device, keep_samples=args.overlays,
                  progress=lambda i, n: bar.update(1))
    bar.close()
    written = write_report(ev, args.out)
    score = selection_score(ev.summary)
    if not args.no_mlflow:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment("smp-segmenter-evaluate")
        with mlflow.start_run(run_name=f"evaluate {Path(args.data).parent.name}"):
            mlflow.log_params({"model": str(args.model or path), "model_sha256": loaded.sha256,
                               "data": str(args.data), "split": str(args.split),
                               "match_radius_mm": args.match_radius_mm, "threshold": args.threshold})
            mlflow.log_metrics({k: float(v) for k, v in ev.summary.items() if v == v})
            mlflow.log_metric("score", score)
            for p in written:
                mlflow.log_artifact(str(p))
    s = ev.summary
    print(json.dumps({k: s.get(k) for k in ("n_images", "miou_scalp_hair", "iou_scalp", "iou_hair", "hair_boundary_f1",
                                           "dot_precision", "dot_recall", "dot_f1", "dot_loc_error_mm_median",
                                           "seconds_per_image")}, indent=2))
    for image, reason in ev.failures:
        print(f"failed: {reason}")
    print(f"wrote {args.out}")
    return 1 if ev.failures else 0
