"""``smp evaluate``: score a model on labelled photos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.errors import UserError

HELP = """\
Score a segmentation + dot model on the photos of a dataset manifest: IoU and Dice per
class (background, scalp, hair), dot precision / recall / F1 with a match radius in mm,
median localisation error in mm, a per-image table (evaluation.csv), summary.json, a
confusion matrix image and overlays. The run is recorded in MLflow (experiment
smp-segmenter-evaluate). --model takes a file or a registry URI such as
models:/smp-segmenter@champion; without it the bundled default model is used.

--model and --data may each be given several times: every model is scored on every
dataset (e.g. the champion and a fine-tuned version, on the clinic's held-out reviewer
labels beside a synthetic suite), each pair in OUT/<model>/<data>/, side by side in
OUT/comparison.csv and as child runs of one MLflow run, so the MLflow UI compares them.
"""

SUMMARY_KEYS = (
    "n_images",
    "miou_scalp_hair",
    "iou_scalp",
    "iou_hair",
    "hair_boundary_f1",
    "dot_precision",
    "dot_recall",
    "dot_f1",
    "dot_loc_error_mm_median",
    "seconds_per_image",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model on a labelled manifest",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="model file or models:/NAME@ALIAS (default: the bundled model); repeatable",
    )
    p.add_argument(
        "--data", required=True, type=Path, action="append", help="manifest.csv of labelled photos; repeatable"
    )
    p.add_argument(
        "--split",
        action="append",
        default=[],
        choices=("train", "val", "test"),
        help="only rows of this split; once for every --data, or once per --data in their order",
    )
    p.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder (default ./evaluation)")
    p.add_argument("--match-radius-mm", type=float, default=0.1, help="dot match radius in mm (default 0.1)")
    p.add_argument("--threshold", type=float, default=0.3, help="dot score threshold (default 0.3)")
    p.add_argument("--overlays", type=int, default=4, help="overlay pictures to write (default 4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--no-mlflow", action="store_true", help="do not record the run in MLflow")
    p.set_defaults(func=run)


def _label(text: str, taken: set[str]) -> str:
    """A short folder-safe name for a model reference or a manifest, unique among ``taken``."""
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.") or "x"
    name, i = base[-60:], 2
    while name in taken:
        name, i = f"{base[-56:]}-{i}", i + 1
    taken.add(name)
    return name


def run(args: argparse.Namespace) -> int:
    import torch
    from pydantic import ValidationError

    from data.config import ConfigError
    from data.manifest import ManifestError, read_manifest
    from models.checkpoint import CheckpointError
    from models.evaluate import EvalSettings

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no GPU is visible")
    try:
        settings = EvalSettings(match_radius_mm=args.match_radius_mm, threshold=args.threshold)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    refs = list(args.model) or [None]
    if len(args.split) > 1 and len(args.split) != len(args.data):
        raise UserError(
            f"--split given {len(args.split)} times for {len(args.data)} --data: give it once "
            "(every dataset) or once per --data"
        )
    splits = args.split if len(args.split) > 1 else [args.split[0] if args.split else None] * len(args.data)
    try:
        manifests = [read_manifest(d, split=sp) for d, sp in zip(args.data, splits)]
        models = [_load(ref, args.device) for ref in refs]
    except (ManifestError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    for d, m, sp in zip(args.data, manifests, splits):
        if len(m) == 0:
            raise UserError(f"{d}: no rows{f' in split {sp!r}' if sp else ''}")
    if len(models) == 1 and len(manifests) == 1:  # one pair: the report directly in OUT (as ever)
        return _one(args, refs[0], models[0], args.data[0], splits[0], manifests[0], settings, args.out, parent=False)[
            0
        ]
    return _many(args, refs, models, splits, manifests, settings)


def _load(ref: str | None, device: str):
    from models.bundled import default_model_path
    from models.checkpoint import load_model
    from models.registry import resolve_model

    return load_model(resolve_model(ref) if ref else default_model_path(), device=device)


def _one(
    args, ref, loaded, data: Path, split: str | None, manifest, settings, out: Path, *, parent: bool
) -> tuple[int, dict, float]:
    """Score one model on one manifest into ``out``; (exit code, summary, selection score)."""
    from tqdm import tqdm

    from models.evaluate import evaluate, selection_score, write_report
    from models.registry import use_experiment

    bar = tqdm(total=len(manifest), desc="evaluate", unit="photo", file=sys.stderr)
    ev = evaluate(
        loaded.model,
        manifest,
        settings,
        device=args.device,
        keep_samples=args.overlays,
        progress=lambda i, n: bar.update(1),
    )
    bar.close()
    written = write_report(ev, out)
    score = selection_score(ev.summary)
    if not args.no_mlflow:
        import mlflow

        if not parent:
            use_experiment("smp-segmenter-evaluate")
        with mlflow.start_run(run_name=f"evaluate {Path(data).parent.name}", nested=parent):
            mlflow.log_params(
                {
                    "model": str(ref or loaded.path),
                    "model_sha256": loaded.sha256,
                    "data": str(data),
                    "split": str(split),
                    "match_radius_mm": args.match_radius_mm,
                    "threshold": args.threshold,
                }
            )
            mlflow.log_metrics({k: float(v) for k, v in ev.summary.items() if v == v})
            mlflow.log_metric("score", score)
            for p in written:
                mlflow.log_artifact(str(p))
    if not parent:
        s = ev.summary
        print(json.dumps({k: s.get(k) for k in SUMMARY_KEYS}, indent=2))
    for _image, reason in ev.failures:
        print(f"failed: {reason}")
    if not parent:
        print(f"wrote {out}")
    return 1 if ev.failures else 0, ev.summary, score


def _many(args, refs, models, splits, manifests, settings) -> int:
    import pandas as pd

    from models.registry import use_experiment

    model_names: set[str] = set()
    data_names: set[str] = set()
    m_labels = [_label(str(r or "bundled").replace("models:/", ""), model_names) for r in refs]
    d_labels = [
        _label((Path(d).parent.name or Path(d).stem) + (f"-{sp}" if sp else ""), data_names)
        for d, sp in zip(args.data, splits)
    ]
    rows, rc = [], 0
    ctx = None
    if not args.no_mlflow:
        import mlflow

        use_experiment("smp-segmenter-evaluate")
        ctx = mlflow.start_run(run_name=f"compare {len(refs)} model(s) on {len(manifests)} dataset(s)")
    try:
        for ref, loaded, ml in zip(refs, models, m_labels):
            for data, split, manifest, dl in zip(args.data, splits, manifests, d_labels):
                one_rc, summary, score = _one(
                    args, ref, loaded, data, split, manifest, settings, args.out / ml / dl, parent=ctx is not None
                )
                rc = rc or one_rc
                rows.append(
                    {
                        "model": str(ref or loaded.path),
                        "model_sha256": loaded.sha256[:12],
                        "data": str(data),
                        "split": split or "all",
                        "score": score,
                        **{k: summary.get(k) for k in SUMMARY_KEYS},
                    }
                )
        table = pd.DataFrame(rows)
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "comparison.csv", index=False, float_format="%.4f")
        if ctx is not None:
            import mlflow

            mlflow.log_artifact(str(args.out / "comparison.csv"))
            mlflow.log_params(
                {
                    "models": json.dumps([str(r or "bundled") for r in refs])[:500],
                    "data": json.dumps([str(d) for d in args.data])[:500],
                }
            )
    finally:
        if ctx is not None:
            import mlflow

            mlflow.end_run()
    shown = table[["model", "data", "split", "n_images", "miou_scalp_hair", "dot_f1", "score"]]
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {args.out / 'comparison.csv'} and one folder per model and dataset")
    return rc
