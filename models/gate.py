"""The champion gate: which registered model a clinic's ``models:/smp-segmenter@champion`` means.

A model trained on a few reviewer labels can score anything on its own validation split
(a tiny run once scored 0.03 and became champion because nothing stood in its way). So a
new version takes the ``champion`` alias only when it beats the current champion, both
measured on one **fixed gate suite**, by a stated **margin**:

* the gate suite is a deterministic set of synthetic close-ups (``GateSettings``: how
  many, their size, the generator seed), rendered once into ``cache_dir/<suite id>/``
  and read back on every later gate; its id is a hash of the settings that decide its
  pixels, so a changed suite is never compared with scores from another;
* a model's gate score is :func:`models.evaluate.selection_score` on that suite (mean of
  scalp/hair mIoU and dot F1), stored on its registry version with the suite id; a
  champion scored on another suite is measured again;
* :func:`decide` is the rule, a pure function, and its sentence is logged on the training
  run and on the new version (``gate_decision``).

The first time a tracking store is used (no ``smp-segmenter`` champion yet), the bundled
model is registered as the first version, with its gate evaluation, and made champion
(:func:`models.registry.ensure_champion`): a fresh clone's ``models:/smp-segmenter@champion``
is the bundled model, and a first training run must beat it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from data.config import Settings

__all__ = ["GateSettings", "GateDecision", "GateScore", "decide", "gate_suite", "generator_code", "score_on_gate"]


class GateSettings(Settings):
    """The fixed suite every candidate and champion is scored on, and the margin to beat."""

    n_photos: int = Field(12, ge=2, le=500)
    """Synthetic close-ups in the suite."""
    seed: int = Field(160, ge=0)
    width: int = Field(640, ge=128, le=4096)
    height: int = Field(480, ge=128, le=4096)
    margin: float = Field(0.01, ge=0, le=1)
    """A candidate must score more than the champion's gate score plus this (selection-score units)."""
    cache_dir: Path = Field(default_factory=lambda: Path(os.environ.get("SMP_GATE_DIR", "runs/gate")))
    """Where the suite is rendered once ($SMP_GATE_DIR, else runs/gate in the working directory)."""

    def suite_id(self) -> str:
        """A short hash of what decides the suite's pixels: these settings and the generator itself (its
        code, the close-up config, the card and the flag rules), so a changed generator is a new suite and
        no score measured on the old pixels is compared with one on the new. Not the margin or the folder."""
        from data.config import config_dir

        h = hashlib.sha256(
            json.dumps(
                {"n": self.n_photos, "seed": self.seed, "size": [self.width, self.height]}, sort_keys=True
            ).encode()
        )
        data = Path(__file__).resolve().parent.parent / "data"
        configs = config_dir()
        for path in generator_code():
            h.update(path.relative_to(data).as_posix().encode() + path.read_bytes())
        for path in (configs / "synth" / "closeup.yaml", configs / "card" / "smp-card-1.yaml", configs / "flags.yaml"):
            h.update(path.name.encode() + path.read_bytes())
        return "gate-" + h.hexdigest()[:12]


def generator_code() -> list[Path]:
    """The source files that decide the generator's pixels: its package with every sub-package, and
    the data modules it draws with."""
    data = Path(__file__).resolve().parent.parent / "data"
    return [
        *sorted((data / "synth").rglob("*.py")),
        *(data / f"{m}.py" for m in ("card", "colour", "flags", "geometry", "metrics")),
    ]


@dataclass(frozen=True)
class GateScore:
    score: float
    summary: dict[str, float]
    suite: str


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one gate: whether ``candidate`` takes the champion alias, and why."""

    promoted: bool
    candidate_version: str
    candidate_score: float
    champion_version: str | None
    champion_score: float | None
    margin: float
    suite: str

    @property
    def sentence(self) -> str:
        cand = f"version {self.candidate_version} scored {_fmt(self.candidate_score)} on {self.suite}"
        if self.champion_version is None:
            return f"{cand}; there was no champion: it is champion"
        need = (
            f"{_fmt((self.champion_score or 0.0) + self.margin)} (champion version {self.champion_version}'s "
            f"{_fmt(self.champion_score)} + margin {self.margin:g})"
        )
        if self.promoted:
            return f"{cand}, above {need}: it is champion"
        return f"{cand}, not above {need}: version {self.champion_version} stays champion"

    def as_tags(self) -> dict[str, str]:
        return {
            "gate_decision": self.sentence,
            "gate_promoted": str(self.promoted),
            "gate_suite": self.suite,
            "gate_margin": f"{self.margin:g}",
        }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def decide(
    candidate_version: str, candidate_score: float, champion: tuple[str, float] | None, *, margin: float, suite: str
) -> GateDecision:
    """The gate's rule: promoted when there is no champion, or when the candidate's score is finite and
    beats the champion's by more than ``margin``. A champion whose score is unknown (NaN) is beaten by
    any finite score; a candidate without a finite score never is champion over an existing one."""
    if champion is None:
        return GateDecision(True, candidate_version, candidate_score, None, None, margin, suite)
    version, score = champion
    finite = math.isfinite(candidate_score)
    promoted = finite and (not math.isfinite(score) or candidate_score > score + margin)
    return GateDecision(promoted, candidate_version, candidate_score, version, score, margin, suite)


def gate_suite(settings: GateSettings) -> Path:
    """The suite's manifest, rendered into ``cache_dir/<suite id>/`` the first time (atomically: a
    half-written suite is never read)."""
    folder = Path(settings.cache_dir) / settings.suite_id()
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    from data.card import load_card
    from data.config import load_settings
    from data.flags import load_flag_settings
    from data.synth.generate import generate_images, write_manifest
    from data.synth.settings import SynthSettings

    cfg = load_settings(
        SynthSettings,
        None,
        [f"image.width={settings.width}", f"image.height={settings.height}"],
        default="synth/closeup.yaml",
    )
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    rows = [
        dict(made.row, split="val")
        for made in generate_images(tmp, settings.n_photos, cfg, load_card(None), load_flag_settings(), settings.seed)
    ]
    write_manifest(tmp, rows)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished the same suite first: theirs is the same pixels
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def score_on_gate(checkpoint: Path, settings: GateSettings) -> GateScore:
    """A model file's selection score on the gate suite (CPU)."""
    from data.manifest import read_manifest
    from models.checkpoint import load_model
    from models.evaluate import EvalSettings, evaluate, selection_score

    manifest = read_manifest(gate_suite(settings))
    loaded = load_model(checkpoint)
    ev = evaluate(loaded.model, manifest, EvalSettings())
    summary = {k: float(v) for k, v in ev.summary.items() if isinstance(v, (int, float))}
    return GateScore(selection_score(ev.summary), summary, settings.suite_id())
