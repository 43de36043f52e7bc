"""Tests for keras_unet.training.losses against hand-computed values."""

import keras
import numpy as np
import pytest

from keras_unet import CrossEntropyLoss, DiceCELoss, DiceLoss, FocalLoss, TverskyLoss
from keras_unet.training.losses import get_loss

pytestmark = pytest.mark.portable

# One 2x2 image: truth [[0, 1], [1, ignore]], sigmoid probabilities below.
Y_BINARY = np.array([[[0, 1], [1, 255]]])
P_BINARY = np.array([[[[0.2], [0.9]], [[0.6], [0.1]]]], dtype="float32")
# Soft counts over the three valid pixels (the ignored one must not count).
TP, FP, FN = 0.9 + 0.6, 0.2, 0.1 + 0.4


def value(loss, y_true, y_pred):
    return float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))


def test_binary_cross_entropy_skips_the_ignore_class():
    expected = -(np.log(0.8) + np.log(0.9) + np.log(0.6)) / 3
    assert value(CrossEntropyLoss(ignore_class=255), Y_BINARY, P_BINARY) == pytest.approx(
        expected, rel=1e-5
    )


def test_dice_loss_matches_the_formula_on_valid_pixels():
    expected = 1 - (2 * TP + 1) / (2 * TP + FP + FN + 1)
    assert value(DiceLoss(ignore_class=255), Y_BINARY, P_BINARY) == pytest.approx(
        expected, rel=1e-5
    )


def test_tversky_loss_weights_false_positives_and_negatives():
    expected = 1 - (TP + 1) / (TP + 0.3 * FP + 0.7 * FN + 1)
    loss = TverskyLoss(alpha=0.3, beta=0.7, ignore_class=255)
    assert value(loss, Y_BINARY, P_BINARY) == pytest.approx(expected, rel=1e-5)


def test_focal_loss_down_weights_easy_pixels():
    pt = np.array([0.8, 0.9, 0.6])
    expected = np.mean(-((1 - pt) ** 2) * np.log(pt))
    loss = FocalLoss(gamma=2.0, ignore_class=255)
    assert value(loss, Y_BINARY, P_BINARY) == pytest.approx(expected, rel=1e-5)


def test_dice_ce_is_the_sum_of_its_terms():
    ce = value(CrossEntropyLoss(ignore_class=255), Y_BINARY, P_BINARY)
    dice = value(DiceLoss(ignore_class=255), Y_BINARY, P_BINARY)
    assert value(DiceCELoss(ignore_class=255), Y_BINARY, P_BINARY) == pytest.approx(
        ce + dice, rel=1e-5
    )


def test_softmax_losses_use_class_ids():
    y = np.array([[[0, 2], [1, -1]]])
    p = np.array([[[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.3, 0.5, 0.2], [1, 0, 0]]]])
    expected_ce = -(np.log(0.7) + np.log(0.8) + np.log(0.5)) / 3
    assert value(CrossEntropyLoss(ignore_class=-1), y, p) == pytest.approx(
        expected_ce, rel=1e-5
    )
    valid = p[0].reshape(-1, 3)[:3]
    onehot = np.eye(3)[[0, 2, 1]]
    tp = (valid * onehot).sum(0)
    fp = (valid * (1 - onehot)).sum(0)
    fn = ((1 - valid) * onehot).sum(0)
    expected_dice = 1 - np.mean((2 * tp + 1) / (2 * tp + fp + fn + 1))
    assert value(DiceLoss(ignore_class=-1), y, p) == pytest.approx(expected_dice, rel=1e-5)


def test_perfect_prediction_of_an_empty_mask_has_zero_dice_loss():
    empty = np.zeros((2, 4, 4))
    assert value(DiceLoss(), empty, np.zeros((2, 4, 4, 1))) == pytest.approx(0, abs=1e-5)


def test_false_positives_on_an_empty_mask_are_penalized():
    empty = np.zeros((1, 4, 4))
    pred = np.full((1, 4, 4, 1), 0.5)
    expected = 1 - 1 / (16 * 0.5 + 1)
    assert value(DiceLoss(), empty, pred) == pytest.approx(expected, rel=1e-5)


def test_perfect_prediction_gives_near_zero_losses():
    y = np.array([[[0, 1], [2, 1]]])
    p = np.eye(3)[y].astype("float32")
    for loss in (DiceLoss(), CrossEntropyLoss(), DiceCELoss(), FocalLoss()):
        assert value(loss, y, p) == pytest.approx(0, abs=1e-4)


def test_from_logits_equals_probabilities():
    logits = np.array([[[[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]]]], dtype="float32")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = np.array([[[0, 2]]])
    a = value(DiceCELoss(from_logits=True), y, logits)
    b = value(DiceCELoss(), y, probs)
    assert a == pytest.approx(b, rel=1e-4)


def test_pixel_sample_weights_scale_the_cross_entropy():
    y = np.array([[[0, 1]]])
    p = np.array([[[[0.2], [0.6]]]], dtype="float32")
    weights = np.array([[[3.0, 1.0]]])
    expected = (-3 * np.log(0.8) - np.log(0.6)) / 2
    loss = CrossEntropyLoss()(y, p, sample_weight=weights)
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-5)


def test_get_loss_rejects_unknown_names():
    assert isinstance(get_loss("dice_ce", ignore_class=255), DiceCELoss)
    with pytest.raises(ValueError, match="loss='iou'"):
        get_loss("iou")


def test_losses_serialize_with_their_options():
    loss = DiceCELoss(dice_weight=2.0, ignore_class=255, from_logits=True)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (clone.dice_weight, clone.ignore_class, clone.from_logits) == (2.0, 255, True)


@pytest.mark.parametrize("loss", [DiceCELoss(), CrossEntropyLoss(), DiceLoss()],
                         ids=["dice_ce", "ce", "dice"])
def test_masks_of_another_size_than_the_predictions_are_a_value_error(loss):
    with pytest.raises(ValueError, match=r"masks of shape \(1, 2, 3\) do not fit "
                                         r"predictions of shape \(1, 2, 2, 1\)"):
        loss(np.zeros((1, 2, 3)), np.full((1, 2, 2, 1), 0.5, "float32"))


def test_class_ids_the_model_does_not_have_are_an_error_not_a_zero_loss():
    three_classes = np.full((1, 2, 2, 3), 1 / 3, "float32")
    with pytest.raises(ValueError, match=r"class ids \[3, 7\] outside 0..2"):
        DiceCELoss(ignore_class=255)(np.array([[[0, 3], [7, 255]]]), three_classes)
    with pytest.raises(ValueError, match=r"class ids \[2\] outside 0..1"):  # sigmoid model
        CrossEntropyLoss()(np.array([[[0, 2], [1, 1]]]), np.full((1, 2, 2, 1), .5, "float32"))


def test_out_of_range_ids_inside_a_compiled_function_give_a_nan_loss():
    """In a traced training step the values are not at hand: the loss turns
    NaN, which stops training with a message about class ids."""
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        pytest.skip("traced with tf.function")
    loss = DiceCELoss(ignore_class=255)
    traced = tf.function(lambda y, p: loss(y, p))
    p = np.full((1, 2, 2, 3), 1 / 3, "float32")
    assert np.isnan(float(traced(np.array([[[0, 5], [1, 255]]]), p)))
    assert np.isfinite(float(traced(np.array([[[0, 2], [1, 255]]]), p)))


def test_masks_of_fractions_are_an_error_not_class_zero():
    sigmoid = np.full((1, 2, 2, 1), 0.5, "float32")
    with pytest.raises(ValueError, match=r"values \[0.5\] that are not class ids"):
        DiceCELoss(ignore_class=255)(np.array([[[0.0, 0.5], [1.0, 1.0]]], "float32"), sigmoid)
    # Whole numbers stored as floats are class ids.
    assert np.isfinite(value(DiceCELoss(), np.array([[[0.0, 1.0], [1.0, 0.0]]]), sigmoid))


@pytest.mark.parametrize("make, message", [
    (lambda: DiceLoss(smooth=-1), r"DiceLoss\(smooth=-1\): expected a finite number > 0"),
    (lambda: DiceLoss(smooth=0), r"smooth=0\): expected a finite number > 0"),
    (lambda: TverskyLoss(alpha=float("nan")), r"alpha=nan\): expected a finite number >= 0"),
    (lambda: FocalLoss(gamma=-2), r"FocalLoss\(gamma=-2\)"),
    (lambda: DiceCELoss(ce_weight="1"), r"ce_weight='1'\)"),
])
def test_meaningless_loss_options_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
