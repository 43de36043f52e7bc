"""Class weights and pixel weight maps for class imbalance and touching objects.

The U-Net paper (Ronneberger et al. 2015, eq. 2) weights every pixel by

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

where `w_c` balances the class frequencies and `d1`, `d2` are the distances
to the nearest and second-nearest object (instance). The second term is
large in the thin background gaps between touching objects, which teaches
the network to separate them. The paper uses `w0 = 10`, `sigma = 5` pixels.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from keras_unet.data.instances import BOUNDARY_WIDTH, boundary_target
from keras_unet.data.labels import IGNORE_ID
from keras_unet.data.readers import read_instances

CLASS_WEIGHTINGS = {"none": None, "median_frequency": 1.0, "sqrt_median_frequency": 0.5}
"""Class weighting names and the power of the median-frequency weights."""


def class_weights_from_counts(
    counts: dict[int, int], num_classes: int, power: float = 1.0
) -> list[float]:
    """Median-frequency balancing: `w_c = (median(freq) / freq_c) ** power`.

    `power=1` is Eigen & Fergus's median-frequency balancing (SegNet's
    CamVid weights); `power=0.5`, its square root, halves the weights' spread
    on a log scale, so that the frequent classes keep more of their weight.

    Args:
        counts: Pixels per class id.
        num_classes: Number of classes.
        power: Exponent applied to the median-frequency weights.

    Returns:
        Weights by class id (classes with no pixels get weight 0).
    """
    freq = np.array([counts.get(c, 0) for c in range(num_classes)], np.float64)
    present = freq > 0
    median = np.median(freq[present])
    return [float((median / f) ** power) if f else 0.0 for f in freq]


def border_weight_map(
    instances: np.ndarray,
    class_weights: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> np.ndarray:
    """The U-Net paper's weight map of one image.

    Args:
        instances: `(H, W)` instance ids, 0 = no object.
        class_weights: Weight per class id (`w_c`); default 1 everywhere.
        classes: `(H, W)` class ids for `class_weights` (default: 1 on
            objects, 0 elsewhere).
        w0: Weight of the border term.
        sigma: Width of the border term in pixels.

    Returns:
        float32 `(H, W)` weights; the border term is added on background
        pixels only and needs at least two objects.
    """
    from scipy import ndimage

    instances = np.asarray(instances)
    if classes is None:
        classes = (instances > 0).astype(np.int64)
    weights = np.ones(instances.shape, np.float32)
    if class_weights is not None:
        weights = np.asarray(class_weights, np.float32)[np.asarray(classes, np.int64)]
    ids = [i for i in np.unique(instances) if i != 0]
    if len(ids) < 2:
        return weights
    # Distance of every pixel to each object, keeping the two smallest.
    d1 = np.full(instances.shape, np.inf, np.float32)
    d2 = np.full(instances.shape, np.inf, np.float32)
    for i in ids:
        distance = ndimage.distance_transform_edt(instances != i).astype(np.float32)
        d2 = np.minimum(d2, np.maximum(d1, distance))
        d1 = np.minimum(d1, distance)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return np.where(instances == 0, weights + border, weights).astype(np.float32)


def border_weight_maps(
    dataset,
    class_weights=None,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    progress: bool = False,
) -> list[np.ndarray]:
    """The weight map of every pair of a dataset, computed once.

    The distance transforms take a while (about half a second for an image
    with a hundred nuclei), so this runs before training, with a progress
    bar, and the training pipeline moves the maps with the masks.

    Args:
        dataset: A `keras_unet.data.pairs.Dataset` with instance masks.
        class_weights: Weight per class id (`w_c`), or `None` for 1.
        w0: Weight of the border term.
        sigma: Width of the border term in pixels.
        progress: Show a progress bar.

    Returns:
        float32 `(H, W)` maps in the dataset's order; ignored pixels weigh 0.
    """
    table = None if class_weights is None else np.asarray(class_weights, np.float32)
    maps = []
    for index in tqdm(range(len(dataset.masks)), desc="border weights", unit="image",
                      disable=None if progress else True):
        mask = dataset.read_mask(index)
        ignore = mask == IGNORE_ID
        weights = border_weight_map(read_instances(dataset.instances[index]), table,
                                    np.where(ignore, 0, mask), w0=w0, sigma=sigma)
        maps.append(np.where(ignore, 0, weights).astype(np.float32))
    return maps


def target_pixel_counts(
    dataset, num_classes: int, target: str = "semantic", width: int = BOUNDARY_WIDTH
) -> dict[int, int]:
    """Pixels per class id of the training target, for class balancing.

    The instance target's boundary class is not in the masks: it is drawn
    here with the rule the pipeline uses.

    Args:
        dataset: A `keras_unet.data.pairs.Dataset` (the training split), with
            instance masks for the instance target.
        num_classes: Classes of the masks (the boundary id of the instance
            target).
        target: `"semantic"` or `"instances"`.
        width: Boundary width in pixels (instance target).

    Returns:
        `{class id: pixels}` over the dataset, ignored pixels left out.
    """
    counts = np.zeros(256, np.int64)
    for index in range(len(dataset.masks)):
        mask = dataset.read_mask(index)
        if target == "instances":
            mask = boundary_target(mask, read_instances(dataset.instances[index]),
                                   num_classes, width)
        counts += np.bincount(mask.ravel(), minlength=256)
    counts[IGNORE_ID] = 0
    return {i: int(n) for i, n in enumerate(counts) if n}
