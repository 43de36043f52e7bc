"""Objects, not just pixels: the instance target and its post-processing.

Semantic masks merge touching objects into one blob. The instance target
adds a *boundary* class (id `num_classes`, after the dataset's classes) on
every object pixel that touches another object or the background. A model
trained on it predicts object interiors that stay apart even where the
objects touch; `label_instances` then grows each interior back over its
boundary pixels with a seeded watershed and numbers the objects.

The target is computed in the training pipeline
(`keras_unet.data.pipeline.boundary_target`); `boundary_target` here is the
same rule in NumPy, used by validation and as the tests' reference.
"""

from __future__ import annotations

import itertools

import numpy as np

from keras_unet.data.labels import IGNORE_ID

# Default post-processing: objects and seeds smaller than this many pixels
# are dropped (measured on the DSB2018 training split, see docs/benchmarks/).
MIN_OBJECT_SIZE = 10
MIN_SEED_SIZE = 4
# An instance model that records its training objects' size drops objects
# under a circle of this fraction of their 10th-percentile diameter
# (`object_size["range"][0]`) instead, at the scale the image was predicted
# at (`min_object_size`): fragments are small relative to the objects, not in
# pixels, and the low end of the annotated sizes (small and border-cut
# objects included) keeps a dataset with many small objects from losing
# them. Chosen with the bundled model (`--object-size auto`, 10th percentile
# 8.5 px: 7.7 px across, 46 pixels) on the 54 DSB2018 training images it was
# not trained on, mean AP with 10 pixels and with 0.5 / 0.7 / 0.9 / 1.1 of the
# 10th percentile: 0.447, 0.449 / 0.454 / 0.457 / 0.455; at 0.5x 0.394 ->
# 0.393, at 2x 0.413 -> 0.430. On the 113 validation images 0.528 -> 0.536
# (0.5x level, 2x 0.480 -> 0.500); `benchmarks/bench_postprocess.py --scales
# 1 0.5 2`.
MIN_DIAMETER_FRACTION = 0.9
# Seeds are the pixels whose interior probability is above this. Measured
# with the bundled model (`--object-size auto`) on the 54 DSB2018 training
# images it was not trained on: mean AP 0.443 with the argmax interior,
# 0.443 / 0.446 / 0.447 / 0.445 at 0.5 / 0.6 / 0.7 / 0.8, and 0.7 is best
# at 0.5x and 2x too; on the 113 validation images 0.515 -> 0.528 (another
# instance model: 0.507 -> 0.513). An unsure neck of interior no longer
# joins two nuclei (`benchmarks/bench_postprocess.py`).
SEED_THRESHOLD = 0.7
# Boundary width of the training target, in pixels: 2 separated touching
# nuclei better than 1 on DSB2018 (+0.017 mean AP, see docs/benchmarks/accuracy.md).
BOUNDARY_WIDTH = 2
# The name of the boundary class where an exported model's outputs are named.
BOUNDARY_LABEL = "_boundary_"
# What a model is trained to output: class ids, or class ids plus the boundary.
TARGETS = ("semantic", "instances")


def boundary_target(
    mask: np.ndarray, instances: np.ndarray, boundary_id: int, width: int = 1
) -> np.ndarray:
    """Class ids with the boundary class between and around objects.

    An object pixel is a boundary pixel when a pixel inside the image within
    `width` pixels (a square neighbourhood) belongs to another object or to
    no object. Ignored pixels stay ignored.

    Args:
        mask: `(H, W)` uint8 class ids (255 = ignore).
        instances: `(H, W)` instance ids, 0 = no object.
        boundary_id: Class id of the boundary (the number of classes).
        width: Boundary width in pixels.

    Returns:
        `(H, W)` uint8 class ids.
    """
    ids = np.asarray(instances)
    padded = np.pad(ids, width, mode="edge")
    height, image_width = ids.shape
    border = np.zeros(ids.shape, bool)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            border |= padded[dy:dy + height, dx:dx + image_width] != ids
    border &= (ids > 0) & (np.asarray(mask) != IGNORE_ID)
    return np.where(border, np.uint8(boundary_id), np.asarray(mask, np.uint8))


def semantic_classes(probabilities: np.ndarray, target: str = "semantic") -> np.ndarray:
    """Class ids from model outputs, for either target.

    Args:
        probabilities: `(..., K)` model outputs: one sigmoid channel,
            `num_classes` softmax channels (`"semantic"`), or `num_classes
            + 1` with the boundary last (`"instances"`).
        target: What the model was trained on.

    Returns:
        uint8 class ids; an instance model's boundary pixels get the most
        likely object class.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] > 0.5).astype(np.uint8)
    classes = probabilities.argmax(-1).astype(np.uint8)
    if target != "instances":
        return classes
    objects = probabilities[..., 1:-1].argmax(-1).astype(np.uint8) + 1
    boundary = probabilities.shape[-1] - 1
    return np.where(classes == boundary, objects, classes)


def label_instances(
    probabilities: np.ndarray,
    target: str = "semantic",
    *,
    min_size: int = MIN_OBJECT_SIZE,
    min_seed: int = MIN_SEED_SIZE,
    seed_threshold: float = SEED_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers the objects of one predicted image.

    `"semantic"` models: every connected foreground region (8-connectivity)
    is an object. `"instances"` models: connected regions of foreground
    pixels whose interior probability (the object classes' together) is
    above `seed_threshold` (4-connectivity, at least `min_seed` pixels) are
    the seeds; a watershed on the distance to the seeds grows them over the
    foreground (interior and boundary pixels): each pixel joins the nearest
    seed it is connected to, so touching objects meet along the boundary
    they share. Foreground regions that hold no seed (objects too small
    for an interior) stay objects of their own. Objects smaller than
    `min_size` pixels are dropped. The interior probability needs
    probabilities, as a `keras_unet.inference.predict.Predictor` returns
    them (it applies a logits model's softmax).

    Args:
        probabilities: `(H, W, K)` outputs of one image (see
            `semantic_classes`).
        target: `"semantic"` or `"instances"`.
        min_size: Smallest object kept, in pixels.
        min_seed: Smallest seed kept, in pixels (instance models).
        seed_threshold: Interior probability above which a foreground
            pixel can seed an object (instance models).

    Returns:
        `(ids, classes)`: int32 `(H, W)` object ids (0 = background, 1..N)
        and int32 `(N + 1,)` class ids by object id (`classes[0] = 0`).
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    probabilities = np.asarray(probabilities, np.float32)
    classes = semantic_classes(probabilities, target)
    foreground = classes > 0
    if target == "instances":
        interior = foreground & (probabilities[..., 1:-1].sum(-1) > seed_threshold)
        seeds, _ = ndimage.label(interior)
        seeds = remove_small(seeds, min_seed)
        # Flood from the seeds in order of distance: each foreground pixel joins
        # the nearest seed it is connected to (ties on flat probabilities
        # would otherwise be broken by flooding order).
        distance = ndimage.distance_transform_edt(seeds == 0)
        ids = watershed(distance, markers=seeds, mask=foreground)
        unseeded, _ = ndimage.label(foreground & (ids == 0), structure=np.ones((3, 3)))
        ids = np.where(unseeded > 0, unseeded + ids.max(), ids)
    else:
        ids, _ = ndimage.label(foreground, structure=np.ones((3, 3)))
    ids = remove_small(ids, min_size)
    return ids, _object_classes(ids, classes)


def min_object_size(
    object_size: dict | None, factor: float = 1.0, fraction: float = MIN_DIAMETER_FRACTION
) -> int:
    """The smallest object an instance model's prediction keeps, in pixels.

    Fragments of objects are small at the model's own scale, so the limit
    follows the objects the model was trained on: a circle of `fraction`
    of their 10th-percentile diameter, at the image's scale when the image
    was predicted resized by `factor` (`keras_unet.inference.scale`:
    objects there are `1 / factor` times the training size). Without a
    recorded size, `MIN_OBJECT_SIZE`.

    Args:
        object_size: The model's `object_size` (`dataset_object_size`), or
            `None`.
        factor: The resize factor the image was predicted at.
        fraction: Of the 10th-percentile diameter.

    Returns:
        The minimum object area in pixels, at least 1.
    """
    if not object_size or "range" not in object_size:
        return MIN_OBJECT_SIZE
    diameter = fraction * object_size["range"][0] / factor
    return max(1, round(np.pi / 4 * diameter**2))


def remove_small(ids: np.ndarray, min_size: int) -> np.ndarray:
    """Drops objects under `min_size` pixels and renumbers the rest 1..N."""
    sizes = np.bincount(ids.ravel())
    keep = sizes >= min_size
    keep[0] = False
    numbers = np.zeros(len(sizes), np.int32)
    numbers[keep] = np.arange(1, int(keep.sum()) + 1)
    return numbers[ids]


def _object_classes(ids: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The most frequent class id of each object's pixels."""
    count = int(ids.max())
    if count == 0:
        return np.zeros(1, np.int32)
    flat = ids.ravel().astype(np.int64) * 256 + classes.ravel()
    votes = np.bincount(flat, minlength=(count + 1) * 256).reshape(count + 1, 256)
    votes[:, 0] = 0
    result = votes.argmax(1).astype(np.int32)
    result[0] = 0
    return result


def object_diameters(instances: np.ndarray) -> np.ndarray:
    """Equivalent diameters of the objects of an instance-id mask.

    Args:
        instances: `(H, W)` object ids, 0 = no object.

    Returns:
        `sqrt(4 * area / pi)` of every object, in pixels (empty without
        objects).
    """
    _, areas = np.unique(instances[instances > 0], return_counts=True)
    return np.sqrt(4.0 * areas / np.pi)


def median_object_diameter(instances: np.ndarray) -> float | None:
    """The median equivalent diameter of the objects, or `None` without any."""
    diameters = object_diameters(instances)
    return float(np.median(diameters)) if diameters.size else None


def area_weighted_diameter(diameters: np.ndarray) -> float | None:
    """The area-weighted median of object diameters.

    Half of the objects' area lies in objects of at most this diameter. Unlike
    the plain median it is not pulled down by many small pieces (the
    fragments of large faint objects that a model splits, specks), only by
    area.

    Args:
        diameters: Equivalent diameters (see `object_diameters`).

    Returns:
        The diameter, or `None` for no objects.
    """
    if not diameters.size:
        return None
    ordered = np.sort(diameters)
    cumulative = np.cumsum(ordered**2)
    return float(ordered[np.searchsorted(cumulative, cumulative[-1] / 2)])


def foreground_objects(truth: np.ndarray) -> np.ndarray:
    """Objects of a class-id mask: connected components of its classes but 0.

    Args:
        truth: `(H, W)` class ids, 0 = background, 255 = ignore.

    Returns:
        `(H, W)` object ids (8-connectivity).
    """
    from scipy import ndimage

    ids, _ = ndimage.label((truth > 0) & (truth != IGNORE_ID), structure=np.ones((3, 3)))
    return ids


def dataset_object_size(masks, instances=None, *, has_background: bool = True) -> dict | None:
    """The size of a dataset's objects, as a model trained on it records it.

    Args:
        masks: Class-id masks (arrays), one per image; any iterable, read
            one at a time.
        instances: Instance-id masks, same order (any iterable), or `None`:
            the objects are then the connected components of the
            foreground classes.
        has_background: Whether class 0 is `_background_`; without it
            (and without instance masks) there are no objects.

    Returns:
        `{"median_diameter", "range": [10th, 90th percentile], "objects"}`
        of the objects' equivalent diameters in pixels, pooled over the
        images, and `"image_diameter"`: the median over the images of each
        image's `area_weighted_diameter` (what `--object-size auto`
        compares a new image's estimate with); `None` without objects.
    """
    if instances is None and not has_background:
        return None
    diameters = [object_diameters(ids if ids is not None else foreground_objects(mask))
                 for mask, ids in zip(masks, itertools.repeat(None)
                                      if instances is None else instances)]
    pooled = np.concatenate(diameters) if diameters else np.zeros(0)
    if not pooled.size:
        return None
    low, median, high = np.percentile(pooled, [10, 50, 90])
    per_image = [area_weighted_diameter(d) for d in diameters if d.size]
    return {"median_diameter": round(float(median), 2),
            "range": [round(float(low), 2), round(float(high), 2)], "objects": int(pooled.size),
            "image_diameter": round(float(np.median(per_image)), 2)}
