"""The label map: class names <-> class ids, and the mask palette.

One `labels.txt` defines the class ids of a whole dataset and travels with
the trained model and its exported files. It follows the LabelMe
convention: one name per line, `__ignore__` (unlabelled pixels, stored as
255 in masks) and `_background_` (id 0) first, then classes 1..N in file
order. Blank lines are skipped; duplicates are an error.
"""

from __future__ import annotations

import colorsys
import functools
import os
from collections.abc import Iterable
from pathlib import Path

from keras_unet.errors import KerasUnetError

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
IGNORE_ID = 255
MAX_CLASS_ID = 254  # uint8 masks: 0..254 are classes, 255 is ignore


class LabelMapError(KerasUnetError, ValueError):
    """A label map that cannot be used (duplicates, too many classes...)."""


def read_labels(path: str | os.PathLike) -> list[str]:
    """Reads class names from a `labels.txt`, in id order.

    Args:
        path: The labels file.

    Returns:
        Class names, index = class id (index 0 is `_background_`). The
        `__ignore__` line, if any, is dropped: ignore is always id 255.

    Raises:
        LabelMapError: If the file is not UTF-8 text, a name repeats or
            there are too many classes.
        FileNotFoundError: If the file does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LabelMapError(f"{path}: the label list is not UTF-8 text") from None
    names = [line.strip() for line in text.splitlines()]
    return make_label_list([n for n in names if n], source=str(path))


def make_label_list(names: Iterable[str], source: str = "labels") -> list[str]:
    """Normalizes a list of class names into id order.

    `__ignore__` is dropped (it is id 255), `_background_` becomes id 0
    wherever it appears (it is added if missing), the other names keep their
    order as ids 1..N.

    Args:
        names: Class names.
        source: What the names came from, for error messages.

    Returns:
        Class names, index = class id.

    Raises:
        LabelMapError: If a name repeats or there are more than 254 classes.
    """
    names = list(names)
    seen = set()
    for name in names:
        if name in seen:
            raise LabelMapError(f"{source}: label {name!r} appears twice")
        seen.add(name)
    classes = [n for n in names if n not in (IGNORE_LABEL, BACKGROUND_LABEL)]
    ordered = [BACKGROUND_LABEL, *classes]
    if len(ordered) - 1 > MAX_CLASS_ID:
        raise LabelMapError(
            f"{source}: {len(ordered) - 1} classes do not fit in 8-bit masks "
            f"(at most {MAX_CLASS_ID} classes besides _background_; 255 is ignore)"
        )
    return ordered


def label_ids(names: list[str]) -> dict[str, int]:
    """Maps each label to its mask value (`__ignore__` -> 255).

    Args:
        names: Class names in id order (see `make_label_list`).

    Returns:
        `{name: id}` including `__ignore__: 255`.
    """
    return {IGNORE_LABEL: IGNORE_ID, **{name: i for i, name in enumerate(names)}}


def labels_text(names: list[str]) -> str:
    """The `labels.txt` content for class names in id order."""
    return "\n".join([IGNORE_LABEL, *names]) + "\n"


def class_color(class_id: int) -> tuple[int, int, int]:
    """Display colour of a class id: golden-ratio spaced hues, 0 is black.

    Args:
        class_id: Class id (0..254).

    Returns:
        `(r, g, b)` in 0..255.
    """
    if class_id == 0:
        return (0, 0, 0)
    hue = (class_id * 0.618033988749895) % 1.0
    value = 1.0 if class_id % 2 else 0.75
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.9, value))


@functools.cache
def palette() -> tuple[int, ...]:
    """The 256-entry RGB palette of class-id mask PNGs (768 ints).

    Entry `i` has red value `i`, so a decoder that expands the palette to RGB
    (as `tf.io.decode_png` does) still yields the class id in the red
    channel, while PIL yields the index itself. Green and blue are those of
    `class_color(i)`, so classes stay distinguishable by eye; 0 is black and
    255 (ignore) is white.

    Returns:
        A flat `(r0, g0, b0, r1, g1, b1, ...)` tuple for `Image.putpalette`.
    """
    flat = []
    for i in range(255):
        _, g, b = class_color(i)
        flat += [i, g, b]
    return tuple(flat + [255, 255, 255])
