"""``smp assess``: score SMP photos, one output folder per photo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Literal

from pipeline.commands import add_settings_options, add_subject_options, subject_from_args
from pipeline.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "assess",
        help="assess SMP photos: scale, colour, dots, flags, metrics, overlay",
        description=(
            "Assess each PHOTO and write DIR/<photo stem>/ with assessment.json (calibration, "
            "quality, model, metrics, warnings, timings), dots.csv (one row per dot with its "
            "CIELAB colour, skin colour, contrast, blue index and flags), mask.png (0 background, "
            "1 scalp, 2 hair) and overlay.png. The card in the photo gives the scale and colour "
            "correction; without it, --px-per-mm gives the scale, else mm figures are null. "
            "A bad photo is reported on one line and the others are still assessed; the exit code "
            "is 0 only when every photo was assessed."
        ),
    )
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="JPEG, PNG, TIFF or WebP files")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--px-per-mm",
        type=float,
        default=None,
        metavar="X",
        help="scale to use when a photo has no card (a card in the photo wins)",
    )
    parser.add_argument(
        "--roi",
        type=Path,
        default=None,
        metavar="FILE",
        help='JSON region to measure: {"units": "px" | "card_mm", "polygon": [[x, y], ...]}',
    )
    add_settings_options(parser, what="assessment", default="assess/default.yaml", example="segment.method=classical")
    parser.add_argument(
        "--flags", type=Path, default=None, metavar="YAML", help="dot flag thresholds (default configs/flags.yaml)"
    )
    parser.add_argument(
        "--card",
        type=Path,
        default=None,
        metavar="YAML",
        help="measured reference colours of your printed cards (see docs/card.md)",
    )
    add_subject_options(parser)
    parser.set_defaults(func=run)


def _read_roi(path: Path) -> tuple[list[list[float]], Literal["px", "card_mm"]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such ROI file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a JSON ROI file ({exc})") from None
    units = doc.get("units", "px") if isinstance(doc, dict) else None
    poly = doc.get("polygon") if isinstance(doc, dict) else None
    if units not in ("px", "card_mm") or not isinstance(poly, list) or len(poly) < 3:
        raise UserError(f'{path}: expected {{"units": "px"|"card_mm", "polygon": [[x, y], ... (>= 3)]}}')
    try:
        return [[float(v) for v in p] for p in poly], units
    except (TypeError, ValueError):
        raise UserError(f"{path}: polygon vertices must be [x, y] numbers") from None


def output_names(photos: list[Path]) -> list[str]:
    """One output folder name per photo: its stem; ``<parent folder>_<stem>`` when stems repeat
    (visit_01/photo.jpg, visit_02/photo.jpg); then numbered if still not unique."""
    stems = [p.stem for p in photos]
    names = [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 and p.parent.name else p.stem for p in photos]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from data.card import load_card
    from data.flags import load_flag_settings
    from pipeline.one_photo.assess import Assessor
    from pipeline.one_photo.assessment import write_assessment
    from pipeline.one_photo.loading import PhotoError
    from pipeline.one_photo.settings import load_assess_settings

    if args.px_per_mm is not None and not (np.isfinite(args.px_per_mm) and args.px_per_mm > 0):
        raise UserError(f"--px-per-mm must be a positive number, got {args.px_per_mm}")
    subject = subject_from_args(args)
    if len(args.photos) > 1 and (subject.date or subject.kind):
        raise UserError(
            "--date and --kind name one visit: give them with a single photo (--client and --region may name several)"
        )
    settings = load_assess_settings(args.config, args.overrides)
    rules = load_flag_settings(args.flags)
    card = load_card(references=args.card) if args.card else load_card()
    roi = _read_roi(args.roi) if args.roi else None
    try:
        assessor = Assessor(settings, rules=rules, card=card)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"cannot load a model: {exc}") from None
    for w in assessor.setup_warnings:
        print(f"smp assess: warning: {w}", file=sys.stderr)

    failures: list[str] = []
    names = output_names(args.photos)
    bar = tqdm(args.photos, desc="assess", unit="photo", file=sys.stderr, disable=len(args.photos) < 2)
    for path, name in zip(bar, names):
        try:
            a = assessor.assess_file(
                path,
                px_per_mm=args.px_per_mm,
                roi_polygon=None if roi is None else np.array(roi[0]),
                roi_units=roi[1] if roi else "px",
            )
            out = write_assessment(a, args.out / name, overlay=settings.overlay, subject=subject)
        except PhotoError as exc:
            failures.append(str(exc))
        except ValueError as exc:  # e.g. an ROI in card mm on a photo without a card
            failures.append(f"{path}: {exc}")
        else:
            m = a.metrics
            dens = "-" if m.dot_density_per_cm2 is None else f"{m.dot_density_per_cm2:.1f}/cm2"
            dots = "dots not measured" if m.dot_count is None else f"{m.dot_count} dots ({dens})"
            bar.write(
                f"{path}: {dots}, show-through "
                f"{'-' if m.show_through is None else f'{m.show_through:.1%}'}, "
                f"{len(a.warnings)} warning(s) -> {out}"
            )
    for line in failures:
        print(f"smp assess: failed: {line}", file=sys.stderr)
    if failures:
        print(f"smp assess: {len(failures)} of {len(args.photos)} photo(s) failed", file=sys.stderr)
        return 1
    return 0
