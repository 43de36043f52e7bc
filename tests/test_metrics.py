"""Tests for keras_unet.training.metrics against hand-computed confusion matrices."""

import keras
import numpy as np
import pytest

from keras_unet import Dice, IoU
from keras_unet.training.metrics import confusion_matrix

pytestmark = pytest.mark.portable


def score(metric, y_true, y_pred, sample_weight=None):
    metric.update_state(y_true, y_pred, sample_weight)
    return float(keras.ops.convert_to_numpy(metric.result()))


TRUE = np.array([[[0, 1, 2, 2], [1, 1, 0, 255]]])
PRED_IDS = np.array([[[0, 1, 1, 2], [1, 0, 0, 2]]])
PRED = np.eye(3)[PRED_IDS].astype("float32")
# Confusion matrix over the 7 labelled pixels (rows truth, columns prediction):
#   truth 0: pred 0, 0        -> [2, 0, 0]
#   truth 1: pred 1, 1, 0     -> [1, 2, 0]
#   truth 2: pred 1, 2        -> [0, 1, 1]
CM = np.array([[2, 0, 0], [1, 2, 0], [0, 1, 1]])
IOU = np.array([2 / 3, 2 / 4, 1 / 2])
DICE = np.array([4 / 5, 4 / 6, 2 / 3])


def test_confusion_matrix_matches_hand_count():
    valid = (TRUE != 255).astype("float32")
    ids = np.where(TRUE == 255, 0, TRUE)
    cm = keras.ops.convert_to_numpy(confusion_matrix(ids, PRED_IDS, 3, valid))
    np.testing.assert_array_equal(cm, CM)


def test_mean_iou_and_dice_skip_the_ignore_class():
    assert score(IoU(3, ignore_class=255), TRUE, PRED) == pytest.approx(IOU.mean())
    assert score(Dice(3, ignore_class=255), TRUE, PRED) == pytest.approx(DICE.mean())


def test_per_class_scores_with_class_ids():
    for k in range(3):
        assert score(IoU(3, class_ids=[k], ignore_class=255), TRUE, PRED) == pytest.approx(
            IOU[k]
        )


def test_sigmoid_metrics_threshold_and_score_the_foreground():
    y = np.array([[[0, 1, 1, 0]]])
    p = np.array([[[[0.7], [0.9], [0.4], [0.1]]]])
    # foreground: TP 1, FP 1, FN 1
    assert score(IoU(1), y, p) == pytest.approx(1 / 3)
    assert score(Dice(1), y, p) == pytest.approx(2 / 4)
    assert score(IoU(1, threshold=0.3), y, p) == pytest.approx(2 / 3)


def test_metrics_accumulate_over_batches_not_average_them():
    metric = IoU(1)
    metric.update_state(np.array([[[1, 1]]]), np.array([[[[0.9], [0.9]]]]))  # IoU 1
    metric.update_state(np.array([[[0, 1]]]), np.array([[[[0.9], [0.1]]]]))  # IoU 0
    assert float(keras.ops.convert_to_numpy(metric.result())) == pytest.approx(2 / 4)
    metric.reset_state()
    assert float(keras.ops.convert_to_numpy(metric.result())) == 0.0


def test_empty_truth_predicted_empty_leaves_the_class_out():
    y = np.zeros((1, 2, 2))
    assert score(IoU(1), y, np.zeros((1, 2, 2, 1))) == 0.0
    # background and class 2 defined; class 1 absent from both is skipped
    assert score(IoU(3), np.array([[[0, 2]]]), np.eye(3)[[[[0, 2]]]]) == 1.0


def test_pixel_sample_weights_weight_the_counts():
    y = np.array([[[0, 1]]])
    p = np.array([[[[0.9], [0.9]]]])  # one FP (weight 0 here), one TP
    assert score(IoU(1), y, p, sample_weight=np.array([[[0.0, 1.0]]])) == 1.0


def test_invalid_class_ids_are_rejected():
    with pytest.raises(ValueError, match="class_ids"):
        IoU(3, class_ids=[3])


def test_metrics_serialize_with_their_options():
    metric = Dice(4, class_ids=[1, 2], ignore_class=255)
    clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert (clone.class_ids, clone.ignore_class, clone.num_classes) == ([1, 2], 255, 4)


@pytest.mark.parametrize("classes", [0, -1, 2.5, True])
def test_metrics_refuse_a_class_count_that_is_not_a_positive_integer(classes):
    for metric in (IoU, Dice):
        with pytest.raises(ValueError, match=r"num_classes=.* must be an integer >= 1"):
            metric(classes)


def test_metrics_refuse_masks_of_another_size_and_ids_out_of_range():
    with pytest.raises(ValueError, match=r"masks of shape \(1, 1, 3\) do not fit"):
        IoU(3).update_state(np.zeros((1, 1, 3)), np.full((1, 1, 2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"class ids \[4\] outside 0..2"):
        Dice(3).update_state(np.array([[[0, 4]]]), np.full((1, 1, 2, 3), 1 / 3))
