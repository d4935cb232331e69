"""A learned second look at dot candidates: a small convolutional network on the pixels around each.

The measured evidence of a candidate (``models.dot_ranker``: contrast, significance, size, shape)
leaves look-alikes that a dot and a pore, a crease junction or a cut stubble end share: measured
on the benchmark, a gradient-boosted classifier over every measured figure, colour included, kept
75% of the false dots of untreated scalps while keeping 95% of the true dots. The pixels around a
candidate say more (the arms of a crease junction, the shaft of a cut end, the rim of a pore): a
network that sees them is used here, and only to **refuse**: a candidate the physical floors and
the rules admit is dropped when the network's probability is under ``detect.patch_veto``. It never
admits anything, so it cannot turn a speck of skin into a dot.

Input: the canonical-scale L* (16 px/mm) around the candidate's centre, ``2 * PATCH_RADIUS + 1``
pixels square (1.2 mm), as darkness against the median of the patch's border, in units of 10 L*.
Training: ``scripts/train_dot_patch.py`` (synthetic photos with known dots and look-alikes, seeds
apart from the benchmark's). Weights and what they were trained on: one ``.pt`` file
(``models/weights/dot-patch.pt``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PATCH_RADIUS", "PatchRanker", "default_patch_path", "fit_patch_ranker", "normalise_patches"]

#: Half-size of a patch in canonical pixels (16 px/mm): 19 x 19 px, 1.2 mm.
PATCH_RADIUS = 9


def default_patch_path() -> Path:
    return Path(__file__).resolve().parent / "weights" / "dot-patch.pt"


def normalise_patches(patches: np.ndarray) -> np.ndarray:
    """(N, S, S) L* patches -> float32 darkness against each patch's border median, / 10 L*."""
    p = np.asarray(patches, np.float32)
    if len(p) == 0:
        return p.reshape(0, p.shape[1] if p.ndim == 3 else 0, p.shape[2] if p.ndim == 3 else 0)
    border = np.concatenate([p[:, 0, :], p[:, -1, :], p[:, 1:-1, 0], p[:, 1:-1, -1]], axis=1)
    level = np.median(border, axis=1)
    return ((level[:, None, None] - p) / np.float32(10.0)).astype(np.float32)


def _net():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 1),
    )


def _max_pool2(x):
    """``nn.MaxPool2d(2)`` (an odd last row and column dropped) as the maximum of four strided views:
    the same values, and on maps this small several times faster on a CPU than torch's pooling kernel."""
    import torch

    n, m = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    return torch.maximum(
        torch.maximum(x[..., 0:n:2, 0:m:2], x[..., 0:n:2, 1:m:2]),
        torch.maximum(x[..., 1:n:2, 0:m:2], x[..., 1:n:2, 1:m:2]),
    )


def _infer(net, x):
    """The forward pass of :func:`_net` for inference, with the same results: each ReLU after its
    pooling instead of before (a maximum and a ReLU commute exactly; the ReLU then sees a quarter
    of the values) and the pooling by :func:`_max_pool2`. Training uses the network as built."""
    import torch

    conv1, _, _, conv2, _, _, conv3, _, avg, flat, linear = net
    h = torch.relu_(_max_pool2(conv1(x)))
    h = torch.relu_(_max_pool2(conv2(h)))
    h = torch.relu_(conv3(h))
    return linear(flat(avg(h)))


@dataclass(frozen=True)
class PatchRanker:
    """The network and the veto it was chosen with."""

    state: dict  # torch state_dict
    veto: float  # probability under which a candidate is refused
    info: dict = field(default_factory=dict)
    if TYPE_CHECKING:  # set by __post_init__, not a dataclass field at run time
        _net: nn.Sequential = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        net = _net()
        net.load_state_dict(self.state)
        net.eval()
        object.__setattr__(self, "_net", net)

    def probability(self, patches: np.ndarray, batch: int = 4096) -> np.ndarray:
        """(N,) probability that each (N, S, S) normalised patch is a visible pigment deposit.

        Large batches: each of the network's operations is a parallel region of torch's threads, and
        on cores shared with other work every region can wait a scheduler slice for a thread
        (measured on 2 busy cores, 17 000 patches after the OpenCV work of the detector: 0.2-0.9 s in
        batches of 4096, 4-5 s in batches of 512, although 512 is ~1.5x faster on idle cores)."""
        import torch

        x = np.asarray(patches, np.float32)
        out = np.zeros(len(x))
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                t = torch.from_numpy(np.ascontiguousarray(x[i : i + batch, None]))
                out[i : i + batch] = torch.sigmoid(_infer(self._net, t).squeeze(1)).double().numpy()
        return out

    def save(self, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": "smp-dot-patch/1", "state": self.state, "veto": self.veto, "info": self.info}, path)

    @classmethod
    def load(cls, path: Path) -> PatchRanker:
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such dot patch model")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same to the user
            raise ValueError(f"{path}: not a dot patch model ({exc})") from None
        if not isinstance(blob, dict) or blob.get("kind") != "smp-dot-patch/1":
            raise ValueError(f"{path}: not a dot patch model")
        info = dict(blob.get("info", {}))
        info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(state=blob["state"], veto=float(blob["veto"]), info=info)


def fit_patch_ranker(
    patches: np.ndarray, labels: np.ndarray, *, seed: int, epochs: int = 8, veto: float = 0.5, info: dict | None = None
) -> PatchRanker:
    """Train the network on normalised patches (N, S, S) with labels 1 (a visible dot) / 0, classes
    weighted equally, with the 8 flips and quarter turns as augmentation; seeded and reproducible
    on one thread."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _net()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(patches, np.float32)[:, None]))
    y = torch.from_numpy(np.asarray(labels, np.float32))
    pos = float(y.mean()) if len(y) else 0.5
    w = torch.where(y > 0, 0.5 / max(pos, 1e-3), 0.5 / max(1 - pos, 1e-3))
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), 256):
            b = order[i : i + 256]
            xb = torch.rot90(x[b], int(rng.integers(4)), (2, 3))
            if rng.random() < 0.5:
                xb = xb.flip(3)
            loss = (
                nn.functional.binary_cross_entropy_with_logits(net(xb).squeeze(1), y[b], reduction="none") * w[b]
            ).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return PatchRanker(state=state, veto=veto, info=dict(info or {}))
