"""``smp synth``: synthetic scalp photos with exact ground truth."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.synth.generate import generate_images, generate_series, write_manifest
from data.synth.settings import SynthSettings
from pipeline.errors import UserError

HELP = """\
Make synthetic SMP photos whose truth is known exactly: photo, mask.png (0 background,
1 scalp, 2 hair, 255 hair the photo does not show), dots.csv (every dot with its true colour, size and flags), \
truth.json
(scale, every photo metric computed from the truth, scene parameters, seed), and
manifest.csv with train/val/test splits. --series makes client series (baseline,
sessions, follow-ups, touch-ups) with series.json and stable dot ids across visits.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate synthetic photos with ground truth",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--n", type=int, default=8, help="number of photos, or of clients with --series (default 8)")
    p.add_argument(
        "--view",
        choices=["closeup", "global"],
        default="closeup",
        help="closeup (8-40 px/mm) or global (whole head, 1-6 px/mm)",
    )
    p.add_argument("--series", action="store_true", help="make client series over time (close-ups)")
    p.add_argument("--config", type=Path, help="synth YAML (default configs/synth/<view>.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set image.width=2048 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the run; same seed, same bytes (default 0)")
    p.add_argument("--card", type=Path, help="card definition YAML (default configs/card/smp-card-1.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"--n must be at least 1 (got {args.n})")
    if args.seed < 0:
        raise UserError(f"--seed must be non-negative (got {args.seed})")
    cfg = load_settings(SynthSettings, args.config, args.overrides, default=f"synth/{args.view}.yaml")
    if args.config is not None and cfg.view != args.view:
        raise UserError(f"{args.config} is a {cfg.view} config but --view is {args.view}")
    card = load_card(args.card)
    rules = load_flag_settings()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    if args.series:
        it = generate_series(out, args.n, cfg, card, rules, args.seed)
        unit = "visit"
    else:
        it = generate_images(out, args.n, cfg, card, rules, args.seed)
        unit = "photo"
    for made in tqdm(it, total=None if args.series else args.n, unit=unit, desc="synth", disable=None):
        rows.append(made.row)
    manifest = write_manifest(out, rows)
    secs = time.perf_counter() - t0
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    print(f"wrote {len(rows)} {cfg.view} photos ({json.dumps(splits)}) to {out} in {secs:.1f} s")
    print(f"manifest: {manifest}")
    return 0
