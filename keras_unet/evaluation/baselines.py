"""Simple baselines a trained model has to beat: Otsu thresholds.

- `otsu_foreground`: a per-image Otsu threshold on the grey image. The plain
  version calls the brighter side foreground (fluorescence); with
  `minority=True` the smaller side is foreground, which also gets dark
  nuclei on bright stained tissue right.
- `otsu_watershed`: the classic way to split touching objects without
  learning: Otsu foreground, distance transform, one seed per local maximum
  of the distance, watershed.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from keras_unet.data.instances import remove_small
from keras_unet.data.labels import BACKGROUND_LABEL
from keras_unet.data.readers import read_image, read_instances
from keras_unet.evaluation.evaluate import evaluate_prediction
from keras_unet.evaluation.groups import GroupScores, group_order, image_groups
from keras_unet.evaluation.scores import (
    confusion,
    object_scores,
)
from keras_unet.inference.predict import predict_scaled

WATERSHED_MIN_DISTANCE = 5  # pixels between seeds (measured, see docs/benchmarks/main-job.md)
MIN_OBJECT_SIZE = 10


def otsu_threshold(image: np.ndarray) -> float:
    """Otsu's threshold of a greyscale image (maximal between-class variance).

    Args:
        image: Greyscale values (any shape), e.g. uint8 or floats in [0, 1].

    Returns:
        The threshold; pixels `> threshold` form the upper class.
    """
    values = np.asarray(image, dtype=np.float64).ravel()
    hist, edges = np.histogram(values, bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(hist * centers) / np.maximum(weight_low, 1)
    mean_high = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centers[np.argmax(between)])


def otsu_foreground(image: np.ndarray, minority: bool = False) -> np.ndarray:
    """Foreground of one image by Otsu's threshold.

    Args:
        image: `(H, W)` grey or `(H, W, C)` image (channels are averaged).
        minority: Foreground = the smaller side of the threshold (instead of
            the brighter side).

    Returns:
        `(H, W)` boolean foreground.
    """
    grey = np.asarray(image, np.float64)
    if grey.ndim == 3:
        grey = grey.mean(-1)
    upper = grey > otsu_threshold(grey)
    return ~upper if minority and upper.mean() > 0.5 else upper


def otsu_watershed(
    image: np.ndarray,
    minority: bool = True,
    *,
    min_distance: int = WATERSHED_MIN_DISTANCE,
    min_size: int = MIN_OBJECT_SIZE,
) -> np.ndarray:
    """Objects of one image: Otsu foreground split by a distance watershed.

    Args:
        image: `(H, W)` or `(H, W, C)` image.
        minority: See `otsu_foreground`.
        min_distance: Smallest distance between two seeds, in pixels.
        min_size: Smallest object kept, in pixels.

    Returns:
        int32 `(H, W)` object ids (0 = background).
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    foreground = ndimage.binary_opening(otsu_foreground(image, minority))
    distance = ndimage.distance_transform_edt(foreground)
    regions, _ = ndimage.label(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=regions,
                           exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    ids = watershed(-distance, markers, mask=foreground)
    return remove_small(ids, min_size)


METHODS = {
    "otsu": "Otsu threshold (the smaller side is foreground) + connected components",
    "otsu_watershed": "Otsu threshold + distance-transform watershed",
}


def score_methods(
    dataset,
    predictors: dict | None = None,
    groups: dict[str, str] | None = None,
    *,
    image_bins: bool = False,
    object_size: float | str | None = None,
    tta: bool = False,
    progress: bool = False,
) -> dict:
    """Foreground Dice and object scores of the baselines (and models).

    Args:
        dataset: A `keras_unet.data.pairs.Dataset` of binary masks with instance
            masks (`dataset.instances`).
        predictors: `{name: keras_unet.inference.predict.Predictor}` to score beside
            the baselines, or `None`.
        groups: Pair name (mask stem) -> group (e.g. imaging modality);
            every figure is also given per group.
        image_bins: Also score the brightness and object-size groups of
            `keras_unet.evaluation.groups` (`brightness:dim`, `size:large`).
        object_size: The models' `predict_scaled(object_size=...)`: rescale
            images to the training object size (`"auto"`), or not (`None`).
        tta: Average the models' predictions over flips (`predict_scaled(tta=)`).
        progress: Show a progress bar.

    Returns:
        `{method: {group: {"images", "foreground_dice", "image_dice",
        "mean_ap", "f1", "missed", "split", "merged"}}}`, with the group
        `"all"`. `foreground_dice` is pooled over the pixels of the group's
        images (large images weigh more); `image_dice` is the mean of the
        images' own foreground Dice (an image with no foreground, true or
        predicted, scores 1), as the mean AP averages images.
    """
    predictors = predictors or {}
    methods = list(METHODS) + list(predictors)
    names = [BACKGROUND_LABEL, "foreground"]
    pooled = {method: {} for method in methods}
    for index in tqdm(range(len(dataset.images)), desc="scoring", unit="image",
                      disable=None if progress else True):
        stem = dataset.stems[index]
        image = read_image(dataset.images[index], 3)
        truth = dataset.read_mask(index)
        true_ids = read_instances(dataset.instances[index])
        ignore = truth == 255
        foreground = otsu_foreground(image, minority=True)
        results = {
            "otsu": (confusion(truth, foreground.astype(np.uint8), 2),
                     object_scores(true_ids, _components(foreground), ignore)),
            "otsu_watershed": (confusion(truth, foreground.astype(np.uint8), 2),
                               object_scores(true_ids, otsu_watershed(image), ignore)),
        }
        for name, predictor in predictors.items():
            model_image = image if predictor.channels == 3 else read_image(
                dataset.images[index], predictor.channels)
            probs, factor = predict_scaled(predictor, model_image, object_size=object_size,
                                           tta=tta)
            result = evaluate_prediction(probs, truth, 2, target=predictor.target,
                                         true_instances=true_ids,
                                         min_size=predictor.min_object_size(factor))
            results[name] = (result.confusion, result.objects)
        bins = image_groups(image, truth, instances=true_ids)["groups"] if image_bins else []
        # dict.fromkeys: an image whose group is named "all" counts once.
        for group in dict.fromkeys(("all", (groups or {}).get(stem), *bins)):
            if group is None:
                continue
            for method, (matrix, objects) in results.items():
                pooled[method].setdefault(group, GroupScores(names)).add(matrix, objects)
    table = {}
    for method in methods:
        for group in sorted(pooled[method], key=lambda g: (":" in g, group_order(g))):
            scores = pooled[method][group]
            summary, objects = scores.as_dict(), scores.objects
            table.setdefault(method, {})[group] = {
                "images": summary["images"], "foreground_dice": summary["dice"],
                "image_dice": summary["image_dice"],
                "mean_ap": objects.mean_ap, "f1": objects.f1, "missed": objects.missed,
                "split": objects.split, "merged": objects.merged,
            }
    return table


def _components(foreground: np.ndarray) -> np.ndarray:
    """Connected components (8-connectivity) of at least `MIN_OBJECT_SIZE` pixels."""
    from scipy import ndimage

    ids, _ = ndimage.label(foreground, structure=np.ones((3, 3)))
    return remove_small(ids, MIN_OBJECT_SIZE)


def format_comparison(table: dict) -> str:
    """The `score_methods` table as fixed-width text, one row per method and group."""
    lines = [f"{'method':<16}{'images':>14}{'fg Dice':>9}{'img Dice':>9}{'mean AP':>9}"
             f"{'F1@0.5':>8}{'missed':>8}{'split':>7}{'merged':>8}"]
    groups = list(dict.fromkeys(g for rows in table.values() for g in rows))
    for group in groups:
        for method, rows in table.items():
            if group not in rows:
                continue
            r = rows[group]
            lines.append(f"{method:<16}{group + ' ' + str(r['images']):>14}"
                         f"{r['foreground_dice']:>9.3f}{r['image_dice']:>9.3f}"
                         f"{r['mean_ap']:>9.3f}{r['f1']:>8.3f}"
                         f"{r['missed']:>8}{r['split']:>7}{r['merged']:>8}")
    return "\n".join(lines)
