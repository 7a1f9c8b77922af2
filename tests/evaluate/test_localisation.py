"""Pointing game and relevance mass on constructed maps and masks."""

import numpy as np
import pytest

from onnxpath.evaluate.localisation import pointing_game, relevance_mass, scaled_tolerance


def square_mask():
    mask = np.zeros((1, 20, 20), dtype=bool)
    mask[0, 5:10, 5:10] = True
    return mask


def test_pointing_game_hits_inside_and_within_the_tolerance():
    heat = np.zeros((1, 20, 20))
    heat[0, 7, 7] = 1.0
    assert pointing_game(heat, square_mask(), tolerance=0)[0] == 1
    heat = np.zeros((1, 20, 20))
    heat[0, 7, 12] = 1.0  # 3 px right of the mask's last column
    assert pointing_game(heat, square_mask(), tolerance=2.9)[0] == 0
    assert pointing_game(heat, square_mask(), tolerance=3)[0] == 1


def test_pointing_game_uses_the_ranking_key():
    heat = np.zeros((1, 20, 20))
    heat[0, 7, 7] = 1.0
    heat[0, 18, 18] = -2.0  # largest magnitude, negative: outside
    assert pointing_game(heat, square_mask(), tolerance=0, rank="signed")[0] == 1
    assert pointing_game(heat, square_mask(), tolerance=0, rank="abs")[0] == 0


def test_default_tolerance_is_15_px_at_224():
    assert scaled_tolerance((224, 224)) == 15
    assert scaled_tolerance((64, 64)) == pytest.approx(15 * 64 / 224)


def test_relevance_mass_counts_positive_relevance_inside():
    heat = np.zeros((1, 20, 20))
    heat[0, 6, 6] = 3.0  # inside
    heat[0, 0, 0] = 1.0  # outside
    heat[0, 1, 1] = -4.0  # negative: ignored unless ranking by magnitude
    assert relevance_mass(heat, square_mask())[0] == pytest.approx(0.75)
    assert relevance_mass(heat, square_mask(), rank="abs")[0] == pytest.approx(3 / 8)
    assert np.isnan(relevance_mass(np.zeros((1, 20, 20)), square_mask())[0])
