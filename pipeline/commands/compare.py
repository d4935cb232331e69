"""``smp compare``: before/after of one region - register, link dots, metric deltas, pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.commands import add_settings_options, add_subject_options, subject_from_args
from pipeline.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare a before and an after photo of one region: registration, dot links, metric deltas",
        description=(
            "Assess BEFORE and AFTER (as smp assess does), register AFTER to BEFORE (features, then, for "
            "close-ups, the dot pattern), link their dots and write into DIR: before/ and after/ (each "
            "photo's assessment), comparison.json (every metric before, after and its change; headline "
            "figures: show-through reduction, dots added, density change; registration and linking "
            "quality; warnings), links.csv (one row per linked, new and lost dot), side_by_side.png and "
            "difference.png. When the photos cannot be registered, both assessments and comparison.json are "
            "still written: the figures that need no alignment are compared, dots are not paired, and a "
            "warning says why and how to retake (exit code 0). Exit code 1 when a photo cannot be loaded."
        ),
    )
    parser.add_argument("before", type=Path, metavar="BEFORE", help="the earlier photo (the reference frame)")
    parser.add_argument("after", type=Path, metavar="AFTER", help="the later photo of the same region")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--px-per-mm",
        type=float,
        default=None,
        metavar="X",
        help="scale to use for a photo without a card (a card in the photo wins)",
    )
    add_settings_options(parser, what="assessment", default="assess/default.yaml", example="segment.method=classical")
    parser.add_argument(
        "--register-config",
        type=Path,
        default=None,
        metavar="YAML",
        help="registration and linking settings (default configs/compare/default.yaml)",
    )
    parser.add_argument(
        "--register-set",
        dest="register_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one registration setting, e.g. --register-set link.gate=0.3",
    )
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
    add_subject_options(parser, ("before-", "after-"))
    parser.set_defaults(func=run)


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from data.card import load_card
    from data.flags import load_flag_settings
    from pipeline.one_photo.assess import Assessor
    from pipeline.one_photo.assessment import write_assessment
    from pipeline.one_photo.loading import PhotoError
    from pipeline.one_photo.settings import load_assess_settings
    from pipeline.two_photos.compare import compare_photos, write_comparison
    from pipeline.two_photos.settings import load_register_settings

    if args.px_per_mm is not None and not (np.isfinite(args.px_per_mm) and args.px_per_mm > 0):
        raise UserError(f"--px-per-mm must be a positive number, got {args.px_per_mm}")
    subjects = {side: subject_from_args(args, f"{side}-") for side in ("before", "after")}
    settings = load_assess_settings(args.config, args.overrides)
    reg_settings = load_register_settings(args.register_config, args.register_overrides)
    rules = load_flag_settings(args.flags)
    card = load_card(references=args.card) if args.card else load_card()
    try:
        assessor = Assessor(settings, rules=rules, card=card)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"cannot load a model: {exc}") from None
    for w in assessor.setup_warnings:
        print(f"smp compare: warning: {w}", file=sys.stderr)

    def fail(reason: str) -> int:
        print(f"smp compare: failed: {reason}", file=sys.stderr)
        return 1

    for path in (args.before, args.after):  # before spending seconds on the first photo
        if not path.exists():
            return fail(f"{path}: no such file")
    assessed = []
    for side, path in (("before", args.before), ("after", args.after)):
        try:
            assessed.append(assessor.assess_file(path, px_per_mm=args.px_per_mm))
        except PhotoError as exc:
            return fail(str(exc))
        # each photo's own assessment is kept whatever happens next (the other photo unreadable,
        # the two not lining up)
        write_assessment(assessed[-1], args.out / side, overlay=settings.overlay, subject=subjects[side])
    before, after = assessed
    comparison = compare_photos(before, after, reg_settings)
    out = write_comparison(comparison, args.out)

    h = comparison.headline
    st = h["show_through_reduction"]
    reg, links = comparison.registration, comparison.links
    if reg is None:
        how = "NOT registered (figures that need no alignment only)"
    else:
        how = (
            f"registered ({reg.method}, {reg.n_inliers} feature inliers"
            + (
                f", {links.n_links} dots linked, residual {_fmt(links.residual_mm_median, '.3f', ' mm')}"
                if links
                else ""
            )
            + ")"
        )
    dots = (
        ""
        if h["dots_added"] is None
        else f", in the area both show {_fmt(h['common_dots_before'], 'd')} -> {_fmt(h['common_dots_after'], 'd')} "
        f"dots ({_fmt(h['dots_added'], 'd')} added, {_fmt(h['dots_lost'], 'd')} lost)"
    )
    print(
        f"{args.before} -> {args.after}: {how}; show-through {_fmt(h['show_through_before'], '.1%')} -> "
        f"{_fmt(h['show_through_after'], '.1%')}"
        + ("" if st is None else f" ({abs(st) * 100:.1f} pp {'less' if st >= 0 else 'more'})")
        + dots
        + f", density change {_fmt(h['density_change_per_cm2'], '+.1f', '/cm2')} -> {out}"
    )
    for w in comparison.warnings:
        print(f"smp compare: warning: {w}", file=sys.stderr)
    return 0
