"""Peer spot detectors for the dot benchmark: OpenCV, scikit-image and trackpy.

The benchmark compares our dot detector with general-purpose spot detectors "side by
side in the same run on the same dot suites". This module holds the peers and the
protocol to tune and score them; it is benchmark code, not product code.

Peers (each ``detect_<name>(rgb, px_per_mm, params) -> (N, 2) float64 xy``):

``simpleblob``
    ``cv2.SimpleBlobDetector``: binarises the grey image at a ladder of thresholds,
    keeps dark connected components (``blobColor=0``) seen at ``min_repeatability``
    consecutive levels and filters them by area (and optionally circularity).
``blob_log``
    ``skimage.feature.blob_log``: scale-space maxima of the scale-normalised
    Laplacian of Gaussian of the darkness image, above an absolute ``threshold``.
``trackpy``
    ``trackpy.locate``: bandpass, grey dilation maxima above a ``percentile`` of the
    image, centroid refinement, and a ``minmass`` cut on the integrated brightness.

All peers see the same input: the darkness image ``255 - grey`` (grey from
``cv2.COLOR_RGB2GRAY``), because pigment dots are dark on skin. SimpleBlobDetector
gets the grey image itself with ``blobColor=0`` (the same thing). No peer gets a scalp
mask, hair mask or colour model: they are run the way a competent user would run them
on the photo.

Scale: every size parameter is given in millimetres on the scalp and converted with
the photo's ``px_per_mm``, so one parameter set serves photos from 8 to 40 px/mm.
Dots are 0.10-0.35 mm across (spread ones up to ~0.9 mm); hair strands are lines.
Coordinates follow OpenCV: the centre of pixel (i, j) is at x=j, y=i.

Protocol (``main``): for each suite, the first ``TUNE_IMAGES`` photos in manifest order
(img_00000..img_00003) tune each peer, i.e. every point of ``PARAM_GRIDS[name]`` runs
on them and the best pooled F1 wins; the other photos (img_00004..) are the test set,
scored once with the winning parameters. The manifests' ``split`` column is not used:
it holds one ``test`` photo per suite, too few to score on, and tuning and test photos
never overlap this way. Truth is every row of ``dots.csv`` (hair-covered, faded and
merged dots included: the pipeline's F1 counts them the same way); a prediction matches
a true dot within ``MATCH_RADIUS_MM`` (0.1 mm) by ``models.scoring.match_dots``; F1,
precision and recall are pooled over the photos (``models.scoring.dot_scores``).
Speed is megapixels per second of the ``detect_*`` call alone (``time.perf_counter``
around it; loading and scoring excluded), on whatever threads the caller allows: the
project benchmark sets ``cv2.setNumThreads`` and the BLAS/OMP threads, not this module.

Cost per 1600x1200 photo on one core (cv2.setNumThreads(1), OMP_NUM_THREADS=1),
measured on the closeup suites over the grids below:
simpleblob 0.07-6 s: OpenCV merges the blobs of successive thresholds pairwise, so the
time grows with the square of the blob count (dense photos, small minimum area, no or a
loose circularity filter are slow); blob_log 0.6-1 s at most grid points, up to 4.5 s
at the grid's lowest threshold and radius, and 5-50 s with min_radius_mm=0.05 or a lower
threshold (>100 000 candidates: its overlap pruning loops over candidate pairs in
Python), hence ``MAX_S_PER_MP``; trackpy
0.2-0.6 s with ``engine="python"`` (numba is not a dependency; ``engine="auto"`` would
fall back to python without it). The whole ``main`` run (2 suites; per suite 71 grid
points over the 3 peers on 4 tuning photos, then 3 x 4 test photos) takes about 8
minutes on one core.

    .venv/bin/python scripts/peers.py --data bench-out/data \
        --suites closeup_easy closeup_hard --out bench-out/peers.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.scoring import dot_scores, match_dots, match_radius_px  # noqa: E402

MATCH_RADIUS_MM = 0.1
"""A prediction matches a true dot closer than this (the pipeline's ``match_radius_mm``)."""

TUNE_IMAGES = 4
"""The first this-many photos of each suite tune the peers; the rest are the test set."""

PEERS = ("simpleblob", "blob_log", "trackpy")

Image = tuple  # (rgb, px_per_mm, true_xy[, visible, diameter_mm])
"""One benchmark photo: (rgb HxWx3 uint8, px_per_mm, true dot centres (N, 2) xy px), optionally
with the truth's per-dot `visible` flags and diameters in mm."""


# --------------------------------------------------------------------------- input


def darkness(rgb: np.ndarray) -> np.ndarray:
    """``255 - grey``: dark pigment dots become bright spots (uint8, HxW)."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        grey = rgb.astype(np.uint8, copy=False)
    else:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return 255 - grey


def _area_px(diameter_mm: float, px_per_mm: float) -> float:
    """Area in pixels of a disc ``diameter_mm`` across."""
    return math.pi * (0.5 * diameter_mm * px_per_mm) ** 2


def _with_defaults(name: str, params: dict | None) -> dict:
    unknown = set(params or {}) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(f"{name}: unknown parameters {sorted(unknown)}; known: {sorted(DEFAULTS[name])}")
    return {**DEFAULTS[name], **(params or {})}


DEFAULTS: dict[str, dict] = {
    "simpleblob": {
        "min_threshold": 10,  # grey levels of the ladder of binarisations ...
        "max_threshold": 230,
        "threshold_step": 10,  # ... and its step
        "min_repeatability": 2,  # levels a blob must persist through
        "min_diameter_mm": 0.08,  # area filter, as equivalent disc diameters
        "max_diameter_mm": 0.9,
        "min_circularity": None,  # None: circularity filter off
        "min_dist_mm": 0.05,  # minDistBetweenBlobs
    },
    "blob_log": {
        "min_radius_mm": 0.05,  # dot radii searched; sigma = r / sqrt(2) ...
        "max_radius_mm": 0.45,
        "num_sigma": 5,  # ... at this many scales
        "min_sigma_px": 0.5,  # floor: a LoG narrower than half a pixel is noise
        "threshold": 0.05,  # absolute, on the scale-normalised LoG of darkness/255
        "overlap": 0.5,
    },
    "trackpy": {
        "diameter_mm": 0.35,  # feature mask, rounded up to an odd integer >= 3 px
        "min_mass_mm2": 0.3,  # minmass in grey levels x mm^2 (minmass = this * px_per_mm^2)
        "separation_mm": None,  # None: trackpy's default (diameter + 1 px)
        "percentile": 64.0,  # trackpy default: maxima must be above this percentile
        "noise_size": 1.0,  # px; trackpy default
    },
}


# --------------------------------------------------------------------------- peers


def detect_simpleblob(rgb: np.ndarray, px_per_mm: float, params: dict | None = None) -> np.ndarray:
    """Dark blobs by ``cv2.SimpleBlobDetector`` on the grey image; (N, 2) xy px."""
    p = _with_defaults("simpleblob", params)
    grey = 255 - darkness(rgb)
    sbp = cv2.SimpleBlobDetector_Params()
    sbp.minThreshold = float(p["min_threshold"])
    sbp.maxThreshold = float(p["max_threshold"])
    sbp.thresholdStep = float(p["threshold_step"])
    sbp.minRepeatability = int(p["min_repeatability"])
    sbp.filterByColor = True
    sbp.blobColor = 0
    sbp.filterByArea = True
    # OpenCV measures area by contour moments: a blob needs > 0 contour area (>= 2x2 px)
    sbp.minArea = max(1.0, _area_px(p["min_diameter_mm"], px_per_mm))
    sbp.maxArea = max(sbp.minArea + 1.0, _area_px(p["max_diameter_mm"], px_per_mm))
    sbp.filterByCircularity = p["min_circularity"] is not None
    if sbp.filterByCircularity:
        sbp.minCircularity = float(p["min_circularity"])
    sbp.filterByInertia = False
    sbp.filterByConvexity = False
    sbp.minDistBetweenBlobs = float(p["min_dist_mm"] * px_per_mm)
    kps = cv2.SimpleBlobDetector_create(sbp).detect(grey)
    return np.array([k.pt for k in kps], np.float64).reshape(-1, 2)


def _log_sigmas(p: dict, px_per_mm: float) -> tuple[float, float]:
    lo = max(p["min_sigma_px"], p["min_radius_mm"] * px_per_mm / math.sqrt(2))
    hi = max(lo, p["max_radius_mm"] * px_per_mm / math.sqrt(2))
    return lo, hi


def detect_blob_log(rgb: np.ndarray, px_per_mm: float, params: dict | None = None) -> np.ndarray:
    """Bright spots of the darkness image by ``skimage.feature.blob_log``; (N, 2) xy px."""
    from skimage.feature import blob_log

    p = _with_defaults("blob_log", params)
    lo, hi = _log_sigmas(p, px_per_mm)
    img = darkness(rgb).astype(np.float32) / 255.0
    blobs = blob_log(
        img,
        min_sigma=lo,
        max_sigma=hi,
        num_sigma=int(p["num_sigma"]),
        threshold=float(p["threshold"]),
        overlap=float(p["overlap"]),
        exclude_border=False,
    )
    return np.ascontiguousarray(blobs[:, [1, 0]], np.float64).reshape(-1, 2)


def _trackpy_diameter(diameter_mm: float, px_per_mm: float) -> int:
    d = max(3, int(math.ceil(diameter_mm * px_per_mm)))
    return d if d % 2 else d + 1


def detect_trackpy(rgb: np.ndarray, px_per_mm: float, params: dict | None = None) -> np.ndarray:
    """Bright spots of the darkness image by ``trackpy.locate`` (python engine); (N, 2) xy px."""
    import trackpy as tp

    tp.quiet()
    p = _with_defaults("trackpy", params)
    d = _trackpy_diameter(p["diameter_mm"], px_per_mm)
    sep = None if p["separation_mm"] is None else max(1.0, p["separation_mm"] * px_per_mm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No maxima survived mass- and size-based filtering"
        df = tp.locate(
            darkness(rgb),
            d,
            minmass=float(p["min_mass_mm2"]) * px_per_mm**2,
            separation=sep,
            percentile=float(p["percentile"]),
            noise_size=float(p["noise_size"]),
            invert=False,
            characterize=False,
            engine="python",
        )
    if len(df) == 0:
        return np.zeros((0, 2), np.float64)
    return df[["x", "y"]].to_numpy(np.float64)


DETECTORS: dict[str, Callable[[np.ndarray, float, dict], np.ndarray]] = {
    "simpleblob": detect_simpleblob,
    "blob_log": detect_blob_log,
    "trackpy": detect_trackpy,
}


def _grid(**axes) -> list[dict]:
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(axes[k] for k in keys))]


PARAM_GRIDS: dict[str, list[dict]] = {
    # persistence over the threshold ladder x circularity filter x smallest blob: 27 points.
    # (No circularity filter lost to 0.6 at every other setting on the tuning photos of
    # both suites, so the filter is always on; minRepeatability=4 never won.)
    "simpleblob": _grid(
        min_repeatability=[1, 2, 3],
        min_circularity=[0.5, 0.7, 0.85],
        min_diameter_mm=[0.06, 0.12, 0.2],
    ),
    # smallest LoG radius x threshold (high to low: see SLOWER_WHEN_LOWER): 20 points;
    # max_radius_mm stays 0.45 (0.3 instead changed the tuning F1 by <= 0.005).
    # At min_radius_mm=0.05 (sigma 0.5-0.85 px at 10-24 px/mm) the LoG answers to JPEG
    # noise and hair edges: F1 < 0.2 on the tuning photos of closeup_easy at 5-20 s per
    # photo, so the grid starts at 0.08.
    "blob_log": _grid(
        min_radius_mm=[0.08, 0.15, 0.22, 0.3],
        threshold=[0.1, 0.07, 0.05, 0.03, 0.02],
    ),
    # minmass x feature size x percentile: 24 points (min_mass_mm2 0.25 is already
    # below every real dot's mass: 0.1 finds the same features)
    "trackpy": _grid(
        min_mass_mm2=[0.25, 0.5, 1.0, 2.0],
        diameter_mm=[0.3, 0.45, 0.6],
        percentile=[50.0, 80.0],
    ),
}

SLOWER_WHEN_LOWER: dict[str, str] = {"blob_log": "threshold"}
"""A parameter whose lower values only add candidates (and time): once a grid point is
abandoned as too slow, ``tune`` skips the points that differ from it only by a lower
value of this parameter without running them."""

MAX_S_PER_MP = 10.0
"""``tune`` abandons a grid point once its detection time exceeds this many seconds per
megapixel (20 s on a 1600x1200 photo). Such points are blob_log at a low threshold with
small sigmas: >100 000 candidates on a photo of a few thousand dots, i.e. a precision
of a few per cent, never a contender."""


# --------------------------------------------------------------------------- protocol


def _score(name: str, params: dict | None, images: Sequence[Image], max_s_per_mp: float | None = None) -> dict | None:
    """``evaluate``, or None as soon as the detection time passes ``max_s_per_mp``."""
    detect = DETECTORS[name]
    matches, seconds, megapixels = [], 0.0, 0.0
    for item in images:
        rgb, ppm, true_xy = item[:3]
        t0 = time.perf_counter()
        pred = detect(rgb, ppm, params)
        seconds += time.perf_counter() - t0
        megapixels += rgb.shape[0] * rgb.shape[1] / 1e6
        if max_s_per_mp is not None and seconds > max_s_per_mp * megapixels:
            return None
        # optional 4th and 5th items: the truth's `visible` flags and diameters (mm), for the
        # project's measuring stick (invisible dots neither hits nor misses, radius max(0.1 mm, 0.15 d))
        visible = item[3] if len(item) > 3 else None
        radius = match_radius_px(item[4], ppm, radius_mm=MATCH_RADIUS_MM) if len(item) > 4 else MATCH_RADIUS_MM * ppm
        matches.append((match_dots(pred, true_xy, radius, visible=visible), ppm))
    s = dot_scores(matches)
    return {
        "f1": s.f1,
        "precision": s.precision,
        "recall": s.recall,
        "tp": s.tp,
        "fp": s.fp,
        "fn": s.fn,
        "n_images": len(images),
        "megapixels": megapixels,
        "seconds": seconds,
        "megapixels_per_s": megapixels / seconds if seconds > 0 else float("nan"),
    }


def evaluate(name: str, params: dict | None, images: Sequence[Image]) -> dict:
    """Run peer ``name`` with ``params`` on ``images``: pooled scores and speed.

    Returns ``f1, precision, recall, tp, fp, fn`` pooled over the photos (every true
    dot counts; match radius ``MATCH_RADIUS_MM``), ``n_images``, ``megapixels``,
    ``seconds`` (the summed ``detect_*`` time only, ``time.perf_counter``) and
    ``megapixels_per_s``.
    """
    return _score(name, params, images)


def _dominated(point: dict, slow: dict, key: str | None) -> bool:
    """``point`` equals the too-slow ``slow`` but for a lower (or equal) ``key``."""
    if key is None or key not in point or key not in slow:
        return False
    same = all(point.get(k) == v for k, v in slow.items() if k != key) and set(point) == set(slow)
    return same and point[key] <= slow[key]


def tune(
    name: str,
    images: Sequence[Image],
    grid: Sequence[dict] | None = None,
    log: Callable[[dict, dict | None], None] | None = None,
    max_s_per_mp: float | None = MAX_S_PER_MP,
) -> tuple[dict, float]:
    """The point of ``grid`` (default ``PARAM_GRIDS[name]``) with the best pooled F1 on ``images``.

    Pass the TUNING photos only (``split_tune_test``). Ties go to the earlier grid point;
    a NaN F1 never wins. A point slower than ``max_s_per_mp`` is abandoned (None: no
    limit), and so are the points it dominates (``SLOWER_WHEN_LOWER``). ``log(params,
    result)`` is called for every point, with ``result`` None for an abandoned one.
    Returns ``(params, f1)``; params are merged with ``DEFAULTS[name]``, so complete.
    """
    grid = PARAM_GRIDS[name] if grid is None else grid
    if not grid:
        raise ValueError(f"{name}: empty parameter grid")
    best, best_f1, slow = None, -1.0, []
    for point in grid:
        if any(_dominated(point, s, SLOWER_WHEN_LOWER.get(name)) for s in slow):
            res = None
        else:
            res = _score(name, point, images, max_s_per_mp)
            if res is None:
                slow.append(point)
        if log:
            log(point, res)
        if res is not None and np.isfinite(res["f1"]) and res["f1"] > best_f1:
            best, best_f1 = point, res["f1"]
    if best is None:
        raise RuntimeError(f"{name}: no grid point finished within {max_s_per_mp} s/MP with a finite F1")
    return _with_defaults(name, best), best_f1


# --------------------------------------------------------------------------- data + CLI


def load_suite(folder: Path) -> list[tuple[str, Image]]:
    """The photos of one suite folder in manifest order: ``(image path, (rgb, px_per_mm, true_xy))``.

    px/mm comes from the manifest (the same value as ``truth.json``); truth is every row
    of ``dots.csv``.
    """
    folder = Path(folder)
    out = []
    for row in pd.read_csv(folder / "manifest.csv").itertuples(index=False):
        bgr = cv2.imread(str(folder / row.image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(folder / row.image)
        dots = pd.read_csv(folder / row.dots, usecols=["x", "y"])
        out.append(
            (
                str(row.image),
                (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), float(row.px_per_mm), dots[["x", "y"]].to_numpy(np.float64)),
            )
        )
    return out


def split_tune_test(items: list, n_tune: int = TUNE_IMAGES) -> tuple[list, list]:
    """First ``n_tune`` photos tune, the rest test (never overlapping)."""
    if len(items) <= n_tune:
        raise ValueError(f"need more than {n_tune} photos to tune on {n_tune} and test on the rest, got {len(items)}")
    return items[:n_tune], items[n_tune:]


def run(
    data: Path, suites: Sequence[str], peers: Sequence[str] = PEERS, n_tune: int = TUNE_IMAGES, verbose: bool = False
) -> dict:
    """Tune every peer per suite on the tuning photos and score it on the test photos."""
    t_start = time.perf_counter()
    result: dict = {"match_radius_mm": MATCH_RADIUS_MM, "n_tune": n_tune, "suites": {}}
    for suite in suites:
        items = load_suite(Path(data) / suite)
        tune_items, test_items = split_tune_test(items, n_tune)
        tune_imgs = [im for _, im in tune_items]
        test_imgs = [im for _, im in test_items]
        entry = {"tune_images": [n for n, _ in tune_items], "test_images": [n for n, _ in test_items], "peers": {}}
        for name in peers:
            t0 = time.perf_counter()
            trials = []

            def log(point, res, _trials=trials, _name=name, _suite=suite):
                if res is None:
                    _trials.append({"params": point, "f1": None, "abandoned": "too slow"})
                else:
                    _trials.append({"params": point, **{k: res[k] for k in ("f1", "precision", "recall", "seconds")}})
                if verbose:
                    what = "abandoned (too slow)" if res is None else f"F1={res['f1']:.3f} ({res['seconds']:.1f} s)"
                    print(f"  {_suite} {_name} {point} tune {what}", flush=True)

            params, tune_f1 = tune(name, tune_imgs, log=log)
            test = evaluate(name, params, test_imgs)
            entry["peers"][name] = {
                "params": params,
                "tune_f1": tune_f1,
                "test": test,
                "grid": trials,
                "wall_s": time.perf_counter() - t0,
            }
            print(
                f"{suite:14s} {name:10s} tune F1={tune_f1:.3f} test F1={test['f1']:.3f} "
                f"({test['megapixels_per_s']:.2f} MP/s; {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        result["suites"][suite] = entry
    result["wall_s"] = time.perf_counter() - t_start
    return result


def format_table(result: dict) -> str:
    """A markdown table of the test scores: suite, peer, F1, precision, recall, MP/s, params."""
    lines = ["| suite | peer | F1 | precision | recall | MP/s | tuned parameters |", "|---|---|---|---|---|---|---|"]
    for suite, entry in result["suites"].items():
        for name, r in entry["peers"].items():
            t = r["test"]
            tuned = {k: v for k, v in r["params"].items() if v != DEFAULTS[name][k] or k in _tuned_keys(name)}
            ps = ", ".join(f"{k}={v}" for k, v in tuned.items())
            lines.append(
                f"| {suite} | {name} | {t['f1']:.3f} | {t['precision']:.3f} | {t['recall']:.3f} "
                f"| {t['megapixels_per_s']:.2f} | {ps} |"
            )
    return "\n".join(lines)


def _tuned_keys(name: str) -> set[str]:
    return {k for point in PARAM_GRIDS[name] for k in point}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "bench-out" / "data", help="folder of suite folders")
    ap.add_argument("--suites", nargs="+", default=["closeup_easy", "closeup_hard"])
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    ap.add_argument("--n-tune", type=int, default=TUNE_IMAGES, help="first N photos of a suite tune; the rest test")
    ap.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every grid point")
    args = ap.parse_args(argv)
    logging.getLogger("trackpy").setLevel(logging.WARNING)
    result = run(args.data, args.suites, args.peers, args.n_tune, verbose=args.verbose)
    print(format_table(result))
    print(f"total {result['wall_s']:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=float))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
