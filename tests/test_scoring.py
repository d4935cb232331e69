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


def test_invisible_true_dots_are_neither_hits_nor_misses():
    true = np.array([[10.0, 10.0], [30.0, 10.0], [50.0, 10.0]])
    visible = np.array([True, False, False])
    pred = np.array([[10.2, 10.0], [30.1, 10.0], [90.0, 90.0]])
    m = match_dots(pred, true, 2.0, visible=visible)
    # pred 1 sits on an invisible dot: ignored; the invisible dot at x=50 is not a miss
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.ignored_pred_index.tolist() == [1]
    assert m.true_index.tolist() == [0]
    # a perfect detector of the visible dots scores 1
    perfect = match_dots(true[visible], true, 2.0, visible=visible)
    assert dot_scores([(perfect, 20.0)]).f1 == 1.0
    with pytest.raises(ValueError, match="visible"):
        match_dots(pred, true, 2.0, visible=np.array([True]))


def test_match_radius_grows_with_the_true_dot():
    from models.scoring import match_radius_px

    r = match_radius_px(np.array([0.2, 1.0, np.nan]), 20.0)
    assert r.tolist() == pytest.approx([2.0, 3.0, 2.0])
    true = np.array([[0.0, 0.0], [100.0, 0.0]])
    pred = np.array([[1.9, 0.0], [101.9, 0.0]])
    m = match_dots(pred, true, np.array([1.5, 2.0]))
    assert m.tp == 1 and m.true_index.tolist() == [1]


def test_boundary_scores_tolerate_a_one_pixel_shift_of_a_strand():
    from models.scoring import boundary_scores, pool_boundary

    truth = np.zeros((20, 20), bool)
    truth[:, 10] = True  # a 1-px strand
    shifted = np.roll(truth, 1, axis=1)
    iou = (truth & shifted).sum() / (truth | shifted).sum()
    assert iou == 0.0
    b = boundary_scores(shifted, truth, 1)
    assert b.f1 == 1.0 and b.precision == 1.0 and b.recall == 1.0
    far = np.roll(truth, 3, axis=1)
    assert boundary_scores(far, truth, 1).f1 == 0.0
    half = truth.copy()
    half[10:] = False  # half of the strand found
    hb = boundary_scores(half, truth, 1)
    assert hb.precision == 1.0 and hb.recall == pytest.approx(0.55)  # the row next to the cut is within 1 px
    pooled = pool_boundary([b, hb])
    assert pooled.true_total == 40 and pooled.pred_total == 30
    assert np.isnan(boundary_scores(np.zeros((4, 4), bool), np.zeros((4, 4), bool)).f1)


def test_false_dots_are_put_down_to_the_nearest_lookalike_then_hair_then_skin():
    from models.scoring import false_dot_causes

    labels = np.ones((50, 80), np.uint8)
    labels[:, 60:] = 2
    labels[:5, :5] = 0
    false_xy = np.array([[10.0, 10.0], [30.0, 30.0], [70.0, 20.0], [2.0, 2.0], [40.0, 10.0]])
    la_xy = np.array([[11.0, 10.5], [39.0, 10.0], [70.0, 40.0]])
    kinds = np.array(["pores", "cut_ends", "crease_junctions"])
    got = false_dot_causes(false_xy, la_xy, kinds, labels, radius_px=2.0)
    assert got.tolist() == ["pores", "skin", "hair", "background", "cut_ends"]
    assert false_dot_causes(np.zeros((0, 2)), la_xy, kinds, labels, 2.0).tolist() == []
    assert false_dot_causes(false_xy[:2], np.zeros((0, 2)), np.zeros(0, str), labels, 2.0).tolist() == ["skin", "skin"]


def test_class_counts_pool_to_the_iou_and_the_tolerant_score():
    from models.scoring import boundary_scores, class_counts, confusion

    truth = np.zeros((6, 6), np.uint8)
    truth[:, 3:] = 2
    pred = np.roll(truth, 1, axis=1)  # hair one pixel too far right
    b = boundary_scores(pred == 2, truth == 2, 1)
    c = class_counts("hair", 2, confusion(pred, truth), b)
    assert c["hair_inter"] == 12 and c["hair_union"] == 24  # columns 4-5 shared; 0 (wrapped) and 3 on one side only
    assert (c["hair_pred_near"], c["hair_pred_total"], c["hair_true_near"], c["hair_true_total"]) == (
        b.pred_near,
        b.pred_total,
        b.true_near,
        b.true_total,
    )
