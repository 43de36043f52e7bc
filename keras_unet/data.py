"""The tf.data input pipeline: decode, augment jointly, batch, prefetch.

Images are decoded in graph (PNG/JPEG/BMP, 8 or 16 bits, 1 or 3 channels)
and scaled to [0, 1]. Masks are class-id PNGs; palette masks decode to RGB in
TensorFlow, and keras-unet's palette puts the class id in the red channel, so
channel 0 is the class id for palette and greyscale masks alike.

Augmentations draw their random numbers once per example from a stateless
seed and apply the same draw to image and mask: flips, 90-degree rotations,
random scale and crop (masks always nearest neighbour), brightness/contrast
(image only) and, optionally, elastic deformation as in the U-Net paper.
Padding uses zeros for images and the ignore id (255) for masks, so padded
pixels never count in the loss or the metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from keras_unet.dataset import Dataset
from keras_unet.labels import IGNORE_ID

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class Augment:
    """Joint augmentation settings (all on by default except elastic).

    Attributes:
        flip: Random horizontal and vertical flips.
        rotate90: Random multiples of 90 degrees.
        scale: `(low, high)` random zoom factor before the crop, or `None`.
        brightness: Max brightness shift (image only, on [0, 1] values).
        contrast: `(low, high)` contrast factor (image only), or `None`.
        elastic: Elastic deformation (Keras `RandomElasticTransform`).
    """

    flip: bool = True
    rotate90: bool = True
    scale: tuple[float, float] | None = (0.75, 1.33)
    brightness: float = 0.1
    contrast: tuple[float, float] | None = (0.8, 1.2)
    elastic: bool = False


def decode_image(path: tf.Tensor, channels: int) -> tf.Tensor:
    """Reads an image file as float32 `(H, W, channels)` in [0, 1]."""
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=channels, dtype=tf.float32, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def decode_mask(path: tf.Tensor, foreground_value: int | None = None) -> tf.Tensor:
    """Reads a class-id mask as uint8 `(H, W, 1)`.

    Args:
        path: Mask file (PNG).
        foreground_value: For binary masks, the value that becomes class 1
            (all others 0).

    Returns:
        The class ids.
    """
    mask = tf.io.decode_png(tf.io.read_file(path), channels=3)[..., :1]
    if foreground_value is not None:
        mask = tf.cast(tf.equal(mask, foreground_value), tf.uint8)
    return mask


def pad_to_multiple(image: tf.Tensor, mask: tf.Tensor, multiple: int):
    """Pads height and width up to a multiple (zero image, ignore mask).

    Args:
        image: `(H, W, C)` float image.
        mask: `(H, W, 1)` uint8 class ids.
        multiple: e.g. `2**depth` of the model.

    Returns:
        `(image, mask)` padded at the bottom and right.
    """
    shape = tf.shape(image)
    pad_h = (-shape[0]) % multiple
    pad_w = (-shape[1]) % multiple
    return _pad(image, mask, pad_h, pad_w)


def _pad(image, mask, pad_h, pad_w):
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    image = tf.pad(image, paddings)
    mask = tf.pad(mask, paddings, constant_values=IGNORE_ID)
    return image, mask


def random_crop(image, mask, size: int, seed):
    """Crops the same random `size x size` window from image and mask.

    Smaller images are padded first (zero image, ignore mask).
    """
    shape = tf.shape(image)
    image, mask = _pad(
        image, mask, tf.maximum(size - shape[0], 0), tf.maximum(size - shape[1], 0)
    )
    shape = tf.shape(image)
    offsets = tf.random.stateless_uniform([2], seed, maxval=2**31 - 1, dtype=tf.int32)
    top = offsets[0] % (shape[0] - size + 1)
    left = offsets[1] % (shape[1] - size + 1)
    return (
        image[top : top + size, left : left + size],
        mask[top : top + size, left : left + size],
    )


def augment(image, mask, seed, size: int, settings: Augment):
    """Applies one random draw of the augmentations to image and mask.

    Args:
        image: `(H, W, C)` float32 in [0, 1].
        mask: `(H, W, 1)` uint8 class ids.
        seed: `(2,)` int64 stateless seed of this example.
        size: Output crop size.
        settings: Which augmentations.

    Returns:
        `(image, mask)` of shapes `(size, size, C)` and `(size, size, 1)`.
    """
    seeds = tf.random.experimental.stateless_split(seed, 8)
    if settings.scale:
        low, high = settings.scale
        factor = tf.exp(
            tf.random.stateless_uniform([], seeds[0], math.log(low), math.log(high))
        )
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        new = tf.cast(tf.round(shape * factor), tf.int32)
        image = tf.image.resize(image, new, method="bilinear")
        mask = tf.image.resize(mask, new, method="nearest")
    image, mask = random_crop(image, mask, size, seeds[1])
    draws = tf.random.stateless_uniform([4], seeds[2])
    if settings.flip:
        image, mask = _both(tf.image.flip_left_right, image, mask, draws[0] < 0.5)
        image, mask = _both(tf.image.flip_up_down, image, mask, draws[1] < 0.5)
    if settings.rotate90:
        k = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
        image, mask = tf.image.rot90(image, k), tf.image.rot90(mask, k)
    if settings.brightness:
        image = image + tf.random.stateless_uniform(
            [], seeds[4], -settings.brightness, settings.brightness
        )
    if settings.contrast:
        low, high = settings.contrast
        factor = tf.random.stateless_uniform([], seeds[5], low, high)
        mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
        image = (image - mean) * factor + mean
    image = tf.clip_by_value(image, 0.0, 1.0)
    image.set_shape([size, size, None])
    mask.set_shape([size, size, 1])
    return image, mask


def _both(fn, image, mask, condition):
    return tf.cond(condition, lambda: (fn(image), fn(mask)), lambda: (image, mask))


def elastic_layer(seed: int = 0):
    """Keras' elastic deformation, applied jointly to images and masks."""
    import keras

    return keras.layers.RandomElasticTransform(
        factor=1.0, scale=0.5, interpolation="bilinear", seed=seed
    )


def pixel_weights(mask: tf.Tensor, class_weights) -> tf.Tensor:
    """Per-pixel sample weights from per-class weights (ignore -> 0).

    Args:
        mask: `(..., H, W, 1)` uint8 class ids.
        class_weights: Sequence of weights by class id.

    Returns:
        float32 `(..., H, W)` weights.
    """
    table = np.zeros(256, np.float32)
    table[: len(class_weights)] = class_weights
    return tf.gather(tf.constant(table), tf.cast(mask[..., 0], tf.int32))


def class_weights_from_counts(counts: dict[int, int], num_classes: int) -> list[float]:
    """Median-frequency balancing: `w_c = median(freq) / freq_c`.

    Args:
        counts: Pixels per class id.
        num_classes: Number of classes.

    Returns:
        Weights by class id (classes with no pixels get weight 0).
    """
    freq = np.array([counts.get(c, 0) for c in range(num_classes)], np.float64)
    present = freq > 0
    median = np.median(freq[present])
    return [float(median / f) if f else 0.0 for f in freq]


def make_dataset(
    dataset: Dataset,
    *,
    channels: int,
    training: bool,
    batch_size: int = 8,
    crop_size: int = 256,
    pad_multiple: int = 16,
    augmentations: Augment | None = None,
    class_weights: list[float] | None = None,
    cache: bool | str = True,
    shuffle: bool = True,
    seed: int = 0,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Builds the `tf.data` pipeline that `fit()` consumes.

    Training: decode -> cache -> shuffle -> joint augmentation and random
    crop to `crop_size` -> batch -> prefetch. Validation: decode -> pad to a
    multiple of `pad_multiple` (padding is ignore) -> cache -> batch.
    Validation images of different sizes need `batch_size=1`.

    Args:
        dataset: Image/mask pairs.
        channels: Image channels the model takes (1 or 3).
        training: Augment and crop (True) or only pad (False).
        batch_size: Examples per batch.
        crop_size: Training crop size (a multiple of `pad_multiple`).
        pad_multiple: `2**depth` of the model.
        augmentations: Augmentation settings (default `Augment()`).
        class_weights: If given, yields `(image, mask, pixel_weights)`.
        cache: Cache decoded examples in memory (True), in a file (a path),
            or not at all (False).
        shuffle: Shuffle training examples (reshuffled every epoch).
        seed: Seed of shuffling and augmentation.
        deterministic: Keep element order and random draws identical from
            run to run (for tests and debugging; slightly slower).

    Returns:
        A dataset of `(images, masks)` or `(images, masks, weights)` batches:
        float32 `(B, H, W, channels)` and uint8 `(B, H, W, 1)`.
    """
    augmentations = augmentations or Augment()
    fg = dataset.foreground_value
    ds = tf.data.Dataset.from_tensor_slices((dataset.images, dataset.masks))
    ds = ds.map(
        lambda i, m: (decode_image(i, channels), decode_mask(m, fg)),
        num_parallel_calls=AUTOTUNE,
    )
    if not training:
        ds = ds.map(lambda i, m: pad_to_multiple(i, m, pad_multiple))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training:
        if shuffle:
            ds = ds.shuffle(len(dataset.images), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        ds = ds.map(
            lambda pair, s: augment(*pair, s, crop_size, augmentations),
            num_parallel_calls=AUTOTUNE,
        )
    ds = ds.batch(batch_size, drop_remainder=False)
    if training and augmentations.elastic:
        layer = elastic_layer(seed)
        ds = ds.map(_elastic(layer), num_parallel_calls=AUTOTUNE)
    if class_weights is not None:
        ds = ds.map(lambda i, m: (i, m, pixel_weights(m, class_weights)))
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def _elastic(layer):
    def apply(images, masks):
        out = layer({"images": images, "segmentation_masks": masks}, training=True)
        return out["images"], tf.cast(tf.round(out["segmentation_masks"]), tf.uint8)

    return apply
