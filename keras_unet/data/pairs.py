"""Segmentation datasets on disk: listing image/mask pairs, checking, splitting.

Two layouts are read:

* the keras-unet layout that `labelme2masks` writes: `images/`, `masks/`
  (class-id PNGs, 255 = ignore), `labels.txt` and optionally `instances/`
  (16-bit instance ids) in one folder;
* plain folder pairs of images and binary masks, with the mask value of the
  foreground (e.g. 255): `foreground_value` maps it to class 1 and every
  other value to 0.

Images and masks are paired by their path relative to their folder, without
suffix (`images/a/b.jpg` <-> `masks/a/b.png`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_unet.data.labels import (
    BACKGROUND_LABEL,
    IGNORE_ID,
    LabelMapError,
    apply_ignore_index,
    read_labels,
)
from keras_unet.data.readers import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    ReadError,
    image_size,
    read_instances,
    read_mask,
)
from keras_unet.errors import KerasUnetError
from keras_unet.files import is_temporary

# Share of a mask's class pixels that its instance mask may disagree on.
MAX_MISALIGNED = 0.02


class DatasetError(KerasUnetError, ValueError):
    """A dataset that cannot be used; the message names the file."""


@dataclass
class Dataset:
    """Image/mask pairs and what their mask values mean.

    Attributes:
        images: Image paths.
        masks: Mask paths, same order.
        names: Class names by id (index 0 = background).
        foreground_value: For binary masks: the value of class 1, else `None`.
        instances: Instance-id mask paths (16-bit PNG), same order, if the
            dataset has them (`labelme2masks --instances`).
        ignore_index: The dataset's void mask value, read as 255 (ignore),
            or `None`.
    """

    images: list[str]
    masks: list[str]
    names: list[str]
    foreground_value: int | None = None
    instances: list[str] | None = None
    ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.names)

    @property
    def has_background(self) -> bool:
        """Whether class 0 is `_background_` (LabelMe datasets, binary masks):
        only then are there foreground scores and objects."""
        return bool(self.names) and self.names[0] == BACKGROUND_LABEL

    def read_mask(self, index: int) -> np.ndarray:
        """The class ids of pair `index` (void and unlabelled pixels 255)."""
        return read_mask(self.masks[index], self.foreground_value, self.ignore_index)

    @property
    def stems(self) -> list[str]:
        """Pair names: mask paths relative to the masks folder, no suffix."""
        return [Path(m).stem for m in self.masks]

    def subset(self, indices: list[int]) -> "Dataset":
        """The pairs at `indices`, same label map."""
        return Dataset(
            [self.images[i] for i in indices],
            [self.masks[i] for i in indices],
            self.names,
            self.foreground_value,
            [self.instances[i] for i in indices] if self.instances else None,
            self.ignore_index,
        )


def _files(folder: Path) -> dict[str, Path]:
    return {
        p.relative_to(folder).with_suffix("").as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_temporary(p)
    }


def load_dataset(
    root: str | os.PathLike | None = None,
    *,
    images_dir: str | os.PathLike | None = None,
    masks_dir: str | os.PathLike | None = None,
    labels: str | os.PathLike | list[str] | None = None,
    foreground_value: int | None = None,
    ignore_index: int | None = None,
    default_labels: list[str] | None = None,
) -> Dataset:
    """Lists the image/mask pairs of a dataset folder.

    Args:
        root: A folder with `images/`, `masks/` and `labels.txt`.
        images_dir: Images folder (instead of `root`).
        masks_dir: Masks folder (instead of `root`).
        labels: `labels.txt` or class names; default `root/labels.txt`, or
            `["_background_", "foreground"]` with `foreground_value`.
        foreground_value: For binary masks, the value of the foreground.
        ignore_index: A void mask value (CamVid's 11), ignored like 255; a
            label map that names it as its last id loses that name.
        default_labels: Class names for a dataset that has no label map of
            its own (neither `labels` nor `root/labels.txt`), e.g. a model's.

    Returns:
        The `Dataset`.

    Raises:
        DatasetError: If a folder is missing or empty, an image has no
            mask (or a mask no image), or the label map or the ignore
            index is unusable.
    """
    if root is not None:
        root = Path(root)
        images_dir = images_dir or root / "images"
        masks_dir = masks_dir or root / "masks"
        if labels is None and (root / "labels.txt").is_file():
            labels = root / "labels.txt"
    if images_dir is None or masks_dir is None:
        raise DatasetError("give a dataset folder (--data), or both an images and a masks "
                           "folder (--images and --masks)")
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if root is not None and root.is_dir() and not images_dir.is_dir() and any(
            root.glob("*.json")):
        raise DatasetError(f"{root}: a folder of JSON files, not a dataset folder (images/, "
                           "masks/): convert LabelMe annotations first (keras-unet "
                           f"labelme2masks {root} DATASET), then train on DATASET")
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found")
    images, masks = _files(images_dir), _files(masks_dir)
    if not images:
        raise DatasetError(f"{images_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        name = unmatched[0]
        what = f"image {images[name]} has no mask in {masks_dir}" if name in images else (
            f"mask {masks[name]} has no image in {images_dir}")
        more = f" (and {len(unmatched) - 1} more unpaired files)" if len(unmatched) > 1 else ""
        raise DatasetError(what + more)
    if isinstance(labels, (str, os.PathLike)):
        if not Path(labels).is_file():
            raise DatasetError(f"{labels}: labels file not found")
        try:
            names = read_labels(labels)
        except LabelMapError as err:
            raise DatasetError(str(err)) from None
    elif labels is not None:
        names = list(labels)
    elif default_labels is not None:
        names = list(default_labels)
    elif foreground_value is not None:
        names = ["_background_", "foreground"]
    else:
        raise DatasetError(
            f"{masks_dir}: no labels.txt; give the class names (--labels labels.txt), or for "
            "binary masks the mask value of the foreground (--foreground-value, e.g. 255)"
        )
    try:
        names = apply_ignore_index(names, ignore_index, source=str(labels or masks_dir))
    except LabelMapError as err:
        raise DatasetError(str(err)) from None
    keys = sorted(images)
    instances = None
    if root is not None and (root / "instances").is_dir():
        found = _files(root / "instances")
        if set(keys) <= set(found):
            instances = [str(found[k]) for k in keys]
    return Dataset(
        [str(images[k]) for k in keys], [str(masks[k]) for k in keys], names,
        foreground_value, instances, ignore_index,
    )


def check_dataset(dataset: Dataset, *, instances: bool = False) -> dict[int, int]:
    """Reads every pair once, as training will, and checks it can be trained on and scored.

    The files are read with `keras_unet.data.readers`, the readers the training
    pipeline uses, so what passes here trains as it was checked. Every bad
    pair is found before the error is raised.

    Args:
        dataset: The pairs.
        instances: Also check the instance masks (instance-mode training,
            border weights).

    Returns:
        Pixel counts per class id over all masks (ignore excluded).

    Raises:
        DatasetError: Naming each bad file (the first ten) and what is wrong:
            an unreadable image or mask, a lossy (JPEG) mask, a mask of
            another size than its image, mask values outside the label map,
            a missing or mismatched instance mask; or masks with no pixel of
            any class but 0 beside ignored ones (binary 0/255 masks read
            without `foreground_value`).
    """
    if instances and not dataset.instances:
        raise DatasetError(
            "instance masks are needed (an instances/ folder beside images/ and masks/, "
            "with a 16-bit instance-id PNG per mask): convert with labelme2masks --instances"
        )
    counts = np.zeros(256, np.int64)
    problems = []
    for index, (image_path, mask_path) in enumerate(zip(dataset.images, dataset.masks)):
        try:
            counts += _check_pair(dataset, index, instances)
        except (DatasetError, ReadError) as err:
            problems.append(str(err))
    if problems:
        shown = problems[:10]
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DatasetError(
            f"{len(problems)} of {len(dataset.masks)} image/mask pairs cannot be used:\n  "
            + "\n  ".join(shown) + more
        )
    if counts[IGNORE_ID] and not counts[1:IGNORE_ID].any() and dataset.foreground_value is None:
        # Binary 0/255 masks read with a label map: 255 is ignore, so the
        # foreground would silently vanish from training and scoring.
        void = "" if dataset.ignore_index is None else f" and the void id {dataset.ignore_index}"
        raise DatasetError(
            f"{Path(dataset.masks[0]).parent}: no mask has a pixel of any class but 0 "
            f"({dataset.names[0]}); every other pixel is 255{void}, which is ignored, so "
            "there would be nothing but background to learn or score. Binary masks with "
            "the foreground stored as 255: give --foreground-value 255 (config key "
            "foreground_value)"
        )
    counts[IGNORE_ID] = 0
    return {i: int(n) for i, n in enumerate(counts) if n}


def _check_pair(dataset: Dataset, index: int, instances: bool) -> np.ndarray:
    """Checks pair `index`; returns its mask's 256-bin value histogram."""
    image_path, mask_path = dataset.images[index], dataset.masks[index]
    if Path(mask_path).suffix.lower() not in MASK_SUFFIXES:
        raise DatasetError(f"{mask_path}: masks must be lossless (PNG), not JPEG")
    size = image_size(image_path)
    mask = dataset.read_mask(index)
    if mask.shape != size:
        raise DatasetError(
            f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image "
            f"{image_path} is {size[0]}x{size[1]}"
        )
    values = np.bincount(mask.ravel(), minlength=256)
    bad = [int(v) for v in np.nonzero(values)[0] if v >= dataset.num_classes and v != IGNORE_ID]
    if bad:
        found = [int(v) for v in np.nonzero(values)[0]]
        raise DatasetError(
            f"{mask_path}: mask values {bad[:5]} are outside the label map "
            f"(ids 0..{dataset.num_classes - 1}: {', '.join(dataset.names[:4])}"
            f"{', ...' if dataset.num_classes > 4 else ''}; 255 = ignore); values found: "
            f"{found[:12]}{' ...' if len(found) > 12 else ''}. Fix: name every class in "
            "labels.txt (plain form: line i = id i), declare a void value with "
            f"--ignore-index {bad[0]}"
            + (", or for binary 0/N masks give --foreground-value" if dataset.num_classes == 2
               else "")
        )
    if instances:
        ids = read_instances(dataset.instances[index])
        if ids.shape != size:
            raise DatasetError(
                f"{dataset.instances[index]}: instance mask is {ids.shape[0]}x{ids.shape[1]} "
                f"but its image {image_path} is {size[0]}x{size[1]}"
            )
        labelled = mask != IGNORE_ID
        objects, classes = (ids > 0) & labelled, (mask > 0) & labelled
        apart = int((objects != classes).sum())
        if apart > MAX_MISALIGNED * max(1, int(classes.sum())):
            raise DatasetError(
                f"{dataset.instances[index]}: the objects do not lie on the classes of "
                f"{mask_path} ({apart} pixels are an object in one and background in the "
                f"other, {apart / max(1, int(classes.sum())):.0%} of the class pixels): a "
                "shifted, flipped or mismatched instance mask?")
    return values


def split_by_names(
    dataset: Dataset, train_names: list[str], val_names: list[str]
) -> tuple[Dataset, Dataset, list[str], list[str]]:
    """The pairs of a recorded split that the dataset still has.

    Args:
        dataset: The pairs now.
        train_names: Training pair names (mask stems) as recorded.
        val_names: Validation pair names as recorded.

    Returns:
        `(train, val, added, gone)`: the recorded pairs that exist, and the
        names of pairs in neither list, and of recorded pairs that are gone.
    """
    stems = dataset.stems
    train_set, val_set = set(train_names), set(val_names)
    train = [i for i, s in enumerate(stems) if s in train_set]
    val = [i for i, s in enumerate(stems) if s in val_set]
    added = [s for s in stems if s not in train_set | val_set]
    gone = sorted((train_set | val_set) - set(stems))
    return dataset.subset(train), dataset.subset(val), added, gone


def pair_name(name: str, stems: Collection[str]) -> str:
    """The pair a line of a list file names.

    Pairs are named by their mask's stem (`25`); a line may also give an
    image or mask file name or path (`25.png`, `images/25.png`).

    Args:
        name: The line.
        stems: The dataset's pair names.

    Returns:
        The pair name, or `name` itself where it names none.
    """
    path = Path(name)
    if name not in stems and path.suffix.lower() in IMAGE_SUFFIXES and path.stem in stems:
        return path.stem
    return name


def split_dataset(
    dataset: Dataset,
    val_fraction: float = 0.2,
    seed: int = 0,
    val_names: list[str] | None = None,
) -> tuple[Dataset, Dataset]:
    """Splits pairs into training and validation, reproducibly.

    Args:
        dataset: The pairs.
        val_fraction: Share of pairs for validation (at least one).
        seed: Seed of the shuffle.
        val_names: Explicit validation pairs (`pair_name`: mask stems or
            file names); overrides the random split.

    Returns:
        `(train, val)` datasets.

    Raises:
        DatasetError: If a named validation pair does not exist, or there
            are too few pairs to split.
    """
    stems = dataset.stems
    if val_names is not None:
        known = set(stems)
        chosen = {pair_name(name, known) for name in val_names}
        missing = sorted(chosen - known)
        if missing:
            raise DatasetError(f"the validation list (--val-list) names pairs not in the "
                               f"dataset: {missing[:5]} (a line is a pair's name, e.g. "
                               f"{stems[0]!r}, or its image file name)")
        val = [i for i, s in enumerate(stems) if s in chosen]
    else:
        if len(stems) < 2:
            raise DatasetError("need at least 2 image/mask pairs to split train/validation")
        order = list(range(len(stems)))
        random.Random(seed).shuffle(order)
        val = sorted(order[: max(1, round(val_fraction * len(stems)))])
    train = [i for i in range(len(stems)) if i not in set(val)]
    return dataset.subset(train), dataset.subset(val)
