"""Pictures people look at: mask overlays with a legend."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from keras_unet.labels import IGNORE_ID, class_color

IGNORE_COLOR = (128, 128, 128)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-id mask to an RGB picture (`labels.class_color`, ignore grey).

    Args:
        mask: `(H, W)` integer class ids.

    Returns:
        `(H, W, 3)` uint8 array.
    """
    lut = np.array([class_color(i) for i in range(255)] + [IGNORE_COLOR], np.uint8)
    return lut[np.asarray(mask, dtype=np.uint8)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    names: list[str] | None = None,
    alpha: float = 0.5,
) -> PIL.Image.Image:
    """Blends a coloured mask over an image and adds a legend strip below.

    Background (0) is left unblended so the image stays readable; the legend
    lists the classes present in the mask (and ignore, if any).

    Args:
        image: `(H, W, 3)` uint8 RGB image (or `(H, W)` grey).
        mask: `(H, W)` class ids, 255 = ignore.
        names: Class names by id, for the legend; ids are shown without it.
        alpha: Opacity of the mask colours.

    Returns:
        An RGB PIL image of size `(W, H + legend height)`.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    mask = np.asarray(mask)
    colored = colorize(mask).astype(np.float32)
    blend = image.astype(np.float32)
    labelled = (mask != 0)[..., None]
    blend = np.where(labelled, (1 - alpha) * blend + alpha * colored, blend)
    picture = PIL.Image.fromarray(blend.round().astype(np.uint8), "RGB")
    return _with_legend(picture, [int(c) for c in np.unique(mask) if c != 0], names)


def _with_legend(picture: PIL.Image.Image, ids: list[int], names) -> PIL.Image.Image:
    """Appends a strip with a colour swatch and name per class id."""
    font = PIL.ImageFont.load_default()
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
