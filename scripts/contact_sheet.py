"""Contact sheet of synthetic photos for judging realism (docs/contact_sheet.png).

Rows: close-ups across Fitzpatrick types I-VI; close-ups across hair states;
one client's visits over time; global views. Each tile is a centre crop at
native resolution (close-ups) or the whole photo (global), labelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.cli import main as smp  # noqa: E402

TILE = (360, 270)


def tile(photo: Path, label: str, crop: bool) -> np.ndarray:
    img = cv2.imread(str(photo))
    if crop:
        h, w = img.shape[:2]
        ch, cw = TILE[1] * 2, TILE[0] * 2
        y0, x0 = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
        img = img[y0 : y0 + ch, x0 : x0 + cw]
    img = cv2.resize(img, TILE, interpolation=cv2.INTER_AREA)
    cv2.rectangle(img, (0, 0), (TILE[0], 20), (0, 0, 0), -1)
    cv2.putText(img, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def make(out: Path, work: Path) -> Path:
    rows = []
    base = ["--set", "image.width=1200", "--set", "image.height=900", "--set", "card.probability=0.3"]
    tiles = []
    for f in range(1, 7):
        d = work / f"fitz{f}"
        smp(["synth", "--out", str(d), "--n", "1", "--seed", str(f), *base, "--set", f"skin.fitzpatrick=[{f}, {f}]"])
        tiles.append(tile(d / "img_00000" / "photo.jpg", f"close-up, Fitzpatrick {f}", True))
    rows.append(tiles)
    tiles = []
    for i, (pat, colour, longf) in enumerate(
        [
            ("none", "black", 0.0),
            ("diffuse", "brown", 0.1),
            ("receding", "blond", 0.0),
            ("crown", "grey", 0.3),
            ("patches", "black", 0.05),
            ("diffuse", "black", 0.4),
        ]
    ):
        d = work / f"hair{i}"
        smp(
            [
                "synth",
                "--out",
                str(d),
                "--n",
                "1",
                "--seed",
                str(40 + i),
                *base,
                "--set",
                f"hair.patterns=[{pat}]",
                "--set",
                f"hair.colours=[{colour}]",
                "--set",
                f"hair.long_fraction=[{longf}, {longf}]",
            ]
        )
        tiles.append(tile(d / "img_00000" / "photo.jpg", f"{pat}, {colour} hair, long {longf:.0%}", True))
    rows.append(tiles)
    d = work / "series"
    smp(
        [
            "synth",
            "--out",
            str(d),
            "--n",
            "1",
            "--series",
            "--seed",
            "3",
            "--set",
            "image.width=1024",
            "--set",
            "image.height=768",
            "--set",
            "series.followups=[4, 4]",
        ]
    )
    series = json.loads((d / "client_000" / "series.json").read_text())
    tiles = [
        tile(d / "client_000" / v["folder"] / "photo.jpg", f"{v['date']} {v['kind']}", True)
        for v in series["visits"][:6]
    ]
    rows.append(tiles)
    try:
        d = work / "global"
        if smp(["synth", "--out", str(d), "--n", "6", "--view", "global", "--seed", "5"]) == 0:
            rows.append(
                [
                    tile(p, f"global {json.loads((p.parent / 'truth.json').read_text())['px_per_mm']:.1f} px/mm", False)
                    for p in sorted(d.glob("img_*/photo.*"))[:6]
                ]
            )
    except ModuleNotFoundError:
        pass
    width = max(len(r) for r in rows)
    blank = np.zeros((TILE[1], TILE[0], 3), np.uint8)
    sheet = np.vstack([np.hstack(r + [blank] * (width - len(r))) for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "contact_sheet.png")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(make(args.out, Path(tmp)))
