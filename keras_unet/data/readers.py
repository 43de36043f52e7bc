"""Reading images and masks: the one reader every step uses.

(`save_mask` and `save_instances` write masks in the form read back here.)

The dataset check, the training pipeline, evaluation, prediction and
export all read files through these functions, so they agree on what a
file holds: a 16-bit class-id mask holds the same ids for the check and
for training, and a palette mask is read as its palette indices wherever
it is read.

Images become float32 in [0, 1] (8-bit values / 255, 16-bit values /
65535), upright (EXIF orientation applied), with 1 (grey) or 3 (RGB)
channels. Masks are class ids: greyscale or palette PNGs (palette index =
class id, as in Pascal VOC and in keras-unet's own masks), 8 or 16 bits.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from keras_unet.data.labels import palette
from keras_unet.errors import KerasUnetError
from keras_unet.files import save_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}  # lossless formats only
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

Source = str | os.PathLike | bytes


class ReadError(KerasUnetError, ValueError):
    """A file that cannot be read as an image or a mask; names the file."""


def _open(source: Source) -> PIL.Image.Image:
    return PIL.Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _name(source: Source) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


def read_image(source: Source, channels: int) -> np.ndarray:
    """Reads an image as float32 `(H, W, channels)` in [0, 1], EXIF-upright.

    Args:
        source: Image file (PNG, JPEG, BMP, TIFF), or its bytes.
        channels: 1 (grey) or 3 (RGB). Grey images are repeated to RGB;
            colour images become grey by ITU-R 601 luma; alpha is dropped.

    Returns:
        The image array.

    Raises:
        ReadError: If the file cannot be decoded.
    """
    try:
        with _open(source) as image:
            image = PIL.ImageOps.exif_transpose(image)
            if image.mode in _SIXTEEN_BIT_MODES:
                array = np.asarray(image, np.float32) / 65535.0
                array = np.clip(array, 0.0, 1.0)[..., None]
                return np.repeat(array, channels, -1) if channels == 3 else array
            if image.mode == "F":  # floating-point TIFF: taken as [0, 1] values
                array = np.clip(np.asarray(image, np.float32), 0.0, 1.0)[..., None]
                return np.repeat(array, channels, -1) if channels == 3 else array
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.float32)
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise ReadError(f"{_name(source)}: unreadable image ({err})") from None
    array = array / 255.0
    return array[..., None] if channels == 1 else array


def image_size(source: Source) -> tuple[int, int]:
    """`(height, width)` of an image, upright, read from its header.

    Raises:
        ReadError: If the file is not a readable image.
    """
    try:
        with _open(source) as image:
            image.verify()  # checks the whole file (PNG checksums); must come first
        with _open(source) as image:
            size = image.size
            orientation = image.getexif().get(0x0112, 1)  # EXIF Orientation
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise ReadError(f"{_name(source)}: unreadable image ({err})") from None
    width, height = size
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def read_mask(source: Source, foreground_value: int | None = None,
              ignore_index: int | None = None) -> np.ndarray:
    """Reads a class-id mask as uint8 `(H, W)`.

    Args:
        source: Mask file (PNG, BMP or TIFF; greyscale or palette, 8 or 16
            bits), or its bytes.
        foreground_value: For binary masks stored as 0/N: pixels equal to
            it become class 1, every other pixel class 0.
        ignore_index: A void value of the dataset: its pixels become 255
            (ignore).

    Returns:
        The class ids (255 = ignore).

    Raises:
        ReadError: If the file cannot be read, is a colour (RGB) image
            whose channels differ (a colour-coded mask, not class ids), or
            holds values above 255 (a 16-bit instance mask?).
    """
    name = _name(source)
    try:
        with _open(source) as image:
            mode = image.mode
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise ReadError(f"{name}: unreadable mask ({err})") from None
    if array.ndim == 3 and array.shape[-1] < 3:  # grey with alpha
        array = array[..., 0]
    if array.ndim == 3:
        colour = array[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1])
                and np.array_equal(colour[..., 0], colour[..., 2])):
            raise ReadError(
                f"{name}: a colour ({mode}) mask; masks must hold class ids (greyscale or "
                "palette PNG, value = class id). Convert colour-coded masks to class ids "
                "first, or annotate in LabelMe and run labelme2masks"
            )
        array = colour[..., 0]
    if foreground_value is not None:
        return (array == foreground_value).astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.size and (array.max() > 255 or array.min() < 0):
        raise ReadError(
            f"{name}: mask values {int(array.min())}..{int(array.max())} do not fit class "
            "ids 0..255 (a 16-bit instance mask? those belong in instances/)"
        )
    mask = array.astype(np.uint8)
    if ignore_index is not None:
        mask[mask == ignore_index] = 255
    return mask


def read_instances(source: Source) -> np.ndarray:
    """Reads an instance-id mask (0 = no object) as int32 `(H, W)`.

    Raises:
        ReadError: If the file cannot be read or is not single-channel.
    """
    try:
        with _open(source) as image:
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise ReadError(f"{_name(source)}: unreadable instance mask ({err})") from None
    if array.ndim != 2:
        raise ReadError(f"{_name(source)}: instance masks must have one channel")
    return array.astype(np.int32)


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Atomically saves a class-id mask as a palette PNG (see `labels.palette`).

    `read_mask` reads it back as the same ids.

    Args:
        path: Destination `.png`.
        mask: `(H, W)` uint8 class ids (255 = ignore).

    Returns:
        The destination path.
    """
    image = PIL.Image.fromarray(np.asarray(mask, dtype=np.uint8), "L")
    image.putpalette(palette())  # makes it a "P" image, sharing the pixels
    # Run-length zlib: faster than level 1 and smaller for masks' long runs.
    return save_image(path, image, compress_type=zlib.Z_RLE)


def save_instances(path: str | os.PathLike, instances: np.ndarray) -> Path:
    """Atomically saves an instance-id mask as a 16-bit greyscale PNG.

    `read_instances` reads it back as the same ids.

    Args:
        path: Destination `.png`.
        instances: `(H, W)` object ids (0 = no object), below 65536.

    Returns:
        The destination path.
    """
    image = PIL.Image.fromarray(np.asarray(instances, dtype=np.uint16))
    return save_image(path, image, compress_level=1)
