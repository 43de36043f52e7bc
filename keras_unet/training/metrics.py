"""IoU and Dice metrics for sigmoid and softmax segmentation models.

Both accumulate a confusion matrix over the whole evaluation (not a mean of
per-batch values) and skip `ignore_class` pixels. For a 1-channel (sigmoid)
model the prediction is thresholded and the metric scores the foreground
class by default; for softmax models it takes the argmax and averages over
all classes. Classes absent from both the targets and the predictions are
left out of the average (their score is undefined), as in
`keras.metrics.MeanIoU`.

Keras has `MeanIoU` and `BinaryIoU`, but neither handles both model kinds
with an ignore class, and Keras has no Dice metric for masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_unet.training.targets import check_shapes, predicted_ids, sparse_targets


def confusion_matrix(y_true, y_pred_ids, num_classes: int, weights=None):
    """Confusion matrix of integer masks, rows = truth, columns = prediction.

    Args:
        y_true: int class ids, any shape.
        y_pred_ids: int predicted ids, the same shape.
        num_classes: Number of classes `n`.
        weights: Optional float weights of the same shape (0 skips a pixel).

    Returns:
        float32 `(n, n)` matrix of (weighted) pixel counts.
    """
    true = ops.one_hot(ops.reshape(y_true, (-1,)), num_classes)
    pred = ops.one_hot(ops.reshape(y_pred_ids, (-1,)), num_classes)
    if weights is not None:
        true = true * ops.reshape(ops.cast(weights, "float32"), (-1, 1))
    return ops.matmul(ops.transpose(true), pred)


def scores_from_confusion(matrix, kind: str):
    """Per-class IoU or Dice from a confusion matrix.

    Args:
        matrix: `(n, n)` confusion matrix (rows = truth).
        kind: `"iou"` (`TP / (TP + FP + FN)`) or `"dice"`
            (`2 TP / (2 TP + FP + FN)`).

    Returns:
        `(scores, defined)`: float32 `(n,)` scores and a boolean `(n,)` mask of
        the classes that occur in the targets or the predictions.
    """
    tp = ops.diagonal(matrix)
    fp = ops.sum(matrix, axis=0) - tp
    fn = ops.sum(matrix, axis=1) - tp
    num = 2.0 * tp if kind == "dice" else tp
    den = num + fp + fn
    return ops.divide_no_nan(num, den), ops.greater(den, 0)


class _ConfusionMetric(keras.metrics.Metric):
    """Accumulates a confusion matrix; subclasses choose IoU or Dice."""

    kind = "iou"

    def __init__(
        self,
        num_classes: int,
        class_ids: Sequence[int] | None = None,
        ignore_class: int | None = None,
        threshold: float = 0.5,
        from_logits: bool = False,
        name: str | None = None,
        dtype=None,
    ):
        super().__init__(name=name or self.kind, dtype=dtype)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 1 (the "
                             "model's output channels; 1 for a sigmoid model)")
        self.num_classes = num_classes
        self.ignore_class = ignore_class
        self.threshold = threshold
        self.from_logits = from_logits
        # A sigmoid model has two classes (background, foreground).
        self._n = max(2, num_classes)
        if class_ids is None:
            class_ids = [1] if num_classes == 1 else list(range(num_classes))
        bad = [c for c in class_ids if not 0 <= c < self._n]
        if bad:
            raise ValueError(
                f"class_ids {bad} are outside 0..{self._n - 1} for "
                f"num_classes={num_classes}."
            )
        self.class_ids = list(class_ids)
        self.matrix = self.add_variable(
            shape=(self._n, self._n), initializer="zeros", name="confusion_matrix"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        check_shapes(y_true, y_pred)
        ids, valid, _ = sparse_targets(y_true, self.ignore_class, self._n)
        pred = predicted_ids(y_pred, self.threshold, self.from_logits)
        if sample_weight is not None:
            weight = ops.cast(sample_weight, "float32")
            if len(weight.shape) > len(valid.shape):
                weight = ops.squeeze(weight, axis=-1)
            while len(weight.shape) < len(valid.shape):
                weight = ops.expand_dims(weight, axis=-1)
            valid = valid * weight
        self.matrix.assign_add(confusion_matrix(ids, pred, self._n, valid))

    def result(self):
        scores, defined = scores_from_confusion(self.matrix, self.kind)
        index = ops.convert_to_tensor(self.class_ids, dtype="int32")
        scores = ops.take(scores, index)
        defined = ops.cast(ops.take(defined, index), "float32")
        return ops.divide_no_nan(ops.sum(scores * defined), ops.sum(defined))

    def reset_state(self):
        self.matrix.assign(ops.zeros((self._n, self._n)))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "class_ids": self.class_ids,
            "ignore_class": self.ignore_class,
            "threshold": self.threshold,
            "from_logits": self.from_logits,
        }


@keras.saving.register_keras_serializable(package="keras_unet")
class IoU(_ConfusionMetric):
    """Intersection over union (Jaccard), averaged over `class_ids`.

    Args:
        num_classes: Output channels of the model (1 for sigmoid).
        class_ids: Classes to average; default: the foreground for a sigmoid
            model, every class for a softmax model. `[k]` gives the IoU of
            class k.
        ignore_class: Mask value of unlabelled pixels, or `None`.
        threshold: Probability threshold of a sigmoid model.
        from_logits: Whether the model outputs logits.
        name: Metric name (default `"iou"`).
        dtype: Keras dtype.

    Example:
        >>> model.compile(metrics=[IoU(num_classes=3, ignore_class=255)])
    """

    kind = "iou"


@keras.saving.register_keras_serializable(package="keras_unet")
class Dice(_ConfusionMetric):
    """Dice coefficient (F1 of pixels), averaged over `class_ids`.

    Takes the same arguments as `IoU`.
    """

    kind = "dice"

