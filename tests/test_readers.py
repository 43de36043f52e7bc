"""Tests for keras_unet.data.readers: every step reads a file the same way.

The references are arrays written by Pillow here; the pipeline's view of the
same files must equal the readers' (the dataset check uses the readers).
"""

import numpy as np
import PIL.Image
import pytest

from keras_unet.data.labels import class_color
from keras_unet.data.pairs import DatasetError, check_dataset, load_dataset
from keras_unet.data.pipeline import make_dataset
from keras_unet.data.readers import (
    ReadError,
    image_size,
    read_image,
    read_instances,
    read_mask,
    save_instances,
    save_mask,
)

IDS = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)  # ids 1, 2 = VOC colours


def write_pair(root, name, mask_image, size=(2, 3), labels="_background_\na\nb\n"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "labels.txt").write_text(labels)
    PIL.Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(root / "images" / f"{name}.png")
    mask_image.save(root / "masks" / f"{name}.png")
    return load_dataset(root)


def pipeline_masks(dataset):
    ds = make_dataset(dataset, channels=3, training=False, batch_size=1, pad_multiple=1)
    return [masks.numpy()[0, ..., 0] for _, masks in ds]


def voc_mask(ids):
    image = PIL.Image.fromarray(ids, "P")
    image.putpalette(VOC_PALETTE)
    return image


@pytest.mark.parametrize("kind", ["grey8", "grey16", "keras_unet_palette", "voc_palette"])
def test_check_and_pipeline_read_the_same_class_ids(tmp_path, kind):
    """16-bit id masks used to train as all background, VOC palettes as id 128."""
    if kind == "grey8":
        image = PIL.Image.fromarray(IDS)
    elif kind == "grey16":
        image = PIL.Image.fromarray(IDS.astype(np.uint16))
    elif kind == "voc_palette":
        image = voc_mask(IDS)
    else:
        save_mask(tmp_path / "m.png", IDS)
        image = PIL.Image.open(tmp_path / "m.png")
    dataset = write_pair(tmp_path / "d", "x", image)
    counts = check_dataset(dataset)
    assert counts == {0: 2, 1: 2, 2: 2}
    np.testing.assert_array_equal(read_mask(dataset.masks[0]), IDS)
    np.testing.assert_array_equal(pipeline_masks(dataset)[0], IDS)


def test_a_colour_coded_rgb_mask_is_refused_naming_the_file(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (128, 0, 0)  # a VOC colour, rendered as RGB
    dataset = write_pair(tmp_path / "d", "colour", PIL.Image.fromarray(rgb))
    with pytest.raises(DatasetError, match=r"colour.png: a colour \(RGB\) mask; masks must "
                                           r"hold class ids"):
        check_dataset(dataset)


def test_grey_masks_saved_as_rgb_are_read_as_ids(tmp_path):
    rgb = np.repeat(IDS[..., None], 3, -1)
    dataset = write_pair(tmp_path / "d", "x", PIL.Image.fromarray(rgb))
    np.testing.assert_array_equal(pipeline_masks(dataset)[0], IDS)


def test_16_bit_values_above_255_are_refused_as_class_ids(tmp_path):
    path = tmp_path / "m.png"
    PIL.Image.fromarray(np.array([[0, 300]], np.uint16)).save(path)
    with pytest.raises(ReadError, match=r"m.png: mask values 0..300 do not fit class ids"):
        read_mask(path)
    np.testing.assert_array_equal(read_instances(path), [[0, 300]])


def test_tif_images_and_masks_are_read_like_png(tmp_path):
    grey16 = (np.arange(6, dtype=np.uint16).reshape(2, 3) * 10000)
    PIL.Image.fromarray(grey16).save(tmp_path / "i.tif")
    PIL.Image.fromarray(IDS).save(tmp_path / "m.tif")
    np.testing.assert_allclose(read_image(tmp_path / "i.tif", 1)[..., 0], grey16 / 65535,
                               atol=1e-6)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif"), IDS)
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    (tmp_path / "d" / "labels.txt").write_text("_background_\na\nb\n")
    (tmp_path / "i.tif").rename(tmp_path / "d" / "images" / "x.tif")
    (tmp_path / "m.tif").rename(tmp_path / "d" / "masks" / "x.tif")
    dataset = load_dataset(tmp_path / "d")
    assert check_dataset(dataset) == {0: 2, 1: 2, 2: 2}
    images, masks = next(iter(make_dataset(dataset, channels=1, training=False,
                                           batch_size=1, pad_multiple=1)))
    np.testing.assert_allclose(images.numpy()[0, ..., 0], grey16 / 65535, atol=1e-6)
    np.testing.assert_array_equal(masks.numpy()[0, ..., 0], IDS)


def test_images_read_grey_or_rgb_at_any_bit_depth(tmp_path):
    PIL.Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "a.png")
    PIL.Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "b.png")
    PIL.Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "a.png", 3).shape == (4, 4, 3)
    assert read_image(tmp_path / "a.png", 1).max() == 1.0
    assert read_image(tmp_path / "b.png", 1).max() == 1.0
    assert read_image(tmp_path / "rgba.png", 3).shape == (4, 4, 3)
    assert read_image((tmp_path / "a.png").read_bytes(), 1).shape == (4, 4, 1)


def test_image_size_is_the_upright_size(tmp_path):
    image = PIL.Image.fromarray(np.zeros((2, 5, 3), np.uint8))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 5 high, 2 wide
    image.save(tmp_path / "r.jpg", exif=exif)
    assert image_size(tmp_path / "r.jpg") == (5, 2)
    assert read_image(tmp_path / "r.jpg", 3).shape == (5, 2, 3)


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for read in (lambda p: read_image(p, 3), read_mask, read_instances, image_size):
        with pytest.raises(ReadError, match="bad.png: unreadable"):
            read(tmp_path / "bad.png")


def test_mask_png_keeps_class_ids_with_the_class_palette(tmp_path):
    mask = np.array([[0, 1, 2], [255, 7, 1]], np.uint8)
    path = save_mask(tmp_path / "m.png", mask)
    with PIL.Image.open(path) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), mask)
        rgb = np.asarray(image.convert("RGB"))
    # Red is the class id (decoders that expand palettes keep the id);
    # green and blue are the class colour's, ignore is white.
    for (y, x) in [(0, 1), (0, 2), (1, 1)]:
        assert tuple(rgb[y, x]) == (mask[y, x], *class_color(int(mask[y, x]))[1:])
    assert tuple(rgb[1, 0]) == (255, 255, 255)


def test_instance_png_keeps_ids_above_255(tmp_path):
    instances = np.array([[0, 1], [300, 65535]], np.uint16)
    path = save_instances(tmp_path / "i.png", instances)
    with PIL.Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image).astype(np.uint16), instances)
