"""A learned ranking of dot candidates from their measured evidence.

The dot stage (``pipeline.one_photo.detect``) measures every candidate: its contrast against
the local bare skin, its significance over the skin's texture at its scale, its
size, shape, how it continues along its axis and the lightness of the skin under
it. Fixed thresholds on each of these
separately leave a lot on the table: a faint dot in a dense field and a pore of
the same contrast on untreated skin differ in their combination (size, shape,
texture), not in any single figure.

The ranker is a small multilayer perceptron over those measurements (no pixels):
it gives each candidate a probability of being a visible pigment deposit. It
never sees a candidate that fails the physical floors (contrast, significance,
size, elongation, on scalp), so it cannot turn a speck of skin texture into a
dot; it only decides among the candidates physics admits.

Training: ``scripts/train_dot_ranker.py`` (synthetic photos with known dots,
seeds apart from the benchmark's). Inference is NumPy only (a few matrix
products per photo). The weights and what they were trained on live in one
``.npz`` file (``models/weights/dot-ranker.npz`` ships with the package).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FEATURES", "MONOTONE", "DotRanker", "candidate_features", "default_ranker_path", "fit_ranker"]

#: The measured evidence the ranker reads, in this order (see :func:`candidate_features`).
FEATURES: tuple[str, ...] = (
    "log_significance",  # log of the filter response over the skin's texture at the dot's scale
    "contrast_dl",  # centre darkness against the local bare skin (L*)
    "log_noise_dl",  # log of the skin's texture at the dot's scale
    "diameter_mm",  # half-maximum diameter
    "curvature_ratio",  # 1 a round blob, 0 a straight ridge
    "continuation",  # darkness beyond the ends along the long axis / centre darkness
    "skin_lstar",  # L* of the bare skin under the dot
)


def default_ranker_path() -> Path:
    """The ranker that ships with smp-assess."""
    return Path(__file__).resolve().parent / "weights" / "dot-ranker.npz"


def candidate_features(
    *,
    significance: np.ndarray,
    contrast_dl: np.ndarray,
    noise_dl: np.ndarray,
    diameter_mm: np.ndarray,
    curvature_ratio: np.ndarray,
    continuation: np.ndarray,
    skin_lstar: np.ndarray,
) -> np.ndarray:
    """(N, len(FEATURES)) float64 feature matrix of the candidates (arrays parallel).

    Each candidate is judged on its own measured evidence: nothing about its neighbours (a lone
    dot on bare skin is a dot; a ranker told how many dots lie around learns that a first
    session's sparse dots are unlikely), and not the segmentation network's score (the ranker
    must not change its mind when the network is retrained, or run without one)."""
    cols = [
        np.log(np.maximum(np.asarray(significance, np.float64), 1e-3)),
        np.asarray(contrast_dl, np.float64),
        np.log(np.maximum(np.asarray(noise_dl, np.float64), 1e-3)),
        np.asarray(diameter_mm, np.float64),
        np.asarray(curvature_ratio, np.float64),
        np.clip(np.asarray(continuation, np.float64), -1.0, 3.0),
        np.asarray(skin_lstar, np.float64),
    ]
    x = np.column_stack(cols).reshape(-1, len(FEATURES))
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True, eq=False)
class DotRanker:
    """A trained ranker: standardisation, the layers of the perceptron, the decision threshold."""

    mean: np.ndarray
    scale: np.ndarray
    lo: np.ndarray  # the training range of each feature (0.1 and 99.9 percentiles):
    hi: np.ndarray  # inputs are clipped to it, never extrapolated
    weights: tuple[np.ndarray, ...]  # per layer (in, out)
    biases: tuple[np.ndarray, ...]
    threshold: float  # probability at which a candidate is reported
    info: dict = field(default_factory=dict)  # what it was trained on and how well it did

    def __post_init__(self) -> None:
        if any(len(a) != len(FEATURES) for a in (self.mean, self.scale, self.lo, self.hi)):
            raise ValueError(f"ranker expects {len(FEATURES)} features, has {len(self.mean)}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"ranker threshold must be in (0, 1), got {self.threshold}")

    def probability(self, x: np.ndarray) -> np.ndarray:
        """(N,) probability that each candidate (rows of :func:`candidate_features`) is a dot."""
        h = (np.clip(np.asarray(x, np.float64), self.lo, self.hi) - self.mean) / self.scale
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                np.maximum(h, 0.0, out=h)
        z = np.clip(h[:, 0], -40.0, 40.0)
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str | Path) -> None:
        # Any: savez_compressed's **kwds share its signature with allow_pickle: bool
        arrays: dict[str, Any] = {
            "mean": self.mean,
            "scale": self.scale,
            "lo": self.lo,
            "hi": self.hi,
            "threshold": np.array(self.threshold),
            "features": np.array(FEATURES),
            "info": np.array(json.dumps(self.info, sort_keys=True)),
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> DotRanker:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no dot ranker there (train one with scripts/train_dot_ranker.py)")
        try:
            with np.load(p, allow_pickle=False) as z:
                feats = tuple(str(f) for f in z["features"])
                n = sum(1 for k in z.files if k.startswith("w"))
                arrays = {k: z[k] for k in ("mean", "scale", "lo", "hi", "threshold", "info")}
                weights = tuple(z[f"w{i}"] for i in range(n))
                biases = tuple(z[f"b{i}"] for i in range(n))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ValueError(f"{p}: not a dot ranker file ({type(exc).__name__})") from None
        if feats != FEATURES:
            raise ValueError(f"{p}: trained on features {feats}, this version reads {FEATURES}")
        return cls(
            mean=arrays["mean"],
            scale=arrays["scale"],
            lo=arrays["lo"],
            hi=arrays["hi"],
            weights=weights,
            biases=biases,
            threshold=float(arrays["threshold"]),
            info=json.loads(str(arrays["info"])),
        )


#: More of these never makes a candidate less likely to be a dot (the perceptron is built so).
MONOTONE: tuple[str, ...] = ("log_significance", "contrast_dl")


def fit_ranker(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    hidden: tuple[int, ...] = (32, 16),
    epochs: int = 30,
    batch: int = 512,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    threshold: float = 0.5,
    info: dict | None = None,
) -> DotRanker:
    """Train the perceptron on candidates ``x`` (rows of :func:`candidate_features`) labelled ``y``
    (1: a visible true dot, 0: not a dot), with binary cross-entropy and AdamW.
    Reproducible: every random draw comes from ``rng``.

    The probability never falls as a candidate's significance or contrast grows (``MONOTONE``):
    the first layer's weights on those inputs and every later layer's weights are kept
    non-negative after each step (with ReLU units, the output is then non-decreasing in them).
    Without this a perceptron trained on synthetic photos learned that very significant
    candidates are less likely dots (the untreated scalps' naevi and crease junctions are)."""
    import torch

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) != len(y) or len(x) < 10 or len(np.unique(y)) < 2:
        raise ValueError("fit_ranker needs at least 10 candidates of both classes")
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
    xs = torch.from_numpy(((x - mean) / scale).astype(np.float32))
    ys = torch.from_numpy(y.astype(np.float32))
    torch.manual_seed(int(rng.integers(2**31)))
    sizes = (x.shape[1], *hidden, 1)
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    mono = [FEATURES.index(f) for f in MONOTONE]
    with torch.no_grad():  # start inside the constraint
        lin0 = [m for m in net if isinstance(m, torch.nn.Linear)]
        lin0[0].weight[:, mono] = lin0[0].weight[:, mono].abs()
        for m in lin0[1:]:
            m.weight.abs_()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(xs)))
        for s in range(0, len(xs), batch):
            idx = order[s : s + batch]
            opt.zero_grad()
            loss = loss_fn(net(xs[idx])[:, 0], ys[idx])
            loss.backward()
            opt.step()
            with torch.no_grad():
                lin = [m for m in net if isinstance(m, torch.nn.Linear)]
                lin[0].weight[:, mono] = lin[0].weight[:, mono].clamp(min=0.0)  # (a list index copies)
                for m in lin[1:]:
                    m.weight.clamp_(min=0.0)
        sched.step()
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    return DotRanker(
        mean=mean,
        scale=scale,
        lo=np.percentile(x, 0.1, axis=0),
        hi=np.percentile(x, 99.9, axis=0),
        weights=tuple(m.weight.detach().numpy().T.astype(np.float64).copy() for m in lin),
        biases=tuple(m.bias.detach().numpy().astype(np.float64).copy() for m in lin),
        threshold=threshold,
        info=dict(info or {}),
    )
