"""Groups of images to score apart: by brightness and by object size.

A model tuned on one exposure and one magnification can fail silently on
others; pooled scores hide it, because the common kind of image dominates.
`evaluate` and `bench_accuracy.py` therefore also score every image group:

- **brightness**: the image's mean grey level on 0-255, in bins a factor 4
  apart: `dark` (< 8), `dim` (8-32), `mid` (32-128), `bright` (>= 128).
  Fluorescence images are typically dark or dim, brightfield bright.
- **object size**: the median equivalent diameter `sqrt(4 * area / pi)` of
  the image's true objects, in pixels, in bins a factor 2 apart: `small`
  (< 16), `medium` (16-32), `large` (>= 32). Objects are the instance masks
  where the dataset has them, else the connected components of the
  foreground classes (only in a dataset with `_background_`).

Group names read `brightness:dim`, `size:large`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from keras_unet.data.instances import foreground_objects, median_object_diameter
from keras_unet.evaluation.scores import (
    ObjectScores,
    headline_scores,
    image_foreground_dice,
    per_class_scores,
    score_cell,
)

BRIGHTNESS_BINS = (("dark", 8.0), ("dim", 32.0), ("mid", 128.0), ("bright", math.inf))
SIZE_BINS = (("small", 16.0), ("medium", 32.0), ("large", math.inf))


def mean_brightness(image: np.ndarray) -> float:
    """Mean grey level of an image on 0-255.

    Args:
        image: `(H, W, C)` float image in [0, 1] (as `read_image` gives).

    Returns:
        The mean over pixels and channels, times 255.
    """
    return float(np.mean(image) * 255.0)


def bin_name(value: float, bins) -> str:
    """The name of the first bin whose upper edge is above `value`."""
    return next(name for name, upper in bins if value < upper)


def group_order(name: str) -> tuple[int, int]:
    """Sort key of group names: brightness bins, then size bins, in bin order."""
    kind, _, label = name.partition(":")
    bins = {"brightness": BRIGHTNESS_BINS, "size": SIZE_BINS}.get(kind, ())
    names = [b for b, _ in bins]
    return (0 if kind == "brightness" else 1, names.index(label) if label in names else 99)


def image_groups(
    image: np.ndarray,
    truth: np.ndarray,
    *,
    instances: np.ndarray | None = None,
    has_background: bool = True,
) -> dict:
    """The groups an image is scored in, and the values that placed it.

    Args:
        image: `(H, W, C)` float image in [0, 1].
        truth: `(H, W)` true class ids.
        instances: `(H, W)` true object ids, if the dataset has them.
        has_background: Whether class 0 is `_background_` (only then do
            the foreground's connected components count as objects).

    Returns:
        `{"brightness": float, "object_diameter": float | None, "groups":
        [names]}`; an image without objects has no size group.
    """
    brightness = mean_brightness(image)
    groups = [f"brightness:{bin_name(brightness, BRIGHTNESS_BINS)}"]
    if instances is None and has_background:
        instances = foreground_objects(truth)
    diameter = median_object_diameter(instances) if instances is not None else None
    if diameter is not None:
        groups.append(f"size:{bin_name(diameter, SIZE_BINS)}")
    return {"brightness": brightness, "object_diameter": diameter, "groups": groups}


@dataclass
class GroupScores:
    """Scores of a group of images, pooled as they are added.

    Attributes:
        names: Class names by id.
        matrix: The pooled pixel confusion matrix.
        objects: Pooled object scores (`None` until an image has them).
        image_dice: Each image's headline Dice (`image_foreground_dice`).
    """

    names: list[str]
    matrix: np.ndarray | None = None
    objects: ObjectScores | None = None
    image_dice: list[float] = field(default_factory=list)

    def add(self, matrix: np.ndarray, objects: ObjectScores | None = None) -> None:
        """Adds one image: its confusion matrix and, if scored, its objects."""
        self.matrix = matrix if self.matrix is None else self.matrix + matrix
        self.image_dice.append(image_foreground_dice(per_class_scores(matrix, self.names)))
        if objects is not None:
            self.objects = objects if self.objects is None else self.objects.add(objects)

    def as_dict(self) -> dict:
        """`{"images", "iou", "dice", "image_dice", "mean_ap"}`: the pooled
        headline IoU and Dice (`headline_scores`), the mean of the images'
        Dice, and the mean AP (`None` without objects)."""
        iou, dice = headline_scores(per_class_scores(self.matrix, self.names))
        return {"images": len(self.image_dice), "iou": iou, "dice": dice,
                "image_dice": float(np.mean(self.image_dice)),
                "mean_ap": self.objects.mean_ap if self.objects is not None else None}


def format_groups(groups: dict) -> str:
    """A fixed-width table of `{group: GroupScores.as_dict()}`."""
    lines = [f"{'group':<22}{'images':>7}{'Dice':>8}{'img Dice':>9}{'mean AP':>9}"]
    for name, g in groups.items():
        cells = [score_cell(g[key]) for key in ("dice", "image_dice", "mean_ap")]
        lines.append(f"{name:<22}{g['images']:>7}{cells[0]:>8}{cells[1]:>9}{cells[2]:>9}")
    return "\n".join(lines)
