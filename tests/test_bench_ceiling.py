"""The benchmark's decision ceiling: what one significance threshold could reach on the candidates."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from bench_assess import decision_ceiling  # noqa: E402


def _photo(cands, true_xy, visible):
    """``cands``: (x, y, significance, passes the other tests) rows; true dots of radius 2 px."""
    c = np.array(cands, float).reshape(-1, 4)
    return {
        "xy": c[:, :2],
        "significance": c[:, 2],
        "others_pass": c[:, 3].astype(bool),
        "true_xy": np.array(true_xy, float).reshape(-1, 2),
        "radius": np.full(len(true_xy), 2.0),
        "visible": np.array(visible, bool),
    }


def test_the_ceiling_pools_photos_and_takes_the_best_threshold() -> None:
    # photo 1: 4 visible dots; candidates on 3 of them (the one at x=20 refused by a strand test) and two
    # false ones. Photo 2: 2 visible dots, one found, a hidden dot (counts neither way), a strong false one
    a = _photo(
        [(0, 0, 9, 1), (10, 0, 5, 1), (20, 0, 8, 0), (50, 50, 3, 1), (60, 60, 7, 1)],
        [(0, 0), (10, 0), (20, 0), (30, 0)],
        [True] * 4,
    )
    b = _photo([(0, 0, 4, 1), (10, 0, 6, 1), (80, 80, 20, 1)], [(0, 0), (10, 0), (40, 40)], [True, False, True])
    c = decision_ceiling([a, None, b])
    assert c["candidate_recall"] == pytest.approx(4 / 6)
    assert c["candidate_recall_other_tests"] == pytest.approx(3 / 6)
    # admitted from the strongest: 20 (false), 9 (dot), 7 (false), 6 (hidden), 5 (dot), 4 (dot), 3 (false):
    # F1 = 2 tp / (6 + tp + fp), best at 4 with tp 3 and fp 2: 6 / 11
    assert c["best_threshold_f1"] == pytest.approx(6 / 11)
    assert c["best_threshold"] == pytest.approx(4.0)


def test_a_refused_candidate_does_not_take_a_dot_from_an_admitted_one() -> None:
    # the weak candidate sits on the dot, the strong one 1.5 px off: above the weak one's significance
    # the strong one is matched and the ceiling is a perfect 1
    c = decision_ceiling([_photo([(0, 0, 2, 1), (1.5, 0, 9, 1)], [(0, 0)], [True])])
    assert c["best_threshold_f1"] == pytest.approx(1.0)


def test_no_visible_dot_gives_no_ceiling() -> None:
    c = decision_ceiling([_photo([(0, 0, 9, 1)], [(5, 5)], [False])])
    assert c["candidate_recall"] is None and c["best_threshold_f1"] is None
