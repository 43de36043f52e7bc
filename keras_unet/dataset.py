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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from keras_unet.labels import IGNORE_ID, read_labels

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class DatasetError(ValueError):
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
    """

    images: list[str]
    masks: list[str]
    names: list[str]
    foreground_value: int | None = None
    instances: list[str] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.names)

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
        )


def _files(folder: Path) -> dict[str, Path]:
    return {
        p.relative_to(folder).with_suffix("").as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def load_dataset(
    root: str | os.PathLike | None = None,
    *,
    images_dir: str | os.PathLike | None = None,
    masks_dir: str | os.PathLike | None = None,
    labels: str | os.PathLike | list[str] | None = None,
    foreground_value: int | None = None,
) -> Dataset:
    """Lists the image/mask pairs of a dataset folder.

    Args:
        root: A folder with `images/`, `masks/` and `labels.txt`.
        images_dir: Images folder (instead of `root`).
        masks_dir: Masks folder (instead of `root`).
        labels: `labels.txt` or class names; default `root/labels.txt`, or
            `["_background_", "foreground"]` with `foreground_value`.
        foreground_value: For binary masks, the value of the foreground.

    Returns:
        The `Dataset`.

    Raises:
        DatasetError: If a folder is missing or empty, or an image has no
            mask (or a mask no image).
    """
    if root is not None:
        root = Path(root)
        images_dir = images_dir or root / "images"
        masks_dir = masks_dir or root / "masks"
        if labels is None and (root / "labels.txt").is_file():
            labels = root / "labels.txt"
    if images_dir is None or masks_dir is None:
        raise DatasetError("give a dataset folder, or both images_dir and masks_dir")
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
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
        names = read_labels(labels)
    elif labels is not None:
        names = list(labels)
    elif foreground_value is not None:
        names = ["_background_", "foreground"]
    else:
        raise DatasetError(
            f"{masks_dir}: no labels.txt; give labels or foreground_value for binary masks"
        )
    keys = sorted(images)
    instances = None
    if root is not None and (root / "instances").is_dir():
        found = _files(root / "instances")
        if set(keys) <= set(found):
            instances = [str(found[k]) for k in keys]
    return Dataset(
        [str(images[k]) for k in keys], [str(masks[k]) for k in keys], names,
        foreground_value, instances,
    )


def check_dataset(dataset: Dataset) -> dict[int, int]:
    """Reads every pair once and checks that it can be trained on.

    Args:
        dataset: The pairs.

    Returns:
        Pixel counts per class id over all masks (ignore excluded).

    Raises:
        DatasetError: Naming the file, if an image or mask cannot be read, a
            mask is lossy (JPEG), their sizes differ, or a mask holds values
            outside the label map.
    """
    counts = np.zeros(256, np.int64)
    for image_path, mask_path in zip(dataset.images, dataset.masks):
        image_size = _image_size(image_path)
        mask = read_mask(mask_path, dataset.foreground_value)
        if Path(mask_path).suffix.lower() in (".jpg", ".jpeg"):
            raise DatasetError(f"{mask_path}: masks must be lossless (PNG), not JPEG")
        if mask.shape != image_size:
            raise DatasetError(
                f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image "
                f"{image_path} is {image_size[0]}x{image_size[1]}"
            )
        values = np.bincount(mask.ravel(), minlength=256)
        bad = [int(v) for v in np.nonzero(values)[0] if v >= dataset.num_classes and v != IGNORE_ID]
        if bad:
            raise DatasetError(
                f"{mask_path}: mask values {bad[:5]} are outside the label map "
                f"(0..{dataset.num_classes - 1}, 255 = ignore)"
                + ("; binary 0/255 masks need foreground_value=255" if bad == [255] else "")
            )
        counts += values
    counts[IGNORE_ID] = 0
    return {i: int(n) for i, n in enumerate(counts) if n}


def _image_size(path: str) -> tuple[int, int]:
    try:
        with PIL.Image.open(path) as image:
            image.verify()
            return image.size[1], image.size[0]
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"{path}: unreadable image ({err})") from None


def read_mask(path: str, foreground_value: int | None = None) -> np.ndarray:
    """Reads a mask as uint8 class ids (palette indices or grey values).

    Args:
        path: Mask file.
        foreground_value: For binary masks, the value that becomes class 1.

    Returns:
        `(H, W)` uint8 array.

    Raises:
        DatasetError: If the file cannot be read.
    """
    try:
        with PIL.Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: unreadable mask ({err})") from None
    if array.ndim == 3:
        array = array[..., 0]
    if foreground_value is not None:
        return (array == foreground_value).astype(np.uint8)
    if array.max(initial=0) > 255:
        raise DatasetError(f"{path}: mask values above 255 (a 16-bit instance mask?)")
    return array.astype(np.uint8)


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
        val_names: Explicit validation pair names (mask stems); overrides
            the random split.

    Returns:
        `(train, val)` datasets.

    Raises:
        DatasetError: If a named validation pair does not exist, or there
            are too few pairs to split.
    """
    stems = dataset.stems
    if val_names is not None:
        missing = sorted(set(val_names) - set(stems))
        if missing:
            raise DatasetError(f"validation list names pairs not in the dataset: {missing[:5]}")
        chosen = set(val_names)
        val = [i for i, s in enumerate(stems) if s in chosen]
    else:
        if len(stems) < 2:
            raise DatasetError("need at least 2 image/mask pairs to split train/validation")
        order = list(range(len(stems)))
        random.Random(seed).shuffle(order)
        val = sorted(order[: max(1, round(val_fraction * len(stems)))])
    train = [i for i in range(len(stems)) if i not in set(val)]
    return dataset.subset(train), dataset.subset(val)
