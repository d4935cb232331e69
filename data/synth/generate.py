"""Generate synthetic data sets: independent photos or client series, with a manifest.

Each image (or client) draws from its own ``numpy.random.Generator`` spawned
from the run's seed (``SeedSequence.spawn``), so image ``i`` is the same bytes
whatever ``n`` is and in whatever order images are made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.card import CardSpec
from data.flags import FlagSettings
from data.manifest import pick_split
from data.synth.camera import draw_camera
from data.synth.scene import Scene, write_scene
from data.synth.settings import SynthSettings

MANIFEST_COLUMNS = ["image", "mask", "dots", "truth", "px_per_mm", "view", "split", "source", "client", "visit"]
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class Made:
    """One written item: its folder and the manifest row."""

    folder: Path
    row: dict


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of a run seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))


def split_of(seed: int, index: int) -> str:
    return pick_split(
        np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, 7))).random(), SPLITS
    )


def render_single(rng: np.random.Generator, cfg: SynthSettings, card: CardSpec, rules: FlagSettings) -> Scene:
    if cfg.view == "closeup":
        from data.synth.closeup import single_closeup as make
    else:
        from data.synth.global_view import single_global as make
    return make(rng, cfg, card, rules, draw_camera)


def _row(folder: Path, root: Path, truth: dict, split: str, client: str = "", visit: str = "") -> dict:
    rel = folder.relative_to(root)
    return {
        "image": str(rel / truth["photo"]),
        "mask": str(rel / "mask.png"),
        "dots": str(rel / "dots.csv"),
        "truth": str(rel / "truth.json"),
        "px_per_mm": truth["px_per_mm"],
        "view": truth["view"],
        "split": split,
        "source": "synthetic",
        "client": client,
        "visit": visit,
    }


def generate_images(
    out: Path,
    n: int,
    cfg: SynthSettings,
    card: CardSpec,
    rules: FlagSettings,
    seed: int,
) -> Iterator[Made]:
    """Independent photos ``img_00000`` ... into ``out`` (yields as each is written)."""
    for i in range(n):
        rng = item_rng(seed, i)
        scene = render_single(rng, cfg, card, rules)
        folder = out / f"img_{i:05d}"
        quality = int(scene.params["camera"]["jpeg_quality"])
        truth = write_scene(
            scene, folder, fmt=cfg.image.format, jpeg_quality=quality, seed=seed, rules=rules, extra={"index": i}
        )
        yield Made(folder, _row(folder, out, truth, split_of(seed, i)))


def generate_series(
    out: Path,
    n_clients: int,
    cfg: SynthSettings,
    card: CardSpec,
    rules: FlagSettings,
    seed: int,
    on_visit: Callable[[], None] | None = None,
) -> Iterator[Made]:
    """Client series ``client_000/visit_00_baseline`` ... plus ``series.json`` per client."""
    if cfg.view != "closeup":
        raise ValueError("series are close-ups of one region; use a closeup config")
    from data.synth.series import render_series

    for c in range(n_clients):
        rng = item_rng(seed, c)
        cdir = out / f"client_{c:03d}"
        scenes, series_truth = render_series(rng, cfg, card, rules)
        split = split_of(seed, c)
        visits = []
        for visit, scene in scenes:
            folder = cdir / f"visit_{visit.index:02d}_{visit.label}"
            quality = int(scene.params["camera"]["jpeg_quality"])
            truth = write_scene(
                scene,
                folder,
                fmt=cfg.image.format,
                jpeg_quality=quality,
                seed=seed,
                rules=rules,
                extra={
                    "client": cdir.name,
                    "visit": {
                        "index": visit.index,
                        "kind": visit.kind,
                        "session": visit.session,
                        "date": visit.date,
                        "day": visit.day,
                    },
                },
            )
            visits.append(
                {
                    "index": visit.index,
                    "kind": visit.kind,
                    "session": visit.session,
                    "date": visit.date,
                    "day": visit.day,
                    "folder": folder.name,
                    "dot_ids": scene.dots["dot_id"].tolist(),
                    "metrics": truth["metrics"],
                }
            )
            if on_visit:
                on_visit()
            yield Made(folder, _row(folder, out, truth, split, cdir.name, visit.label))
        from data.synth.scene import _jsonable

        doc = {
            "schema": "smp-synth-series/1",
            "client": cdir.name,
            "region": "crown",
            "seed": seed,
            "visits": visits,
            "truth": series_truth,
        }
        (cdir / "series.json").write_text(json.dumps(_jsonable(doc), indent=1))


def write_manifest(out: Path, rows: list[dict]) -> Path:
    path = out / "manifest.csv"
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(path, index=False)
    return path
