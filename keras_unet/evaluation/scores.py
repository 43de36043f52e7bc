"""Scoring predicted masks against the truth: pixels per class, and objects.

Pixel scores pool a confusion matrix over the images (IoU, Dice, precision,
recall per class). Object scores match predicted objects to true objects
by their IoU, as the 2018 Data Science Bowl did:

- **mean AP**: for each IoU threshold t in 0.50, 0.55, ..., 0.95 an image
  scores `TP / (TP + FP + FN)`, where a true object counts as found when a
  predicted object overlaps it with IoU > t (at t >= 0.5 a match is
  one-to-one); the image's score is the mean over the thresholds, and the
  dataset's score the mean over its images. An image with no true and no
  predicted object scores 1.
- **F1 at IoU 0.5**, from the true/false positives and false negatives
  pooled over the images.
- **missed**: true objects less than half covered by predicted foreground.
- **split**: true objects holding two or more predicted objects (each
  lying mostly, over half its pixels, inside it).
- **merged**: true objects lying mostly inside a predicted object that also
  holds most of another true object.

Pixels marked ignore in the truth count for neither side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keras_unet.data.labels import BACKGROUND_LABEL, IGNORE_ID

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def confusion(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix of class-id masks (rows truth, columns prediction).

    Pixels whose truth is 255 (ignore) are skipped.

    Args:
        truth: Integer class ids, any shape.
        predicted: Integer class ids, same shape.
        num_classes: Number of classes `n`.

    Returns:
        int64 `(n, n)` pixel counts.

    Raises:
        ValueError: If the shapes differ, or a value lies outside
            `0..n-1` (truth may also hold 255).
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth {truth.shape} and prediction {predicted.shape} differ in shape")
    truth = truth.ravel().astype(np.int64)
    predicted = predicted.ravel().astype(np.int64)
    keep = truth != IGNORE_ID
    truth, predicted = truth[keep], predicted[keep]
    for name, values in (("truth", truth), ("prediction", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class ids {int(values.min())}..{int(values.max())}"
                             f" outside 0..{num_classes - 1}")
    index = truth * num_classes + predicted
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_scores(matrix: np.ndarray, names: list[str]) -> dict:
    """Per-class and summary scores, as segmentation benchmarks report them.

    Args:
        matrix: `(n, n)` confusion matrix (void and ignored pixels are not
            in it).
        names: Class names by id.

    Returns:
        `{"classes": {name: {"iou", "dice", "precision", "recall", "pixels"}},
        "pixel_accuracy"` (global: correct pixels / pixels), `"class_accuracy"`
        (the mean of the classes' recalls), `"mean_iou"` (mIoU) and
        `"mean_dice"` over every class, `"background"` (whether class 0 is
        `_background_`), and `"foreground_iou"`, `"foreground_dice"`: the
        means over the classes but background, `None` for a dataset without
        one}`. Scores of a class absent from truth and prediction are `None`
        and left out of the means (a class absent from the truth is left
        out of the class accuracy).
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

    def mean(values):
        defined = [v for v in values if v is not None]
        return float(np.mean(defined)) if defined else None

    total = matrix.sum()
    background = bool(names) and names[0] == BACKGROUND_LABEL
    return {
        "classes": classes,
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "class_accuracy": mean(recall),
        "mean_iou": mean(iou),
        "mean_dice": mean(dice),
        "background": background,
        "foreground_iou": mean(iou[1:]) if background else None,
        "foreground_dice": mean(dice[1:]) if background else None,
    }


def headline_scores(scores: dict) -> tuple[float | None, float | None]:
    """The `(IoU, Dice)` a model is judged and its checkpoints picked by.

    Args:
        scores: `per_class_scores` output.

    Returns:
        The foreground means where class 0 is `_background_` (nuclei:
        background is easy and would flatter), else the means over every
        class (mIoU, as street-scene benchmarks report).
    """
    if scores.get("background", True):
        return scores["foreground_iou"], scores["foreground_dice"]
    return scores["mean_iou"], scores["mean_dice"]


def headline_name(scores: dict) -> str:
    """What `headline_scores`' Dice is called: `"foreground Dice"` where class
    0 is `_background_`, else `"mean Dice"`.

    Args:
        scores: `per_class_scores` output (or `summarize`'s, which has its keys).

    Returns:
        The name the reports print beside that Dice.
    """
    return "foreground Dice" if scores.get("background", True) else "mean Dice"


def image_foreground_dice(scores: dict) -> float:
    """The Dice by which an image is ranked or averaged.

    Args:
        scores: The image's `per_class_scores`.

    Returns:
        Its headline Dice (`headline_scores`: the foreground Dice, or the
        mean Dice of a dataset without background), or 1 where neither
        the truth nor the prediction has any of those classes (nothing to
        find, nothing found).
    """
    _, dice = headline_scores(scores)
    return 1.0 if dice is None else dice


def format_scores(scores: dict) -> str:
    """A fixed-width table of `per_class_scores` output."""
    lines = [f"{'class':<24}{'IoU':>7}{'Dice':>7}{'prec':>7}{'recall':>7}{'pixels':>11}"]
    for name, s in scores["classes"].items():
        lines.append(
            f"{name[:23]:<24}{score_cell(s['iou']):>7}{score_cell(s['dice']):>7}"
            f"{score_cell(s['precision']):>7}{score_cell(s['recall']):>7}{s['pixels']:>11}"
        )
    lines.append(
        f"mean IoU {score_cell(scores['mean_iou'])}   "
        f"mean Dice {score_cell(scores['mean_dice'])}   "
        f"pixel accuracy {score_cell(scores['pixel_accuracy'])}   class accuracy "
        f"{score_cell(scores.get('class_accuracy'))}"
    )
    if scores.get("foreground_dice") is not None:
        lines.append(f"foreground (classes but {BACKGROUND_LABEL}): IoU "
                     f"{score_cell(scores['foreground_iou'])}   Dice "
                     f"{score_cell(scores['foreground_dice'])}")
    return "\n".join(lines)


def score_cell(value) -> str:
    """A score as a 6-wide table cell (`-` where it is undefined)."""
    return "   -  " if value is None else f"{value:6.3f}"


def format_confusion(matrix: np.ndarray, names: list[str]) -> str:
    """The confusion matrix as a text table that stays readable with many classes.

    Rows are true classes (id and name), columns predicted class ids; each
    cell is the percentage of the row's pixels, so rows sum to 100 and the
    diagonal is each class's recall; the last column is the row's pixels.
    """
    matrix = np.asarray(matrix, np.int64)
    label = max(12, min(24, max(len(n) for n in names) + 5))
    cell = 6
    head = "truth / predicted".ljust(label) + "".join(
        f"{i:>{cell}}" for i in range(len(names))) + f"{'pixels':>12}"
    lines = [head]
    for i, row in enumerate(matrix):
        total = row.sum()
        shares = "".join(f"{100 * v / total:>{cell}.1f}" if total else f"{'-':>{cell}}"
                         for v in row)
        lines.append(f"{f'{i:>3} {names[i]}'[:label - 1]:<{label}}{shares}{int(total):>12}")
    return "\n".join(lines)


def _relabel(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Object ids renumbered 0 (none), 1..N in order of their old ids."""
    values, inverse = np.unique(ids, return_inverse=True)
    if values[0] != 0:
        inverse = inverse + 1
        return inverse.reshape(ids.shape), len(values)
    return inverse.reshape(ids.shape), len(values) - 1


def overlaps(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pixel counts shared by each true and each predicted object.

    Args:
        truth: `(H, W)` true object ids (0 = none), any numbering.
        predicted: `(H, W)` predicted object ids, same shape.

    Returns:
        int64 `(T + 1, P + 1)` counts; row/column 0 is "no object", so row
        sums are the true objects' areas and column sums the predicted
        ones'.
    """
    truth, n_true = _relabel(np.asarray(truth))
    predicted, n_pred = _relabel(np.asarray(predicted))
    index = truth.ravel().astype(np.int64) * (n_pred + 1) + predicted.ravel()
    counts = np.bincount(index, minlength=(n_true + 1) * (n_pred + 1))
    return counts.reshape(n_true + 1, n_pred + 1)


@dataclass
class ObjectScores:
    """Object scores of one image, or pooled over several.

    Attributes:
        images: Images scored.
        true_objects: True objects.
        predicted_objects: Predicted objects.
        ap: Mean over images of the per-image score at each threshold of
            `IOU_THRESHOLDS`.
        tp: True positives at IoU 0.5 (pooled).
        fp: False positives at IoU 0.5 (pooled).
        fn: False negatives at IoU 0.5 (pooled).
        missed: True objects less than half covered by the prediction.
        split: True objects split into several predicted objects.
        merged: True objects merged with another into one prediction.
    """

    images: int = 0
    true_objects: int = 0
    predicted_objects: int = 0
    ap: list[float] = field(default_factory=lambda: [0.0] * len(IOU_THRESHOLDS))
    tp: int = 0
    fp: int = 0
    fn: int = 0
    missed: int = 0
    split: int = 0
    merged: int = 0

    @property
    def mean_ap(self) -> float:
        """Mean AP over IoU 0.50:0.05:0.95 (the DSB2018 score)."""
        return float(np.mean(self.ap))

    @property
    def f1(self) -> float:
        """F1 at IoU 0.5 from the pooled counts (1.0 with nothing to find)."""
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0

    def add(self, other: "ObjectScores") -> "ObjectScores":
        """Pools two results (AP is averaged per image)."""
        images = self.images + other.images
        ap = [(a * self.images + b * other.images) / images if images else 0.0
              for a, b in zip(self.ap, other.ap)]
        return ObjectScores(
            images, self.true_objects + other.true_objects,
            self.predicted_objects + other.predicted_objects, ap,
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
            self.missed + other.missed, self.split + other.split, self.merged + other.merged,
        )

    @classmethod
    def from_dict(cls, values: dict) -> "ObjectScores":
        """The inverse of `as_dict`."""
        return cls(values["images"], values["true_objects"], values["predicted_objects"],
                   list(values["ap_per_threshold"].values()), values["tp"], values["fp"],
                   values["fn"], values["missed"], values["split"], values["merged"])

    def as_dict(self) -> dict:
        """JSON-ready summary, with the mean AP and F1."""
        return {
            "images": self.images, "mean_ap": self.mean_ap, "f1_at_0.5": self.f1,
            "ap_per_threshold": dict(zip(map(str, IOU_THRESHOLDS), self.ap)),
            "true_objects": self.true_objects, "predicted_objects": self.predicted_objects,
            "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "missed": self.missed, "split": self.split, "merged": self.merged,
        }


def object_scores(
    truth: np.ndarray, predicted: np.ndarray, ignore: np.ndarray | None = None
) -> ObjectScores:
    """Object scores of one image (see the module docstring).

    Args:
        truth: `(H, W)` true object ids, 0 = no object.
        predicted: `(H, W)` predicted object ids, 0 = no object.
        ignore: Optional `(H, W)` boolean mask of pixels that count for
            neither side (predicted objects lying wholly there vanish).

    Returns:
        The image's `ObjectScores`.

    Raises:
        ValueError: If the shapes differ.
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth {truth.shape} and prediction {predicted.shape} differ in shape")
    if ignore is not None:
        truth = np.where(ignore, 0, truth)
        predicted = np.where(ignore, 0, predicted)
    counts = overlaps(truth, predicted)
    area_true, area_pred = counts.sum(1)[1:], counts.sum(0)[1:]
    shared = counts[1:, 1:]
    n_true, n_pred = shared.shape
    union = area_true[:, None] + area_pred[None, :] - shared
    iou = np.divide(shared, union, out=np.zeros(shared.shape), where=union > 0)
    ap = []
    for threshold in IOU_THRESHOLDS:
        tp = int((iou > threshold).any(1).sum())
        fp, fn = n_pred - tp, n_true - tp
        ap.append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
    tp = int((iou > 0.5).any(1).sum())
    inside_true = shared > 0.5 * area_pred[None, :]  # predicted j lies mostly in true i
    holds_true = shared > 0.5 * area_true[:, None]  # true i lies mostly in predicted j
    merging = holds_true.sum(0) >= 2
    return ObjectScores(
        images=1, true_objects=n_true, predicted_objects=n_pred, ap=ap,
        tp=tp, fp=n_pred - tp, fn=n_true - tp,
        missed=int((shared.sum(1) < 0.5 * area_true).sum()),
        split=int((inside_true.sum(1) >= 2).sum()),
        merged=int((holds_true & merging[None, :]).any(1).sum()),
    )


def format_object_scores(scores: ObjectScores) -> str:
    """One line per object score, for people."""
    return (
        f"objects: mean AP (IoU 0.50:0.95) {scores.mean_ap:.3f}   F1@0.5 {scores.f1:.3f}   "
        f"true {scores.true_objects}   predicted {scores.predicted_objects}\n"
        f"         missed {scores.missed}   split {scores.split}   merged {scores.merged}   "
        f"(TP {scores.tp}, FP {scores.fp}, FN {scores.fn} at IoU 0.5)"
    )
