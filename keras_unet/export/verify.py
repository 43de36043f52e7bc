"""Verification of an exported model: agreement with Keras, and latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from keras_unet.data.instances import semantic_classes
from keras_unet.evaluation.scores import confusion, per_class_scores

# Minimum mask agreement (fraction of pixels with the same class) per precision.
DEFAULT_AGREEMENT = {"float32": 0.999, "float16": 0.999, "dynamic_int8": 0.99, "int8": 0.99}


@dataclass
class Agreement:
    """How closely an exported model reproduces the Keras model.

    Attributes:
        images: Number of verification images.
        max_abs_diff: Largest difference of the output probabilities.
        mask_agreement: Fraction of pixels with the same predicted class.
        mask_iou: Mean over classes of the IoU between the two masks.
    """

    images: int
    max_abs_diff: float
    mask_agreement: float
    mask_iou: float


def compare(keras_outputs: np.ndarray, exported_outputs: np.ndarray) -> Agreement:
    """Agreement of two batches of model outputs `(N, H, W, K)`.

    Every output channel counts as a class (an instance model's boundary
    class too), so this is the strictest comparison of the two models.

    Args:
        keras_outputs: Reference probabilities.
        exported_outputs: Exported model probabilities.

    Returns:
        An `Agreement`.
    """
    a = semantic_classes(keras_outputs)
    b = semantic_classes(exported_outputs)
    classes = max(2, keras_outputs.shape[-1])
    matrix = confusion(a, b, classes)
    ious = [s["iou"] for s in per_class_scores(matrix, [str(i) for i in range(classes)])[
        "classes"].values() if s["iou"] is not None]
    return Agreement(
        images=len(a),
        max_abs_diff=float(np.abs(keras_outputs - exported_outputs).max()),
        mask_agreement=float((a == b).mean()),
        mask_iou=float(np.mean(ious)),
    )


def check_min_agreement(value: float | None) -> None:
    """Checks a `--min-agreement` value.

    Raises:
        ValueError: Unless `None` or a number in [0, 1] (NaN is refused: it
            would switch the verification off).
    """
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"min_agreement (--min-agreement) must be a fraction in [0, 1], "
                         f"got {value!r}")


def median_latency_ms(fn, sample: np.ndarray, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of `fn(sample)` in milliseconds."""
    for _ in range(warmup):
        fn(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(sample)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))
