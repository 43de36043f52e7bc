"""Objects at the training scale: rescale an image whose objects are not.

A model learns the object sizes it was trained on. A model that records them
(`object_size` in a bundled model's card, a run's `object_size.json` or an
export's sidecar: the median equivalent diameter of the training objects
and their 10th-90th percentile range, in pixels) can be run on images of
another magnification: the image is resized so that its objects have the
training median diameter, predicted, and the probabilities are resized
back, so masks and objects come out at the image's own size.

The object size of a new image is given (`object_size=PIXELS`, its median
object diameter, compared with the training median), or estimated
(`"auto"`) from the objects of a first prediction at the image's own scale
(`candidate_factors`): their plain median diameter decides whether to
enlarge, their area-weighted median (against the training images',
`image_diameter`) whether to shrink. The area weighting keeps the pieces a
model splits large faint objects into from hiding them: on the 113 DSB2018
validation images, the first pass's plain median was more than 1.4x off the
true one on 8 images (e.g. 23 px for 38 px nuclei on a dim image), its
area-weighted median 1.4x off the true area-weighted one on 3. Within
`TOLERANCE` of the training size the first prediction is kept as it is.
Where the first prediction finds no object at all, the objects may be too
small for the model to see: `"auto"` looks `PROBE_FACTOR` closer once (in
images of up to `PROBE_MAX_PIXELS`) and estimates their size there (on the
DSB2018 validation images at half size, 9 images of tiny nuclei went from
fg Dice 0.00-0.01 to 0.69-0.90 with it, and no image changed at their own
or at double size).

With `"auto"`, shrinking is tried where the large objects are too large,
and kept only where the shrunk prediction is the more confident of the two
(`foreground_confidence`); an image whose large objects are not too large
but whose objects are smaller than the model's is enlarged.
Shrinking costs boundary resolution: it helps where the model fails at full
size (large faint nuclei, which it splits or misses, and predicts without
confidence) and hurts where it already works. Measured with the bundled
model on the 113 DSB2018 validation images, image-averaged fg Dice / mean
AP, at their own size and shown at 0.5x and 2x (`docs/guides/evaluation.md`):

| rule | 1x | 0.5x | 2x |
|---|---|---|---|
| no rescaling | 0.897 / 0.510 | 0.695 / 0.322 | 0.869 / 0.441 |
| rescale whenever out of tolerance | 0.897 / 0.507 | 0.828 / 0.439 | 0.894 / 0.510 |
| surer of the two, both ways (simulated) | 0.902 / 0.515 | 0.711 / 0.353 | 0.894 / 0.503 |
| this rule | 0.900 / 0.515 | 0.832 / 0.449 | 0.894 / 0.503 |

(At 0.5x the model is confident about the tiny objects it merges: confidence
cannot judge enlarging. These are with argmax seeds; with the seed threshold
of `label_instances` this rule scores 0.900 / 0.528, 0.834 / 0.441 and
0.892 / 0.498, on copies resized by Pillow.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_unet.data.instances import area_weighted_diameter, label_instances, object_diameters
from keras_unet.inference.confidence import foreground_confidence, foreground_probability

# Resize factors beyond these would leave too few pixels, or blow up memory.
MIN_FACTOR, MAX_FACTOR = 0.25, 4.0
# Objects within this factor of the training median are predicted as they
# are. Measured with the bundled model on 8 sample images shown at 0.5x and
# 2x: rescaling outside 1.4x matched as many or more objects of the 1x
# prediction than not rescaling in all 16 cases (0.5x: 11 -> 27 of 29 on
# one image); keeping the whole 10th-90th percentile training range
# (8.6-34 px) as "in range" left half of the 0.5x cases unimproved.
TOLERANCE = 1.4
# Where a first prediction finds no object, "auto" looks this much closer,
# in images of at most PROBE_MAX_PIXELS: a larger one where nothing is found
# is more likely empty than full of objects too small to see, and its probe
# would need four times the memory of its first prediction (a 4096 x 4096
# image took 7.5 GB whole with the bundled model).
PROBE_FACTOR = 2.0
PROBE_MAX_PIXELS = 2048 * 2048


def rescale_factor(image_size: float, training_size: float) -> float:
    """The resize factor that brings objects of `image_size` to the model's.

    Args:
        image_size: Object diameter in the image, in pixels.
        training_size: The same statistic of the training objects.

    Returns:
        1.0 within `TOLERANCE` of `training_size`, else
        `training_size / image_size`, within [`MIN_FACTOR`, `MAX_FACTOR`].
    """
    if training_size / TOLERANCE <= image_size <= training_size * TOLERANCE:
        return 1.0
    return float(np.clip(training_size / image_size, MIN_FACTOR, MAX_FACTOR))


def candidate_factors(instances: np.ndarray, model_size: dict) -> tuple[float, float]:
    """The resize factors `"auto"` tries for the objects of a first prediction.

    Enlarging is judged by the plain median diameter, against the training
    median: small objects are what a model merges or misses, and a few large
    clumps must not hide them. Shrinking is judged by the area-weighted
    median, against the training images' (`image_diameter`): large objects
    are what a model splits into pieces, and the pieces must not hide them.
    Where both are indicated (many small objects beside large ones), only
    shrinking is: the large objects are too large already, the small ones
    are likely pieces the model broke them into, and a closer look would
    break them further (a membrane model on EM slices shown at 2x, whose
    first prediction was full of fragments: fg Dice 0.935 as they are, 0.885
    when they were enlarged 1.4-2.5x by the plain median). A model recorded
    without `image_diameter` uses the plain median both ways.

    Args:
        instances: `(H, W)` object ids found by the first prediction.
        model_size: The model's `object_size` (see `keras_unet.data.instances.
            dataset_object_size`).

    Returns:
        `(enlarge, shrink)`: a factor above 1 or 1.0, and one below 1 or 1.0
        (both 1.0 without objects, or within `TOLERANCE`; at most one of
        them is not 1.0).
    """
    diameters = object_diameters(instances)
    if not diameters.size:
        return 1.0, 1.0
    by_median = rescale_factor(float(np.median(diameters)), model_size["median_diameter"])
    if "image_diameter" not in model_size:
        return max(by_median, 1.0), min(by_median, 1.0)
    by_area = rescale_factor(area_weighted_diameter(diameters), model_size["image_diameter"])
    if by_area < 1.0:  # the large objects are too large already: no closer look
        return 1.0, by_area
    return max(by_median, 1.0), 1.0


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
        model_size: The model's `object_size`: `{"median_diameter": px,
            "range": [low, high], "image_diameter": px}`.
        object_size: The image's median object diameter in pixels, or
            `"auto"` to estimate it from a first prediction.
        target: The model's target (how objects are read from it).

    Returns:
        `((H, W, K) probabilities at the image's size, the factor used)`.
    """
    height, width = image.shape[:2]

    def at(factor: float) -> np.ndarray:
        scaled = resize(image, max(1, round(height * factor)), max(1, round(width * factor)))
        return resize(predict(scaled), height, width)

    if object_size != "auto":
        factor = rescale_factor(float(object_size), model_size["median_diameter"])
        return (predict(image) if factor == 1.0 else at(factor)), factor
    first = predict(image)
    found = label_instances(first, target)[0]
    if not found.any():
        if height * width > PROBE_MAX_PIXELS:
            return first, 1.0
        return _look_closer(at, first, model_size, target)
    enlarge, shrink = candidate_factors(found, model_size)
    if shrink < 1.0:
        shrunk = at(shrink)
        region = (foreground_probability(first) > 0.5) | (foreground_probability(shrunk) > 0.5)
        if foreground_confidence(shrunk, region) > foreground_confidence(first, region):
            return shrunk, shrink
    if enlarge > 1.0:
        return at(enlarge), enlarge
    return first, 1.0


def _look_closer(at: Callable[[float], np.ndarray], first: np.ndarray, model_size: dict,
                 target: str) -> tuple[np.ndarray, float]:
    """`"auto"` where the first prediction found no object: the image may hold
    objects too small for the model to see at all. They are looked for
    `PROBE_FACTOR` closer; where the probe finds objects, their size (at the
    image's own scale, the probe mapped back) sets the enlargement as usual,
    and the probe itself is kept where that asks for none. Where it finds
    nothing, the first prediction stays."""
    probe = at(PROBE_FACTOR)
    found = label_instances(probe, target)[0]
    if not found.any():
        return first, 1.0
    enlarge, _ = candidate_factors(found, model_size)
    if enlarge == 1.0:
        return probe, PROBE_FACTOR
    return at(enlarge), enlarge


def rescale_rule() -> dict:
    """How `predict --object-size` rescales, for an export's sidecar: an app
    that runs the model on images of another magnification can do the same."""
    return {"estimate": "equivalent diameters sqrt(4*area/pi) of the objects of a first "
                        "prediction at the image's own size: their median m and their "
                        "area-weighted median a (half the objects' area lies in objects of "
                        "at most this diameter)",
            "tolerance": TOLERANCE, "min_factor": MIN_FACTOR, "max_factor": MAX_FACTOR,
            "factor": "where image_diameter / a is below 1 / tolerance, shrink by it and "
                      "keep the result only if it is more confident than the first "
                      "prediction; else, where median_diameter / m is above tolerance, "
                      "enlarge by it unless a shrink was indicated; else "
                      "1 (a given median diameter d: median_diameter / "
                      "d, unless within tolerance); factors within [min_factor, "
                      "max_factor], probabilities resized back bilinearly; without "
                      "image_diameter, median_diameter / m decides both ways",
            "probe_factor": PROBE_FACTOR,
            "probe_max_pixels": PROBE_MAX_PIXELS,
            "no_objects": "where the first prediction finds no object and the image has "
                          "at most probe_max_pixels pixels, predict at "
                          "probe_factor and resize back; if that finds objects, enlarge by "
                          "median_diameter / m of those (m at the image's own size) where "
                          "it is above tolerance, else keep the probe (factor "
                          "probe_factor); if it finds none, 1",
            "confidence": "the mean |p_foreground - 0.5| over the pixels either prediction "
                          "calls foreground (p_foreground > 0.5)"}
