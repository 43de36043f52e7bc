"""Segmentation losses that understand class-id masks and an ignore class.

Keras ships `losses.Dice`, `Tversky` and the focal cross-entropies, but they
take one-hot targets, cannot skip unlabelled pixels, and `Dice` returns its
maximum (1.0) for an empty mask predicted perfectly. The losses here take
class-id masks (see `keras_unet.training.targets`), skip `ignore_class` pixels, work
for sigmoid (1 channel) and softmax (N channels) models alike, and return 0
for a perfect prediction, empty masks included.

Every loss returns a per-pixel map `(B, H, W)`; ignored pixels are 0 and
valid ones are scaled so that Keras' default reduction averages over the
valid pixels only. Per-pixel `sample_weight` maps (class weights, the U-Net
border weight map) therefore work as in any Keras loss. Region losses
(Dice, Tversky) are computed per image and spread over its valid pixels.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_unet.training.targets import check_shapes, class_probabilities, sparse_targets


class SegmentationLoss(keras.losses.Loss):
    """Base class: decodes targets and predictions, reduces over valid pixels.

    Subclasses implement `pixel_loss(probs, log_probs, one_hot, valid,
    binary)`, returning a `(B, H, W)` map; `binary` is True for 1-channel
    (sigmoid) predictions, whose probabilities arrive as two channels
    `[1 - p, p]`.

    Args:
        ignore_class: Mask value of unlabelled pixels (e.g. 255 or -1), or
            `None`.
        from_logits: Whether the model outputs logits.
        name: Loss name.
        reduction: Keras reduction.
        dtype: Keras dtype of the computation.
    """

    def __init__(
        self,
        ignore_class: int | None = None,
        from_logits: bool = False,
        name: str | None = None,
        reduction: str = "sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_class = ignore_class
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        check_shapes(y_true, y_pred)
        classes = max(2, y_pred.shape[-1])
        ids, valid, invalid = sparse_targets(y_true, self.ignore_class, classes)
        probs, log_probs = class_probabilities(y_pred, self.from_logits)
        one_hot = ops.one_hot(ids, probs.shape[-1]) * valid[..., None]
        binary = y_pred.shape[-1] == 1
        losses = self.pixel_loss(probs, log_probs, one_hot, valid, binary)
        # Out-of-range ids inside a compiled step: a NaN loss, which stops
        # training with a message about class ids (never a silent 0).
        losses = ops.where(invalid > 0, float("nan"), losses)
        # Keras divides by all pixels; rescale so it divides by valid ones.
        total = ops.cast(ops.size(valid), "float32")
        scale = ops.divide_no_nan(total, ops.sum(valid))
        return losses * valid * scale

    def pixel_loss(self, probs, log_probs, one_hot, valid, binary):
        """Returns the `(B, H, W)` loss map; implemented by subclasses."""
        raise NotImplementedError

    def get_config(self):
        return {
            **super().get_config(),
            "ignore_class": self.ignore_class,
            "from_logits": self.from_logits,
        }


def cross_entropy_map(log_probs, one_hot, gamma: float = 0.0):
    """Per-pixel (focal) cross-entropy `-(1 - p_t)**gamma * log(p_t)`.

    Args:
        log_probs: `(B, H, W, C)` log-probabilities.
        one_hot: `(B, H, W, C)` one-hot targets (zero rows are ignored pixels).
        gamma: Focusing parameter; 0 gives plain cross-entropy.

    Returns:
        `(B, H, W)` loss map.
    """
    log_pt = ops.sum(one_hot * log_probs, axis=-1)
    if gamma == 0:
        return -log_pt
    return -ops.power(1.0 - ops.exp(log_pt), gamma) * log_pt


def tversky_map(
    probs, one_hot, valid, binary: bool, alpha: float, beta: float, smooth: float
):
    """Per-image Tversky loss spread over the pixels: `(B, H, W)`.

    The Tversky index of class c is `(TP + s) / (TP + alpha FP + beta FN + s)`
    with soft counts summed over the image; `alpha = beta = 0.5` is Dice. For
    a sigmoid model only the foreground channel counts; for softmax models
    the classes are averaged.

    Args:
        probs: `(B, H, W, C)` probabilities (C = 2 for sigmoid models).
        one_hot: `(B, H, W, C)` one-hot targets, zero at ignored pixels.
        valid: `(B, H, W)` valid-pixel mask.
        binary: Whether the model is a 1-channel (sigmoid) model.
        alpha: Weight of false positives.
        beta: Weight of false negatives.
        smooth: Added to numerator and denominator, so that an empty mask
            predicted empty scores 1 (loss 0).

    Returns:
        `(B, H, W)` map holding `1 - mean_c index_c` of each image.
    """
    if binary:
        probs, one_hot = probs[..., 1:], one_hot[..., 1:]
    probs = probs * valid[..., None]
    tp = ops.sum(probs * one_hot, axis=(1, 2))
    fp = ops.sum(probs * (1.0 - one_hot), axis=(1, 2))
    fn = ops.sum((1.0 - probs) * one_hot, axis=(1, 2))
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    loss = 1.0 - ops.mean(index, axis=-1)
    return ops.broadcast_to(loss[:, None, None], ops.shape(valid))


def dice_map(probs, one_hot, valid, binary: bool, smooth: float):
    """Per-image soft Dice loss `1 - (2 TP + s) / (2 TP + FP + FN + s)`.

    Dice is the Tversky index with `alpha = beta = 0.5`; halving `smooth`
    there gives exactly this formula. Arguments as in `tversky_map`.
    """
    return tversky_map(probs, one_hot, valid, binary, 0.5, 0.5, smooth / 2)


def _check_options(loss, **values) -> None:
    """Refuses option values that would make the loss meaningless.

    Raises:
        ValueError: For a value that is not a finite number >= 0, or a
            `smooth` that is not > 0 (it keeps an empty mask's Dice defined).
    """
    for name, value in values.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0 or (
                name == "smooth" and value == 0):
            expected = "a finite number > 0" if name == "smooth" else "a finite number >= 0"
            raise ValueError(f"{type(loss).__name__}({name}={value!r}): expected {expected}")


@keras.saving.register_keras_serializable(package="keras_unet")
class CrossEntropyLoss(SegmentationLoss):
    """Binary or sparse categorical cross-entropy over valid pixels.

    Example:
        >>> model.compile(loss=CrossEntropyLoss(ignore_class=255))
    """

    def pixel_loss(self, probs, log_probs, one_hot, valid, binary):
        return cross_entropy_map(log_probs, one_hot)


@keras.saving.register_keras_serializable(package="keras_unet")
class FocalLoss(SegmentationLoss):
    """Focal cross-entropy (Lin et al., 2017) over valid pixels.

    Args:
        gamma: Focusing parameter; 0 is plain cross-entropy.
        **kwargs: See `SegmentationLoss`.
    """

    def __init__(self, gamma: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        _check_options(self, gamma=gamma)
        self.gamma = gamma

    def pixel_loss(self, probs, log_probs, one_hot, valid, binary):
        return cross_entropy_map(log_probs, one_hot, self.gamma)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="keras_unet")
class TverskyLoss(SegmentationLoss):
    """Tversky loss (Salehi et al., 2017), per image, classes averaged.

    Args:
        alpha: Weight of false positives.
        beta: Weight of false negatives (> alpha favours recall, which helps
            small structures).
        smooth: Smoothing added to numerator and denominator.
        **kwargs: See `SegmentationLoss`.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        _check_options(self, alpha=alpha, beta=beta, smooth=smooth)
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def pixel_loss(self, probs, log_probs, one_hot, valid, binary):
        return tversky_map(
            probs, one_hot, valid, binary, self.alpha, self.beta, self.smooth
        )

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "smooth": self.smooth,
        }


@keras.saving.register_keras_serializable(package="keras_unet")
class DiceLoss(SegmentationLoss):
    """Soft Dice loss, `1 - (2 TP + s) / (2 TP + FP + FN + s)`, per image.

    Args:
        smooth: Smoothing added to numerator and denominator; an empty mask
            predicted empty gives loss 0.
        **kwargs: See `SegmentationLoss`.
    """

    def __init__(self, smooth: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        _check_options(self, smooth=smooth)
        self.smooth = smooth

    def pixel_loss(self, probs, log_probs, one_hot, valid, binary):
        return dice_map(probs, one_hot, valid, binary, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="keras_unet")
class DiceCELoss(SegmentationLoss):
    """Cross-entropy plus Dice, the default of nnU-Net (1:1).

    Dice alone is unstable on small or empty structures; cross-entropy alone
    under-segments rare classes. Their sum is the recommended default.

    Args:
        dice_weight: Weight of the Dice term.
        ce_weight: Weight of the cross-entropy term.
        smooth: Dice smoothing.
        **kwargs: See `SegmentationLoss`.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        smooth: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_options(self, dice_weight=dice_weight, ce_weight=ce_weight, smooth=smooth)
        self.dice_weight, self.ce_weight, self.smooth = dice_weight, ce_weight, smooth

    def pixel_loss(self, probs, log_probs, one_hot, valid, binary):
        dice = dice_map(probs, one_hot, valid, binary, self.smooth)
        return self.ce_weight * cross_entropy_map(log_probs, one_hot) + (
            self.dice_weight * dice
        )

    def get_config(self):
        return {
            **super().get_config(),
            "dice_weight": self.dice_weight,
            "ce_weight": self.ce_weight,
            "smooth": self.smooth,
        }


LOSSES = {
    "dice_ce": DiceCELoss,
    "dice": DiceLoss,
    "cross_entropy": CrossEntropyLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
}


def get_loss(name: str, **kwargs) -> SegmentationLoss:
    """Instantiates a loss by its short name.

    Args:
        name: One of `"dice_ce"`, `"dice"`, `"cross_entropy"`, `"focal"`,
            `"tversky"`.
        **kwargs: Passed to the loss class (e.g. `ignore_class=255`).

    Returns:
        The loss object.

    Raises:
        ValueError: If `name` is not a known loss.
    """
    if name not in LOSSES:
        raise ValueError(
            f"loss={name!r} is not supported; expected one of "
            f"{', '.join(repr(k) for k in LOSSES)}."
        )
    return LOSSES[name](**kwargs)
