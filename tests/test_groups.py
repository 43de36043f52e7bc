"""Tests for keras_unet.evaluation.groups: brightness and object-size groups.

References are computed by hand: means of constant images, sizes of
squares, and Dice pooled over pixels against Dice averaged over images.
"""

import numpy as np
import PIL.Image
import pytest
from conftest import squares

from keras_unet.data.pairs import load_dataset
from keras_unet.data.readers import save_instances, save_mask
from keras_unet.evaluation.evaluate import evaluate_dataset
from keras_unet.evaluation.groups import (
    BRIGHTNESS_BINS,
    GroupScores,
    bin_name,
    image_groups,
)
from keras_unet.evaluation.scores import confusion
from keras_unet.inference.predict import Predictor

NAMES = ["_background_", "nucleus"]


def test_a_value_on_a_bin_edge_falls_in_the_upper_bin():
    assert bin_name(7.99, BRIGHTNESS_BINS) == "dark"
    assert bin_name(8.0, BRIGHTNESS_BINS) == "dim"
    assert bin_name(255.0, BRIGHTNESS_BINS) == "bright"


def test_a_dim_image_of_large_objects_is_placed_in_both_groups():
    ids = squares([40, 40])  # diameter 45 px
    image = np.full((128, 128, 3), 20 / 255, np.float32)
    placed = image_groups(image, (ids > 0).astype(np.uint8), instances=ids)
    assert placed["groups"] == ["brightness:dim", "size:large"]
    assert placed["brightness"] == pytest.approx(20.0, abs=1e-3)


def test_without_instances_the_foreground_components_are_the_objects():
    truth = (squares([8, 8, 8]) > 0).astype(np.uint8)  # three 8x8 squares, 1 px apart
    image = np.full((128, 128, 1), 0.9, np.float32)
    assert image_groups(image, truth)["groups"] == ["brightness:bright", "size:small"]
    # A dataset without background (street scenes) has no objects, so no size.
    assert image_groups(image, truth, has_background=False)["groups"] == ["brightness:bright"]


def test_group_scores_pool_pixels_and_average_images():
    big, small = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    big[:10, :10] = 1  # 100 foreground pixels, predicted exactly
    small[:2, :5] = 1  # 10 foreground pixels, all missed
    scores = GroupScores(NAMES)
    scores.add(confusion(big, big, 2))
    scores.add(confusion(small, np.zeros_like(small), 2))
    result = scores.as_dict()
    assert result["images"] == 2
    assert result["dice"] == pytest.approx(2 * 100 / (2 * 100 + 10))  # pooled
    assert result["image_dice"] == pytest.approx((1.0 + 0.0) / 2)  # per image
    assert result["mean_ap"] is None


def test_evaluate_reports_each_group_and_the_image_averaged_dice(tmp_path):
    """Two images: a dim one of large objects predicted right, a bright one
    of small objects predicted empty; each group holds one of them."""
    for sub in ("images", "masks", "instances"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labels.txt").write_text("_background_\nnucleus\n")
    cases = {"dim": (squares([40, 40]), 20), "bright": (squares([6] * 8), 200)}
    for name, (ids, level) in cases.items():
        PIL.Image.fromarray(np.full((128, 128), level, np.uint8)).save(
            tmp_path / "images" / f"{name}.png")
        save_mask(tmp_path / "masks" / f"{name}.png", (ids > 0).astype(np.uint8))
        save_instances(tmp_path / "instances" / f"{name}.png", ids)
    dim_truth = (cases["dim"][0] > 0).astype(np.float32)

    def oracle(batch):  # right on the dim image, nothing on the bright one
        bright = batch.mean() > 0.5
        return np.zeros_like(dim_truth)[None, ..., None] if bright else dim_truth[None, ..., None]

    predictor = Predictor(oracle, None, 3, 1, "oracle", "semantic", NAMES)
    result = evaluate_dataset(predictor, load_dataset(tmp_path), tmp_path / "report")
    groups = result["groups"]
    assert list(groups) == ["brightness:dim", "brightness:bright", "size:small", "size:large"]
    assert groups["brightness:dim"]["dice"] == pytest.approx(1.0)
    assert groups["size:large"]["mean_ap"] == pytest.approx(1.0)
    assert groups["brightness:bright"]["dice"] == pytest.approx(0.0)
    assert groups["size:small"]["images"] == 1
    assert result["image_dice"] == pytest.approx(0.5)
    assert result["classes"]["nucleus"]["dice"] == pytest.approx(
        2 * 3200 / (2 * 3200 + 8 * 36))
    header = (tmp_path / "report" / "per_image.csv").read_text().splitlines()[0]
    assert "brightness" in header and "object_diameter" in header
