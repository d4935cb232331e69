"""Segmentation + dot-centre networks built from torchvision parts.

One module, :class:`SegDotNet`, with two interchangeable feature extractors
(``ModelSettings.arch``):

``unet_mnv3`` (default, the fast one)
    The first stages of torchvision's ``mobilenet_v3_small`` (cut at
    ``encoder_stride`` 8, 16 or 32; its final 1x1 expansion is dropped) and a
    U-Net-style decoder with skip connections at strides 16, 8, 4 and 2
    (0.89 M parameters at the defaults). Each
    decoder stage projects the deeper map with a 1x1 convolution at *low*
    resolution, upsamples it, adds a 1x1 projection of the skip, and refines
    with a depthwise 3x3 and a 1x1 convolution, so almost no work happens at
    high resolution.
``lraspp``
    torchvision's LR-ASPP (``LRASPPHead`` over a dilated ``mobilenet_v3_large``,
    as ``torchvision.models.segmentation.lraspp_mobilenet_v3_large`` builds it),
    with the head emitting features instead of class scores at stride 8, and
    the same high-resolution decoder stages (strides 4 and 2) and heads as
    ``unet_mnv3`` on top. More context and capacity (3.2 M parameters at
    width 1.0, the width torchvision's ImageNet weights have), ~2.5x slower.

Both end in the same heads on the stride-2 decoder features:

* ``seg``: a light full-resolution head written with stride-2 tensors: a
  2x2 stride-2 convolution over the normalised image (each cell's own 2x2
  pixels) plus a 1x1 convolution of the decoder features, ReLU
  (``refine_channels``), and a 2x2 stride-2 transposed convolution to the 3
  logits of each of the cell's 4 pixels. Every pixel gets its own logits
  from its own colour plus context, so 1-3 px hair strands stay resolvable,
  while no full-resolution feature map is materialised (on CPU a single
  full-resolution convolution costs about as much as the whole encoder).
* ``heat`` / ``offset``: CenterNet-style dot centres at ``dot_stride`` 1 or 2.
  The default is 2: dots are 2-12 px across and at least a dot apart, so a
  2x2 px cell never holds two centres in practice, the sub-pixel offset
  restores the exact position, and the head is 4x cheaper than at stride 1.
  At stride 1 the head predicts ``3 * 2 * 2`` channels per stride-2 cell and
  ``pixel_shuffle`` rearranges them.

Input: float ``Bx3xHxW`` sRGB in [0, 1]; the model normalises with fixed
(ImageNet) mean/std buffers, pads bottom/right to a multiple of
:attr:`SegDotNet.total_stride` with zeros in normalised space (the mean
colour) and crops the outputs back, so any H, W works.

Cell convention of the dot head (shared with :mod:`models.targets` and
:mod:`models.inference`): at stride ``s``, cell ``(i, j)`` covers input pixels
``x in [s*j, s*j + s - 1]``, ``y in [s*i, s*i + s - 1]`` (pixel centres at
integers, OpenCV convention); its centre is ``(s*j + (s-1)/2, s*i + (s-1)/2)``;
the offset channels hold ``(x - centre_x) / s`` and ``(y - centre_y) / s``,
in [-0.5, 0.5) for the cell that contains the dot. The heat map has
``ceil(H/s) x ceil(W/s)`` cells.

Tiling: every squeeze-excitation block of the torchvision backbones (and the
LR-ASPP attention branch) pools over the *whole* feature map, which makes a
tile's output depend on the tile's extent. Here those global poolings are
replaced by local average pools (``se_kernel``, ``lraspp_pool_kernel`` cells),
which keeps the receptive field finite, keeps the parameter layout (so
torchvision's ImageNet weights still load) and lets tiled inference
reproduce whole-image inference (see :func:`receptive_field`).

Speed (``scripts/bench_model_speed.py``: a 4000x3000 photo through
:func:`models.inference.predict_image`, tiles 1024 / overlap 128, model from
:func:`prepare_for_inference`, 2 threads of an otherwise idle 2-core EPYC):
``unet_mnv3`` defaults ~1.7-2.0 s (encoder_stride 16: ~1.6 s), ``lraspp``
width 1.0 ~5.0 s, width 0.5 ~2.9 s, width 0.35 ~2.1 s; peak RSS ~1.1 GiB.
What makes it fast on CPU: a stride-2 stem, nothing wider than 16-24
channels at stride 2, no full-resolution feature maps, conv+BN folded,
channels_last, local (not global) pooling, tiles that fit the caches.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.models.segmentation.lraspp import LRASPPHead
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from data.config import Settings
from data.photometry import InputNorm

__all__ = [
    "NUM_CLASSES",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "ModelSettings",
    "SegDotNet",
    "BackboneWeightsError",
    "build_model",
    "load_backbone_weights",
    "prepare_for_inference",
    "receptive_field",
]

NUM_CLASSES = 3
"""0 background, 1 scalp, 2 hair."""
IMAGE_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of the input normalisation (ImageNet, matches torchvision weights)."""
IMAGE_STD = (0.229, 0.224, 0.225)
"""Per-channel std of the input normalisation."""

_HEAT_PRIOR = 0.1
"""Initial dot probability of every heat cell (CenterNet's bias initialisation)."""


class BackboneWeightsError(ValueError):
    """A backbone weights file that cannot be loaded, with a one-line reason."""


class ModelSettings(Settings):
    """Architecture of the segmentation + dot network (frozen, validated)."""

    arch: Literal["unet_mnv3", "lraspp"] = "unet_mnv3"
    """``unet_mnv3``: fast U-Net over mobilenet_v3_small; ``lraspp``: LR-ASPP over a dilated mobilenet_v3_large."""
    width_mult: float = Field(1.0, gt=0.0, le=2.0)
    """Channel multiplier of the torchvision backbone (1.0 matches torchvision's ImageNet weights)."""
    encoder_stride: Literal[8, 16, 32] = 32
    """``unet_mnv3`` only: stride of the deepest backbone stage used (the lraspp backbone is at 16).
    32 costs ~10% more time than 16 for 4x the parameters and more context."""
    decoder_channels: tuple[int, int, int, int] = (16, 24, 32, 48)
    """Decoder channels at strides 2, 4, 8, 16 (entries at or beyond the deepest stride are unused)."""
    head_channels: int = Field(16, ge=1)
    """Hidden channels of the dot head (at stride 2)."""
    refine_channels: int = Field(24, ge=0)
    """Hidden channels of the full-resolution segmentation head (per 2x2 pixel block); 0: no pixel input."""
    dot_stride: Literal[1, 2] = 2
    """Stride of the dot heat map and offsets in input pixels."""
    se_kernel: int = Field(7, ge=1)
    """Window (cells, odd) of the local pooling that replaces the squeeze-excitation global pooling."""
    lraspp_inter_channels: int = Field(128, ge=1)
    """``lraspp`` only: inter channels of the LR-ASPP head."""
    lraspp_pool_kernel: int = Field(15, ge=1)
    """``lraspp`` only: window (cells at stride 16, odd) of the LR-ASPP attention pooling."""
    backbone_weights: Path | None = None
    """Optional local state_dict of the torchvision backbone (nothing is ever downloaded)."""
    global_long_side: int | None = Field(None, ge=64)
    """Whole-head views are shrunk so that their long side is this many px before the network sees them
    (the whole head in its field of view, as in training); the labels come back at full size. None: as
    they are (models.inference.predict_view, data.dataset.shrink_photo)."""
    closeup_px_per_mm: float | None = Field(None, gt=0)
    """Close-ups are seen at this scale: training photos of known scale are resampled to it
    (data.dataset.rescale_photo) and so is a close-up whose scale is given to
    models.inference.predict_view (the assessment segments every close-up at the canonical scale
    already). None: at their own scale."""
    input_norm: InputNorm = "none"
    """How the photo is given to the network (data.photometry): ``none`` as it is, ``white_point`` with
    its exposure and white balance taken out, ``skin_point`` the same with the level read on the photo
    with its hair closed; applied to the whole photo, in training and inference."""
    input_norm_percentile: float = Field(90.0, ge=50.0, le=100.0)
    """The percentile of each channel taken as the photo's white. ``white_point`` at 90 reads the hair of
    a dense-hair close-up as its white (gains of 17-20 on the hard suite), at 99 the brightest skin or
    the card's paper; ``skin_point`` at 50 lands every suite's bare skin within 0.43 stops (sd) of one
    level (data.photometry)."""

    @field_validator("se_kernel", "lraspp_pool_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 != 1:
            raise ValueError("must be odd (a centred pooling window)")
        return value

    @field_validator("decoder_channels")
    @classmethod
    def _positive(cls, value: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if min(value) < 1:
            raise ValueError("every decoder width must be >= 1")
        return value


# --------------------------------------------------------------------------- blocks


class _LocalAvgPool(nn.Module):
    """Stride-1 mean over a ``k x k`` window; at borders only cells inside the map count.

    Computed as two 1-D passes (a row mean then a column mean), which is
    exactly the 2-D mean because the window clipped at a border is still a
    rectangle, and is ~3x faster than the 2-D pooling for k = 7.
    """

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: Tensor) -> Tensor:
        k, r = self.kernel, self.kernel // 2
        if k == 1:
            return x
        x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, r), count_include_pad=False)
        return F.avg_pool2d(x, (k, 1), stride=1, padding=(r, 0), count_include_pad=False)


def _localise_global_pools(module: nn.Module, kernel: int) -> None:
    """Replace the global pooling of every torchvision ``SqueezeExcitation`` by a local window.

    Global pooling makes a tile's output depend on the whole tile; a local
    window keeps the receptive field finite. Parameters are unchanged.
    """
    for sub in module.modules():
        if isinstance(sub, SqueezeExcitation):
            sub.avgpool = _LocalAvgPool(kernel)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> Conv2dNormActivation:
    return Conv2dNormActivation(cin, cout, kernel_size=kernel, groups=groups, activation_layer=nn.ReLU)


class _UpFuse(nn.Module):
    """One decoder stage: deep map (stride 2s) + skip (stride s) -> ``out_ch`` at stride s.

    The deep map is projected to ``out_ch`` *before* the 2x bilinear upsampling
    (4x fewer pixels), the skip is projected by a 1x1 convolution, the two are
    added, then a depthwise 3x3 and a 1x1 convolution refine the sum. The
    stride-2 stage skips the 1x1 (the heads that follow mix channels anyway;
    at stride 2 every layer costs as much as the encoder's deep stages).
    """

    def __init__(self, deep_ch: int, skip_ch: int, out_ch: int, pointwise: bool = True) -> None:
        super().__init__()
        self.deep = Conv2dNormActivation(deep_ch, out_ch, kernel_size=1, activation_layer=None)
        self.skip = Conv2dNormActivation(skip_ch, out_ch, kernel_size=1, activation_layer=None)
        layers: list[nn.Module] = [_conv_bn_relu(out_ch, out_ch, kernel=3, groups=out_ch)]
        if pointwise:
            layers.append(_conv_bn_relu(out_ch, out_ch, kernel=1))
        self.refine = nn.Sequential(*layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = F.interpolate(self.deep(deep), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(self.act(up + self.skip(skip)))


class _SegHead(nn.Module):
    """Stride-2 features + the full-resolution image -> full-resolution class logits.

    A light full-resolution head written with stride-2 tensors only: a 2x2
    stride-2 convolution reads each cell's own 2x2 block of normalised pixels,
    a 1x1 convolution reads the decoder features, their sum (ReLU) has
    ``refine_ch`` channels per cell, and a 2x2 stride-2 transposed
    convolution predicts the 3 logits of each of the cell's 4 pixels. Every
    output pixel is thus a non-linear function of its own colour, its block
    neighbours' and the context features, while no full-resolution feature
    map is ever materialised. ``refine_ch = 0`` drops the pixel input and the
    hidden layer (a transposed convolution on the features alone).
    """

    def __init__(self, in_ch: int, refine_ch: int) -> None:
        super().__init__()
        self.pixels: nn.Conv2d | None = None
        self.features: nn.Conv2d | None = None
        if refine_ch > 0:
            self.pixels = nn.Conv2d(3, refine_ch, kernel_size=2, stride=2)
            self.features = nn.Conv2d(in_ch, refine_ch, kernel_size=1, bias=False)
            self.act = nn.ReLU(inplace=True)
        self.out = nn.ConvTranspose2d(refine_ch or in_ch, NUM_CLASSES, kernel_size=2, stride=2)

    def forward(self, feats: Tensor, image: Tensor) -> Tensor:
        if self.pixels is not None and self.features is not None:
            feats = self.act(self.pixels(image) + self.features(feats))
        return self.out(feats)


class _DotHead(nn.Module):
    """Stride-2 features -> heat logits (1) and offsets (2) at ``dot_stride``."""

    def __init__(self, in_ch: int, hidden: int, dot_stride: int) -> None:
        super().__init__()
        self.shuffle = 2 // dot_stride
        self.body = _conv_bn_relu(in_ch, hidden, kernel=1)
        self.out = nn.Conv2d(hidden, 3 * self.shuffle**2, kernel_size=1)
        with torch.no_grad():
            nn.init.normal_(self.out.weight, std=0.01)
            bias = cast(Tensor, self.out.bias)  # built with bias=True
            bias.zero_()
            # with pixel_shuffle, channel c*r*r + k feeds output channel c
            bias[: self.shuffle**2] = math.log(_HEAT_PRIOR / (1.0 - _HEAT_PRIOR))

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        out = self.out(self.body(feats))
        if self.shuffle > 1:
            out = F.pixel_shuffle(out, self.shuffle)
        return out[:, :1], out[:, 1:]


# --------------------------------------------------------------------------- encoders


def _stage_ends(features: nn.Sequential) -> dict[int, int]:
    """Index of the last block at each output stride of a torchvision MobileNetV3 ``features``.

    The stride of a block is read from its convolutions (a dilated block has
    stride 1 there, so it stays in its input's stage). The stem is block 0;
    the final 1x1 expansion convolution belongs to no stage.
    """
    ends: dict[int, int] = {}
    stride = 1
    for i, block in enumerate(features):
        if i > 0 and not isinstance(block, InvertedResidual):
            continue  # the final 1x1 expansion conv is not a stage of its own
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d):
                stride *= conv.stride[0]
        ends[stride] = i
    return ends


def _out_channels(block: nn.Module) -> int:
    return int(cast(int, block.out_channels))  # an InvertedResidual or Conv2dNormActivation


def _run_tapped(body: nn.Sequential, taps: dict[int, int], x: Tensor) -> tuple[dict[int, Tensor], Tensor]:
    """Run ``body``; keep the output of each block index in ``taps`` under its stride."""
    out: dict[int, Tensor] = {}
    for i, block in enumerate(body):
        x = block(x)
        if i in taps:
            out[taps[i]] = x
    return out, x


class _UNetEncoder(nn.Module):
    """mobilenet_v3_small features cut at ``encoder_stride``; returns maps at strides 2..encoder_stride."""

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__()
        full = mobilenet_v3_small(weights=None, width_mult=settings.width_mult).features
        ends = _stage_ends(full)
        strides = [s for s in sorted(ends) if s <= settings.encoder_stride]
        self.body = nn.Sequential(*list(full.children())[: ends[settings.encoder_stride] + 1])
        self.taps = {ends[s]: s for s in strides}
        self.channels = {s: _out_channels(self.body[ends[s]]) for s in strides}
        _localise_global_pools(self.body, settings.se_kernel)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        return _run_tapped(self.body, self.taps, x)[0]


class _LRASPPEncoder(nn.Module):
    """Dilated mobilenet_v3_large + torchvision ``LRASPPHead``; returns maps at strides 2, 4, 8.

    As in ``torchvision.models.segmentation.lraspp_mobilenet_v3_large`` the
    backbone's last stage is dilated (output stride 16) and the head combines
    the stride-16 "high" map with a stride-8 "low" map; here the head's
    "classes" are ``decoder_channels[2]`` feature channels that the decoder
    carries on to strides 4 and 2, and its global attention pooling is local.
    The "low" map is the *last* block at stride 8 (torchvision taps the first).
    """

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__()
        self.body = mobilenet_v3_large(weights=None, width_mult=settings.width_mult, dilated=True).features
        ends = _stage_ends(self.body)
        self.taps = {ends[2]: 2, ends[4]: 4, ends[8]: 8}
        self.channels = {s: _out_channels(self.body[i]) for i, s in self.taps.items()}
        high_ch = _out_channels(self.body[len(self.body) - 1])
        self.head = LRASPPHead(self.channels[8], high_ch, settings.decoder_channels[2], settings.lraspp_inter_channels)
        self.head.scale[0] = _LocalAvgPool(settings.lraspp_pool_kernel)
        _localise_global_pools(self.body, settings.se_kernel)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        out, x = _run_tapped(self.body, self.taps, x)
        out[8] = self.head({"low": out[8], "high": x})
        return out


# --------------------------------------------------------------------------- the network


class SegDotNet(nn.Module):
    """Segmentation logits at full resolution + dot heat/offsets at ``dot_stride``.

    ``model(x)`` with ``x`` float ``Bx3xHxW`` in [0, 1] returns
    ``{"seg": Bx3xHxW, "heat": Bx1xhxw, "offset": Bx2xhxw}`` with
    ``h = ceil(H / dot_stride)``, ``w = ceil(W / dot_stride)``; ``heat`` holds
    logits, ``offset`` the sub-cell position in cell units (see the module doc).
    """

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__()
        self.settings = settings
        self.dot_stride: int = settings.dot_stride
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        widths = dict(zip((2, 4, 8, 16), settings.decoder_channels))
        self.encoder: _UNetEncoder | _LRASPPEncoder
        if settings.arch == "unet_mnv3":
            self.encoder = _UNetEncoder(settings)
            self.total_stride: int = settings.encoder_stride
            deepest = settings.encoder_stride
            deep_ch = self.encoder.channels[deepest]
        else:
            self.encoder = _LRASPPEncoder(settings)
            self.total_stride = 16
            deepest = 8
            deep_ch = widths[8]
        stages: dict[str, _UpFuse] = {}
        stride = deepest // 2
        while stride >= 2:
            stages[str(stride)] = _UpFuse(deep_ch, self.encoder.channels[stride], widths[stride], pointwise=stride > 2)
            deep_ch = widths[stride]
            stride //= 2
        self.decoder = nn.ModuleDict(stages)
        self.seg_head = _SegHead(widths[2], settings.refine_channels)
        self.dot_head = _DotHead(widths[2], settings.head_channels, settings.dot_stride)

    @property
    def backbone(self) -> nn.Sequential:
        """The torchvision MobileNetV3 ``features`` blocks in use (what backbone weights load into)."""
        return self.encoder.body

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a Bx3xHxW image batch, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        x = (x - self.mean) / self.std
        pad_h = -height % self.total_stride
        pad_w = -width % self.total_stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = self.encoder(x)
        deep = feats[max(feats)]
        for key, stage in self.decoder.items():
            deep = stage(deep, feats[int(key)])
        seg = self.seg_head(deep, x)
        heat, offset = self.dot_head(deep)
        s = self.dot_stride
        h, w = -(-height // s), -(-width // s)
        return {
            "seg": seg[..., :height, :width],
            "heat": heat[..., :h, :w],
            "offset": offset[..., :h, :w],
        }


def build_model(settings: ModelSettings | None = None) -> SegDotNet:
    """Build a :class:`SegDotNet` (random init; backbone weights from ``settings.backbone_weights`` if set)."""
    settings = settings or ModelSettings()
    model = SegDotNet(settings)
    if settings.backbone_weights is not None:
        load_backbone_weights(model, settings.backbone_weights)
    return model


# --------------------------------------------------------------------------- backbone weights


def _backbone_name(settings: ModelSettings) -> str:
    name = "mobilenet_v3_small" if settings.arch == "unet_mnv3" else "mobilenet_v3_large"
    return f"{name} (width_mult {settings.width_mult})"


def load_backbone_weights(model: SegDotNet, path: str | Path) -> None:
    """Load a local state_dict into ``model.backbone``; any mismatch is a :class:`BackboneWeightsError`.

    Accepted files (``torch.save`` of a mapping of tensors, read with
    ``weights_only=True``): the state_dict of ``model.backbone`` itself, or of a
    whole torchvision ``mobilenet_v3_small``/``mobilenet_v3_large`` classifier
    (keys ``features.N...`` and ``classifier...``; blocks past the ones in use
    and the classifier are skipped). Every backbone tensor must be present with
    exactly the model's shape.
    """
    path = Path(path)
    what = _backbone_name(model.settings)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights file not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        first_line = (str(exc).splitlines() or [""])[0][:200]
        raise BackboneWeightsError(
            f"{path}: not a readable torch state_dict ({exc.__class__.__name__}: {first_line})"
        ) from None
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise BackboneWeightsError(
            f"{path}: expected a mapping of parameter names to tensors, got {type(raw).__name__}"
        )

    n_blocks = len(model.backbone)
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        name = key.removeprefix("module.")
        if name.startswith("classifier."):
            continue
        if name.startswith("features."):
            name = name.removeprefix("features.")
            block = name.split(".", 1)[0]
            if block.isdigit() and int(block) >= n_blocks:
                continue
        state[name] = value
    target = model.backbone.state_dict()
    unknown = sorted(set(state) - set(target))
    missing = sorted(set(target) - set(state))
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unknown:
            parts.append(f"{len(unknown)} unexpected (e.g. {unknown[0]})")
        raise BackboneWeightsError(f"{path}: keys do not match the {what} backbone: " + ", ".join(parts))
    for key, tensor in target.items():
        if state[key].shape != tensor.shape:
            raise BackboneWeightsError(
                f"{path}: does not fit the {what} backbone: {key} has shape {tuple(state[key].shape)} "
                f"in the file, {tuple(tensor.shape)} in the model"
            )
    model.backbone.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------- inference helpers


def _fuse_sequential_conv_bn(module: nn.Module) -> None:
    for child in module.children():
        _fuse_sequential_conv_bn(child)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()


def prepare_for_inference(model: SegDotNet) -> SegDotNet:
    """A copy of ``model`` for fast inference: eval mode, conv+BN folded, channels_last.

    The copy computes the same function (to float rounding) but its state_dict
    differs (no BN entries), so never checkpoint it; keep the original for that.
    """
    fast = copy.deepcopy(model).eval()
    _fuse_sequential_conv_bn(fast)
    fast = fast.to(memory_format=torch.channels_last)
    for param in fast.parameters():
        param.requires_grad_(False)
    return fast


def receptive_field(model: SegDotNet) -> int:
    """Half-width in pixels of the input region that any output pixel can depend on.

    Computed on a probe copy made linear and positive (activations removed,
    every convolution an average over its window, BN the identity), where the
    gradient of the outputs with respect to the input is non-zero exactly on
    the theoretical receptive field. The maximum is taken over all output
    pixel phases modulo :attr:`SegDotNet.total_stride`. Tiled inference whose
    tiles keep ``overlap // 2 >= receptive_field(model)`` pixels of context
    reproduces whole-image inference (up to float rounding).
    """
    probe = copy.deepcopy(model).eval().double()
    activations = (nn.ReLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid)
    for parent in probe.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, activations):
                setattr(parent, name, nn.Identity())
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
    # Every kernel and pooling window is square, so the horizontal reach is
    # the reach; a strip one deepest-cell high measures it cheaply.
    period = probe.total_stride
    size = 8 * period
    s = probe.dot_stride
    while True:
        x = torch.full((1, 3, period, size), 0.5, dtype=torch.float64, requires_grad=True)
        out = probe(x)
        c0 = size // 2
        seg = out["seg"][0, :, :, c0 : c0 + period].sum()
        cells = slice(c0 // s, (c0 + period) // s)
        dots = out["heat"][0, :, :, cells].sum() + out["offset"][0, :, :, cells].sum()
        (grad,) = torch.autograd.grad(seg + dots, x)
        cols = (grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero().flatten()
        lo, hi = int(cols.min()), int(cols.max())
        if lo > 0 and hi < size - 1:
            return max(c0 - lo, hi - (c0 + period - 1))
        size *= 2
