"""``smp report``: a self-contained HTML report of an assessment, a before/after or a client's timeline."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of an assess, compare or track output folder",
        description=(
            "Write one HTML file a clinic can show, print (A4) or send: pictures embedded, no external "
            "files, no scripts, works offline. FOLDER decides the kind: an 'smp assess' photo folder "
            "(assessment.json) gives the assessment report (overlay, figures with plain captions, crops of "
            "flagged dots, methods and limits); an 'smp compare' folder (comparison.json) the before/after "
            "report (side by side, what changed, alignment quality); an 'smp track' region folder (track.json) "
            "the timeline (touch-up forecast, fading, plots, visits). An 'smp track' output folder with a "
            "single region may be given for that region."
        ),
    )
    parser.add_argument("folder", type=Path, metavar="FOLDER", help="an assess, compare or track output folder")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.html", help="the HTML file to write")
    parser.add_argument(
        "--title",
        default=None,
        metavar="T",
        help="title of the report (default: the client, region and visit the folder recorded "
        "(smp assess/compare --client, --region, --date, --kind), else the photo's name)",
    )
    parser.add_argument(
        "--link",
        default=None,
        metavar="URL",
        help="an address the report links back to, e.g. the client's page in the web app "
        "(shown on screen, not printed)",
    )
    parser.add_argument("--link-label", default=None, metavar="TEXT", help="the text of that link")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.report import ReportError, render_report

    out: Path = args.out
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the HTML file to write, e.g. {out / 'report.html'}")
    try:
        kind, html, folder = render_report(args.folder, title=args.title, link=args.link, link_label=args.link_label)
    except ReportError as exc:
        raise UserError(str(exc)) from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"{folder}: {kind} report -> {out} ({len(html.encode('utf-8')) / 1e6:.1f} MB)")
    return 0
