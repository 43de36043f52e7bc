"""Tests for keras_unet.evaluation.scores: pixel scores and DSB2018 object scores,
against hand-built cases whose scores are computed by hand."""

import numpy as np
import pytest

from keras_unet.evaluation.scores import (
    IOU_THRESHOLDS,
    ObjectScores,
    confusion,
    format_confusion,
    format_scores,
    headline_scores,
    image_foreground_dice,
    object_scores,
    overlaps,
    per_class_scores,
)


def blocks(*boxes, shape=(20, 20)):
    """An id map with object k+1 on box k: `(top, left, bottom, right)`, exclusive."""
    ids = np.zeros(shape, np.int32)
    for k, (top, left, bottom, right) in enumerate(boxes, start=1):
        ids[top:bottom, left:right] = k
    return ids


def test_a_perfect_prediction_scores_one_at_every_threshold():
    truth = blocks((0, 0, 5, 5), (10, 10, 15, 18))
    scores = object_scores(truth, truth * 7)  # the numbering does not matter
    assert scores.ap == [1.0] * 10 and scores.mean_ap == 1.0
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 0)
    assert (scores.missed, scores.split, scores.merged) == (0, 0, 0)


def test_an_object_split_in_two_is_one_split_and_misses_its_match():
    truth = blocks((0, 0, 10, 10))
    predicted = blocks((0, 0, 10, 5), (0, 5, 10, 10))  # each half: IoU 0.5, not > 0.5
    scores = object_scores(truth, predicted)
    assert scores.split == 1 and scores.merged == 0 and scores.missed == 0
    assert (scores.tp, scores.fp, scores.fn) == (0, 2, 1)
    assert scores.mean_ap == 0.0


def test_two_objects_merged_into_one_count_as_merged():
    truth = blocks((0, 0, 10, 5), (0, 5, 10, 10))
    predicted = blocks((0, 0, 10, 10))
    scores = object_scores(truth, predicted)
    assert scores.merged == 2 and scores.split == 0
    assert (scores.tp, scores.fp, scores.fn) == (0, 1, 2)


def test_ap_counts_a_match_only_above_each_threshold():
    truth = blocks((0, 0, 10, 10))  # 100 pixels
    predicted = blocks((0, 0, 10, 7))  # 70 pixels inside: IoU 0.7
    scores = object_scores(truth, predicted)
    expected = [1.0 if 0.7 > t else 0.0 for t in IOU_THRESHOLDS]  # TP/(TP+FP+FN)
    assert scores.ap == expected
    assert scores.mean_ap == pytest.approx(np.mean(expected))


def test_partial_match_with_a_false_positive_and_a_miss():
    truth = blocks((0, 0, 10, 10), (12, 12, 16, 16))
    predicted = blocks((0, 0, 10, 10), (0, 15, 3, 19))  # one exact, one where nothing is
    scores = object_scores(truth, predicted)
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 1)
    assert scores.ap == [1 / 3] * 10 and scores.missed == 1
    assert scores.f1 == pytest.approx(2 / 4)


def test_an_empty_image_predicted_empty_scores_one_and_a_false_alarm_zero():
    empty = np.zeros((8, 8), np.int32)
    assert object_scores(empty, empty).mean_ap == 1.0
    assert object_scores(empty, blocks((0, 0, 2, 2), shape=(8, 8))).mean_ap == 0.0
    assert object_scores(blocks((0, 0, 2, 2), shape=(8, 8)), empty).missed == 1


def test_ignored_pixels_count_for_neither_side():
    truth = blocks((0, 0, 10, 10))
    predicted = blocks((0, 0, 10, 10), (15, 15, 18, 18))
    ignore = np.zeros(truth.shape, bool)
    ignore[14:, 14:] = True
    assert object_scores(truth, predicted, ignore).fp == 0
    assert object_scores(truth, predicted).fp == 1


def test_scores_pool_over_images_with_ap_averaged_per_image():
    one = object_scores(blocks((0, 0, 5, 5)), blocks((0, 0, 5, 5)))
    other = object_scores(blocks((0, 0, 5, 5)), np.zeros((20, 20), np.int32))
    pooled = ObjectScores().add(one).add(other)
    assert pooled.images == 2 and pooled.mean_ap == 0.5
    assert (pooled.tp, pooled.fn) == (1, 1)
    assert ObjectScores.from_dict(pooled.as_dict()) == pooled


def test_overlaps_count_shared_pixels_with_row_and_column_zero_for_none():
    truth = np.array([[1, 1, 0], [2, 2, 0]])
    predicted = np.array([[5, 0, 0], [5, 5, 5]])
    np.testing.assert_array_equal(overlaps(truth, predicted), [[1, 1], [1, 1], [0, 2]])


def test_confusion_refuses_shapes_and_ids_that_do_not_fit():
    with pytest.raises(ValueError, match=r"truth \(2, 2\) and prediction \(2, 3\)"):
        confusion(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="prediction holds class ids 0..3 outside 0..1"):
        confusion(np.zeros((2, 2)), np.array([[0, 3], [0, 0]]), 2)
    assert confusion(np.array([[255, 1]]), np.array([[0, 1]]), 2).sum() == 1


def test_foreground_dice_averages_all_classes_but_background():
    matrix = np.array([[5, 1, 0], [1, 3, 0], [0, 0, 2]])
    scores = per_class_scores(matrix, ["_background_", "a", "b"])
    assert scores["foreground_dice"] == pytest.approx(np.mean([6 / 8, 1.0]))


def test_an_image_with_no_foreground_on_either_side_ranks_as_perfect():
    empty = confusion(np.zeros((4, 4), int), np.zeros((4, 4), int), 2)
    assert per_class_scores(empty, ["_background_", "fg"])["foreground_dice"] is None
    assert image_foreground_dice(per_class_scores(empty, ["_background_", "fg"])) == 1.0
    truth = np.zeros((4, 4), int)
    truth[0, :2] = 1  # two true pixels, one found, one false alarm: 2 / (2 + 2)
    predicted = np.zeros((4, 4), int)
    predicted[0, 1:3] = 1
    half = per_class_scores(confusion(truth, predicted, 2), ["_background_", "fg"])
    assert image_foreground_dice(half) == pytest.approx(0.5)
    false_alarm = per_class_scores(confusion(np.zeros((4, 4), int), predicted, 2),
                                   ["_background_", "fg"])
    assert image_foreground_dice(false_alarm) == 0.0


def test_multi_class_scores_as_benchmarks_report_them():
    """A street-scene map (no _background_): by hand, from a 3x3 matrix."""
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 255])
    predicted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 1])  # the 255 pixel counts for nothing
    matrix = confusion(truth, predicted, 3)
    np.testing.assert_array_equal(matrix, [[3, 1, 0], [0, 2, 1], [1, 0, 1]])
    scores = per_class_scores(matrix, ["Sky", "Road", "Car"])
    iou = [3 / 5, 2 / 4, 1 / 3]  # tp / (row + column - tp)
    assert [c["iou"] for c in scores["classes"].values()] == pytest.approx(iou)
    assert scores["mean_iou"] == pytest.approx(np.mean(iou))
    assert scores["pixel_accuracy"] == pytest.approx(6 / 9)
    assert scores["class_accuracy"] == pytest.approx(np.mean([3 / 4, 2 / 3, 1 / 2]))
    # No background class, so no foreground scores: the headline is mIoU.
    assert scores["foreground_dice"] is None and not scores["background"]
    assert headline_scores(scores)[0] == pytest.approx(np.mean(iou))
    text = format_scores(scores)
    assert "class accuracy  0.639" in text and "foreground" not in text


def test_the_confusion_table_stays_readable_with_a_dozen_classes():
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
             "Car", "Pedestrian", "Bicyclist", "A-very-long-class-name-indeed"]
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 10**7, (12, 12))
    lines = format_confusion(matrix, names).splitlines()
    assert len(lines) == 13 and max(map(len, lines)) <= 110
    row = lines[4].split()  # id 3, Road
    assert row[:2] == ["3", "Road"] and int(row[-1]) == matrix[3].sum()
    assert sum(map(float, row[2:-1])) == pytest.approx(100, abs=0.6)  # 12 roundings
    assert float(row[2 + 3]) == pytest.approx(100 * matrix[3, 3] / matrix[3].sum(), abs=0.05)
