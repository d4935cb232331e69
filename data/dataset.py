"""Torch dataset of labelled SMP photos: crops for training, tiles or whole photos for evaluation.

Item contract (every mode returns the same keys; shapes are fixed in ``train``
and ``tiles`` mode, so the default collate works; ``full`` mode returns the
whole photo, so use ``batch_size=1`` there):

================ ============ ==================================================================
key              dtype        meaning
================ ============ ==================================================================
image            float32      3xHxW sRGB in [0, 1], not normalised (the model normalises)
mask             int64        HxW classes 0 background, 1 scalp, 2 hair; 255 ignore (padding,
                              warped-in borders, unlabelled pixels of human labels)
points           float32      ``max_points`` x 2 dot centres (x, y) in item pixels, OpenCV
                              convention (pixel centres at integers); rows past ``n_points``
                              are NaN. A dot belongs to the item when it lies in the item's pixel
                              area ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``
n_points         int64        number of valid rows of ``points``
visible          bool         ``max_points``: whether each row of ``points`` is a visible dot (the
                              ``visible`` column of dots.csv; True for every dot when the column
                              is absent); False on padding rows. Invisible dots (under hair, below
                              the contrast floor) are no positives: the loss ignores their
                              neighbourhood
n_points_total   int64        dots inside the item before the ``max_points`` cut; when it is
                              larger than ``n_points`` the kept dots are the ``max_points``
                              nearest to the item centre
has_points       bool         whether the photo has dot labels at all (``dots`` column set);
                              when False, ``n_points == 0`` means "unknown", not "no dots"
px_per_mm        float32      scale of the item (photo scale times the augmentation's local
                              magnification at the item centre); NaN when unknown
index            int64        row of the manifest
origin           int64        (x, y) of the item's top-left corner in photo pixels (train: of
                              the crop before augmentation, i.e. approximate)
================ ============ ==================================================================

Modes:

* ``train``: ``crops_per_image`` random crops of ``crop_size`` per photo and
  epoch. The crop centre is, with probability ``focus_p``, a random pixel of a
  class chosen among those present (background, scalp, hair) or a point near a
  random dot, the choices weighted by ``focus`` (equal weights balance the
  classes); otherwise it is uniform over the positions where the crop fits. The
  crop is clamped to lie inside the photo where it can. A window larger than
  the crop (``AugmentSettings.context_factor``, plus one pixel) is cut around
  it, augmented, and its centre ``crop_size`` square is returned, so rotations and zoom-out
  never show empty corners except at the photo's own border. Parts of the
  window outside the photo are padded: the image by reflection (or zeros), the
  mask with 255.
* ``tiles``: a deterministic grid of ``crop_size`` tiles overlapping by
  ``tile_overlap`` pixels covering every photo; no augmentation; tiles
  reaching past the photo are padded like crops.
* ``full``: each photo whole, no augmentation.

Randomness: item ``i`` of epoch ``e`` draws only from
``default_rng(SeedSequence(seed, spawn_key=(e, i)))``, so items do not depend on
the number of DataLoader workers or on the order items are asked for. The key
of an item is its index (of the epoch set by :meth:`SmpDataset.set_epoch`) or an
``(epoch, index)`` pair; :class:`EpochKeys` turns a sampler's indices into such
pairs, so persistent DataLoader workers (which never see ``set_epoch`` calls
made in the main process) draw the right epoch. :class:`WorkerInit` starts a
DataLoader worker: one torch thread, and its own generator seeded
from the run seed and the worker id.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterator, Sized
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image
from pydantic import Field
from torch.utils.data import Dataset, Sampler, get_worker_info

from data.augment import IGNORE, Augmenter, AugmentSettings
from data.config import Settings
from data.geometry import resize_points
from data.manifest import Manifest, ManifestError, ManifestRow
from data.photometry import InputNorm, normalise_input

__all__ = [
    "FocusWeights",
    "DatasetSettings",
    "EpochKeys",
    "Photo",
    "SeededSampler",
    "SmpDataset",
    "WorkerInit",
    "item_rng",
    "load_photo",
    "read_visible",
    "rescale_photo",
    "shrink_mask",
    "shrink_photo",
    "worker_rng",
]

CLASSES = (0, 1, 2)
CLASS_NAMES = ("background", "scalp", "hair")


class FocusWeights(Settings):
    """Relative weights of the focused crop-centre choices (among those present in a photo)."""

    background: float = Field(1.0, ge=0.0)
    scalp: float = Field(1.0, ge=0.0)
    hair: float = Field(1.0, ge=0.0)
    dots: float = Field(1.0, ge=0.0)
    """A point within ``dot_jitter * crop_size`` of a random dot."""


class DatasetSettings(Settings):
    """How items are cut from the photos of a manifest."""

    mode: Literal["train", "tiles", "full"] = "train"
    crop_size: int = Field(384, ge=8, le=8192)
    crops_per_image: int = Field(1, ge=1)
    """Training items per photo and epoch (``len`` is photos x this)."""
    max_points: int = Field(2048, ge=1)
    seed: int = Field(0, ge=0)
    focus_p: float = Field(0.6, ge=0.0, le=1.0)
    """Probability that a crop is centred by class/dot-aware sampling rather than uniformly."""
    focus: FocusWeights = FocusWeights()
    dot_jitter: float = Field(0.25, ge=0.0, le=0.5)
    """Offset of a dot-centred crop from its dot, uniform up to this fraction of the crop size."""
    tile_overlap: int = Field(32, ge=0)
    pad_image: Literal["reflect", "constant"] = "reflect"
    """How image pixels outside the photo are filled (the mask gets 255 there)."""
    cache_images: int = Field(0, ge=0)
    """Decoded photos kept in a per-process LRU cache (0: decode every time)."""
    global_long_side: int | None = Field(None, ge=64)
    """Whole-head views (rows of view ``global``) shrunk to this long side before cropping (the model's own
    ``global_long_side``, set by training; :func:`shrink_photo`)."""
    input_norm: InputNorm = "none"
    input_norm_percentile: float = Field(90.0, ge=50.0, le=100.0)
    """Photometric normalisation of each whole photo before cropping (data.photometry; the model's own
    ``input_norm``, set by training)."""
    closeup_px_per_mm: float | None = Field(None, gt=0)
    """Close-ups of known scale resampled to this many px/mm before cropping (the model's own
    ``closeup_px_per_mm``, set by training; :func:`rescale_photo`)."""


@dataclass(frozen=True)
class Photo:
    """One decoded manifest row."""

    image: np.ndarray
    """HxWx3 uint8 RGB."""
    mask: np.ndarray
    """HxW uint8 classes (255 ignore)."""
    points: np.ndarray
    """Kx2 float64 dot centres (x, y), OpenCV pixel convention."""
    visible: np.ndarray
    """K bool: the dot is visible (a perfect detector can find it); all True without a ``visible`` column."""
    has_points: bool
    px_per_mm: float
    """NaN when unknown."""
    class_counts: np.ndarray
    """Pixels of each class 0, 1, 2."""


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` in ``epoch`` of a dataset seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(epoch, index)))


_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_FALSE = {"false", "0", "no", "f", "n", "0.0"}


def read_visible(dots: pd.DataFrame) -> np.ndarray:
    """The ``visible`` column of a dots table as bool (True/False, 1/0, yes/no).

    Missing column (old synthetic sets, imported labels) or empty cells: visible.
    Any other value is a ``ValueError`` naming it.
    """
    if "visible" not in dots.columns:
        return np.ones(len(dots), bool)
    col = dots["visible"]
    if col.dtype == bool:
        return col.to_numpy(bool)
    text = col.astype(str).str.strip().str.lower()
    blank = col.isna() | (text == "")
    bad = ~(text.isin(_TRUE | _FALSE) | blank)
    if bad.any():
        raise ValueError(f"column 'visible': {col[bad].iloc[0]!r} is not a boolean (row {int(np.flatnonzero(bad)[0])})")
    return (text.isin(_TRUE) | blank).to_numpy(bool)


def worker_rng(seed: int, worker_id: int) -> np.random.Generator:
    """The generator of DataLoader worker ``worker_id`` of a run seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(0x574B, worker_id)))


@dataclass(frozen=True)
class WorkerInit:
    """``worker_init_fn`` of the training DataLoader (picklable, so it also works with spawn).

    Limits torch in the worker to ``threads`` threads (the main process
    computes the network on the others) and gives the worker's copy of
    the dataset its own generator, :func:`worker_rng` of the run seed and the
    worker id (``dataset.worker_rng``); Python's and NumPy's global generators,
    which only third-party code may touch, are seeded from it too. Items
    themselves draw from :func:`item_rng`, so they do not depend on the workers.
    OpenCV's thread count is left alone: ``cv2.setNumThreads`` in a forked
    worker deadlocks once the parent has used OpenCV's thread pool.
    """

    seed: int
    threads: int = 1

    def __call__(self, worker_id: int) -> None:
        torch.set_num_threads(self.threads)
        rng = worker_rng(self.seed, worker_id)
        random.seed(int(rng.integers(2**63)))
        np.random.seed(int(rng.integers(2**32)))
        info = get_worker_info()
        if info is not None and hasattr(info.dataset, "worker_rng"):
            info.dataset.worker_rng = rng


class SeededSampler(Sampler[int]):
    """``num_samples`` indices drawn with replacement from ``range(n)``, a fixed draw per epoch.

    Epoch ``e`` draws from ``default_rng(SeedSequence(seed, spawn_key=(0x5341, e)))``,
    so a resumed run draws what an uninterrupted one would have.
    """

    def __init__(self, n: int, num_samples: int, seed: int) -> None:
        if n < 1 or num_samples < 1:
            raise ValueError("n and num_samples must be >= 1")
        self.n, self.num_samples, self.seed, self.epoch = n, num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(np.random.SeedSequence(entropy=self.seed, spawn_key=(0x5341, self.epoch)))
        return iter(rng.integers(0, self.n, size=self.num_samples).tolist())


class EpochKeys(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` for each index of ``sampler``; :meth:`set_epoch` sets both."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) if isinstance(self.sampler, Sized) else 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, int(i)) for i in self.sampler)


def shrink_mask(mask: np.ndarray, size: tuple[int, int], hair_share: float | None = None) -> np.ndarray:
    """``mask`` (HxW uint8 classes 0-2, 255 not labelled) resized to ``size`` (w, h) by area: each new pixel
    takes the class that covers most of its footprint among the labelled ones (255 where none is). With
    ``hair_share``, hair wherever it covers at least that share of the labelled footprint: a strand one
    pixel wide stays a line of pixels (the truth labels strands along their drawn line, at least a pixel
    wide) instead of falling under the argmax when the mask shrinks by less than half."""
    shares = [cv2.resize((mask == k).astype(np.float32), size, interpolation=cv2.INTER_AREA) for k in range(3)]
    stack = np.stack(shares)
    out = np.argmax(stack, axis=0).astype(np.uint8)
    labelled = stack.sum(axis=0)
    if hair_share is not None:
        out[stack[2] >= hair_share * np.maximum(labelled, 1e-6)] = 2
    out[labelled < 0.5] = IGNORE
    return out


def shrink_photo(photo: Photo, factor: float, hair_share: float | None = None) -> Photo:
    """``photo`` resized by ``factor`` (< 1): the image by area, the mask by :func:`shrink_mask` (with
    ``hair_share``), the dots and the scale with it."""
    h, w = photo.mask.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return _resized(
        photo, cv2.resize(photo.image, size, interpolation=cv2.INTER_AREA), shrink_mask(photo.mask, size, hair_share)
    )


def rescale_photo(photo: Photo, factor: float, hair_share: float = 1.0 / 3.0) -> Photo:
    """``photo`` resized by ``factor`` either way: smaller by :func:`shrink_photo` (strands kept with
    ``hair_share``), larger by linear interpolation (the mask by nearest); the dots and the scale with it."""
    if factor <= 1.0:
        return shrink_photo(photo, factor, hair_share)
    h, w = photo.mask.shape
    size = (round(w * factor), round(h * factor))
    return _resized(
        photo,
        cv2.resize(photo.image, size, interpolation=cv2.INTER_LINEAR),
        cv2.resize(photo.mask, size, interpolation=cv2.INTER_NEAREST),
    )


def _resized(photo: Photo, image: np.ndarray, mask: np.ndarray) -> Photo:
    """``photo`` with its image and mask replaced by resized ones, its dots and scale carried along."""
    h, w = photo.mask.shape
    fx, fy = mask.shape[1] / w, mask.shape[0] / h
    return replace(
        photo,
        image=image,
        mask=mask,
        points=resize_points(photo.points, fx, fy),
        px_per_mm=photo.px_per_mm * fx,
        class_counts=np.bincount(mask.ravel(), minlength=256)[: len(CLASSES)].astype(np.int64),
    )


def load_photo(row: ManifestRow, where: str = "") -> Photo:
    """Decode the photo, mask and dots of ``row`` (EXIF orientation applied to the photo)."""
    label = where or str(row.image)
    bgr = cv2.imread(str(row.image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ManifestError(f"{label}: column 'image': cannot decode {row.image}")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(row.mask), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ManifestError(f"{label}: column 'mask': cannot decode {row.mask}")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ManifestError(
            f"{label}: column 'mask': expected a single-channel 8-bit PNG, got shape {mask.shape} {mask.dtype}"
        )
    if mask.shape != image.shape[:2]:
        raise ManifestError(
            f"{label}: column 'mask': size {mask.shape[::-1]} differs from the photo's {image.shape[1::-1]}"
        )
    if row.dots is None:
        points = np.zeros((0, 2), np.float64)
        visible = np.zeros(0, bool)
    else:
        dots = pd.read_csv(row.dots)
        if not {"x", "y"} <= set(dots.columns):
            raise ManifestError(f"{label}: column 'dots': {row.dots} lacks columns x, y")
        points = dots[["x", "y"]].to_numpy(np.float64)
        try:
            visible = read_visible(dots)
        except ValueError as exc:
            raise ManifestError(f"{label}: column 'dots': {row.dots}: {exc}") from None
    counts = np.bincount(mask.ravel(), minlength=256)[: len(CLASSES)].astype(np.int64)
    ppm = float(row.px_per_mm) if row.px_per_mm is not None else math.nan
    return Photo(
        image=image,
        mask=mask,
        points=points,
        visible=visible,
        has_points=row.dots is not None,
        px_per_mm=ppm,
        class_counts=counts,
    )


def _window(photo: Photo, x0: int, y0: int, width: int, height: int, pad_image: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``width`` x ``height`` window at (x0, y0); outside the photo: reflected/zero image, 255 mask."""
    h, w = photo.mask.shape
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + width, w), min(y0 + height, h)
    if ix0 >= ix1 or iy0 >= iy1:
        raise ValueError(f"window at ({x0}, {y0}) size {width}x{height} misses the {w}x{h} photo")
    img = photo.image[iy0:iy1, ix0:ix1]
    msk = photo.mask[iy0:iy1, ix0:ix1]
    pads = ((iy0 - y0, y0 + height - iy1), (ix0 - x0, x0 + width - ix1))
    if any(p for pair in pads for p in pair):
        mode: Literal["reflect", "constant"] = "reflect" if pad_image == "reflect" else "constant"
        img = np.pad(img, pads + ((0, 0),), mode=mode)
        msk = np.pad(msk, pads, mode="constant", constant_values=IGNORE)
    return np.ascontiguousarray(img), np.ascontiguousarray(msk)


def _origin_range(size: int, crop: int) -> tuple[int, int]:
    """Allowed crop origins along one axis: inside the photo, or covering it if it is smaller."""
    return min(0, size - crop), max(0, size - crop)


def _tile_origins(size: int, crop: int, overlap: int) -> list[int]:
    if size <= crop:
        return [0]
    step = max(crop - overlap, 1)
    origins = list(range(0, size - crop + 1, step))
    if origins[-1] != size - crop:
        origins.append(size - crop)
    return origins


class SmpDataset(Dataset):
    """Items (crops, tiles or whole photos) of a :class:`Manifest`; see the module docstring."""

    def __init__(
        self,
        manifest: Manifest,
        settings: DatasetSettings = DatasetSettings(),
        augment: AugmentSettings = AugmentSettings(),
    ) -> None:
        if len(manifest) == 0:
            raise ManifestError("the manifest (after filtering) has no rows")
        self.manifest = manifest
        self.settings = settings
        self.augment = augment if settings.mode == "train" else AugmentSettings.none()
        crop = settings.crop_size
        # the window is crop + 2 * margin so that the centre crop offset is an integer
        # (+1: a pixel beyond the reach of the warp for interpolation, and albumentations drops
        # keypoints outside [0, S) of the window, which must not touch the crop's pixel area)
        self._margin = int(math.ceil(crop * (self.augment.context_factor() - 1.0) / 2.0)) + 1
        self._augmenter = Augmenter.build(self.augment)
        self._epoch = 0
        self.worker_rng: np.random.Generator | None = None
        """Set in a DataLoader worker by :class:`WorkerInit`; None in the main process."""
        self._cache: OrderedDict[int, Photo] = OrderedDict()
        self._tiles: list[tuple[int, int, int]] = []
        if settings.mode == "tiles":
            for r, row in enumerate(manifest):
                with Image.open(row.mask) as im:  # reads only the header
                    w, h = im.size
                for ty in _tile_origins(h, crop, settings.tile_overlap):
                    for tx in _tile_origins(w, crop, settings.tile_overlap):
                        self._tiles.append((r, tx, ty))

    # -- bookkeeping -----------------------------------------------------------------------
    def __len__(self) -> int:
        if self.settings.mode == "train":
            return len(self.manifest) * self.settings.crops_per_image
        if self.settings.mode == "tiles":
            return len(self._tiles)
        return len(self.manifest)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch`` (train mode); other modes are deterministic anyway."""
        if epoch < 0:
            raise ValueError("epoch must be >= 0")
        self._epoch = int(epoch)

    def photo(self, row: int) -> Photo:
        """The decoded photo of manifest row ``row`` (through the LRU cache if enabled)."""
        cached = self._cache.get(row)
        if cached is not None:
            self._cache.move_to_end(row)
            return cached
        photo = load_photo(self.manifest[row], where=f"manifest row {row}")
        side = self.settings.global_long_side
        if side and self.manifest[row].view == "global" and max(photo.mask.shape) > side:
            photo = shrink_photo(photo, side / max(photo.mask.shape))
        target = self.settings.closeup_px_per_mm
        if (
            target
            and self.manifest[row].view == "closeup"
            and math.isfinite(photo.px_per_mm)
            and abs(target / photo.px_per_mm - 1.0) > 0.01
        ):
            photo = rescale_photo(photo, target / photo.px_per_mm)
        if self.settings.input_norm != "none":
            photo = replace(
                photo, image=normalise_input(photo.image, self.settings.input_norm, self.settings.input_norm_percentile)
            )
        if self.settings.cache_images:
            self._cache[row] = photo
            while len(self._cache) > self.settings.cache_images:
                self._cache.popitem(last=False)
        return photo

    # -- items -----------------------------------------------------------------------------
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Item ``key``: an index (of the current epoch) or an ``(epoch, index)`` pair."""
        if isinstance(key, tuple):
            epoch, index = int(key[0]), int(key[1])
            if epoch < 0:
                raise ValueError("epoch must be >= 0")
        else:
            epoch, index = self._epoch, int(key)
        if not 0 <= index < len(self):
            raise IndexError(index)
        mode = self.settings.mode
        if mode == "train":
            row = index // self.settings.crops_per_image
            return self._train_item(index, row, epoch)
        if mode == "tiles":
            row, tx, ty = self._tiles[index]
            photo = self.photo(row)
            crop = self.settings.crop_size
            image, mask = _window(photo, tx, ty, crop, crop, self.settings.pad_image)
            return self._pack(row, image, mask, photo.points - (tx, ty), photo.visible, photo, 1.0, (tx, ty))
        photo = self.photo(index)
        return self._pack(index, photo.image, photo.mask, photo.points, photo.visible, photo, 1.0, (0, 0))

    def crop_centre(self, photo: Photo, rng: np.random.Generator) -> tuple[int, int]:
        """The pixel (x, y) a training crop is centred on (before clamping into the photo)."""
        cfg = self.settings
        h, w = photo.mask.shape
        if rng.random() < cfg.focus_p:
            weights = np.array([cfg.focus.background, cfg.focus.scalp, cfg.focus.hair, cfg.focus.dots])
            targets = photo.points[photo.visible]  # crops are focused on dots the network must find
            present = np.append(photo.class_counts > 0, len(targets) > 0)
            weights = np.where(present, weights, 0.0)
            if weights.sum() > 0:
                choice = int(rng.choice(4, p=weights / weights.sum()))
                if choice < 3:
                    # exact class pixel: one pass over the mask, cheap next to decoding the photo
                    flat = np.flatnonzero(photo.mask.ravel() == CLASSES[choice])
                    k = int(flat[rng.integers(len(flat))])
                    return k % w, k // w
                dot = targets[rng.integers(len(targets))]
                jitter = rng.uniform(-cfg.dot_jitter, cfg.dot_jitter, size=2) * cfg.crop_size
                x = int(np.clip(round(dot[0] + jitter[0]), 0, w - 1))
                y = int(np.clip(round(dot[1] + jitter[1]), 0, h - 1))
                return x, y
        half = cfg.crop_size // 2
        lo_x, hi_x = _origin_range(w, cfg.crop_size)
        lo_y, hi_y = _origin_range(h, cfg.crop_size)
        return int(rng.integers(lo_x, hi_x + 1)) + half, int(rng.integers(lo_y, hi_y + 1)) + half

    def _train_item(self, index: int, row: int, epoch: int) -> dict[str, torch.Tensor]:
        cfg = self.settings
        rng = item_rng(cfg.seed, epoch, index)
        photo = self.photo(row)
        h, w = photo.mask.shape
        crop, margin = cfg.crop_size, self._margin
        cx, cy = self.crop_centre(photo, rng)
        lo_x, hi_x = _origin_range(w, crop)
        lo_y, hi_y = _origin_range(h, crop)
        ox = int(np.clip(cx - crop // 2, lo_x, hi_x))
        oy = int(np.clip(cy - crop // 2, lo_y, hi_y))
        side = crop + 2 * margin
        x0, y0 = ox - margin, oy - margin
        image, mask = _window(photo, x0, y0, side, side, cfg.pad_image)
        out = self._augmenter(image, mask, photo.points - (x0, y0), rng)
        # the centre crop is cut here rather than by albumentations so that dots are kept by the
        # same pixel-area rule as in the other modes (see _pack)
        inner = slice(margin, margin + crop)
        return self._pack(
            row,
            out.image[inner, inner],
            out.mask[inner, inner],
            out.points - margin,
            photo.visible[out.kept],
            photo,
            out.scale,
            (ox, oy),
        )

    def _pack(
        self,
        row: int,
        image: np.ndarray,
        mask: np.ndarray,
        points: np.ndarray,
        visible: np.ndarray,
        photo: Photo,
        scale: float,
        origin: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """Tensors of one item; ``points`` (and their ``visible`` flags) may include dots outside
        the item (dropped here)."""
        h, w = mask.shape
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        vis = np.asarray(visible, bool).reshape(-1)
        # inside the item's pixel area (pixel 0 spans [-0.5, 0.5))
        inside = (pts[:, 0] >= -0.5) & (pts[:, 0] < w - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] < h - 0.5)
        pts, vis = pts[inside], vis[inside]
        total = len(pts)
        limit = self.settings.max_points
        if total > limit:
            # documented subset: the dots nearest to the item centre
            d2 = (pts[:, 0] - (w - 1) / 2) ** 2 + (pts[:, 1] - (h - 1) / 2) ** 2
            keep = np.sort(np.argsort(d2, kind="stable")[:limit])
            pts, vis = pts[keep], vis[keep]
        padded = np.full((limit, 2), np.nan, np.float32)
        padded[: len(pts)] = pts
        flags = np.zeros(limit, bool)
        flags[: len(vis)] = vis
        tensor_image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        return {
            "image": tensor_image,
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "points": torch.from_numpy(padded),
            "n_points": torch.tensor(len(pts), dtype=torch.int64),
            "visible": torch.from_numpy(flags),
            "n_points_total": torch.tensor(total, dtype=torch.int64),
            "has_points": torch.tensor(photo.has_points, dtype=torch.bool),
            "px_per_mm": torch.tensor(photo.px_per_mm * scale, dtype=torch.float32),
            "index": torch.tensor(row, dtype=torch.int64),
            "origin": torch.tensor(origin, dtype=torch.int64),
        }
