"""Tests for keras_unet.inference.confidence: how sure a model is of an image."""

import csv
import shutil

import numpy as np
import pytest
from conftest import REPO

from keras_unet.cli import main
from keras_unet.inference.confidence import (
    UNSURE_SHARE,
    foreground_confidence,
    foreground_probability,
    uncertain_share,
)


def test_the_uncertain_share_counts_the_unsure_among_the_possible_object_pixels():
    foreground = np.array([[0.0, 0.05, 0.2, 0.5], [0.95, 1.0, 0.85, 0.92]], np.float32)
    softmax = np.stack([1 - foreground, foreground * 0.7, foreground * 0.3], -1)
    # above 0.1: 0.2, 0.5, 0.95, 1.0, 0.85, 0.92; of those below 0.9: 0.2, 0.5, 0.85
    assert uncertain_share(softmax) == pytest.approx(3 / 6)
    assert uncertain_share(foreground[..., None]) == pytest.approx(3 / 6)  # a sigmoid model
    np.testing.assert_allclose(foreground_probability(softmax), foreground, atol=1e-6)
    assert uncertain_share(np.zeros((4, 4, 1), np.float32)) == 0.0  # nothing to be unsure of
    assert uncertain_share(np.ones((4, 4, 1), np.float32)) == 0.0  # sure of every object


def test_foreground_confidence():
    probabilities = np.array([[[0.1, 0.9], [0.3, 0.7]], [[0.5, 0.5], [1.0, 0.0]]], np.float32)
    region = np.array([[True, True], [True, False]])
    assert foreground_confidence(probabilities, region) == pytest.approx((0.4 + 0.2 + 0) / 3)
    assert foreground_confidence(probabilities, np.zeros((2, 2), bool)) == 0.0
    sigmoid = np.array([[[0.9]]], np.float32)
    assert foreground_confidence(sigmoid, np.ones((1, 1), bool)) == pytest.approx(0.4)


def test_predict_names_the_images_the_nucleus_model_is_unsure_of(
        shared_datasets, tmp_path, capsys):
    """Electron micrographs of cell membranes are not what `nuclei_dsb2018`
    learned: it must say so, and not of a fluorescence image it segments."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("0.png", "1.png"):
        shutil.copy(shared_datasets / "membrane" / "test" / name, images / f"membrane_{name}")
    nucleus = "03b9306f44e9b8951461623dcbd615550cdcf36ea93b203f2c8fa58ed1dffcbe.png"
    shutil.copy(REPO / "datasets" / "nuclei" / nucleus, images / nucleus)
    assert main(["predict", "nuclei_dsb2018", str(images), str(tmp_path / "out")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the model is unsure of 2 image(s)" in out
    assert "membrane_0.png" in out and "membrane_1.png" in out and nucleus not in out
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = {row["image"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}
    assert float(rows[nucleus]["uncertain_share"]) < UNSURE_SHARE / 2
    assert float(rows["membrane_0.png"]["uncertain_share"]) > UNSURE_SHARE
    assert int(rows[nucleus]["objects"]) > 5
    assert float(rows[nucleus]["scale"]) == 1.0  # the sample is at the training scale
