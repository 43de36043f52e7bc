"""Tests for keras_unet.evaluation.baselines: Otsu thresholds and the comparison table."""

import numpy as np
import PIL.Image
import pytest
from test_instances import touching_discs

from keras_unet.data.pairs import load_dataset
from keras_unet.data.readers import save_instances, save_mask
from keras_unet.evaluation.baselines import (
    format_comparison,
    otsu_foreground,
    otsu_threshold,
    otsu_watershed,
    score_methods,
)
from keras_unet.inference.predict import Predictor


def test_otsu_matches_scikit_image():
    from skimage.filters import threshold_otsu

    image = np.random.default_rng(0).random((64, 64)) ** 2 * 255
    assert otsu_threshold(image) == pytest.approx(threshold_otsu(image), abs=1.0)


def test_the_minority_side_is_foreground_for_dark_objects_on_a_bright_stain():
    image = np.full((20, 20), 0.8)
    image[5:10, 5:10] = 0.2
    assert otsu_foreground(image).sum() == 400 - 25  # plain: the bright side
    assert otsu_foreground(image, minority=True).sum() == 25


def test_the_watershed_splits_touching_discs_a_threshold_merges():
    ids = touching_discs()
    image = np.where(ids > 0, 0.9, 0.1)
    assert otsu_watershed(image, min_distance=5).max() == 2


def write_discs_dataset(root, brightness):
    """Write one image of the touching discs per name, on a background of 30.

    Args:
        root: The dataset folder to create.
        brightness: ``{image name: grey level of the discs}``.

    Returns:
        The discs' instance ids.
    """
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True)
    (root / "labels.txt").write_text("_background_\nnucleus\n")
    ids = touching_discs()
    for name, level in brightness.items():
        PIL.Image.fromarray(np.where(ids > 0, level, 30).astype(np.uint8)).save(
            root / "images" / f"{name}.png")
        save_mask(root / "masks" / f"{name}.png", (ids > 0).astype(np.uint8))
        save_instances(root / "instances" / f"{name}.png", ids)
    return ids


@pytest.fixture
def discs_dataset(tmp_path):
    ids = write_discs_dataset(tmp_path / "d", {"a": 220, "b": 220})
    return load_dataset(tmp_path / "d"), ids


def test_comparison_scores_every_method_per_group(discs_dataset):
    dataset, ids = discs_dataset
    perfect = (ids > 0).astype(np.float32)[None, ..., None]
    oracle = Predictor(lambda batch: np.repeat(perfect, len(batch), 0), None, 3, 1, "oracle")
    table = score_methods(dataset, {"unet": oracle}, {"a": "bright", "b": "dark"})
    assert set(table) == {"otsu", "otsu_watershed", "unet"}
    assert set(table["unet"]) == {"all", "bright", "dark"}
    assert table["unet"]["all"]["images"] == 2 and table["unet"]["bright"]["images"] == 1
    assert table["unet"]["all"]["foreground_dice"] == pytest.approx(1.0)
    # a perfect semantic mask still merges the two touching discs into one object
    assert table["unet"]["all"]["merged"] == 4 and table["unet"]["all"]["mean_ap"] < 0.1
    assert table["otsu_watershed"]["all"]["mean_ap"] > 0.5
    text = format_comparison(table)
    assert "otsu_watershed" in text and "bright 1" in text


def test_pooled_dice_weighs_pixels_and_image_dice_weighs_images(tmp_path):
    """Two images with the same discs; the model finds them in one, not the other."""
    root = tmp_path / "d"
    write_discs_dataset(root, {"found": 220, "missed": 100})
    # Foreground where the image is brighter than half: the dim discs are missed.
    threshold = Predictor(lambda batch: (batch.mean(-1, keepdims=True) > 0.5).astype("float32"),
                          None, 3, 1, "threshold")
    table = score_methods(load_dataset(root), {"unet": threshold})
    # By hand: found has TP = n, missed has FN = n -> pooled 2n / (2n + n) = 2/3;
    # the images' own Dice are 1 and 0 -> their mean is 1/2.
    assert table["unet"]["all"]["foreground_dice"] == pytest.approx(2 / 3)
    assert table["unet"]["all"]["image_dice"] == pytest.approx(0.5)
    assert "img Dice" in format_comparison(table)


def test_an_image_of_a_group_named_all_counts_once(discs_dataset):
    dataset, _ = discs_dataset
    table = score_methods(dataset, None, {"a": "all", "b": "dark"})
    assert table["otsu"]["all"]["images"] == 2 and table["otsu"]["dark"]["images"] == 1
