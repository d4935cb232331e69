"""``smp card``: write the calibration card SMP-CARD-1 for printing."""

from __future__ import annotations

import argparse
from pathlib import Path

from data.card import load_card
from pipeline.card_print import DPI_RANGE, FORMATS, write_card


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``card`` subcommand."""
    parser = subparsers.add_parser(
        "card",
        help="write the calibration card (PDF/SVG/PNG) to print and place in every photo",
        description=(
            "Write the calibration card SMP-CARD-1: an ArUco marker that gives photos a "
            "physical scale and twelve ColorChecker patches that give a colour reference. "
            "PDF and SVG are vector files of the exact physical size; print them at 100 % "
            "(actual size, no 'fit to page') and check the marker measures 10 mm."
        ),
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help=f"file to write; its suffix ({', '.join(FORMATS)}) picks the format",
    )
    parser.add_argument(
        "--dpi",
        type=int,
        default=600,
        metavar="N",
        help=f"resolution of PNG output in dots per inch, {DPI_RANGE[0]}-{DPI_RANGE[1]} (default 600; "
        "ignored for the vector formats)",
    )
    parser.add_argument(
        "--marker-id",
        type=int,
        default=None,
        metavar="ID",
        help="ArUco marker id to print, 0-49 for DICT_4X4_50 (default: the card file's id, 0); "
        "different ids tell cards apart",
    )
    parser.add_argument(
        "--card",
        type=Path,
        default=None,
        metavar="YAML",
        help="card definition (default: configs/card/smp-card-1.yaml)",
    )
    parser.add_argument(
        "--references",
        type=Path,
        default=None,
        metavar="YAML",
        help="patch colours to use instead of the ColorChecker defaults: patch name or index -> "
        "[R, G, B] 8-bit sRGB, or CIELAB under 'lab:' (the same file format as measured references)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the card and report where, and how large it must print."""
    card = load_card(args.card, args.references)
    path = write_card(args.out, card, dpi=args.dpi, marker_id=args.marker_id)
    x0, y0, x1, y1 = card.paper_mm
    marker_id = card.marker.id if args.marker_id is None else args.marker_id
    size = f"{x1 - x0:g} x {y1 - y0:g} mm"
    if path.suffix.lower() == ".png":
        size += f" at {args.dpi} dpi"
    print(
        f"{path}  ({card.name}, {size}, marker {card.marker.dictionary} id {marker_id} "
        f"= {card.marker.size_mm:g} mm; print at 100 %)"
    )
    return 0
