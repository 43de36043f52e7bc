"""Pictures people look at: mask overlays with a legend."""

from __future__ import annotations

import functools

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from keras_unet.data.labels import IGNORE_ID, class_color

IGNORE_COLOR = (128, 128, 128)


@functools.cache
def _colors() -> tuple[int, ...]:
    """Palette of display colours: `labels.class_color` per id, ignore grey."""
    return tuple(c for i in range(255) for c in class_color(i)) + IGNORE_COLOR


@functools.cache
def _font() -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    """Pillow's built-in font, loaded once."""
    return PIL.ImageFont.load_default()


_LABELLED = [0] + [255] * 255  # point() table: class id -> paste mask


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    names: list[str] | None = None,
    alpha: float = 0.5,
    *,
    outline: bool = False,
    objects: np.ndarray | None = None,
) -> PIL.Image.Image:
    """Draws a mask over an image and adds a legend strip below.

    Background (0) is left untouched so the image stays readable. Filled
    (default): class colours blended over the image. Outline: only the
    borders of the regions are drawn, opaque, which stays readable on
    strongly coloured images (stained tissue) and shows each object of an
    instance prediction. The legend lists the classes present (and ignore).

    Args:
        image: `(H, W, 3)` uint8 RGB image (or `(H, W)` grey).
        mask: `(H, W)` class ids, 255 = ignore.
        names: Class names by id, for the legend; ids are shown without it.
        alpha: Opacity of the filled colours.
        outline: Draw region borders instead of filled regions.
        objects: `(H, W)` object ids; with `outline`, the borders between
            objects are drawn too.

    Returns:
        An RGB PIL image of size `(W, H + legend height)`.
    """
    picture = PIL.Image.fromarray(np.asarray(image)).convert("RGB")
    mask = np.asarray(mask, dtype=np.uint8)
    classes = PIL.Image.fromarray(mask)
    colored = PIL.Image.fromarray(mask)
    colored.putpalette(_colors())  # a "P" image: class ids through the colours
    colored = colored.convert("RGB")
    if outline:
        regions = mask.astype(np.int64) if objects is None else (
            np.asarray(objects, np.int64) * 256 + mask)
        edges = _edges(regions) & (mask != 0)
        picture.paste(colored, mask=PIL.Image.fromarray(edges.astype(np.uint8) * 255))
    else:
        picture.paste(PIL.Image.blend(picture, colored, alpha),
                      mask=classes.point(_LABELLED))
    present = [i for i, count in enumerate(classes.histogram()) if count and i != 0]
    return _with_legend(picture, present, names)


def _edges(regions: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour in another region (a 1-pixel border)."""
    edges = np.zeros(regions.shape, bool)
    edges[1:] |= regions[1:] != regions[:-1]
    edges[:-1] |= regions[:-1] != regions[1:]
    edges[:, 1:] |= regions[:, 1:] != regions[:, :-1]
    edges[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    return edges


def _with_legend(picture: PIL.Image.Image, ids: list[int], names) -> PIL.Image.Image:
    """Appends a strip with a colour swatch and name per class id."""
    font = _font()
    row, pad = 14, 4
    entries = []
    for class_id in ids:
        name = "ignore" if class_id == IGNORE_ID else (
            names[class_id] if names and class_id < len(names) else f"class {class_id}"
        )
        color = IGNORE_COLOR if class_id == IGNORE_ID else class_color(class_id)
        entries.append((f"{class_id}: {name}", color))
    # Lay the entries out left to right, wrapping at the picture width.
    width = picture.width
    positions, x, y = [], pad, pad
    for text, _ in entries:
        w = row + pad + int(font.getlength(text)) + 3 * pad
        if x + w > width and x > pad:
            x, y = pad, y + row + pad
        positions.append((x, y))
        x += w
    height = y + row + pad if entries else 0
    canvas = PIL.Image.new("RGB", (width, picture.height + height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    for (text, color), (x, y) in zip(entries, positions):
        top = picture.height + y
        draw.rectangle((x, top, x + row, top + row), fill=color, outline=(0, 0, 0))
        draw.text((x + row + pad, top + 1), text, fill=(0, 0, 0), font=font)
    return canvas
