"""The mask convention shared by the losses and metrics.

Masks (`y_true`) hold integer class ids, shape `(B, H, W)` or `(B, H, W, 1)`:
`0..num_classes-1` for softmax models, `0`/`1` for sigmoid (1-channel)
models. Pixels equal to `ignore_class` (e.g. 255, or -1) count for nothing.
Predictions (`y_pred`) are `(B, H, W, num_classes)` probabilities (or logits
with `from_logits=True`).

Only `keras.ops` is used, so this works on every Keras backend.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def sparse_targets(y_true, ignore_class: int | None = None, num_classes: int | None = None):
    """Class ids and the valid-pixel mask of a batch of masks.

    Args:
        y_true: Class-id masks, `(B, H, W)` or `(B, H, W, 1)`, any dtype.
        ignore_class: Id of unlabelled pixels, or `None`.
        num_classes: Classes the predictions have (2 for sigmoid models);
            ids outside `0..num_classes-1` (other than `ignore_class`) are
            an error: a `ValueError` when the values are at hand (eager
            calls), and marked in `invalid` inside compiled functions.

    Returns:
        `(ids, valid, invalid)`: int32 ids of shape `(B, H, W)` with ignored
        and invalid pixels set to 0, a float32 mask of shape `(B, H, W)`
        that is 0 at ignored pixels and 1 elsewhere, and a float32 mask of
        the pixels whose id is out of range.

    Raises:
        ValueError: If concrete masks hold ids out of range.
    """
    values = ops.convert_to_tensor(y_true)
    if len(values.shape) == 4:
        values = ops.squeeze(values, axis=-1)
    rounded = ops.round(values) if "float" in str(values.dtype) else values
    fractional = ops.not_equal(rounded, values)  # 0.5 is no class id
    ids = ops.cast(rounded, "int32")
    valid = ops.ones_like(ids, dtype="bool") if ignore_class is None else ops.not_equal(
        ids, ignore_class)
    if num_classes is None:
        invalid = ops.zeros_like(ids, dtype="bool")
    else:
        invalid = ops.logical_and(valid, ops.logical_or(ops.less(ids, 0),
                                                        ops.greater_equal(ids, num_classes)))
        invalid = ops.logical_or(invalid, fractional)
        _refuse_concrete(values, invalid, num_classes, ignore_class)
    ids = ops.where(ops.logical_or(ops.logical_not(valid), invalid), 0, ids)
    return ids, ops.cast(valid, "float32"), ops.cast(invalid, "float32")


def _refuse_concrete(values, invalid, num_classes: int, ignore_class) -> None:
    """Raises for out-of-range or non-integer ids when the tensors hold
    values (not tracing)."""
    try:
        bad = np.asarray(ops.convert_to_numpy(values))[
            np.asarray(ops.convert_to_numpy(invalid))]
    except Exception:  # symbolic tensors (tf.function, jax.jit): checked in the graph
        return
    if not bad.size:
        return
    fractions = sorted({float(v) for v in bad.ravel() if v != np.round(v)})
    if fractions:
        raise ValueError(f"masks hold values {fractions[:5]} that are not class ids (whole "
                         "numbers): masks of probabilities or interpolated masks? Resize "
                         "masks with nearest neighbour")
    ids = sorted({int(v) for v in bad.ravel()})
    ignore = "" if ignore_class is None else f", and {ignore_class} = ignore"
    raise ValueError(f"masks hold class ids {ids[:5]} outside 0..{num_classes - 1} "
                     f"(the model has {num_classes} classes{ignore})")


def check_shapes(y_true, y_pred) -> None:
    """Checks that masks `(B, H, W[, 1])` fit predictions `(B, H, W, C)`.

    Raises:
        ValueError: Naming both shapes, if the ranks or known sizes differ.
    """
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    mask = true_shape[:-1] if len(true_shape) == 4 and true_shape[-1] == 1 else true_shape
    if len(mask) != 3 or len(pred_shape) != 4 or any(
            a is not None and b is not None and a != b for a, b in zip(mask, pred_shape)):
        raise ValueError(f"masks of shape {true_shape} do not fit predictions of shape "
                         f"{pred_shape}: masks must be (batch, height, width) or (batch, "
                         "height, width, 1) class ids of the predictions' batch and size")


def class_probabilities(y_pred, from_logits: bool = False):
    """Per-class probabilities and log-probabilities, sigmoid made two-class.

    A 1-channel (sigmoid) prediction `p` becomes the two channels
    `[1 - p, p]`, so binary and multi-class models share one formula.

    Args:
        y_pred: `(B, H, W, C)` probabilities, or logits if `from_logits`.
        from_logits: Whether `y_pred` holds logits.

    Returns:
        `(probs, log_probs)`, both float32 of shape `(B, H, W, max(C, 2))`.
    """
    y_pred = ops.cast(y_pred, "float32")
    eps = 1e-7
    if y_pred.shape[-1] == 1:
        if from_logits:
            log_probs = ops.concatenate(
                [ops.log_sigmoid(-y_pred), ops.log_sigmoid(y_pred)], axis=-1
            )
            return ops.exp(log_probs), log_probs
        p = ops.clip(y_pred, eps, 1.0 - eps)
        probs = ops.concatenate([1.0 - p, p], axis=-1)
        return probs, ops.log(probs)
    if from_logits:
        log_probs = ops.log_softmax(y_pred, axis=-1)
        return ops.exp(log_probs), log_probs
    probs = ops.clip(y_pred, eps, 1.0)
    return probs, ops.log(probs)


def predicted_ids(y_pred, threshold: float = 0.5, from_logits: bool = False):
    """Hard class ids from predictions: threshold for 1 channel, else argmax.

    Args:
        y_pred: `(B, H, W, C)` probabilities, or logits if `from_logits`.
        threshold: Probability above which a 1-channel prediction is class 1.
        from_logits: Whether `y_pred` holds logits.

    Returns:
        int32 ids of shape `(B, H, W)`.
    """
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] == 1:
        if from_logits:
            y_pred = ops.sigmoid(y_pred)
        return ops.cast(ops.greater(y_pred[..., 0], threshold), "int32")
    return ops.cast(ops.argmax(y_pred, axis=-1), "int32")
