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


# Padding value of each label tensor: unlabelled for masks, no weight.
LABEL_PAD = {"mask": IGNORE_ID, "weights": 0}


def pad_to_multiple(image: tf.Tensor, labels: dict, multiple: int):
    """Pads height and width up to a multiple (zero image, ignore mask).

    Args:
        image: `(H, W, C)` float image.
        labels: `{"mask": (H, W, 1) uint8, "weights": (H, W, 1) float}`
            (weights optional).
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

    Geometric transforms move the image, the mask and the weight map
    together (labels with nearest neighbour); brightness and contrast touch
    the image only.

    Args:
        image: `(H, W, C)` float32 in [0, 1].
        labels: `{"mask": (H, W, 1) uint8 class ids}`, optionally with
            `"weights": (H, W, 1) float32`.
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
        image, labels = _maybe(tf.image.flip_up_down, image, labels, draws[1] < 0.5)
    if settings.rotate90:
        k = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
        image, labels = _apply(lambda x: tf.image.rot90(x, k), image, labels)
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
    for value in labels.values():
        value.set_shape([size, size, 1])
    return image, labels


def _maybe(fn, image, labels, condition):
    return tf.cond(condition, lambda: _apply(fn, image, labels), lambda: (image, labels))


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


def write_tfrecords(
    dataset: Dataset, output_dir, shards: int = 4, prefix: str = "train"
) -> list[str]:
    """Writes image/mask pairs as sharded TFRecord files (encoded bytes as-is).

    Sharded records are the standard way to feed multi-worker training:
    each worker reads its own shards with `interleave`.

    Args:
        dataset: The pairs (instance masks included if the dataset has them).
        output_dir: Folder for `<prefix>-00000-of-0000N.tfrecord` files.
        shards: Number of files.
        prefix: File name prefix.

    Returns:
        The written paths.
    """
    from pathlib import Path

    from keras_unet.files import atomic_write

    output_dir = Path(output_dir)
    paths = []
    for shard in range(shards):
        path = output_dir / f"{prefix}-{shard:05d}-of-{shards:05d}.tfrecord"

        def write(tmp, shard=shard):
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for i in range(shard, len(dataset.images), shards):
                    features = {
                        "image": dataset.images[i],
                        "mask": dataset.masks[i],
                        "instances": dataset.instances[i] if dataset.instances else None,
                    }
                    example = tf.train.Example(features=tf.train.Features(feature={
                        key: tf.train.Feature(bytes_list=tf.train.BytesList(
                            value=[Path(value).read_bytes()] if value else []))
                        for key, value in features.items()
                    }))
                    writer.write(example.SerializeToString())

        paths.append(str(atomic_write(path, write)))
    return paths


def _read_records(pattern: str, training: bool, seed: int, deterministic: bool):
    """`(image_bytes, mask_bytes, instance_bytes)` from TFRecord shards."""
    spec = {key: tf.io.VarLenFeature(tf.string) for key in ("image", "mask", "instances")}
    files = tf.data.Dataset.list_files(pattern, shuffle=training, seed=seed)
    records = files.interleave(
        tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        values = [tf.sparse.to_dense(parsed[k], default_value="") for k in spec]
        return tuple(tf.concat([v, [""]], 0)[0] for v in values)

    return records.map(parse, num_parallel_calls=AUTOTUNE)


def decode_bytes(image_bytes, mask_bytes, channels: int, foreground_value: int | None):
    """Decodes an encoded image and class-id mask.

    Args:
        image_bytes: PNG/JPEG/BMP bytes (8 or 16 bits, any channels).
        mask_bytes: PNG bytes of the class-id mask (palette or grey).
        channels: Image channels to decode to.
        foreground_value: For binary masks, the value that becomes class 1.

    Returns:
        float32 `(H, W, channels)` in [0, 1] and uint8 `(H, W, 1)` ids.
    """
    image = tf.io.decode_image(image_bytes, channels=channels, dtype=tf.float32,
                               expand_animations=False)
    image.set_shape([None, None, channels])
    mask = tf.io.decode_png(mask_bytes, channels=3)[..., :1]
    if foreground_value is not None:
        mask = tf.cast(tf.equal(mask, foreground_value), tf.uint8)
    return image, mask


def _weight_map_fn(class_weights, w0: float, sigma: float):
    """A graph function: (instance PNG bytes, class mask) -> border weight map."""
    from keras_unet.weights import border_weight_map

    table = None if class_weights is None else np.asarray(class_weights, np.float32)

    def compute(instances, mask):
        classes = np.where(mask[..., 0] == IGNORE_ID, 0, mask[..., 0])
        weights = border_weight_map(instances[..., 0], table, classes, w0=w0, sigma=sigma)
        return np.where(mask[..., 0] == IGNORE_ID, 0, weights)[..., None].astype(np.float32)

    def graph(instance_bytes, mask):
        instances = tf.io.decode_png(instance_bytes, channels=1, dtype=tf.uint16)
        weights = tf.numpy_function(compute, [instances, mask], tf.float32)
        weights.set_shape([None, None, 1])
        return weights

    return graph


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
    border_weights: bool = False,
    border_w0: float = 10.0,
    border_sigma: float = 5.0,
    records: str | None = None,
    cache: bool | str = True,
    shuffle: bool = True,
    seed: int = 0,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Builds the `tf.data` pipeline that `fit()` consumes.

    Training: read -> decode -> cache -> shuffle -> joint augmentation and
    random crop to `crop_size` -> batch -> prefetch. Validation: read ->
    decode -> pad to a multiple of `pad_multiple` (padding is ignore) ->
    cache -> batch. Validation images of different sizes need
    `batch_size=1`.

    Args:
        dataset: Image/mask pairs (and their label map).
        channels: Image channels the model takes (1 or 3).
        training: Augment and crop (True) or only pad (False).
        batch_size: Examples per batch.
        crop_size: Training crop size (a multiple of `pad_multiple`).
        pad_multiple: `2**depth` of the model.
        augmentations: Augmentation settings (default `Augment()`).
        class_weights: Weight per class id; yields pixel weights.
        border_weights: Add the U-Net paper's border term between touching
            instances (needs the dataset's instance masks); yields pixel
            weights.
        border_w0: `w0` of the border term.
        border_sigma: `sigma` of the border term, in pixels.
        records: Glob of TFRecord shards (`write_tfrecords`) to read instead
            of the dataset's files; shards are interleaved.
        cache: Cache decoded examples in memory (True), in a file (a path),
            or not at all (False).
        shuffle: Shuffle training examples (reshuffled every epoch).
        seed: Seed of shuffling and augmentation.
        deterministic: Keep element order and random draws identical from
            run to run (for tests and debugging; slightly slower).

    Returns:
        A dataset of `(images, masks)` batches, or `(images, masks,
        weights)` with class or border weights: float32 `(B, H, W, C)`,
        uint8 `(B, H, W, 1)` and float32 `(B, H, W)`.

    Raises:
        ValueError: If border weights are asked for without instance masks.
    """
    augmentations = augmentations or Augment()
    if border_weights and not (dataset.instances or records):
        raise ValueError("border_weights needs instance masks (an instances/ folder)")
    fg = dataset.foreground_value
    if records:
        ds = _read_records(records, training, seed, deterministic)
    else:
        instances = dataset.instances or [""] * len(dataset.images)
        ds = tf.data.Dataset.from_tensor_slices((dataset.images, dataset.masks, instances))
        ds = ds.map(
            lambda i, m, n: (tf.io.read_file(i), tf.io.read_file(m),
                             tf.io.read_file(n) if border_weights else n),
            num_parallel_calls=AUTOTUNE,
        )
    weight_map = _weight_map_fn(class_weights, border_w0, border_sigma)

    def decode(image_bytes, mask_bytes, instance_bytes):
        image, mask = decode_bytes(image_bytes, mask_bytes, channels, fg)
        labels = {"mask": mask}
        if border_weights:
            labels["weights"] = weight_map(instance_bytes, mask)
        return image, labels

    ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
    if not training:
        ds = ds.map(lambda i, labels: pad_to_multiple(i, labels, pad_multiple))
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
        ds = ds.map(_elastic(elastic_layer(seed)), num_parallel_calls=AUTOTUNE)
    ds = ds.map(_outputs(class_weights, border_weights))
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def _outputs(class_weights, border_weights: bool):
    """Turns `(images, labels)` batches into what `fit()` takes."""
    def split(images, labels):
        if border_weights:
            return images, labels["mask"], labels["weights"][..., 0]
        if class_weights is not None:
            return images, labels["mask"], pixel_weights(labels["mask"], class_weights)
        return images, labels["mask"]

    return split


def _elastic(layer):
    """Elastic deformation of batches; mask and weights ride together."""
    def apply(images, labels):
        stacked = tf.concat([tf.cast(v, tf.float32) for v in labels.values()], -1)
        out = layer({"images": images, "segmentation_masks": stacked}, training=True)
        moved = tf.split(out["segmentation_masks"], len(labels), axis=-1)
        result = {}
        for (key, value), new in zip(labels.items(), moved):
            result[key] = tf.cast(tf.round(new), value.dtype) if key == "mask" else new
        return out["images"], result

    return apply
