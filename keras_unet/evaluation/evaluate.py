"""Evaluation: a model's scores on a dataset, and a report people can read.

`evaluate_prediction` scores one predicted image (pixels per class, and
objects when the truth has instance masks); the training run's validation
and `evaluate_dataset` both use it, so the numbers in `log.csv`,
`summary.json` and an evaluation report are computed the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
from tqdm.auto import tqdm

from keras_unet import files
from keras_unet.data.instances import MIN_OBJECT_SIZE, label_instances, semantic_classes
from keras_unet.data.labels import IGNORE_ID
from keras_unet.data.pairs import Dataset, check_dataset
from keras_unet.data.readers import read_image, read_instances
from keras_unet.data.visualize import overlay
from keras_unet.evaluation.groups import GroupScores, group_order, image_groups
from keras_unet.evaluation.scores import (
    ObjectScores,
    confusion,
    headline_name,
    image_foreground_dice,
    object_scores,
    per_class_scores,
)
from keras_unet.inference.confidence import uncertain_share
from keras_unet.inference.predict import Predictor, check_object_size, predict_scaled


@dataclass
class ImageEvaluation:
    """Scores of one predicted image.

    Attributes:
        confusion: `(n, n)` pixel confusion matrix.
        classes: `(H, W)` predicted class ids.
        objects: Object scores, or `None` without true instances.
        object_ids: `(H, W)` predicted object ids, or `None`.
    """

    confusion: np.ndarray
    classes: np.ndarray
    objects: ObjectScores | None = None
    object_ids: np.ndarray | None = None


def evaluate_prediction(
    probabilities: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    *,
    target: str = "semantic",
    true_instances: np.ndarray | None = None,
    min_size: int = MIN_OBJECT_SIZE,
) -> ImageEvaluation:
    """Scores the model outputs of one image against its truth.

    Args:
        probabilities: `(H, W, K)` model outputs.
        truth: `(H, W)` true class ids (255 = ignore).
        num_classes: Classes of the label map.
        target: `"semantic"` or `"instances"` (what the model predicts).
        true_instances: `(H, W)` true object ids, to score objects too.
        min_size: Smallest predicted object kept, in pixels
            (`keras_unet.inference.predict.Predictor.min_object_size`).

    Returns:
        The `ImageEvaluation`.
    """
    classes = semantic_classes(probabilities, target)
    result = ImageEvaluation(confusion(truth, classes, num_classes), classes)
    if true_instances is not None:
        ids, _ = label_instances(probabilities, target, min_size=min_size)
        result.objects = object_scores(true_instances, ids, ignore=truth == IGNORE_ID)
        result.object_ids = ids
    return result


def summarize(matrix: np.ndarray, names: list[str], objects: ObjectScores | None) -> dict:
    """Pooled scores: `per_class_scores` plus `"objects"` (or `None`)."""
    result = per_class_scores(matrix, names)
    result["confusion_matrix"] = np.asarray(matrix).tolist()
    result["objects"] = objects.as_dict() if objects is not None else None
    return result


def evaluate_dataset(
    predictor: Predictor,
    dataset: Dataset,
    output_dir,
    *,
    tile: tuple[int, int] | None = None,
    worst: int = 5,
    tta: bool = False,
    progress: bool = False,
    object_size: float | str | None = None,
) -> dict:
    """Scores a model on a dataset folder and writes a report for people.

    Writes `scores.json` (per-class IoU/Dice/precision/recall, pixel
    accuracy, confusion matrix, object scores when the dataset has
    instance masks, `image_dice`: the mean of the images' own Dice beside
    the pooled one, and `groups`: the scores of each brightness and
    object-size group, see `keras_unet.evaluation.groups`),
    `per_image.csv` (with each image's brightness, median object diameter,
    groups and, with `object_size`, the resize factor it was predicted at:
    `scale`), `confusion.png`, and the `worst`
    images by Dice side by side with captions (`worst/<name>.png`: image |
    truth | prediction).

    Args:
        predictor: A `keras_unet.inference.predict.Predictor` (`.keras` or `.tflite`).
        dataset: A `keras_unet.data.pairs.Dataset`.
        output_dir: Report folder.
        tile: Tile size for any-size models (default whole images).
        worst: How many of the lowest-Dice images to draw.
        tta: Flip test-time augmentation.
        progress: Show a progress bar.
        object_size: Rescale each image to the training object size
            (`keras_unet.inference.predict.predict_image`).

    Returns:
        The `scores.json` content, with `"worst"`: `[(name, dice), ...]`.

    Raises:
        keras_unet.data.pairs.DatasetError: If a pair cannot be scored (naming
            the files): unreadable, sizes that differ, mask values outside
            the label map.
        keras_unet.inference.predict.InferenceError: If `object_size` is
            given for a model that records no training object size.
    """
    check_object_size(predictor, object_size)
    check_dataset(dataset, instances=bool(dataset.instances))
    output_dir = Path(output_dir)
    names = dataset.names
    everything, groups = GroupScores(names), {}
    rows, kept = [], []
    for index in tqdm(range(len(dataset.images)), desc="evaluate", unit="image",
                      disable=None if progress else True):
        image_path = dataset.images[index]
        image = read_image(image_path, predictor.channels)
        truth = dataset.read_mask(index)
        instances = read_instances(dataset.instances[index]) if dataset.instances else None
        probabilities, factor = predict_scaled(predictor, image, tile=tile, tta=tta,
                                               object_size=object_size)
        result = evaluate_prediction(probabilities, truth, len(names),
                                     target=predictor.target, true_instances=instances,
                                     min_size=predictor.min_object_size(factor))
        placed = image_groups(image, truth, instances=instances,
                              has_background=dataset.has_background)
        for scores_of in (everything, *(groups.setdefault(g, GroupScores(names))
                                        for g in placed["groups"])):
            scores_of.add(result.confusion, result.objects)
        scores = per_class_scores(result.confusion, names)
        row = {"image": image_path, "foreground_dice": scores["foreground_dice"],
               "mean_iou": scores["mean_iou"], "pixel_accuracy": scores["pixel_accuracy"]}
        if result.objects is not None:
            row.update(mean_ap=result.objects.mean_ap, true_objects=result.objects.true_objects,
                       predicted_objects=result.objects.predicted_objects)
        if dataset.has_background:
            row["uncertain_share"] = round(uncertain_share(probabilities), 4)
        if object_size is not None:
            row["scale"] = round(factor, 3)
        row.update(brightness=round(placed["brightness"], 2),
                   object_diameter=placed["object_diameter"], groups=" ".join(placed["groups"]))
        rows.append(row)
        kept.append((image_foreground_dice(scores), image_path, image, truth, result.classes))
        kept = sorted(kept, key=lambda k: k[0])[:worst]  # bounded memory
    result = summarize(everything.matrix, names, everything.objects)
    result["images"] = len(rows)
    result["image_dice"] = everything.as_dict()["image_dice"]
    result["groups"] = {name: groups[name].as_dict() for name in sorted(groups, key=group_order)}
    files.write_text(output_dir / "scores.json", json.dumps(result, indent=2) + "\n")

    files.write_csv(output_dir / "per_image.csv", rows, ("image",))
    plot_confusion(everything.matrix, names, output_dir / "confusion.png")
    for dice, image_path, image, truth, predicted in kept:
        picture = side_by_side(image, truth, predicted, names,
                               f"{Path(image_path).name}   {headline_name(result)} {dice:.3f}")
        files.save_image(output_dir / "worst" / f"{Path(image_path).stem}.png", picture)
    result["worst"] = [(Path(p).name, d) for d, p, *_ in kept]
    return result


def side_by_side(
    image: np.ndarray, truth: np.ndarray, predicted: np.ndarray, names: list[str], caption: str
) -> PIL.Image.Image:
    """The image, its truth and the prediction side by side, with captions.

    Args:
        image: `(H, W, C)` float image in [0, 1].
        truth: `(H, W)` true class ids.
        predicted: `(H, W)` predicted class ids.
        names: Class names for the legends.
        caption: Line written above the three panels.

    Returns:
        An RGB picture.
    """
    picture = np.clip(image * 255, 0, 255).astype(np.uint8)
    picture = picture[..., 0] if picture.shape[-1] == 1 else picture
    panels = [("image", overlay(picture, np.zeros(truth.shape, np.uint8), names)),
              ("truth", overlay(picture, truth, names, outline=True)),
              ("prediction", overlay(picture, predicted, names, outline=True))]
    gap, head = 8, 30
    width = sum(p.width for _, p in panels) + gap * (len(panels) - 1)
    canvas = PIL.Image.new("RGB", (width, head + max(p.height for _, p in panels)),
                           (255, 255, 255))
    draw = PIL.ImageDraw.Draw(canvas)
    draw.text((4, 2), caption, fill=(0, 0, 0))
    x = 0
    for title, panel in panels:
        canvas.paste(panel, (x, head))
        draw.text((x + 4, 16), title, fill=(0, 0, 0))
        x += panel.width + gap
    return canvas


def plot_confusion(matrix: np.ndarray, names: list[str], path) -> None:
    """Row-normalized confusion matrix as a PNG (counts in the cells).

    The figure grows with the number of classes and the longest name, so
    the cells and labels stay readable for 2 classes as for 50.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, np.float64)
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(names)
    label = 0.09 * max(len(name) for name in names)  # inches taken by the tick labels
    cell = 0.55 if n <= 20 else 0.3
    fig, ax = plt.subplots(figsize=(1.6 + label + cell * n, 1.0 + label + cell * n))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{rows[i, j]:.2f}\n{int(matrix[i, j])}", ha="center",
                        va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
