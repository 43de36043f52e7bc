"""The tf.data input pipeline: read, augment jointly, batch, prefetch.

Files are read with `keras_unet.data.readers` (the readers the dataset check,
evaluation and prediction use), so training sees exactly what was checked:
images as float32 in [0, 1], masks as class ids (grey or palette PNGs, 8 or
16 bits), instance masks as ids.

Training examples form one endless, shuffled stream, and the example at
position `i` of the stream is augmented with a random draw made from
`(seed, i)`. Built again with the same seed, the stream is the same, so a
resumed run that skips the examples already seen (`start`) continues
exactly where the interrupted run stopped.

Augmentations apply one random draw to image and labels together: flips,
90-degree rotations, random scale and crop (labels always nearest
neighbour), brightness/contrast and colour changes (image only) and,
optionally, elastic deformation as in the U-Net paper. Padding uses zeros
for images and the ignore id (255) for masks, so padded pixels never count
in the loss or the metrics.

Targets: `"semantic"` trains on the class-id masks; `"instances"` adds a
boundary class (id `num_classes`) on the object pixels that touch another
object or the background, computed from the instance masks after
augmentation, so that touching objects are separated (see
`keras_unet.data.instances`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_unet import files
from keras_unet.data.augment import (
    Augment,
    augment,
    elastic_batches,
    elastic_layer,
    pad_to_multiple,
)
from keras_unet.data.instances import BOUNDARY_WIDTH, TARGETS
from keras_unet.data.labels import IGNORE_ID
from keras_unet.data.pairs import Dataset
from keras_unet.data.readers import read_image, read_instances, read_mask

AUTOTUNE = tf.data.AUTOTUNE


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


def boundary_target(masks: tf.Tensor, instances: tf.Tensor, boundary_id: int,
                    width: int = 1) -> tf.Tensor:
    """Class-id masks with a boundary class between and around objects.

    An object pixel is a boundary pixel when a pixel within `width` pixels
    (a square neighbourhood) belongs to another object or to no object;
    boundary pixels get `boundary_id`, other pixels keep their class (ignore
    stays ignore). Touching objects are then separated by `2 * width`
    boundary pixels, `width` from each.

    Args:
        masks: `(B, H, W, 1)` uint8 class ids.
        instances: `(B, H, W, 1)` int instance ids (0 = no object).
        boundary_id: Class id of the boundary (the number of classes).
        width: Boundary width in pixels.

    Returns:
        `(B, H, W, 1)` uint8 class ids.
    """
    ids = tf.cast(instances, tf.float32)
    window = 2 * width + 1
    high = tf.nn.max_pool2d(ids, window, 1, "SAME")
    low = -tf.nn.max_pool2d(-ids, window, 1, "SAME")
    border = (ids > 0) & ((high != ids) | (low != ids)) & (masks != IGNORE_ID)
    return tf.where(border, tf.constant(boundary_id, tf.uint8), masks)


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
                    feature = {
                        key: tf.train.Feature(bytes_list=tf.train.BytesList(
                            value=[Path(value).read_bytes()] if value else []))
                        for key, value in features.items()
                    }
                    feature["index"] = tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[i]))
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())

        paths.append(str(files.atomic_write(path, write)))
    return paths


def _read_records(pattern: str, deterministic: bool):
    """`(image_bytes, mask_bytes, instance_bytes, pair index)` from TFRecord shards."""
    spec = {key: tf.io.VarLenFeature(tf.string) for key in ("image", "mask", "instances")}
    spec["index"] = tf.io.FixedLenFeature([], tf.int64)
    shards = tf.data.Dataset.list_files(pattern, shuffle=False)
    records = shards.interleave(
        tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        values = [tf.sparse.to_dense(parsed[k], default_value="")
                  for k in ("image", "mask", "instances")]
        return (*(tf.concat([v, [""]], 0)[0] for v in values), parsed["index"])

    return records.map(parse, num_parallel_calls=AUTOTUNE)


def decode_bytes(image_bytes, mask_bytes, channels: int, foreground_value: int | None,
                 ignore_index: int | None = None):
    """Decodes an encoded image and class-id mask with `keras_unet.data.readers`.

    Args:
        image_bytes: Scalar string tensor: PNG/JPEG/BMP/TIFF bytes.
        mask_bytes: Scalar string tensor: mask PNG/BMP/TIFF bytes.
        channels: Image channels to decode to.
        foreground_value: For binary masks, the value that becomes class 1.
        ignore_index: The dataset's void value, read as 255 (ignore).

    Returns:
        float32 `(H, W, channels)` in [0, 1] and uint8 `(H, W, 1)` ids.
    """
    def read(image_data, mask_data):
        return (read_image(bytes(image_data), channels),
                read_mask(bytes(mask_data), foreground_value, ignore_index)[..., None])

    image, mask = tf.numpy_function(read, [image_bytes, mask_bytes], [tf.float32, tf.uint8],
                                    stateful=False)
    image.set_shape([None, None, channels])
    mask.set_shape([None, None, 1])
    return image, mask


def decode_instances(instance_bytes) -> tf.Tensor:
    """Decodes an instance-id PNG into int32 `(H, W, 1)`."""
    ids = tf.numpy_function(lambda data: read_instances(bytes(data))[..., None],
                            [instance_bytes], tf.int32, stateful=False)
    ids.set_shape([None, None, 1])
    return ids


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
    border_weights: Sequence[np.ndarray] | None = None,
    target: str = "semantic",
    boundary_width: int = BOUNDARY_WIDTH,
    records: str | None = None,
    cache: bool | str = True,
    shuffle: bool = True,
    seed: int = 0,
    deterministic: bool = False,
    start: int = 0,
    repeats: Sequence[int] | None = None,
) -> tf.data.Dataset:
    """Builds the `tf.data` pipeline that `fit()` consumes.

    Training: read -> decode -> cache -> an endless stream of shuffled
    passes (see the module docstring) -> joint augmentation and random crop
    to `crop_size` -> batch -> prefetch. Validation: read -> decode -> pad
    to a multiple of `pad_multiple` (padding is ignore) -> cache -> batch,
    one pass. Validation images of different sizes need `batch_size=1`.

    Args:
        dataset: Image/mask pairs (and their label map).
        channels: Image channels the model takes (1 or 3).
        training: Augment and crop (True) or only pad (False).
        batch_size: Examples per batch.
        crop_size: Training crop size (a multiple of `pad_multiple`).
        pad_multiple: `2**depth` of the model.
        augmentations: Augmentation settings (default `Augment()`).
        class_weights: Weight per class id; yields pixel weights.
        border_weights: The U-Net paper's weight map of each pair (from
            `keras_unet.data.weights.border_weight_maps`), moved with the mask by
            the augmentation; yields pixel weights.
        target: `"semantic"` or `"instances"` (adds the boundary class;
            needs instance masks).
        boundary_width: Width of the boundary class in pixels (instances).
        records: Glob of TFRecord shards (`write_tfrecords`) to read instead
            of the dataset's files; shards are interleaved.
        cache: Cache decoded examples in memory (True), in a file (a path),
            or not at all (False).
        shuffle: Shuffle training examples (a new order every pass).
        seed: Seed of shuffling and augmentation.
        deterministic: Keep the element order of parallel steps, so batches
            repeat exactly from run to run (slightly slower).
        start: Training examples of the stream to skip: those a resumed run
            has already trained on.
        repeats: Times each pair is drawn per pass over the training set
            (oversampling rare kinds of images); default once each.

    Returns:
        A dataset of `(images, masks)` batches, or `(images, masks,
        weights)` with class or border weights: float32 `(B, H, W, C)`,
        uint8 `(B, H, W, 1)` and float32 `(B, H, W)`. Training datasets are
        endless; give `fit()` its `steps_per_epoch`.

    Raises:
        ValueError: If border weights or the instance target are asked for
            without instance masks, or `target` is unknown.
    """
    augmentations = augmentations or Augment()
    if target not in TARGETS:
        raise ValueError(f"target={target!r}: expected one of {', '.join(TARGETS)}")
    need_instances = target == "instances"
    if need_instances and not (dataset.instances or records):
        raise ValueError("the instance target needs instance masks (an instances/ folder)")
    fg = dataset.foreground_value
    if records:
        ds = _read_records(records, deterministic)
    else:
        instances = dataset.instances or [""] * len(dataset.images)
        ds = tf.data.Dataset.from_tensor_slices(
            (dataset.images, dataset.masks, instances, np.arange(len(dataset.images))))
        ds = ds.map(
            lambda i, m, n, index: (tf.io.read_file(i), tf.io.read_file(m),
                                    tf.io.read_file(n) if need_instances else n, index),
            num_parallel_calls=AUTOTUNE, deterministic=True,
        )

    def decode(image_bytes, mask_bytes, instance_bytes, index):
        image, mask = decode_bytes(image_bytes, mask_bytes, channels, fg, dataset.ignore_index)
        labels = {"mask": mask}
        if need_instances:
            labels["instances"] = decode_instances(instance_bytes)
        if border_weights is not None:
            weights = tf.numpy_function(lambda i: border_weights[i][..., None], [index],
                                        tf.float32, stateful=False)
            weights.set_shape([None, None, 1])
            labels["weights"] = weights
        return image, labels

    # Decoding keeps the file order, so cached examples have fixed positions.
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    if not training:
        ds = ds.map(lambda i, labels: pad_to_multiple(i, labels, pad_multiple))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training:
        ds = _stream(ds, seed, shuffle, start, repeats or [1] * len(dataset.images))
        ds = ds.map(
            lambda example, key: augment(*example, key, crop_size, augmentations),
            num_parallel_calls=AUTOTUNE, deterministic=deterministic,
        )
    ds = ds.batch(batch_size, drop_remainder=False)
    if training and augmentations.elastic:
        ds = ds.map(elastic_batches(elastic_layer(seed)), num_parallel_calls=AUTOTUNE,
                    deterministic=deterministic)
    ds = ds.map(_outputs(class_weights, border_weights is not None, target,
                         dataset.num_classes, boundary_width))
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def area_repeats(sizes: Sequence[tuple[int, int]], crop_size: int) -> list[int]:
    """Draws per pass that make each image's share of the crops its share of the pixels.

    Args:
        sizes: `(height, width)` of each training image.
        crop_size: The training crop size.

    Returns:
        `round(height * width / crop_size**2)` for each image, at least 1: as
        many random crops as its area holds.
    """
    return [max(1, round(h * w / crop_size**2)) for h, w in sizes]


def _stream(examples: tf.data.Dataset, seed: int, shuffle: bool, start: int,
            repeats: Sequence[int]):
    """The endless training stream from position `start`: `(example, key)` pairs.

    Each pass holds example `i` `repeats[i]` times; the passes repeat and go
    through a shuffle buffer of one pass, seeded with `seed`; `key = (seed,
    position)` seeds the augmentation of the example at that position. Built
    again with the same seed, the stream is the same, so skipping `start`
    examples continues it exactly (the skip draws no augmentation).
    """
    if any(r != 1 for r in repeats):
        times = tf.data.Dataset.from_tensor_slices(np.asarray(repeats, np.int64))
        examples = tf.data.Dataset.zip((examples, times)).flat_map(
            lambda example, k: tf.data.Dataset.from_tensors(example).repeat(k))
    examples = examples.repeat()
    if shuffle:
        examples = examples.shuffle(max(1, int(sum(repeats))), seed=seed,
                                    reshuffle_each_iteration=True)
    keys = tf.data.Dataset.range(2**62).map(
        lambda position: tf.stack([tf.constant(seed, tf.int64), position]))
    return tf.data.Dataset.zip((examples, keys)).skip(start)


def _outputs(class_weights, border_weights: bool, target: str, num_classes: int,
             boundary_width: int):
    """Turns `(images, labels)` batches into what `fit()` takes."""
    def split(images, labels):
        mask = labels["mask"]
        if target == "instances":
            mask = boundary_target(mask, labels["instances"], num_classes, boundary_width)
        if border_weights:
            return images, mask, labels["weights"][..., 0]
        if class_weights is not None:
            return images, mask, pixel_weights(mask, class_weights)
        return images, mask

    return split
