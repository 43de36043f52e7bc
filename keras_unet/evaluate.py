"""Evaluation: confusion matrices and per-class scores of masks.

The NumPy functions here score predicted class-id masks against ground
truth; `confusion_from_model` runs a model over a `tf.data` dataset.
"""

from __future__ import annotations

import numpy as np

from keras_unet.labels import IGNORE_ID


def confusion(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix of class-id masks (rows truth, columns prediction).

    Pixels whose truth is 255 (ignore) are skipped.

    Args:
        truth: Integer class ids, any shape.
        predicted: Integer class ids, same shape.
        num_classes: Number of classes `n`.

    Returns:
        int64 `(n, n)` pixel counts.
    """
    truth = np.asarray(truth).ravel().astype(np.int64)
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    keep = truth != IGNORE_ID
    index = truth[keep] * num_classes + predicted[keep]
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_scores(matrix: np.ndarray, names: list[str]) -> dict:
    """IoU, Dice, precision and recall per class, and pixel accuracy.

    Args:
        matrix: `(n, n)` confusion matrix.
        names: Class names by id.

    Returns:
        `{"classes": {name: {"iou", "dice", "precision", "recall", "pixels"}},
        "pixel_accuracy": float, "mean_iou": float, "mean_dice": float}`;
        scores of a class absent from truth and prediction are `None` and
        left out of the means.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    fp = matrix.sum(0) - tp
    fn = matrix.sum(1) - tp

    def ratio(num, den):
        return [float(a / b) if b else None for a, b in zip(num, den)]

    iou, dice = ratio(tp, tp + fp + fn), ratio(2 * tp, 2 * tp + fp + fn)
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    classes = {
        name: {"iou": iou[i], "dice": dice[i], "precision": precision[i],
               "recall": recall[i], "pixels": int(matrix[i].sum())}
        for i, name in enumerate(names)
    }
    defined = [i for i in range(len(names)) if iou[i] is not None]
    total = matrix.sum()
    return {
        "classes": classes,
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "mean_iou": float(np.mean([iou[i] for i in defined])) if defined else None,
        "mean_dice": float(np.mean([dice[i] for i in defined])) if defined else None,
    }


def format_scores(scores: dict) -> str:
    """A fixed-width table of `per_class_scores` output."""
    def cell(value):
        return "   -  " if value is None else f"{value:6.3f}"

    lines = [f"{'class':<24}{'IoU':>7}{'Dice':>7}{'prec':>7}{'recall':>7}{'pixels':>11}"]
    for name, s in scores["classes"].items():
        lines.append(
            f"{name[:23]:<24}{cell(s['iou']):>7}{cell(s['dice']):>7}"
            f"{cell(s['precision']):>7}{cell(s['recall']):>7}{s['pixels']:>11}"
        )
    lines.append(
        f"pixel accuracy {cell(scores['pixel_accuracy'])}   mean IoU "
        f"{cell(scores['mean_iou'])}   mean Dice {cell(scores['mean_dice'])}"
    )
    return "\n".join(lines)


def predicted_classes(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class ids from model outputs `(..., C)`: threshold if C == 1, else argmax."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] > threshold).astype(np.uint8)
    return probabilities.argmax(-1).astype(np.uint8)


def confusion_from_model(model, dataset, num_classes: int) -> np.ndarray:
    """Confusion matrix of a model over a dataset of `(images, masks, ...)`.

    Args:
        model: A Keras model (or any callable returning probabilities).
        dataset: Iterable of batches whose first two items are images and
            `(B, H, W, 1)` masks.
        num_classes: Number of classes.

    Returns:
        `(n, n)` confusion matrix.
    """
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for batch in dataset:
        images, masks = batch[0], batch[1]
        predicted = predicted_classes(np.asarray(model.predict_on_batch(images)))
        matrix += confusion(np.asarray(masks)[..., 0], predicted, num_classes)
    return matrix


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
