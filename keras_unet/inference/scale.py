"""Objects at the training scale: rescale an image whose objects are not.

A model learns the object sizes it was trained on. A model that records them
(`object_size` in a bundled model's card, a run's `object_size.json` or an
export's sidecar: the median equivalent diameter of the training objects
and their 10th-90th percentile range, in pixels) can be run on images of
another magnification: the image is resized so that its objects have the
training median diameter, predicted, and the probabilities are resized
back, so masks and objects come out at the image's own size.

The object size of a new image is given (`object_size=PIXELS`), or
estimated (`"auto"`) by a first prediction at the image's own scale: the
median diameter of the objects it finds. Within `TOLERANCE` of the training
median the first prediction is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_unet.data.instances import label_instances, median_object_diameter

# Resize factors beyond these would leave too few pixels, or blow up memory.
MIN_FACTOR, MAX_FACTOR = 0.25, 4.0
# Objects within this factor of the training median are predicted as they
# are. Measured with the bundled model on 8 sample images shown at 0.5x and
# 2x: rescaling outside 1.4x matched as many or more objects of the 1x
# prediction than not rescaling in all 16 cases (0.5x: 11 -> 27 of 29 on
# one image); keeping the whole 10th-90th percentile training range
# (8.6-34 px) as "in range" left half of the 0.5x cases unimproved.
TOLERANCE = 1.4


def rescale_factor(image_size: float, model_size: dict) -> float:
    """The resize factor that brings objects of `image_size` to the model's.

    Args:
        image_size: Median object diameter in the image, in pixels.
        model_size: The model's `object_size`: `{"median_diameter": px,
            "range": [low, high]}`.

    Returns:
        1.0 within `TOLERANCE` of the training median, else
        `median / image_size`, within [`MIN_FACTOR`, `MAX_FACTOR`].
    """
    median = model_size["median_diameter"]
    if median / TOLERANCE <= image_size <= median * TOLERANCE:
        return 1.0
    factor = model_size["median_diameter"] / image_size
    return float(np.clip(factor, MIN_FACTOR, MAX_FACTOR))


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an `(H, W, C)` float array (antialiased when shrinking)."""
    from skimage.transform import resize as sk_resize

    shrinking = height < array.shape[0] or width < array.shape[1]
    return sk_resize(array, (height, width, array.shape[-1]), order=1, mode="edge",
                     anti_aliasing=shrinking, preserve_range=True).astype(np.float32)


def predict_at_object_size(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    model_size: dict,
    object_size: float | str,
    target: str = "semantic",
) -> tuple[np.ndarray, float]:
    """Predicts an image at the scale where its objects have the model's size.

    Args:
        predict: `fn(image) -> (H, W, K)` probabilities at the image's size.
        image: float32 `(H, W, C)`.
        model_size: The model's `object_size` (see `rescale_factor`).
        object_size: The image's median object diameter in pixels, or
            `"auto"` to estimate it from a first prediction.
        target: The model's target (how objects are read from it).

    Returns:
        `((H, W, K) probabilities at the image's size, the factor used)`.
    """
    first = None
    if object_size == "auto":
        first = predict(image)
        ids, _ = label_instances(first, target)
        object_size = median_object_diameter(ids)
        if object_size is None:  # nothing found: nothing to measure
            return first, 1.0
    factor = rescale_factor(float(object_size), model_size)
    if factor == 1.0:
        return (first if first is not None else predict(image)), 1.0
    height, width = image.shape[:2]
    scaled = resize(image, max(1, round(height * factor)), max(1, round(width * factor)))
    return resize(predict(scaled), height, width), factor


def rescale_rule() -> dict:
    """How `predict --object-size` rescales, for an export's sidecar: an app
    that runs the model on images of another magnification can do the same."""
    return {"estimate": "median equivalent diameter sqrt(4*area/pi) of the objects of a "
                        "first prediction at the image's own size",
            "tolerance": TOLERANCE, "min_factor": MIN_FACTOR, "max_factor": MAX_FACTOR,
            "factor": "median_diameter / image's diameter, unless within tolerance; "
                      "probabilities resized back bilinearly"}
