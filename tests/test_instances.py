"""Tests for keras_unet.data.instances and the pipeline's boundary target."""

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import squares

from keras_unet.data.instances import (
    MIN_OBJECT_SIZE,
    area_weighted_diameter,
    boundary_target,
    label_instances,
    median_object_diameter,
    min_object_size,
    object_diameters,
    remove_small,
    semantic_classes,
)
from keras_unet.data.pipeline import boundary_target as graph_boundary_target


def touching_discs(shape=(40, 60)):
    """Two discs of radius 9 whose edges touch along a vertical line."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ids = np.zeros(shape, np.int32)
    ids[(yy - 20) ** 2 + (xx - 20) ** 2 <= 81] = 1
    ids[((yy - 20) ** 2 + (xx - 38) ** 2 <= 81) & (ids == 0)] = 2
    return ids


def test_a_wider_boundary_leaves_a_smaller_interior():
    ids = np.zeros((9, 9), np.int32)
    ids[1:8, 1:8] = 1
    mask = (ids > 0).astype(np.uint8)
    assert (boundary_target(mask, ids, 2, width=1) == 1).sum() == 25  # 5x5 inside
    assert (boundary_target(mask, ids, 2, width=2) == 1).sum() == 9  # 3x3 inside


def test_boundary_is_the_object_pixels_next_to_another_object_or_the_background():
    ids = np.zeros((5, 7), np.int32)
    ids[1:4, 1:4] = 1
    ids[1:4, 4:6] = 2
    mask = (ids > 0).astype(np.uint8)
    target = boundary_target(mask, ids, boundary_id=2)
    expected = np.zeros((5, 7), np.uint8)
    expected[1:4, 1:6] = 2
    expected[2, 2] = 1  # the one pixel of object 1 with all 8 neighbours in it
    np.testing.assert_array_equal(target, expected)


def test_ignored_pixels_stay_ignored_and_the_image_edge_is_no_boundary():
    ids = np.ones((4, 4), np.int32)
    mask = np.ones((4, 4), np.uint8)
    mask[0, 0] = 255
    target = boundary_target(mask, ids, boundary_id=2)
    assert target[0, 0] == 255 and (target[mask != 255] == 1).all()


@pytest.mark.parametrize("width", [1, 2, 3])
def test_the_pipeline_computes_the_same_target_in_the_graph(width):
    ids = touching_discs()
    mask = (ids > 0).astype(np.uint8)
    mask[:3, :3] = 255
    graph = graph_boundary_target(tf.constant(mask[None, ..., None]),
                                  tf.constant(ids[None, ..., None]), 2, width)
    expected = boundary_target(mask, ids, 2, width)
    np.testing.assert_array_equal(graph.numpy()[0, ..., 0], expected)
    # touching objects are 2 * width boundary pixels apart along the contact row
    row = expected[20]
    assert ((row == 1).astype(int).sum() > 0) and np.sum(row[20:40] == 2) >= 2 * width


def probabilities_of(target, num_classes=2, confidence=0.9):
    """Softmax outputs that put `confidence` on the target class."""
    classes = num_classes + 1
    probs = np.full((*target.shape, classes), (1 - confidence) / (classes - 1), np.float32)
    np.put_along_axis(probs, target[..., None].astype(np.int64), confidence, -1)
    return probs


def test_touching_objects_come_out_separated_and_whole():
    ids = touching_discs()
    target = boundary_target((ids > 0).astype(np.uint8), ids, 2)
    found, classes = label_instances(probabilities_of(target), "instances", min_size=1)
    assert found.max() == 2
    majority = []
    for k in (1, 2):  # each true disc is one found object, boundary pixels included
        values, counts = np.unique(found[ids == k], return_counts=True)
        majority.append(values[counts.argmax()])
        assert counts.max() >= (ids == k).sum() - 1  # the one contact pixel is a tie
    assert sorted(majority) == [1, 2]
    assert (found > 0).sum() == (ids > 0).sum()
    np.testing.assert_array_equal(classes, [0, 1, 1])


def test_an_unsure_neck_of_interior_does_not_join_two_seeds():
    """Two confident interiors joined by a neck the model calls interior at
    0.55 (the argmax, but below the seed threshold): two objects, not one."""
    target = np.zeros((20, 40), np.uint8)
    target[4:16, 4:16] = target[4:16, 24:36] = 1
    target[9:11, 16:24] = 1  # the neck
    probs = probabilities_of(target)
    probs[9:11, 16:24] = [0.25, 0.55, 0.2]
    assert label_instances(probs, "instances", seed_threshold=0.5)[0].max() == 1
    found, _ = label_instances(probs, "instances")
    assert found.max() == 2
    assert (found > 0).sum() == (target > 0).sum()  # the neck is shared out, not lost


def test_the_seed_threshold_counts_the_object_classes_together():
    """A pixel torn between two object classes is still a sure interior."""
    probs = np.zeros((12, 12, 4), np.float32)
    probs[...] = [0.94, 0.02, 0.02, 0.02]
    probs[3:9, 3:9] = [0.1, 0.4, 0.45, 0.05]  # 0.85 interior, mostly class 2
    found, classes = label_instances(probs, "instances")
    assert found.max() == 1 and (found > 0).sum() == 36
    np.testing.assert_array_equal(classes, [0, 2])


def test_a_semantic_model_merges_touching_objects_into_one():
    ids = touching_discs()
    probs = np.where((ids > 0)[..., None], 0.9, 0.1).astype(np.float32)
    found, _ = label_instances(probs, "semantic", min_size=1)
    assert found.max() == 1


def test_objects_too_small_for_an_interior_are_kept_and_specks_dropped():
    target = np.zeros((20, 20), np.uint8)
    target[2:4, 2:4] = 2  # a 2x2 object: all boundary, no interior
    target[10, 10] = 2  # a one-pixel speck
    found, _ = label_instances(probabilities_of(target), "instances", min_size=4)
    assert found.max() == 1 and (found > 0).sum() == 4


def test_semantic_classes_give_boundary_pixels_their_object_class():
    probs = np.array([[[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]], np.float32)
    # 3 classes + boundary: the first pixel is boundary, most likely class 2
    np.testing.assert_array_equal(semantic_classes(probs, "instances"), [[2, 0]])
    np.testing.assert_array_equal(semantic_classes(probs, "semantic"), [[3, 0]])
    np.testing.assert_array_equal(semantic_classes(np.array([[[0.2], [0.8]]])), [[0, 1]])


def test_remove_small_renumbers_the_objects_left():
    ids = np.array([[1, 1, 0, 3], [1, 0, 0, 3], [0, 5, 0, 3]])
    np.testing.assert_array_equal(remove_small(ids, 3), [[1, 1, 0, 2], [1, 0, 0, 2],
                                                         [0, 0, 0, 2]])


@pytest.mark.parametrize("target", ["semantic", "instances"])
def test_an_empty_prediction_has_no_objects(target):
    channels = 3 if target == "instances" else 1
    probs = np.zeros((8, 8, channels), np.float32)
    if target == "instances":
        probs[..., 0] = 1
    found, classes = label_instances(probs, target)
    assert found.max() == 0 and list(classes) == [0]


def test_the_diameter_of_a_square_is_that_of_the_disc_of_its_area():
    np.testing.assert_allclose(object_diameters(squares([10, 20])),
                               [math.sqrt(4 * 100 / math.pi), math.sqrt(4 * 400 / math.pi)])
    assert median_object_diameter(squares([10, 20, 30])) == pytest.approx(
        math.sqrt(4 * 400 / math.pi))
    assert median_object_diameter(np.zeros((4, 4), np.uint16)) is None


def test_the_area_weighted_diameter_is_where_half_the_area_lies():
    # Areas 1, 1, 1, 1 and 16 (diameters as given): half of the 20 units of
    # area lies in the one large object.
    assert area_weighted_diameter(np.array([1.0, 1.0, 4.0, 1.0, 1.0])) == 4.0
    # 3 + 3 + 4 (areas 9, 9, 16 of 34): the cumulative area passes 17 at the second 3.
    assert area_weighted_diameter(np.array([3.0, 4.0, 3.0])) == 3.0
    assert area_weighted_diameter(np.zeros(0)) is None


def test_the_smallest_object_is_a_circle_of_a_fraction_of_the_small_training_objects():
    recorded = {"median_diameter": 17.22, "range": [8.52, 34.34]}
    # 0.9 x 8.52 (the 10th percentile) = 7.67 px across: 46 pixels; predicted at
    # twice the size, 3.83 px at the image's own scale: 12 pixels.
    assert min_object_size(recorded) == 46
    assert min_object_size(recorded, factor=2.0) == 12
    assert min_object_size(recorded, factor=0.5) == 185
    assert min_object_size(recorded, fraction=0.5) == round(math.pi / 4 * 4.26**2) == 14
    assert min_object_size({"range": [1.0, 2.0]}, factor=4.0) == 1  # never 0
    # Many small objects (a low 10th percentile) keep a low limit, whatever the median.
    assert min_object_size({"median_diameter": 40.0, "range": [4.0, 60.0]}) == 10
    assert min_object_size(None, factor=2.0) == MIN_OBJECT_SIZE
