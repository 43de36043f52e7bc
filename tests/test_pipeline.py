"""Tests for keras_unet.data.pipeline: the tf.data pipeline and joint augmentation."""

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from keras_unet.data.augment import Augment
from keras_unet.data.pairs import load_dataset
from keras_unet.data.pipeline import area_repeats, make_dataset, pixel_weights
from keras_unet.data.readers import save_mask
from keras_unet.data.weights import class_weights_from_counts

NO_PHOTOMETRIC = dict(brightness=0.0, contrast=None)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Images of random bright blobs whose mask is 'pixel is bright'.

    Any augmentation that moves the image but not the mask (or the other
    way round) breaks `mask == (image > 0.5)`.
    """
    root = tmp_path_factory.mktemp("blobs")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    (root / "labels.txt").write_text("_background_\nblob\n")
    rng = np.random.default_rng(0)
    for i in range(6):
        h, w = (48, 64) if i % 2 else (64, 40)
        bright = np.zeros((h, w), bool)
        for _ in range(4):
            y, x, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 9)
            yy, xx = np.mgrid[:h, :w]
            bright |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        bright[:5, :9] = True  # an asymmetric corner marker
        grey = np.where(bright, 220, 30).astype(np.uint8)
        PIL.Image.fromarray(grey).save(root / "images" / f"b{i}.png")
        save_mask(root / "masks" / f"b{i}.png", bright.astype(np.uint8))
    return load_dataset(root)


def batches(dataset, n=3, **kwargs):
    ds = make_dataset(dataset, channels=1, batch_size=3, crop_size=32, pad_multiple=8,
                      deterministic=True, **kwargs)
    return [tuple(t.numpy() for t in batch) for batch in ds.repeat().take(n)]


@pytest.mark.parametrize("settings", [
    Augment(flip=True, rotate90=False, scale=None, **NO_PHOTOMETRIC),
    Augment(flip=False, rotate90=True, scale=None, **NO_PHOTOMETRIC),
    Augment(flip=False, rotate90=False, scale=None, **NO_PHOTOMETRIC),  # crop only
    Augment(scale=None),  # flips, rotations, crop, brightness, contrast
], ids=["flip", "rot90", "crop", "all_but_scale"])
def test_image_and_mask_stay_aligned(blobs, settings):
    for images, masks in batches(blobs, training=True, augmentations=settings):
        labelled = masks[..., 0] != 255
        bright = images[..., 0] > images[..., 0].mean(axis=(1, 2), keepdims=True)
        assert (bright == (masks[..., 0] == 1))[labelled].all()


def test_scaling_keeps_alignment_up_to_edge_pixels(blobs):
    settings = Augment(flip=True, rotate90=True, scale=(0.6, 1.6), **NO_PHOTOMETRIC)
    for images, masks in batches(blobs, training=True, augmentations=settings):
        labelled = masks[..., 0] != 255
        bright = images[..., 0] > 0.5
        agreement = (bright == (masks[..., 0] == 1))[labelled].mean()
        assert agreement > 0.97


def test_augmentations_actually_change_the_examples(blobs):
    plain = batches(blobs, training=True, augmentations=Augment(
        flip=False, rotate90=False, scale=None, **NO_PHOTOMETRIC), n=1)[0]
    augmented = batches(blobs, training=True, n=1)[0]
    assert not np.array_equal(plain[1], augmented[1])


def test_masks_keep_only_valid_class_ids_and_dtypes(blobs):
    for images, masks in batches(blobs, training=True, augmentations=Augment(elastic=True)):
        assert images.dtype == np.float32 and images.shape == (3, 32, 32, 1)
        assert masks.dtype == np.uint8 and masks.shape == (3, 32, 32, 1)
        assert set(np.unique(masks)) <= {0, 1, 255}
        assert 0.0 <= images.min() and images.max() <= 1.0


def test_elastic_deformation_moves_image_and_mask_together(blobs):
    settings = Augment(flip=False, rotate90=False, scale=None, elastic=True, **NO_PHOTOMETRIC)
    for images, masks in batches(blobs, training=True, augmentations=settings):
        labelled = masks[..., 0] != 255
        agreement = ((images[..., 0] > 0.5) == (masks[..., 0] == 1))[labelled].mean()
        assert agreement > 0.95


def test_deterministic_mode_repeats_exactly_and_seed_matters(blobs):
    first = batches(blobs, training=True, seed=3)
    second = batches(blobs, training=True, seed=3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    other = batches(blobs, training=True, seed=4)
    assert not np.array_equal(first[0][1], other[0][1])


def test_validation_pads_to_the_model_multiple_with_ignore(blobs):
    ds = make_dataset(blobs, channels=1, training=False, batch_size=1, pad_multiple=16,
                      deterministic=True)
    for (images, masks), mask_path in zip(ds, blobs.masks):
        original = np.asarray(PIL.Image.open(mask_path))
        padded = masks.numpy()[0, ..., 0]
        assert images.shape[1] % 16 == 0 and images.shape[2] % 16 == 0
        np.testing.assert_array_equal(padded[: original.shape[0], : original.shape[1]], original)
        assert (padded[original.shape[0]:] == 255).all()
        assert (padded[:, original.shape[1]:] == 255).all()


def test_class_weights_become_pixel_weights_with_ignore_zero():
    weights = class_weights_from_counts({0: 900, 1: 100, 2: 300}, 3)
    assert weights == pytest.approx([300 / 900, 3.0, 1.0])
    mask = tf.constant([[[0], [1], [2], [255]]], tf.uint8)
    np.testing.assert_allclose(pixel_weights(mask, weights).numpy(),
                               [[300 / 900, 3.0, 1.0, 0.0]], rtol=1e-6)


def test_sample_weights_are_yielded_when_asked(blobs):
    ds = make_dataset(blobs, channels=3, training=True, batch_size=2, crop_size=32,
                      class_weights=[1.0, 4.0])
    images, masks, weights = next(iter(ds))
    assert images.shape[-1] == 3 and weights.shape == masks.shape[:3]
    np.testing.assert_array_equal(weights.numpy() == 4.0, masks.numpy()[..., 0] == 1)


def test_binary_masks_with_a_foreground_value(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    PIL.Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "i" / "a.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8] = 255
    PIL.Image.fromarray(mask).save(tmp_path / "m" / "a.png")
    dataset = load_dataset(images_dir=tmp_path / "i", masks_dir=tmp_path / "m",
                           foreground_value=255)
    _, masks = next(iter(make_dataset(dataset, channels=1, training=False, batch_size=1)))
    np.testing.assert_array_equal(masks.numpy()[0, ..., 0], (mask == 255).astype(np.uint8))


def test_sixteen_bit_images_are_scaled_to_unit_range(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "labels.txt").write_text("_background_\nx\n")
    values = np.array([[0, 65535], [32768, 1000]], np.uint16)
    PIL.Image.fromarray(values).save(tmp_path / "images" / "a.png")
    save_mask(tmp_path / "masks" / "a.png", np.zeros((2, 2), np.uint8))
    images, _ = next(iter(make_dataset(load_dataset(tmp_path), channels=1, training=False,
                                       batch_size=1, pad_multiple=1)))
    np.testing.assert_allclose(images.numpy()[0, ..., 0], values / 65535, atol=1e-6)


@pytest.fixture(scope="module")
def blobs_with_instances(blobs, tmp_path_factory):
    """The blob dataset with an instance mask per image (connected blobs)."""
    from scipy import ndimage

    root = tmp_path_factory.mktemp("instances")
    paths = []
    for mask_path in blobs.masks:
        labelled, _ = ndimage.label(np.asarray(PIL.Image.open(mask_path)) == 1)
        path = root / PIL.Image.open(mask_path).filename.rsplit("/", 1)[1]
        PIL.Image.fromarray(labelled.astype(np.uint16)).save(path)
        paths.append(str(path))
    from dataclasses import replace
    return replace(blobs, instances=paths)


def test_border_weights_move_with_the_mask(blobs_with_instances):
    from keras_unet.data.weights import border_weight_maps

    maps = border_weight_maps(blobs_with_instances)
    settings = Augment(scale=None, **NO_PHOTOMETRIC)
    for images, masks, weights in batches(blobs_with_instances, training=True,
                                          augmentations=settings, border_weights=maps):
        labelled = masks[..., 0] != 255
        objects = masks[..., 0] == 1
        assert (weights[~labelled] == 0).all()
        assert (weights[objects & labelled] == 1).all()  # objects keep weight 1
        assert (weights[~objects & labelled] >= 1).all()


def test_tfrecord_shards_give_the_same_examples_as_files(blobs, tmp_path):
    from keras_unet.data.pipeline import write_tfrecords

    paths = write_tfrecords(blobs, tmp_path, shards=3)
    assert len(paths) == 3
    from_files = make_dataset(blobs, channels=1, training=False, batch_size=1, pad_multiple=8)
    from_records = make_dataset(blobs, channels=1, training=False, batch_size=1,
                                pad_multiple=8, records=str(tmp_path / "train-*.tfrecord"),
                                deterministic=True)
    def key(batch):
        return batch[1].numpy().tobytes()
    assert sorted(map(key, from_files)) == sorted(map(key, from_records))


def test_the_stream_draws_each_example_its_number_of_times_per_pass():
    from keras_unet.data.pipeline import _stream

    examples = tf.data.Dataset.range(3)
    stream = _stream(examples, seed=1, shuffle=True, start=0, repeats=[1, 3, 0])
    drawn = np.bincount([int(e) for e, _ in stream.take(400)], minlength=3)
    assert drawn[2] == 0 and abs(drawn[1] / 400 - 0.75) < 0.03
    def fresh(start):  # a resumed run builds its stream anew
        return _stream(examples, seed=1, shuffle=True, start=start, repeats=[1, 3, 0])

    assert [int(e) for e, _ in fresh(6).take(5)] == [int(e) for e, _ in fresh(0).take(11)][6:]


def test_area_sampling_draws_an_image_as_often_as_its_area_holds_crops():
    # 256x256 holds four 128x128 crops, 1024x1024 sixty-four; 300x200 holds
    # 3.66 (rounds to 4); a 100x50 thumbnail is still drawn once.
    sizes = [(256, 256), (1024, 1024), (300, 200), (100, 50)]
    assert area_repeats(sizes, 128) == [4, 64, 4, 1]
    assert area_repeats(sizes, 256) == [1, 16, 1, 1]


def test_gamma_is_a_power_curve_within_its_range_and_leaves_masks_alone():
    from keras_unet.data.augment import photometric

    image = tf.constant(np.linspace(0.0, 1.0, 48, dtype=np.float32).reshape(4, 4, 3))
    fixed = photometric(image, tf.constant([1, 2], tf.int64),
                        Augment(gamma=(2.0, 2.0), **NO_PHOTOMETRIC))
    np.testing.assert_allclose(fixed.numpy(), image.numpy() ** 2, atol=1e-5)
    x = image.numpy()[1:-1]  # away from 0 and 1, which every gamma keeps
    outputs = [photometric(image, tf.constant([s, 0], tf.int64),
                           Augment(gamma=(0.5, 2.0), **NO_PHOTOMETRIC)).numpy()[1:-1]
               for s in range(12)]
    for out in outputs:
        assert np.all(out >= x ** 2 - 1e-6) and np.all(out <= x ** 0.5 + 1e-6)
    assert len({round(float(o.mean()), 4) for o in outputs}) > 6  # it varies


def test_stain_adjustment_matches_scikit_image_colour_deconvolution():
    from skimage.color import hed2rgb, rgb2hed

    from keras_unet.data.augment import adjust_stains

    rng = np.random.default_rng(3)  # an H&E-like image made of known stain densities
    stains = rng.uniform([0.01, 0.0, 0.0], [0.09, 0.08, 0.02], (6, 7, 3))
    image = hed2rgb(stains).astype(np.float32)
    same = adjust_stains(tf.constant(image), tf.ones(3), tf.zeros(3)).numpy()
    np.testing.assert_allclose(same, image, atol=1e-5)
    scale, shift = np.array([1.2, 0.9, 1.0]), np.array([0.01, -0.005, 0.0])
    expected = hed2rgb(rgb2hed(image) * scale + shift)
    got = adjust_stains(tf.constant(image), tf.constant(scale, tf.float32),
                        tf.constant(shift, tf.float32)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(got - image).max() > 0.02  # it did change the colours


def test_stain_jitter_changes_colour_images_and_leaves_grey_ones_alone():
    from keras_unet.data.augment import photometric

    settings = Augment(stain=(0.2, 0.01), **NO_PHOTOMETRIC)
    rng = np.random.default_rng(4)
    colour = tf.constant(rng.uniform(0.3, 0.9, (8, 8, 3)).astype(np.float32))
    grey = tf.constant(np.repeat(rng.uniform(0.3, 0.9, (8, 8, 1)), 3, -1).astype(np.float32))
    changed = [photometric(colour, tf.constant([s, 0], tf.int64), settings).numpy()
               for s in range(4)]
    assert all(np.abs(c - colour.numpy()).max() > 1e-3 for c in changed)
    assert len({round(float(c.mean()), 4) for c in changed}) == 4  # each draw its own
    np.testing.assert_array_equal(
        photometric(grey, tf.constant([1, 0], tf.int64), settings).numpy(), grey.numpy())


def test_per_image_models_default_to_no_brightness_or_contrast_change():
    from keras_unet.data.augment import photometric

    # A dim image (faint object at 12/255 on black): the default shift
    # clips the object away in some draws, and per-image standardization
    # would undo the change itself anyway.
    image = tf.constant(np.array([0.0, 12 / 255], np.float32).reshape(1, 2, 1))
    defaults = Augment()
    erased = [photometric(image, tf.constant([s, 0], tf.int64), defaults).numpy()[0, 1, 0]
              for s in range(20)]
    assert min(erased) == 0.0
    settings = Augment.for_model({"hue": 0.05}, "per_image")
    assert (settings.brightness, settings.contrast, settings.hue) == (0.0, None, 0.05)
    kept = [photometric(image, tf.constant([s, 0], tf.int64), settings).numpy()
            for s in range(20)]
    assert all(np.array_equal(k, image.numpy()) for k in kept)
    assert Augment.for_model({"brightness": 0.2}, "per_image").brightness == 0.2
    assert Augment.for_model({}, None) == Augment()
    assert Augment.for_model({"hue": 0.05}, "per_image_percentile") == settings
