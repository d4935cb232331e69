"""Tests of models.scoring: confusion, IoU/Dice, one-to-one dot matching."""
from __future__ import annotations

import numpy as np
import pytest

from models.scoring import confusion, dot_scores, match_dots, region_scores


def test_confusion_ignores_255_and_counts_rows_as_truth():
    truth = np.array([[0, 1, 2, 255]], np.uint8)
    pred = np.array([[0, 2, 2, 1]], np.uint8)
    cm = confusion(pred, truth)
    assert cm.sum() == 3
    assert cm[1, 2] == 1 and cm[2, 2] == 1 and cm[0, 0] == 1


def test_region_scores_match_hand_computation():
    cm = np.array([[8, 2, 0], [1, 6, 3], [0, 1, 9]])
    rs = region_scores(cm)
    assert rs.iou[1] == pytest.approx(6 / (6 + 3 + 4))
    assert rs.dice[2] == pytest.approx(2 * 9 / (2 * 9 + 3 + 1))
    assert rs.miou_scalp_hair == pytest.approx((6 / 13 + 9 / 13) / 2)


def test_absent_class_is_nan_not_zero():
    rs = region_scores(np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]]))
    assert np.isnan(rs.iou[2]) and rs.miou_scalp_hair == 1.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ"):
        confusion(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))


def test_matching_is_one_to_one_and_within_radius():
    true = np.array([[10.0, 10.0], [20.0, 10.0], [50.0, 50.0]])
    pred = np.array([[10.5, 10.0], [11.0, 10.0], [19.0, 10.0], [80.0, 80.0]])
    m = match_dots(pred, true, radius_px=2.0)
    assert m.tp == 2 and m.fp == 2 and m.fn == 1
    pairs = dict(zip(m.true_index.tolist(), m.pred_index.tolist()))
    assert pairs == {0: 0, 1: 2}
    assert np.all(m.distance_px <= 2.0)


def test_matching_prefers_more_matches_over_a_closer_single_pair():
    # pred 0 is closest to true 0, but taking it would leave true 1 unmatched
    true = np.array([[0.0, 0.0], [1.8, 0.0]])
    pred = np.array([[0.9, 0.0], [-0.9, 0.0]])
    m = match_dots(pred, true, radius_px=1.0)
    assert m.tp == 2


def test_empty_inputs_and_pooled_scores():
    m = match_dots(np.zeros((0, 2)), np.array([[1.0, 1.0]]), 1.0)
    assert (m.tp, m.fp, m.fn) == (0, 0, 1)
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 500, (400, 2))
    pred = true + rng.normal(0, 0.3, true.shape)
    s = dot_scores([(match_dots(pred, true, 2.0), 20.0)])
    assert s.f1 == 1.0
    assert s.to_dict()["dot_loc_error_mm_median"] == pytest.approx(np.median(np.hypot(*(pred - true).T)) / 20, rel=1e-9)
