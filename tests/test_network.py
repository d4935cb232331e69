"""Networks: shapes for any size, learning, backbone weights files, losses, receptive field."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torchvision.models import mobilenet_v3_small

from data.config import ConfigError, settings_from_mapping
from models.losses import LossSettings, heat_focal_loss, offset_l1_loss, soft_dice_loss, total_loss
from models.network import (
    BackboneWeightsError,
    ModelSettings,
    SegDotNet,
    build_model,
    prepare_for_inference,
    receptive_field,
)
from models.targets import dot_targets

SMALL = {
    "unet_mnv3": {
        "arch": "unet_mnv3",
        "width_mult": 0.5,
        "decoder_channels": (8, 8, 16, 16),
        "head_channels": 8,
        "refine_channels": 8,
    },
    "lraspp": {
        "arch": "lraspp",
        "width_mult": 0.25,
        "decoder_channels": (8, 8, 16, 16),
        "head_channels": 8,
        "refine_channels": 8,
        "lraspp_inter_channels": 16,
    },
}


def small_model(arch: str = "unet_mnv3", **overrides) -> SegDotNet:
    torch.manual_seed(0)
    return build_model(ModelSettings(**{**SMALL[arch], **overrides}))


def synthetic_batch(size: int = 48, batch: int = 2) -> dict[str, torch.Tensor]:
    """Scalp disc on a background, dark hair lines, dark dots at known centres."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    mask = torch.zeros(batch, size, size, dtype=torch.int64)
    image = torch.zeros(batch, 3, size, size)
    points = torch.full((batch, 8, 2), math.nan)
    n_points = torch.zeros(batch, dtype=torch.int64)
    for b in range(batch):
        cx, cy = size / 2 + b * 3.0, size / 2 - b * 2.0
        scalp = (xx - cx) ** 2 + (yy - cy) ** 2 < (size * 0.4) ** 2
        hair = scalp & ((xx - 0.6 * yy - 5 * b).abs() < 1.0)
        mask[b][scalp] = 1
        mask[b][hair] = 2
        image[b] = torch.tensor([0.2, 0.3, 0.5]).view(3, 1, 1)
        image[b][:, scalp] = torch.tensor([0.85, 0.7, 0.6]).view(3, 1)
        image[b][:, hair] = 0.1
        pts = (torch.rand(4, 2, generator=g) - 0.5) * size * 0.4 + torch.tensor([cx, cy])
        for k, (px, py) in enumerate(pts.tolist()):
            dot = (xx - px) ** 2 + (yy - py) ** 2 < 4.0
            image[b][:, dot] = torch.tensor([0.3, 0.3, 0.35]).view(3, 1)
            points[b, k] = torch.tensor([px, py])
        n_points[b] = 4
    mask[:, 0, :] = 255  # an unlabelled row, as padding would leave
    return {"image": image, "mask": mask, "points": points, "n_points": n_points}


@pytest.mark.parametrize("arch", ["unet_mnv3", "lraspp"])
@pytest.mark.parametrize("dot_stride", [1, 2])
@pytest.mark.parametrize("shape", [(1, 97, 131), (1, 33, 47), (2, 64, 64), (1, 5, 3)])
def test_output_shapes_any_size(arch, dot_stride, shape):
    model = small_model(arch, dot_stride=dot_stride).eval()
    b, h, w = shape
    with torch.no_grad():
        out = model(torch.rand(b, 3, h, w))
    hs, ws = math.ceil(h / dot_stride), math.ceil(w / dot_stride)
    assert out["seg"].shape == (b, 3, h, w)
    assert out["heat"].shape == (b, 1, hs, ws)
    assert out["offset"].shape == (b, 2, hs, ws)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert model.dot_stride == dot_stride and model.settings.arch == arch


def test_encoder_strides_and_defaults():
    for stride in (8, 16, 32):
        model = build_model(ModelSettings(encoder_stride=stride))
        assert model.total_stride == stride
        with torch.no_grad():
            assert model.eval()(torch.rand(1, 3, 37, 41))["seg"].shape == (1, 3, 37, 41)
    params = sum(p.numel() for p in build_model().parameters())
    assert 1e5 < params < 2e6


def test_settings_are_frozen_and_validated():
    settings = ModelSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.arch = "lraspp"
    for bad in ({"se_kernel": 4}, {"arch": "resnet"}, {"dot_stride": 4}, {"unknown": 1}, {"width_mult": 0}):
        with pytest.raises(ConfigError):
            settings_from_mapping(ModelSettings, bad)


def test_rejects_wrong_input():
    with pytest.raises(ValueError, match="Bx3xHxW"):
        small_model()(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("arch", ["unet_mnv3", "lraspp"])
def test_optimiser_steps_lower_the_loss(arch):
    model = small_model(arch).train()
    batch = synthetic_batch()
    settings = LossSettings()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def step() -> float:
        optimiser.zero_grad()
        loss, parts = total_loss(model(batch["image"]), batch, settings)
        assert set(parts) == {"seg_ce", "seg_dice", "heat", "offset", "total"}
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    first = step()
    for _ in range(4):
        last = step()
    assert math.isfinite(first) and last < first


def test_focal_loss_is_zero_safe():
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    heat, offset, mask = dot_targets(torch.full((2, 3, 2), math.nan), (16, 16), 2)
    assert heat.sum() == 0 and mask.sum() == 0
    loss = heat_focal_loss(logits, heat)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    off = offset_l1_loss(torch.randn(2, 2, 8, 8, requires_grad=True), offset, mask)
    assert float(off.detach()) == 0.0
    # perfect predictions give (almost) no loss; far-off ones a large one
    pts = torch.tensor([[[5.0, 6.0]], [[9.3, 2.2]]])
    heat, _, _ = dot_targets(pts, (16, 16), 2)
    good = torch.where(heat >= 1, 20.0, -20.0)
    assert float(heat_focal_loss(good, heat)) < 1e-6 < float(heat_focal_loss(-good, heat))


def test_total_loss_without_dots_and_unknown_dots():
    model = small_model()
    batch = synthetic_batch()
    batch["n_points"] = torch.zeros(2, dtype=torch.int64)
    loss, _ = total_loss(model(batch["image"]), batch, LossSettings())
    loss.backward()
    assert torch.isfinite(loss)
    # images whose dots are unknown contribute no dot loss at all
    batch = synthetic_batch()
    batch["has_points"] = torch.tensor([False, False])
    _, parts = total_loss(model(batch["image"]), batch, LossSettings(heat_weight=1.0))
    assert float(parts["offset"]) == 0.0


def test_segmentation_losses_ignore_unlabelled_pixels():
    logits = torch.randn(1, 3, 6, 6)
    mask = torch.full((1, 6, 6), 255, dtype=torch.int64)
    batch = {"mask": mask, "points": torch.full((1, 1, 2), math.nan), "n_points": torch.zeros(1, dtype=torch.int64)}
    outputs = {"seg": logits, "heat": torch.zeros(1, 1, 3, 3), "offset": torch.zeros(1, 2, 3, 3)}
    _, parts = total_loss(outputs, batch, LossSettings(class_weights=(1.0, 2.0, 3.0)))
    assert float(parts["seg_ce"]) == 0.0 and float(parts["seg_dice"]) == pytest.approx(0.0)
    perfect = torch.nn.functional.one_hot(torch.zeros(1, 6, 6, dtype=torch.int64), 3).permute(0, 3, 1, 2) * 50.0
    assert float(soft_dice_loss(perfect, torch.zeros(1, 6, 6, dtype=torch.int64))) < 1e-3


def test_backbone_weights_file_loads(tmp_path):
    source = small_model()
    with torch.no_grad():
        source.backbone[0][0].weight.add_(1.0)
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = build_model(ModelSettings(**SMALL["unet_mnv3"], backbone_weights=path))
    assert torch.equal(loaded.backbone[0][0].weight, source.backbone[0][0].weight)
    assert torch.equal(loaded.backbone[3].block[0][0].weight, source.backbone[3].block[0][0].weight)

    # a whole torchvision classifier's state_dict (features.* + classifier.*) loads too
    classifier = mobilenet_v3_small(weights=None, width_mult=0.5)
    torch.save(classifier.state_dict(), path)
    loaded = build_model(ModelSettings(**SMALL["unet_mnv3"], backbone_weights=path))
    assert torch.equal(loaded.backbone[1].block[0][0].weight, classifier.features[1].block[0][0].weight)


def test_wrong_backbone_weights_file_is_a_clear_error(tmp_path):
    wrong_width = tmp_path / "wide.pt"
    torch.save(mobilenet_v3_small(weights=None, width_mult=1.0).state_dict(), wrong_width)
    with pytest.raises(BackboneWeightsError, match="shape"):
        build_model(ModelSettings(**SMALL["unet_mnv3"], backbone_weights=wrong_width))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneWeightsError, match="not a readable"):
        build_model(ModelSettings(**SMALL["unet_mnv3"], backbone_weights=garbage))
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(BackboneWeightsError, match="keys do not match"):
        build_model(ModelSettings(**SMALL["unet_mnv3"], backbone_weights=other))
    with pytest.raises(BackboneWeightsError, match="not found"):
        build_model(ModelSettings(**SMALL["unet_mnv3"], backbone_weights=tmp_path / "missing.pt"))


@pytest.mark.parametrize("arch", ["unet_mnv3", "lraspp"])
def test_prepared_model_computes_the_same(arch):
    model = small_model(arch).eval()
    with torch.no_grad():  # give BN non-trivial statistics so folding is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    fast = prepare_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        a, b = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


def test_receptive_field_bounds_the_dependency():
    model = small_model(encoder_stride=8, se_kernel=3).eval()
    reach = receptive_field(model)
    assert 8 < reach < 100
    size = 2 * reach + 40
    x = torch.rand(1, 3, size, size)
    c = 16 * (size // 32)  # a stride-aligned centre pixel
    with torch.no_grad():
        base = model(x)["seg"][0, :, c, c]
        far = x.clone()
        far[..., :, c + reach + 1 :] = torch.rand_like(far[..., :, c + reach + 1 :])
        near = x.clone()
        near[..., c, c + reach // 2] += 0.5
        assert torch.equal(model(far)["seg"][0, :, c, c], base)
        assert not torch.equal(model(near)["seg"][0, :, c, c], base)
