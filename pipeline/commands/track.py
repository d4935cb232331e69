"""``smp track``: follow a client's dots over the visits in the records; fading and touch-up forecast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.commands import DB_HELP, add_settings_options
from pipeline.errors import UserError

if TYPE_CHECKING:  # numpy is imported when a command runs, not at every CLI start
    pass


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "track",
        help="follow a client's dots across visits: fading, blue and spread trends, touch-up forecast",
        description=(
            "For each region of CLIENT in the records (or --region), the close-up of every visit is "
            "registered to the last session's close-up and its dots are linked into tracks; the "
            "fading model gives the half-life with its interval, blue-index and spread trends, the dots "
            "fading at least twice as fast as their region, and the date the region's median contrast "
            "crosses the touch-up threshold, with an interval. Photos not yet assessed are assessed and "
            "stored first. Writes DIR/<region>/: track.json, tracks.csv (one row per dot per visit), "
            "dots_fading.csv (one row per dot) and plots (contrast, blue_index, density, show_through)."
        ),
    )
    parser.add_argument("client", metavar="CLIENT", help="the clinic's id of the client")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--region", default=None, metavar="NAME", help="only this region (default: all)")
    parser.add_argument("--clinic", default=None, metavar="C", help="the client's clinic (default: 'default')")
    parser.add_argument("--db", default=None, metavar="URL", help=DB_HELP)
    parser.add_argument("--store", type=Path, default=None, metavar="DIR", help="photo store folder")
    add_settings_options(parser, what="fading", default="fading/default.yaml", example="touchup_contrast_dl=10")
    parser.add_argument(
        "--assess-config",
        type=Path,
        default=None,
        metavar="YAML",
        help="assessment settings for photos not yet assessed",
    )
    parser.add_argument(
        "--assess-set",
        dest="assess_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one assessment setting for photos not yet assessed (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.set_defaults(func=run)


def _found(trend) -> str:
    """'found', 'found in 46 of 310 dots' (a minority) or 'none'."""
    if not trend.detected:
        return "none"
    return f"found in {trend.n_turning} of {trend.n_dots} dots" if trend.found_by == "minority" else "found"


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pipeline.commands.visit import _open
    from pipeline.over_time.fading import load_fading_settings
    from pipeline.over_time.history import track_region, write_history
    from pipeline.records import DEFAULT_CLINIC
    from pipeline.records.read import client_regions
    from pipeline.records.tracking import region_visits, store_track_links

    fading = load_fading_settings(args.config, args.overrides)
    clinic = args.clinic or DEFAULT_CLINIC
    records, store = _open(args)
    with records.session(read_only=True) as session:
        regions = client_regions(session, args.client, clinic)
    if not regions:
        raise UserError(f"no client {args.client!r} with photos in clinic {clinic!r}")
    if args.region is not None:
        if args.region not in regions:
            raise UserError(f"client {args.client!r} has no region {args.region!r} (has: {', '.join(regions)})")
        regions = [args.region]

    _assess_missing(args, records, store, clinic, regions)
    failures = 0
    for region in regions:
        with records.session(read_only=True) as session:
            visits = region_visits(session, args.client, clinic=clinic, region=region)
        if len(visits.chosen) < 2:
            print(
                f"smp track: {args.client}/{region}: {len(visits.chosen)} assessed close-up visit(s); "
                "tracking needs at least 2",
                file=sys.stderr,
            )
            failures += 1
            continue
        inputs = visits.inputs(store)
        history = track_region(args.client, region, inputs, fading=fading, rng=np.random.default_rng(args.seed))
        with records.transaction() as session:
            store_track_links(session, visits, history)
        out = write_history(history, args.out / region)
        _print_summary(history, out)
    return 1 if failures else 0


def _assess_missing(args: argparse.Namespace, records: Any, store: Any, clinic: str, regions: list[str]) -> None:
    """Assess and store every photo of the regions that has no assessment yet."""
    from pipeline.one_photo.loading import PhotoError
    from pipeline.records import store_assessment
    from pipeline.records.read import client_photos

    with records.session(read_only=True) as session:
        todo = [
            p
            for r in regions
            for p in client_photos(session, args.client, clinic=clinic, region=r)
            if p.assessment is None
        ]
    if not todo:
        return
    from pipeline.one_photo.assess import Assessor
    from pipeline.one_photo.settings import load_assess_settings

    assessor = Assessor(load_assess_settings(args.assess_config, args.assess_overrides))
    for p in todo:
        try:
            a = assessor.assess_file(store.path(p.stored_path))
        except (PhotoError, ValueError) as exc:
            print(f"smp track: warning: {p.original_name}: not assessed: {exc}", file=sys.stderr)
            continue
        with records.transaction() as session:
            store_assessment(session, p.photo_sha256, a.to_json(), a.dots, clinic=clinic)


def _print_summary(h: Any, out: Path) -> None:
    f = h.fading
    fc = f.forecast
    hl = f.half_life_days

    def num(v: float | None, fmt: str = ".0f") -> str:
        return "-" if v is None else format(v, fmt)

    linked = [lk for lk in h.tracking.links if lk.reference is not None]
    print(f"{h.client}/{h.region}: {len(h.visits)} visits, {h.tracking.n_tracks} dot tracks -> {out}")
    for lk in linked:
        state = (
            f"{lk.n_links} links ({num(lk.linked_fraction and 100 * lk.linked_fraction)}% of the reference's "
            f"visible dots), {lk.new} new, {lk.lost} lost, residual {num(lk.residual_mm_median, '.3f')} mm"
            if lk.ok
            else f"not registered: {lk.error}"
        )
        print(f"  {lk.visit} -> {lk.reference}: {state}")
    print(
        f"  half-life {num(hl.value)} days (90% {num(hl.low)}-{num(hl.high)}); "
        f"blue trend {num(f.blue_trend.per_year.value, '+.2f')}/year ({_found(f.blue_trend)}); "
        f"spread {num(f.spread.per_year.value, '+.3f')} mm/year ({_found(f.spread)}); "
        f"{int(f.dots['fast_fading'].sum()) if len(f.dots) else 0} dots fading >= 2x faster"
    )
    if fc.status == "due":
        print(
            f"  touch-up due {fc.date} (90% {fc.date_low or 'before'} to {fc.date_high or 'beyond the horizon'}): "
            f"median contrast reaches {fc.threshold_dl:g} dL*"
        )
    else:
        print(f"  touch-up forecast: {fc.status.replace('_', ' ')}")
    for w in h.warnings:
        print(f"  warning: {w}")
