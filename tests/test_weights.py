"""Tests for keras_unet.data.weights: class weights, the border weight map and the
target's pixel counts."""


import numpy as np
import PIL.Image
import pytest

from keras_unet.data.pairs import Dataset
from keras_unet.data.weights import (
    border_weight_map,
    class_weights_from_counts,
    target_pixel_counts,
)


def test_median_frequency_weights_and_their_square_root():
    counts = {0: 800, 1: 100, 2: 200, 4: 25}  # class 3 has no pixels
    # frequencies 800, 100, 200, 25 (of the same total): median 150
    assert class_weights_from_counts(counts, 5) == pytest.approx(
        [150 / 800, 1.5, 0.75, 0.0, 6.0])
    assert class_weights_from_counts(counts, 5, power=0.5) == pytest.approx(
        [(150 / 800) ** 0.5, 1.5 ** 0.5, 0.75 ** 0.5, 0.0, 6.0 ** 0.5])


def test_gap_between_two_objects_gets_the_papers_weight():
    instances = np.zeros((1, 11), np.uint16)
    instances[0, 0], instances[0, 10] = 1, 2
    weights = border_weight_map(instances, w0=10, sigma=5)
    # every gap pixel has d1 + d2 = 10
    np.testing.assert_allclose(weights[0, 1:10], 1 + 10 * np.exp(-100 / 50), rtol=1e-5)
    assert weights[0, 0] == weights[0, 10] == 1.0


def test_narrow_gaps_weigh_more_than_wide_ones():
    instances = np.zeros((1, 30), np.uint16)
    instances[0, 0], instances[0, 4], instances[0, 29] = 1, 2, 3
    weights = border_weight_map(instances)
    assert weights[0, 2] > weights[0, 16] > 1.0


def test_a_single_object_has_no_border_term_but_class_weights_apply():
    instances = np.zeros((5, 5), np.uint16)
    instances[1:3, 1:3] = 7
    weights = border_weight_map(instances, class_weights=np.array([0.5, 4.0]))
    assert weights[0, 0] == pytest.approx(0.5) and weights[1, 1] == pytest.approx(4.0)


def test_target_pixel_counts_count_the_boundary_class(tmp_path):
    """Two touching 4x3 objects: 10 rim pixels and 2 interior pixels each."""
    ids = np.zeros((10, 10), np.uint16)
    ids[2:6, 2:5], ids[2:6, 5:8] = 1, 2
    PIL.Image.fromarray((ids > 0).astype(np.uint8)).save(tmp_path / "mask.png")
    PIL.Image.fromarray(ids).save(tmp_path / "ids.png")
    dataset = Dataset([str(tmp_path / "image.png")], [str(tmp_path / "mask.png")],
                      ["_background_", "nucleus"], instances=[str(tmp_path / "ids.png")])
    assert target_pixel_counts(dataset, 2, "instances", width=1) == {0: 76, 1: 4, 2: 20}
    assert target_pixel_counts(dataset, 2, "semantic") == {0: 76, 1: 24}
