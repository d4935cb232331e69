"""``smp import``: labels made by people (COCO, CVAT, Label Studio, PNG + CSV) -> a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import UserError

HELP = """\
Turn an annotation tool's export into smp-assess's dataset format (per photo: photo,
mask.png with 0 background / 1 scalp / 2 hair / 255 unlabelled, dots.csv) plus a
manifest.csv that `smp train` and `smp evaluate` read. Formats:
  coco         COCO JSON: region polygons or RLE (categories scalp, hair, background),
               dots as keypoints/points (category dot or smp_dot)
  cvat         CVAT for images 1.1 XML: dot points, region polygons
  labelstudio  Label Studio JSON: keypointlabels (dots), polygonlabels (regions)
  png-csv      a folder of photos with class-mask PNGs (--masks) and/or dot CSVs (--dots)
Re-importing into the same --out replaces the rows of the same photos. Each photo that
cannot be imported is reported with its reason; the others are kept.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="import labels from annotation tools",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("format", choices=["coco", "cvat", "labelstudio", "png-csv"])
    p.add_argument("export", nargs="?", type=Path, help="the export file (not for png-csv)")
    p.add_argument("--images", required=True, type=Path, help="folder of the photos")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created)")
    p.add_argument("--masks", type=Path, help="png-csv: folder of class masks named like the photos")
    p.add_argument("--dots", type=Path, help="png-csv: folder of dot CSVs (x, y) named like the photos")
    p.add_argument("--view", choices=["closeup", "global"], default="closeup")
    p.add_argument("--px-per-mm", type=float, help="scale of every photo, if known")
    p.add_argument("--split", choices=["train", "val", "test"], help="split of every photo (default: by hash)")
    p.add_argument("--client", default="", help="client id recorded in the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data import importers as im

    if args.px_per_mm is not None and args.px_per_mm <= 0:
        raise UserError(f"--px-per-mm must be positive (got {args.px_per_mm})")
    info = im.DatasetInfo(view=args.view, px_per_mm=args.px_per_mm, split=args.split, client=args.client)
    try:
        if args.format == "png-csv":
            if args.masks is None and args.dots is None:
                raise UserError("png-csv needs --masks and/or --dots")
            report = im.import_png_csv(args.images, args.out, masks_dir=args.masks, dots_dir=args.dots, info=info)
        else:
            if args.export is None:
                raise UserError(f"{args.format}: give the export file")
            fn = {"coco": im.import_coco, "cvat": im.import_cvat_xml, "labelstudio": im.import_label_studio}
            report = fn[args.format](args.export, args.images, args.out, info=info)
        manifest = im.write_manifest(report.rows, args.out, append=True)
    except im.LabelImportError as exc:
        raise UserError(str(exc)) from None
    for f in report.failures:
        print(f"failed: {f.image}: {f.reason}")
    for s in report.skipped:
        print(f"skipped (no labels): {s}")
    print(f"imported {len(report.rows)} photo(s) into {manifest}")
    return 0 if report.ok else 1
