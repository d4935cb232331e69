"""The flags' stick: aged dots read clearly beyond the flag thresholds, and the scoring leaves out the
dots whose true value is within the margin of a threshold."""

import numpy as np
import pytest

from data.card import load_card
from data.config import load_settings
from data.flags import decided_flags, flag_dots, load_flag_settings
from data.synth.camera import draw_camera
from data.synth.closeup import single_closeup
from data.synth.generate import item_rng
from data.synth.settings import SynthSettings


def test_decided_flags_leave_out_the_margin_around_each_threshold():
    rules = load_flag_settings()
    t_b, t_c, t_d = rules.blue_index_min, rules.faded_contrast_dl_max, rules.spread_diameter_mm_min
    mb, mc, md = rules.flag_margin_blue_index, rules.flag_margin_contrast_dl, rules.flag_margin_diameter_mm
    bi = np.array([t_b - mb - 0.1, t_b - mb + 0.1, t_b, t_b + mb - 0.1, t_b + mb + 0.1, np.nan])
    dl = np.array([t_c - mc - 0.1, t_c - mc + 0.1, t_c, t_c + mc - 0.1, t_c + mc + 0.1, np.nan])
    d = np.array([t_d - md - 0.01, t_d - md + 0.01, t_d, t_d + md - 0.01, t_d + md + 0.01, np.nan])
    dec = decided_flags(bi, dl, d, rules)
    for f in ("blue_shift", "faded", "spread"):
        assert getattr(dec, f).tolist() == [True, False, False, False, True, False], f
    # a margin of 0 decides every finite value
    zero = rules.model_copy(update={"flag_margin_blue_index": 0.0})
    assert decided_flags(bi, dl, d, zero).blue_shift[:5].all()


def test_aged_dots_read_clearly_beyond_the_flag_thresholds():
    """A third of the aged dots are drawn blue, faded or spread: they must read so in the truth, clear
    of the scoring margin (blue-aged dots used to read under the blue flag's threshold)."""
    cfg = load_settings(
        SynthSettings,
        None,
        [
            "image.width=480",
            "image.height=360",
            "camera.px_per_mm=[35, 35]",
            "card.probability=0",
            "dots.aged_fraction=[0.9, 0.9]",
            "dots.coverage=[1, 1]",
            "dots.merged_fraction=[0, 0]",
            "hair.long_fraction=[0, 0]",
            "hair.follicle_density_per_cm2=[20, 20]",
            "skin.fitzpatrick=[2, 2]",
        ],
        default="synth/closeup.yaml",
    )
    rules = load_flag_settings()
    dots = single_closeup(item_rng(5, 0), cfg, load_card(), rules, draw_camera).dots
    assert len(dots) > 60
    flags = flag_dots(dots.blue_index, dots.contrast_dL, dots.diameter_mm, rules)
    dec = decided_flags(dots.blue_index, dots.contrast_dL, dots.diameter_mm, rules)
    # about 0.9 / 3 of the dots were aged blue: most read blue beyond the margin
    assert (flags.blue_shift & dec.blue_shift).mean() > 0.2
    assert (flags.spread & dec.spread).mean() > 0.2
    assert (flags.faded & dec.faded).mean() > 0.15
    # and few dots sit within the blue flag's margin
    assert (~dec.blue_shift).mean() < 0.1


@pytest.mark.parametrize("flag", ["blue_shift", "faded", "spread"])
def test_flag_margins_are_configured(flag):
    rules = load_flag_settings()
    margin = {
        "blue_shift": rules.flag_margin_blue_index,
        "faded": rules.flag_margin_contrast_dl,
        "spread": rules.flag_margin_diameter_mm,
    }[flag]
    assert margin > 0


def test_a_core_too_dark_for_a_hue_is_never_flagged_blue():
    rules = load_flag_settings()
    bi, dl, d = np.array([9.0, 9.0, 9.0]), np.array([20.0, 20.0, 20.0]), np.array([0.2, 0.2, 0.2])
    lstar = np.array([rules.blue_min_lstar - 1, rules.blue_min_lstar + 1, np.nan])
    assert flag_dots(bi, dl, d, rules, lstar=lstar).blue_shift.tolist() == [False, True, False]
    assert decided_flags(bi, dl, d, rules, lstar=lstar).blue_shift.tolist() == [False, True, False]
    # without a lightness the blue index alone decides; the other flags never look at it
    assert flag_dots(bi, dl, d, rules).blue_shift.all()
    assert flag_dots(bi, np.full(3, 5.0), np.full(3, 0.6), rules, lstar=lstar).faded.all()
