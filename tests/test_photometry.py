"""data.photometry: the photo's exposure and white balance taken out before the network."""

import numpy as np
import pytest

from data.colour import linear_to_srgb, srgb_to_linear
from data.photometry import normalise_input, skin_point_gains, white_point_gains, white_point_normalise


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # skin-like tones with texture and a few dark dots; nothing clipped
    base = np.array([140.0, 110.0, 90.0])
    img = base + rng.normal(0, 10, (120, 160, 3))
    img[rng.random((120, 160)) < 0.05] *= 0.3
    return np.clip(img, 0, 255).astype(np.uint8)


def _taken(rgb: np.ndarray, gains) -> np.ndarray:
    lin = srgb_to_linear(rgb / 255.0) * np.asarray(gains)
    return np.clip(np.round(linear_to_srgb(np.clip(lin, 0, 1)) * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("how", ["white_point", "skin_point"])
@pytest.mark.parametrize("gains", [(2.0, 2.0, 2.0), (0.5, 0.5, 0.5), (1.15, 1.0, 0.85)])
def test_a_gain_per_channel_cancels(gains, how):
    rgb = _scene()
    a = normalise_input(rgb, how).astype(int)
    b = normalise_input(_taken(rgb, gains), how).astype(int)
    assert np.abs(a - b).max() <= 3 and np.abs(a - b).mean() < 1.0
    # ... while the photo as it is differs by far more
    assert np.abs(rgb.astype(int) - _taken(rgb, gains).astype(int)).mean() > 5


def test_gains_are_bounded_and_none_is_the_photo_itself():
    black = np.zeros((10, 10, 3), np.uint8)
    assert np.allclose(white_point_gains(black), 1.0)
    dim = np.full((10, 10, 3), 3, np.uint8)
    assert white_point_gains(dim).max() == pytest.approx(32.0)
    rgb = _scene(1)
    assert normalise_input(rgb, "none") is rgb
    with pytest.raises(ValueError, match="unknown input normalisation"):
        normalise_input(rgb, "gray_world")
    with pytest.raises(ValueError, match="uint8"):
        white_point_normalise(rgb.astype(np.float32))


def test_a_model_that_asks_for_it_sees_the_same_photo_under_another_light():
    import torch

    from models.inference import predict_image
    from models.network import ModelSettings, build_model

    torch.manual_seed(0)
    settings = dict(
        width_mult=0.5,
        encoder_stride=8,
        se_kernel=3,
        decoder_channels=(8, 8, 16, 16),
        head_channels=8,
        refine_channels=8,
    )
    rgb, darker = _scene(2), _taken(_scene(2), (0.5, 0.45, 0.4))
    agree = {}
    for how in ("none", "white_point"):
        torch.manual_seed(0)
        model = build_model(ModelSettings(**settings, input_norm=how)).eval()
        with torch.no_grad():
            model.seg_head.out.weight.normal_(0.0, 1.0)
        a, b = predict_image(model, rgb).labels, predict_image(model, darker).labels
        agree[how] = float((a == b).mean())
    assert agree["white_point"] > 0.97 and agree["white_point"] > agree["none"]


def test_percentile_chooses_the_white_point():
    from data.photometry import normalise_input, white_point_normalise

    rng = np.random.default_rng(5)
    # a dense-hair close-up in miniature: 95% dark hair, 5% bright skin
    rgb = np.where(rng.random((60, 60, 1)) < 0.95, np.array([40, 30, 25]), np.array([200, 160, 140])).astype(np.uint8)
    p90 = normalise_input(rgb, "white_point", 90.0)
    p99 = normalise_input(rgb, "white_point", 99.0)
    assert np.array_equal(p99, white_point_normalise(rgb, 99.0))
    assert np.array_equal(normalise_input(rgb, "white_point"), white_point_normalise(rgb))  # 90 by default
    # at 90 the hair is taken for the white and brightened to it; at 99 the skin is, and the hair stays dark
    hair = rgb[..., 0] == 40
    assert p90[hair].mean() > 150 and p99[hair].mean() < 80


def test_the_skin_point_is_read_on_the_skin_between_dense_strands():
    """Dark strands over three quarters of the frame: the median lands on hair, the median of the photo
    with its hair closed on the skin between the strands."""
    rng = np.random.default_rng(3)
    skin = np.array([190.0, 150.0, 130.0])
    img = np.tile(skin, (200, 200, 1)) + rng.normal(0, 3, (200, 200, 3))
    for x in range(0, 200, 8):  # strands 6 px wide, 2 px of skin between
        img[:, x : x + 6] = (40.0, 30.0, 25.0)
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    on_skin = white_point_gains(np.tile(skin, (20, 20, 1)).astype(np.uint8), 50)
    assert np.allclose(skin_point_gains(rgb, 50), on_skin, rtol=0.1)
    assert (white_point_gains(rgb, 50) > 3 * on_skin).all()
