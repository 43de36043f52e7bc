"""The label map: class names <-> class ids, and the mask palette.

One `labels.txt` defines the class ids of a whole dataset and travels with
the trained model and its exported files. Two forms, told apart by the
first line:

- **plain** (any dataset of class-id masks): one name per line, id = line
  number from 0, whatever the names (`Sky`, `Building`, ...);
- **LabelMe** (first line `__ignore__`, as labelme's tutorials write it):
  `__ignore__` is the unlabelled value 255, `_background_` is id 0 (added
  if missing), the other names are classes 1..N in file order.

Blank lines are skipped; duplicates are an error. Mask value 255 is always
"ignore"; a dataset's own void id (CamVid's 11) is declared with an
`ignore_index` (see `apply_ignore_index`).
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


def read_label_names(path: str | os.PathLike) -> list[str]:
    """The names of a label list file as written, blank lines skipped.

    Args:
        path: The labels file.

    Returns:
        The names, in file order.

    Raises:
        LabelMapError: If the file is not UTF-8 text.
        FileNotFoundError: If the file does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LabelMapError(f"{path}: the label list is not UTF-8 text") from None
    return [name for name in (line.strip() for line in text.splitlines()) if name]


def read_labels(path: str | os.PathLike) -> list[str]:
    """Reads the label map of a dataset or a model from a `labels.txt`.

    Args:
        path: The labels file, plain or LabelMe form (module docstring).

    Returns:
        Class names, index = class id.

    Raises:
        LabelMapError: If the file is not UTF-8 text, a name repeats,
            `__ignore__` is not the first line, or there are too many
            classes.
        FileNotFoundError: If the file does not exist.
    """
    return label_map(read_label_names(path), source=str(path))


def label_map(names: Iterable[str], source: str = "labels") -> list[str]:
    """Class names by id from the lines of a label list (module docstring).

    Args:
        names: The lines, in order.
        source: What the names came from, for error messages.

    Returns:
        Class names, index = class id.

    Raises:
        LabelMapError: On a repeated name, an `__ignore__` that is not the
            first line, or more than 255 classes.
    """
    names = list(names)
    if names and names[0] == IGNORE_LABEL:
        return make_label_list(names, source)
    if IGNORE_LABEL in names:
        raise LabelMapError(
            f"{source}: {IGNORE_LABEL} must be the first line (the LabelMe form, where "
            f"{BACKGROUND_LABEL} is id 0); in a plain list, where id = line number from 0, "
            "declare a void id with --ignore-index instead")
    _check_unique(names, source)
    if len(names) > MAX_CLASS_ID + 1:
        raise LabelMapError(f"{source}: {len(names)} classes do not fit in 8-bit masks (at "
                            f"most {MAX_CLASS_ID + 1}, ids 0..{MAX_CLASS_ID}; 255 is ignore)")
    return names


def apply_ignore_index(names: list[str], ignore_index: int | None,
                       source: str = "labels") -> list[str]:
    """The classes of a label map whose id `ignore_index` is void.

    Mask pixels of the void id count for nothing (they are read as 255);
    if the label map names it, as its last id (CamVid's `Unlabelled` = 11),
    that name is not a class.

    Args:
        names: Class names by id.
        ignore_index: The void id (0..255), or `None`.
        source: What the names came from, for error messages.

    Returns:
        The class names by id, without the void one.

    Raises:
        LabelMapError: If `ignore_index` is not an id 0..255, or names a
            class before the last one (ids after it would shift).
    """
    if ignore_index is None or ignore_index == IGNORE_ID:
        return list(names)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool) \
            or not 0 <= ignore_index <= IGNORE_ID:
        raise LabelMapError(f"ignore_index {ignore_index!r}: expected a mask value 0..255")
    if ignore_index < len(names) - 1:
        raise LabelMapError(
            f"{source}: ignore_index {ignore_index} is class {names[ignore_index]!r} in the "
            f"middle of the label map (ids 0..{len(names) - 1}): only the last id, or a value "
            "past the map, can be void without renumbering the classes")
    return list(names[:ignore_index])


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
    _check_unique(names, source)
    classes = [n for n in names if n not in (IGNORE_LABEL, BACKGROUND_LABEL)]
    ordered = [BACKGROUND_LABEL, *classes]
    if len(ordered) - 1 > MAX_CLASS_ID:
        raise LabelMapError(
            f"{source}: {len(ordered) - 1} classes do not fit in 8-bit masks "
            f"(at most {MAX_CLASS_ID} classes besides _background_; 255 is ignore)"
        )
    return ordered


def _check_unique(names: list[str], source: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise LabelMapError(f"{source}: label {name!r} appears twice")
        seen.add(name)


def label_ids(names: list[str]) -> dict[str, int]:
    """Maps each label to its mask value (`__ignore__` -> 255).

    Args:
        names: Class names in id order (see `make_label_list`).

    Returns:
        `{name: id}` including `__ignore__: 255`.
    """
    return {IGNORE_LABEL: IGNORE_ID, **{name: i for i, name in enumerate(names)}}


def labels_text(names: list[str]) -> str:
    """The `labels.txt` content for class names in id order.

    The LabelMe form for a map whose id 0 is `_background_`, else the plain
    form: `read_labels` reads either back as `names`.
    """
    lines = [IGNORE_LABEL, *names] if names and names[0] == BACKGROUND_LABEL else names
    return "\n".join(lines) + "\n"


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
