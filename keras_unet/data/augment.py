"""Joint augmentation: one random draw moves an image and its label maps.

Geometry (flips, 90-degree rotations, random scale and crop, padding, the
optional elastic deformation of the U-Net paper) applies to the image and
every label map together; labels are always resampled nearest neighbour.
Photometric changes (stain densities, brightness, contrast, gamma, colour)
touch the image only. Padding uses zeros for images and the ignore id (255)
for masks, so padded pixels never count in the loss or the metrics.

`keras_unet.data.pipeline` applies these functions to its stream of
examples, with a draw made from `(seed, position)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from keras_unet.data.labels import IGNORE_ID

# Colour deconvolution (Ruifrok and Johnston, 2001): the optical densities of
# haematoxylin, eosin and DAB in R, G and B (rows), and their inverse.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
# Densities are in units of the density of a 1e-6 transmission, as
# scikit-image's `rgb2hed` gives them (stained tissue: about 0.01-0.1).
_DENSITY_UNIT = -math.log(1e-6)


@dataclass
class Augment:
    """Joint augmentation settings.

    Attributes:
        flip: Random horizontal flips, and vertical ones with `vertical_flip`.
        vertical_flip: Flip upside down too (microscopy; not street scenes,
            whose sky stays up).
        rotate90: Random multiples of 90 degrees.
        scale: `(low, high)` random zoom factor before the crop, or `None`.
        brightness: Max brightness shift (image only, on [0, 1] values).
        contrast: `(low, high)` contrast factor (image only), or `None`.
        gamma: `(low, high)` range of a gamma curve `x ** g` (image only;
            `g` drawn log-uniformly), or `None`: `g > 1` darkens the mid-tones
            and compresses the dim end, as in an under-exposed image.
        stain: `(scale, shift)`: colour deconvolution jitter of stained
            tissue (Tellez et al., 2018). Each of the haematoxylin, eosin and
            DAB densities is multiplied by a factor in `1 +- scale` and moved
            by up to `+- shift` (in `rgb2hed` units), or `None`. Colour images
            only; grey ones (R = G = B) are left alone.
        hue: Max hue rotation as a fraction of the colour circle (RGB
            images only; stained tissue varies in hue from lab to lab).
        saturation: `(low, high)` saturation factor (RGB only), or `None`.
        grayscale: Probability of turning an RGB image grey.
        invert: Probability of inverting the image (dark objects on a light
            background become light on dark, as in fluorescence).
        elastic: Elastic deformation (Keras `RandomElasticTransform`).
    """

    flip: bool = True
    vertical_flip: bool = True
    rotate90: bool = True
    scale: tuple[float, float] | None = (0.75, 1.33)
    brightness: float = 0.1
    contrast: tuple[float, float] | None = (0.8, 1.2)
    gamma: tuple[float, float] | None = None
    stain: tuple[float, float] | None = None
    hue: float = 0.0
    saturation: tuple[float, float] | None = None
    grayscale: float = 0.0
    invert: float = 0.0
    elastic: bool = False

    def __post_init__(self):
        for name in ("scale", "contrast", "gamma", "stain", "saturation"):
            value = getattr(self, name)
            if value is not None and not (
                    isinstance(value, (list, tuple)) and len(value) == 2
                    and all(isinstance(v, (int, float)) for v in value)):
                raise ValueError(f"{name} must be a pair of numbers [low, high] "
                                 f"(stain: [scale, shift]) or null, not {value!r}")

    @property
    def test_time_flips(self) -> tuple[str, ...]:
        """The flips of an image these settings show a model in training.

        `"horizontal"` (left-right), `"vertical"` (upside down) and
        `"both"` (a half turn). A vertical flip is also a horizontal one
        turned by 180 degrees, so rotations by 90 with horizontal flips
        show it too. Flip test-time augmentation
        (`keras_unet.inference.predict`) averages over these, and no others:
        a street model never saw its sky at the bottom.
        """
        vertical = self.flip and (self.vertical_flip or self.rotate90)
        half_turn = self.rotate90 or (self.flip and self.vertical_flip)
        return tuple(name for name, shown in (("horizontal", self.flip),
                                              ("vertical", vertical), ("both", half_turn))
                     if shown)

    @classmethod
    def for_model(cls, options: dict, input_normalization: str | None = None) -> Augment:
        """The settings `options` name, with defaults that suit the model.

        A model that normalizes each image itself (any `input_normalization`)
        undoes a brightness shift and a contrast factor: all they leave is
        the clipping to [0, 1], which erases the faint objects of dim images
        (a shift of -0.05 blanks every pixel below 13 of 255). For such a
        model both default to off (DSB2018, nuclei-cpu recipe: mean AP 0.485 -> 0.512, the dim
        large-nucleus images recovered; see docs/benchmarks/accuracy.md).
        Options that name them keep them.

        Args:
            options: Keyword arguments of `Augment` (`TrainConfig.augment`).
            input_normalization: The model's `input_normalization`.

        Returns:
            The settings.
        """
        if input_normalization is not None:
            options = {"brightness": 0.0, "contrast": None, **options}
        return cls(**options)


# Padding value of each label tensor: unlabelled mask, no object, no weight.
LABEL_PAD = {"mask": IGNORE_ID, "instances": 0, "weights": 0}


def pad_to_multiple(image: tf.Tensor, labels: dict, multiple: int):
    """Pads height and width up to a multiple (zero image, ignore mask).

    Args:
        image: `(H, W, C)` float image.
        labels: `{"mask": (H, W, 1) uint8, ...}` (see `LABEL_PAD`).
        multiple: e.g. `2**depth` of the model.

    Returns:
        `(image, labels)` padded at the bottom and right.
    """
    shape = tf.shape(image)
    return _pad(image, labels, (-shape[0]) % multiple, (-shape[1]) % multiple)


def _pad(image, labels, pad_h, pad_w):
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    padded = {
        key: tf.pad(value, paddings, constant_values=tf.cast(LABEL_PAD[key], value.dtype))
        for key, value in labels.items()
    }
    return tf.pad(image, paddings), padded


def _apply(fn, image, labels):
    return fn(image), {key: fn(value) for key, value in labels.items()}


def random_crop(image, labels: dict, size: int, seed):
    """Crops the same random `size x size` window from the image and labels.

    Smaller images are padded first (zero image, ignore mask, zero weight).
    """
    shape = tf.shape(image)
    image, labels = _pad(
        image, labels, tf.maximum(size - shape[0], 0), tf.maximum(size - shape[1], 0)
    )
    shape = tf.shape(image)
    offsets = tf.random.stateless_uniform([2], seed, maxval=2**31 - 1, dtype=tf.int32)
    top = offsets[0] % (shape[0] - size + 1)
    left = offsets[1] % (shape[1] - size + 1)
    return _apply(lambda x: x[top : top + size, left : left + size], image, labels)


def augment(image, labels: dict, seed, size: int, settings: Augment):
    """Applies one random draw of the augmentations to image and labels.

    Geometric transforms move the image and every label map together
    (labels with nearest neighbour); brightness, contrast and colour touch
    the image only.

    Args:
        image: `(H, W, C)` float32 in [0, 1].
        labels: `{"mask": (H, W, 1) uint8 class ids}`, optionally with
            `"instances": (H, W, 1) int32` and `"weights": (H, W, 1) float32`.
        seed: `(2,)` int64 stateless seed of this example.
        size: Output crop size.
        settings: Which augmentations.

    Returns:
        `(image, labels)`, each of height and width `size`.
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
        labels = {k: tf.image.resize(v, new, method="nearest") for k, v in labels.items()}
    image, labels = random_crop(image, labels, size, seeds[1])
    draws = tf.random.stateless_uniform([4], seeds[2])
    if settings.flip:
        image, labels = _maybe(tf.image.flip_left_right, image, labels, draws[0] < 0.5)
        image, labels = _maybe(tf.image.flip_up_down, image, labels,
                               (draws[1] < 0.5) & settings.vertical_flip)
    if settings.rotate90:
        k = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
        image, labels = _apply(lambda x: tf.image.rot90(x, k), image, labels)
    image = photometric(image, seeds[4], settings)
    image.set_shape([size, size, None])
    for value in labels.values():
        value.set_shape([size, size, 1])
    return image, labels


def adjust_stains(image, scale, shift):
    """Scales and shifts the stain densities of an RGB image.

    The image is separated into haematoxylin, eosin and DAB densities by
    colour deconvolution (`RGB_FROM_HED`), each density `d` becomes
    `d * scale + shift`, and the stains are recombined.

    Args:
        image: `(H, W, 3)` float32 RGB in [0, 1].
        scale: `(3,)` factors of the H, E and DAB densities.
        shift: `(3,)` offsets, in the units of scikit-image's `rgb2hed`.

    Returns:
        The recombined image, clipped to [0, 1]; `scale = 1, shift = 0` gives
        the image back.
    """
    density = -tf.math.log(tf.maximum(image, 1e-6)) / _DENSITY_UNIT
    stains = tf.tensordot(density, tf.constant(HED_FROM_RGB, tf.float32), 1)
    stains = stains * scale + shift
    density = tf.tensordot(stains, tf.constant(RGB_FROM_HED, tf.float32), 1)
    return tf.clip_by_value(tf.exp(-density * _DENSITY_UNIT), 0.0, 1.0)


def photometric(image, seed, settings: Augment):
    """Stain, brightness, contrast, gamma and colour changes of one image (labels untouched).

    Args:
        image: `(H, W, C)` float32 in [0, 1]; hue, saturation and greyscale
            apply only when `C == 3`.
        seed: `(2,)` stateless seed.
        settings: Which changes and how strong.

    Returns:
        The changed image, clipped to [0, 1].
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    draws = tf.random.stateless_uniform([2], seeds[5])
    colour = image.shape[-1] == 3
    if colour and settings.stain:
        image = _stain_jitter(image, tf.random.experimental.stateless_fold_in(seed, 6),
                              *settings.stain)
    if colour and settings.hue:
        delta = tf.random.stateless_uniform([], seeds[0], -settings.hue, settings.hue)
        image = tf.image.adjust_hue(image, delta)
    if colour and settings.saturation:
        low, high = settings.saturation
        image = tf.image.adjust_saturation(
            image, tf.random.stateless_uniform([], seeds[1], low, high))
    if colour and settings.grayscale:
        grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
        image = tf.where(draws[0] < settings.grayscale, grey, image)
    if settings.brightness:
        image = image + tf.random.stateless_uniform(
            [], seeds[2], -settings.brightness, settings.brightness
        )
    if settings.contrast:
        low, high = settings.contrast
        factor = tf.random.stateless_uniform([], seeds[3], low, high)
        mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
        image = (image - mean) * factor + mean
    image = tf.clip_by_value(image, 0.0, 1.0)
    if settings.gamma:
        low, high = settings.gamma
        image = image ** tf.exp(
            tf.random.stateless_uniform([], seeds[4], math.log(low), math.log(high)))
    if settings.invert:
        image = tf.where(draws[1] < settings.invert, 1.0 - image, image)
    return image


def _stain_jitter(image, seed, scale, shift):
    draws = tf.random.stateless_uniform([2, 3], seed, -1.0, 1.0)
    stained = adjust_stains(image, 1.0 + scale * draws[0], shift * draws[1])
    spread = tf.reduce_max(image, -1) - tf.reduce_min(image, -1)
    return tf.where(tf.reduce_max(spread) > 0.5 / 255, stained, image)  # grey: unchanged


def _maybe(fn, image, labels, condition):
    return tf.cond(condition, lambda: _apply(fn, image, labels), lambda: (image, labels))


def elastic_layer(seed: int = 0):
    """Keras' elastic deformation, applied jointly to images and masks."""
    import keras

    return keras.layers.RandomElasticTransform(
        factor=1.0, scale=0.5, interpolation="bilinear", seed=seed
    )


def elastic_batches(layer):
    """Elastic deformation of batches; every label map rides along."""
    def apply(images, labels):
        stacked = tf.concat([tf.cast(v, tf.float32) for v in labels.values()], -1)
        out = layer({"images": images, "segmentation_masks": stacked}, training=True)
        moved = tf.split(out["segmentation_masks"], len(labels), axis=-1)
        result = {}
        for (key, value), new in zip(labels.items(), moved):
            result[key] = new if key == "weights" else tf.cast(tf.round(new), value.dtype)
        return out["images"], result

    return apply
