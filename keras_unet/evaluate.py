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


def evaluate_dataset(
    predictor,
    dataset,
    output_dir,
    *,
    tile: tuple[int, int] | None = None,
    worst: int = 5,
    tta: bool = False,
    progress: bool = False,
) -> dict:
    """Scores a model on a dataset folder and writes a report for people.

    Writes `scores.json` (per-class IoU/Dice/precision/recall, pixel
    accuracy, confusion matrix), `per_image.csv` (IoU/Dice per image),
    `confusion.png`, and overlays of the `worst` images by Dice
    (`worst/<name>.png`: image with truth left, prediction right).

    Args:
        predictor: A `keras_unet.inference.Predictor` (`.keras` or `.tflite`).
        dataset: A `keras_unet.dataset.Dataset`.
        output_dir: Report folder.
        tile: Tile size for any-size models (default whole images).
        worst: How many of the lowest-Dice images to draw.
        tta: Flip test-time augmentation.
        progress: Show a progress bar.

    Returns:
        The `scores.json` content.
    """
    import csv
    import json
    from pathlib import Path

    import PIL.Image
    from tqdm.auto import tqdm

    from keras_unet import files
    from keras_unet.dataset import read_mask
    from keras_unet.inference import predict_image, read_image
    from keras_unet.visualize import overlay

    output_dir = Path(output_dir)
    names = dataset.names
    total = np.zeros((len(names), len(names)), np.int64)
    rows, kept = [], []
    pairs = list(zip(dataset.images, dataset.masks))
    for image_path, mask_path in tqdm(pairs, desc="evaluate", unit="image", disable=not progress):
        image = read_image(image_path, predictor.channels)
        truth = read_mask(mask_path, dataset.foreground_value)
        predicted = predicted_classes(predict_image(predictor, image, tile=tile, tta=tta))
        matrix = confusion(truth, predicted, len(names))
        total += matrix
        scores = per_class_scores(matrix, names)
        rows.append({"image": image_path, "mean_iou": scores["mean_iou"],
                     "mean_dice": scores["mean_dice"],
                     "pixel_accuracy": scores["pixel_accuracy"]})
        kept.append((scores["mean_dice"] or 0.0, image_path, image, truth, predicted))
        kept = sorted(kept, key=lambda k: k[0])[:worst]  # bounded memory
    result = per_class_scores(total, names)
    result["confusion_matrix"] = total.tolist()
    result["images"] = len(pairs)
    files.write_text(output_dir / "scores.json", json.dumps(result, indent=2) + "\n")

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
            writer.writeheader()
            writer.writerows(rows)

    files.atomic_write(output_dir / "per_image.csv", write_csv)
    plot_confusion(total, names, output_dir / "confusion.png")
    for dice, image_path, image, truth, predicted in kept:
        picture = np.clip(image * 255, 0, 255).astype(np.uint8)
        left, right = overlay(picture, truth, names), overlay(picture, predicted, names)
        size = (left.width + right.width + 8, max(left.height, right.height))
        canvas = PIL.Image.new("RGB", size, (255, 255, 255))
        canvas.paste(left, (0, 0))
        canvas.paste(right, (left.width + 8, 0))
        files.save_image(output_dir / "worst" / f"{Path(image_path).stem}.png", canvas)
    result["worst"] = [(Path(p).name, d) for d, p, *_ in kept]
    return result


def format_confusion(matrix: np.ndarray, names: list[str]) -> str:
    """The confusion matrix as a text table (rows truth, columns prediction)."""
    width = max(8, max(len(n) for n in names) + 1)
    head = " " * width + "".join(f"{n[:width - 1]:>{width}}" for n in names)
    lines = [head] + [
        f"{names[i][:width - 1]:<{width}}" + "".join(f"{int(v):>{width}}" for v in row)
        for i, row in enumerate(np.asarray(matrix))
    ]
    return "\n".join(lines)


def plot_confusion(matrix: np.ndarray, names: list[str], path) -> None:
    """Row-normalized confusion matrix as a PNG (counts in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_unet import files

    matrix = np.asarray(matrix, np.float64)
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 1.2 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rows[i, j]:.2f}\n{int(matrix[i, j])}", ha="center", va="center",
                    fontsize=7, color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
