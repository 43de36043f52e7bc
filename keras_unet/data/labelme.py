"""The LabelMe annotation format: reading files, rasterizing shapes, and back.

Our own implementation of the format written by the LabelMe app (versions
3.x to 7.x); labelme itself is only used as a reference in the tests. Shapes
are drawn with Pillow's `ImageDraw`, as LabelMe does, so masks match its own
converter pixel for pixel:

| shape_type | points | drawn as |
|---|---|---|
| polygon (default) | >= 3 | filled polygon with its outline |
| rectangle | 2 corners, any order | filled box, both corners included |
| circle | center, a point on the edge | filled disc |
| line | 2 | line of width 10 |
| linestrip | >= 2 | polyline of width 10 with round joints |
| point | 1 | disc of radius 5 |
| oriented_rectangle | 4 | filled polygon |
| mask | 2 (box) | base64 PNG patch at the rounded top-left of the box |

Points outside the image are clipped. Shapes are drawn in file order, later
over earlier, so a `_background_` shape drawn later cuts a hole.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageOps

from keras_unet.data.labels import BACKGROUND_LABEL, IGNORE_ID, IGNORE_LABEL
from keras_unet.errors import KerasUnetError

LINE_WIDTH = 10
POINT_RADIUS = 5
# shape_type -> (minimum, maximum) number of points; None = no maximum.
SHAPE_POINTS = {
    "polygon": (3, None),
    "rectangle": (2, 2),
    "circle": (2, 2),
    "line": (2, 2),
    "linestrip": (2, None),
    "point": (1, 1),
    "oriented_rectangle": (4, 4),
    "mask": (2, 2),
}


class LabelMeError(KerasUnetError, ValueError):
    """A LabelMe file that cannot be converted; names the file and the problem.

    Attributes:
        path: The JSON file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Shape:
    """One LabelMe shape.

    Attributes:
        label: Class name.
        shape_type: One of `SHAPE_POINTS`.
        points: `(x, y)` pairs in image (upright) coordinates.
        group_id: Instance group, or `None` (a separate instance).
        mask: Boolean patch of a `mask` shape, else `None`.
    """

    label: str
    shape_type: str
    points: list[tuple[float, float]]
    group_id: int | str | None = None
    mask: np.ndarray | None = None


@dataclass
class Annotation:
    """A parsed LabelMe file.

    Attributes:
        path: The JSON file.
        shapes: Its shapes, in file order.
        image_path: `imagePath` as written in the file (may be `None`).
        image_data: Base64 `imageData`, or `None`.
        height: `imageHeight`, or `None`.
        width: `imageWidth`, or `None`.
    """

    path: Path
    shapes: list[Shape] = field(default_factory=list)
    image_path: str | None = None
    image_data: str | None = None
    height: int | None = None
    width: int | None = None


def read_annotation(json_path: str | os.PathLike) -> Annotation:
    """Parses a LabelMe JSON file (no image decoding).

    Unknown keys are ignored; a missing `shape_type` means polygon and a
    missing `group_id` means none.

    Args:
        json_path: The `.json` file.

    Returns:
        The `Annotation`.

    Raises:
        LabelMeError: On invalid JSON, a missing `shapes` list, a field of
            the wrong type (`imagePath`, `imageData`, `imageHeight`,
            `imageWidth`, a shape's `label`, `shape_type`, `group_id`,
            `points`, `mask`), an unknown shape type, or a shape with the
            wrong number of points.
    """
    path = Path(json_path)
    data = _load_json(path)
    fields = {}
    for key, kind in (("imagePath", str), ("imageData", str), ("imageHeight", int),
                      ("imageWidth", int)):
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise LabelMeError(path, f"{key} must be {_KINDS[kind]} or null, got "
                               f"{_json_type(value)}")
        if kind is int and value is not None and value < 1:
            raise LabelMeError(path, f"{key} must be a positive integer, got {value}")
        fields[key] = value
    shapes = [_parse_shape(path, i, s) for i, s in enumerate(data["shapes"])]
    return Annotation(
        path=path,
        shapes=shapes,
        image_path=fields["imagePath"],
        image_data=fields["imageData"] or None,
        height=fields["imageHeight"],
        width=fields["imageWidth"],
    )


_KINDS = {str: "a string", int: "an integer"}


def _json_type(value) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _load_json(path: Path) -> dict:
    """The JSON content of a LabelMe file, checked to have a shapes list."""
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelMeError(path, f"invalid JSON ({err})") from None
    except RecursionError:
        raise LabelMeError(path, "invalid JSON (nested too deeply)") from None
    except OSError as err:
        raise LabelMeError(path, f"cannot read file ({err.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise LabelMeError(path, "not a LabelMe file: no 'shapes' list")
    return data


def scan_labels(json_path: str | os.PathLike) -> set[str]:
    """The class labels of a LabelMe file (no `__ignore__`/`_background_`).

    A quick pass for building the label map: only valid labels are
    collected, and shapes are not validated here (`read_annotation` does
    that, and reports a bad label).

    Raises:
        LabelMeError: On invalid JSON or a missing `shapes` list.
    """
    path = Path(json_path)
    labels = {s["label"] for s in _load_json(path)["shapes"]
              if isinstance(s, dict) and label_problem(s.get("label")) is None}
    return labels - {IGNORE_LABEL, BACKGROUND_LABEL}


def label_problem(label) -> str | None:
    """What is wrong with a shape's label, or `None` if it can be a class name.

    A class name is a non-empty string without line breaks or other control
    characters (it becomes a line of `labels.txt`), at most 200 characters.
    """
    if not isinstance(label, str):
        return f"label must be a string, got {_json_type(label)}"
    if not label.strip():
        return "label is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        return f"label {label!r} holds a line break or control character"
    if len(label) > 200:
        return f"label of {len(label)} characters (at most 200)"
    return None


def _parse_shape(path: Path, index: int, raw) -> Shape:
    if not isinstance(raw, dict) or "label" not in raw:
        raise LabelMeError(path, f"shape #{index} has no label")
    problem = label_problem(raw["label"])
    if problem:
        raise LabelMeError(path, f"shape #{index}: {problem}")
    label = raw["label"]
    shape_type = raw.get("shape_type") or "polygon"
    if not isinstance(shape_type, str):
        raise LabelMeError(path, f"shape #{index} (label {label!r}): shape_type must be a "
                           f"string, got {_json_type(shape_type)}")
    where = f"shape #{index} (label {label!r}, {shape_type})"
    if shape_type not in SHAPE_POINTS:
        raise LabelMeError(
            path,
            f"{where}: unknown shape_type {shape_type!r}; expected one of "
            f"{', '.join(SHAPE_POINTS)}",
        )
    group_id = raw.get("group_id")
    if group_id is not None and (isinstance(group_id, bool)
                                 or not isinstance(group_id, (int, str))):
        raise LabelMeError(path, f"{where}: group_id must be an integer, a string or null, "
                           f"got {_json_type(group_id)}")
    try:
        points = [(float(x), float(y)) for x, y in raw.get("points") or []]
    except (TypeError, ValueError, OverflowError):
        raise LabelMeError(path, f"{where}: points must be [x, y] numbers") from None
    if not all(abs(v) < 1e7 for v in itertools.chain.from_iterable(points)):
        raise LabelMeError(path, f"{where}: points must be finite numbers within the image's "
                           "reach (|x|, |y| < 10 million)")
    low, high = SHAPE_POINTS[shape_type]
    if len(points) < low or (high is not None and len(points) > high):
        expected = f"{low}" if low == high else f">= {low}"
        raise LabelMeError(
            path, f"{where}: degenerate shape, needs {expected} points, has {len(points)}"
        )
    mask = _decode_mask(path, where, raw.get("mask")) if shape_type == "mask" else None
    return Shape(label, shape_type, points, group_id, mask)


def _decode_mask(path: Path, where: str, encoded) -> np.ndarray:
    if not encoded:
        raise LabelMeError(path, f"{where}: mask shape without 'mask' data")
    if not isinstance(encoded, str):
        raise LabelMeError(path, f"{where}: 'mask' must be a base64 string, got "
                           f"{_json_type(encoded)}")
    try:
        patch = PIL.Image.open(io.BytesIO(base64.b64decode(encoded)))
        return np.asarray(patch.convert("L")) > 0
    except (binascii.Error, OSError, ValueError, PIL.Image.DecompressionBombError):
        raise LabelMeError(path, f"{where}: 'mask' is not a base64 PNG") from None


LABELME_VERSION = "5.5.0"  # format written; LabelMe 5.x and 6.x open it without a warning


def labelme_document(
    shapes: list[dict],
    image_path: str,
    height: int,
    width: int,
    *,
    image_data: bytes | None = None,
    flags: dict[str, bool] | None = None,
    extra: dict | None = None,
) -> dict:
    """A LabelMe file's content (to write as JSON).

    Args:
        shapes: Shape dicts (`label`, `points`, `group_id`, `description`,
            `shape_type`, `flags`).
        image_path: The image's path relative to the JSON file (`/`
            separators).
        height: Image height.
        width: Image width.
        image_data: The image file's bytes to embed (`imageData`), or `None`.
        flags: Image-level flags (shown as check boxes in LabelMe).
        extra: More top-level keys (LabelMe keeps them when it saves).

    Returns:
        The JSON-ready dictionary.
    """
    return {
        "version": LABELME_VERSION,
        "flags": dict(flags or {}),
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": base64.b64encode(image_data).decode() if image_data is not None else None,
        "imageHeight": int(height),
        "imageWidth": int(width),
        **(extra or {}),
    }


def resolve_image_path(annotation: Annotation) -> Path:
    """Finds the image file an annotation refers to by its `imagePath`.

    `imagePath` is relative to the JSON file; Windows backslashes are
    accepted. If the folder was moved and the path no longer resolves, the
    file of the same name beside the JSON is used (never one with the JSON's
    stem: LabelMe pairs by `imagePath`).

    Args:
        annotation: The parsed file.

    Returns:
        The image path.

    Raises:
        LabelMeError: If there is no `imagePath` or no such file.
    """
    if not annotation.image_path:
        raise LabelMeError(annotation.path, "no imageData and no imagePath")
    relative = annotation.image_path.replace("\\", "/")
    folder = annotation.path.parent
    candidates = [folder / relative, folder / Path(relative).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LabelMeError(
        annotation.path,
        f"image not found: imagePath {annotation.image_path!r} "
        f"(looked for {', '.join(str(c) for c in dict.fromkeys(candidates))})",
    )


def load_image(annotation: Annotation, data: bytes | None = None) -> np.ndarray:
    """Decodes the annotated image as upright RGB.

    `imageData` wins over `imagePath`. An image file gets its EXIF
    orientation applied, as the LabelMe app does when it shows it (the
    points are in those upright coordinates); embedded `imageData` is used
    as stored, as the app does. Palette images are resolved, grayscale is
    expanded, alpha is dropped and 16-bit images are scaled to 8 bits.

    Args:
        annotation: The parsed file.
        data: The bytes of its image file, when already read (as
            `image_file_as_is` returns them); the file is not read again.

    Returns:
        `(H, W, 3)` uint8 array.

    Raises:
        LabelMeError: If the image is missing or cannot be decoded, or its
            size disagrees with `imageHeight`/`imageWidth`.
    """
    if annotation.image_data:
        try:
            source = io.BytesIO(base64.b64decode(annotation.image_data))
        except (binascii.Error, ValueError):
            raise LabelMeError(annotation.path, "imageData is not valid base64") from None
        where, upright = "imageData", False
    else:
        path = resolve_image_path(annotation)
        source = path if data is None else io.BytesIO(data)
        where, upright = str(path), True
    try:
        with PIL.Image.open(source) as image:
            if upright:
                image = PIL.ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise LabelMeError(annotation.path, f"cannot decode image {where} ({err})") from None
    expected = (annotation.height, annotation.width)
    if None not in expected and tuple(rgb.shape[:2]) != expected:
        raise LabelMeError(
            annotation.path,
            f"image size mismatch: imageHeight x imageWidth is {expected[0]}x"
            f"{expected[1]} but {where} is {rgb.shape[0]}x{rgb.shape[1]}",
        )
    return rgb


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_file_as_is(annotation: Annotation) -> tuple[bytes, tuple[int, int]] | None:
    """The bytes of the annotated image file, when they can be kept unchanged.

    That is when the file already stores what `load_image` returns: an
    image file (not `imageData`) in PNG format, 8-bit RGB or greyscale (read
    as R=G=B), with no EXIF orientation to apply, whose size matches
    `imageHeight`/`imageWidth` and whose chunks pass their checksums. A
    converter can then copy the file instead of decoding and re-encoding it.

    Args:
        annotation: The parsed file.

    Returns:
        `(file bytes, (height, width))`, or `None` when the image must go
        through `load_image` (which also reports any problem with it).
    """
    if annotation.image_data:
        return None
    try:
        with resolve_image_path(annotation).open("rb") as file:
            signature = file.read(len(_PNG_SIGNATURE))
            if signature != _PNG_SIGNATURE:  # e.g. a JPEG: not read any further here
                return None
            data = signature + file.read()
        with PIL.Image.open(io.BytesIO(data)) as image:
            size = (image.height, image.width)
            if image.format != "PNG" or image.mode not in ("L", "RGB"):
                return None
            image.verify()
    except (LabelMeError, OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError):
        return None
    expected = (annotation.height, annotation.width)
    # b"eXIf" anywhere (even by chance in compressed data) sends the file
    # through load_image, which applies the orientation it may hold.
    if b"eXIf" in data or (None not in expected and size != expected):
        return None
    return data, size


def to_rgb(image: PIL.Image.Image) -> np.ndarray:
    """Converts any PIL image to an `(H, W, 3)` uint8 RGB array.

    Args:
        image: A PIL image of any mode (palette, L, LA, RGBA, I;16, ...).

    Returns:
        The RGB array; 16-bit and 32-bit grey values are scaled to 0..255.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        grey = np.clip(array * (255.0 / top), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def rasterize(
    shapes: list[Shape],
    height: int,
    width: int,
    ids: dict[str, int],
    with_instances: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draws shapes into a class-id mask and an instance-id mask.

    Instances are numbered 1, 2, ... in order of first appearance per
    `(label, group_id)`; a shape without `group_id` is an instance of its
    own. `_background_` and `__ignore__` shapes set the instance mask to 0.

    Args:
        shapes: Shapes in drawing order.
        height: Image height.
        width: Image width.
        ids: Label -> class id (`__ignore__` -> 255); every label of
            `shapes` must be in it.
        with_instances: Also draw the instance mask.

    Returns:
        `(classes, instances)`: uint8 `(H, W)` class ids (255 = ignore) and
        uint16 `(H, W)` instance ids (0 = none), or `None` without
        `with_instances`.
    """
    canvases = [PIL.Image.new("L", (width, height), 0)]  # classes[, instances]
    if with_instances:
        canvases.append(PIL.Image.new("I", (width, height), 0))
    pens = [PIL.ImageDraw.Draw(canvas) for canvas in canvases]
    numbering: dict[tuple, int] = {}
    for index, shape in enumerate(shapes):
        class_id = ids[shape.label]
        if class_id in (0, IGNORE_ID):
            instance_id = 0
        else:
            group = ("shape", index) if shape.group_id is None else ("group", shape.group_id)
            key = (shape.label, group)
            instance_id = numbering.setdefault(key, len(numbering) + 1)
        for canvas, pen, value in zip(canvases, pens, (class_id, instance_id)):
            if shape.shape_type == "mask":
                _paste_mask(canvas, shape, value)
            else:
                draw_shape(pen, shape, value)
    classes = np.asarray(canvases[0])
    return classes, np.asarray(canvases[1]).astype(np.uint16) if with_instances else None


def draw_shape(draw: PIL.ImageDraw.ImageDraw, shape: Shape, value: int) -> None:
    """Draws one non-mask shape with `value` (fill and outline).

    Args:
        draw: Drawing context of an `"L"` or `"I"` image.
        shape: The shape (any type but `mask`).
        value: Pixel value to draw.
    """
    points = shape.points
    kind = shape.shape_type
    if kind in ("circle", "point"):
        (cx, cy) = points[0]
        radius = math.dist(points[0], points[1]) if kind == "circle" else POINT_RADIUS
        draw.ellipse(
            ((cx - radius, cy - radius), (cx + radius, cy + radius)), fill=value, outline=value
        )
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = points
        box = ((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1)))
        draw.rectangle(box, fill=value, outline=value)
    elif kind == "line":
        draw.line(points, fill=value, width=LINE_WIDTH)
    elif kind == "linestrip":
        draw.line(points, fill=value, width=LINE_WIDTH, joint="curve")
    else:  # polygon, oriented_rectangle
        draw.polygon(points, fill=value, outline=value)


def _paste_mask(image: PIL.Image.Image, shape: Shape, value: int) -> None:
    """Pastes a mask shape's patch at the rounded top-left of its box."""
    left = round(min(p[0] for p in shape.points))
    top = round(min(p[1] for p in shape.points))
    stencil = PIL.Image.fromarray(shape.mask.astype(np.uint8) * 255, "L")
    image.paste(value, (left, top, left + stencil.width, top + stencil.height), stencil)
