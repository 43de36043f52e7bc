"""Tests for keras_unet.data.visualize: mask overlays with a legend."""

import numpy as np
import pytest

from keras_unet.data.labels import class_color
from keras_unet.data.visualize import IGNORE_COLOR, overlay


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 5:25] = 3
    mask[20:30, 30:50] = 255
    return image, mask


def test_labelled_pixels_blend_with_the_class_colour_and_background_is_untouched(scene):
    image, mask = scene
    picture = np.asarray(overlay(image, mask, alpha=0.3))
    top = picture[:40].astype(int)
    np.testing.assert_array_equal(top[mask == 0], image[mask == 0])
    for class_id, color in [(3, class_color(3)), (255, IGNORE_COLOR)]:
        expected = 0.7 * image[mask == class_id] + 0.3 * np.array(color)
        assert np.abs(top[mask == class_id] - expected).max() <= 1


def test_a_legend_strip_is_added_below_only_when_classes_are_present(scene):
    image, mask = scene
    with_classes = overlay(image, mask, ["_background_", "a", "b", "c"])
    assert with_classes.width == 60 and with_classes.height > 40
    legend = np.asarray(with_classes)[40:]
    assert (legend == class_color(3)).all(axis=-1).any()  # the class-3 swatch
    assert (legend == IGNORE_COLOR).all(axis=-1).any()
    assert overlay(image, np.zeros_like(mask)).size == (60, 40)


def test_grey_images_are_shown_in_rgb(scene):
    image, mask = scene
    grey = image[..., 0]
    picture = np.asarray(overlay(grey, mask))
    np.testing.assert_array_equal(picture[:40][mask == 0], np.stack([grey] * 3, -1)[mask == 0])
