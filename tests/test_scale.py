"""Tests for keras_unet.inference.scale: images rescaled to the training
object size, and masks mapped back.

The geometry is checked on synthetic discs with a model whose output is
the image itself; the robustness is checked with the bundled nucleus model
on real sample images shown at half and double their size and at a quarter
of their brightness, against its own prediction at 1x.
"""

import json
import math

import numpy as np
import pytest
from conftest import REPO

from keras_unet.data.instances import dataset_object_size, label_instances
from keras_unet.data.readers import read_image
from keras_unet.evaluation.scores import overlaps
from keras_unet.inference.predict import InferenceError, Predictor, load_predictor, predict_image
from keras_unet.inference.scale import (
    MAX_FACTOR,
    MIN_FACTOR,
    TOLERANCE,
    predict_at_object_size,
    rescale_factor,
    resize,
)

MODEL = {"median_diameter": 20.0, "range": [10.0, 40.0]}


def disc(size: int, diameter: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return ((y - size / 2) ** 2 + (x - size / 2) ** 2 <= (diameter / 2) ** 2)


def as_probabilities(image: np.ndarray) -> np.ndarray:
    """A 'model' that sees the image's brightness as the foreground."""
    foreground = image[..., :1]
    return np.concatenate([1 - foreground, foreground], -1)


def test_objects_near_the_training_size_are_not_rescaled():
    assert rescale_factor(20.0, MODEL) == 1.0
    assert rescale_factor(20.0 * TOLERANCE * 0.99, MODEL) == 1.0
    assert rescale_factor(60.0, MODEL) == pytest.approx(20 / 60)
    assert rescale_factor(2000.0, MODEL) == MIN_FACTOR
    assert rescale_factor(1.0, MODEL) == MAX_FACTOR


def test_auto_measures_the_objects_rescales_and_maps_the_probabilities_back():
    image = disc(200, 60).astype(np.float32)[..., None]
    seen = []

    def predict(x):
        seen.append(x.shape[:2])
        return as_probabilities(x)

    probabilities, factor = predict_at_object_size(predict, image, MODEL, "auto")
    assert seen == [(200, 200), (67, 67)]  # the first pass, then at 1/3
    assert factor == pytest.approx(20 / 60, rel=0.03)
    assert probabilities.shape == (200, 200, 2)
    back = probabilities[..., 1] > 0.5
    truth = disc(200, 60)
    assert (back & truth).sum() / (back | truth).sum() > 0.95


def test_a_given_size_needs_no_first_pass():
    image = disc(100, 10).astype(np.float32)[..., None]
    seen = []
    predict_at_object_size(lambda x: seen.append(x.shape[:2]) or as_probabilities(x),
                           image, MODEL, 10.0)
    assert seen == [(200, 200)]


def test_an_image_without_objects_keeps_its_first_prediction():
    image = np.zeros((64, 64, 1), np.float32)
    probabilities, factor = predict_at_object_size(as_probabilities, image, MODEL, "auto")
    assert factor == 1.0 and probabilities.shape == (64, 64, 2)


def test_predict_refuses_an_object_size_for_a_model_that_records_none():
    predictor = Predictor(lambda b: as_probabilities(b[0])[None], None, 1, 1, "m.keras")
    with pytest.raises(InferenceError, match="records no training object size"):
        predict_image(predictor, np.zeros((16, 16, 1), np.float32), object_size="auto")


def test_the_dataset_object_size_pools_every_object():
    masks = [np.zeros((64, 64), np.uint8) for _ in range(2)]
    masks[0][:10, :10] = 1                      # one 10x10 object
    masks[1][:20, :20] = 1                      # one 20x20 and one 4x4 object
    masks[1][30:34, 30:34] = 1
    size = dataset_object_size(masks)
    diameters = sorted(math.sqrt(4 * a / math.pi) for a in (100, 400, 16))
    assert size["median_diameter"] == pytest.approx(diameters[1], abs=0.01)
    assert size["objects"] == 3
    # A dataset without background (street scenes) has no objects.
    assert dataset_object_size(masks, has_background=False) is None


def test_a_training_run_records_its_objects_and_the_model_carries_them(trained_run):
    run, _ = trained_run
    recorded = json.loads((run / "object_size.json").read_text())
    assert 5 < recorded["median_diameter"] < 40 and recorded["objects"] > 100
    predictor = load_predictor(run / "checkpoints" / "best.keras")
    assert predictor.object_size == recorded


def test_the_export_sidecar_carries_the_object_size(trained_run, tmp_path):
    from keras_unet.export import export_run, read_metadata

    run, _ = trained_run
    export_run(run, tmp_path, precisions=("float32",), input_size=(128, 128), latency_runs=0)
    meta = read_metadata(tmp_path / "model_float32.tflite")
    recorded = json.loads((run / "object_size.json").read_text())
    assert {k: meta["object_size"][k] for k in recorded} == recorded
    assert meta["object_size"]["rescale"]["tolerance"] == TOLERANCE  # the app's recipe
    assert load_predictor(tmp_path / "model_float32.tflite").object_size == meta["object_size"]


# Two fluorescence images of the sample (median nucleus diameter 22 and 16 px).
SAMPLE_IMAGES = ["00ae65c1c6631ae6f2be1a449902976e6eb8483bf6b0740d00530220832c6d3e",
                 "0e21d7b3eea8cdbbed60d51d72f4f8c1974c5d76a8a3893a7d5835c85284132e"]


@pytest.fixture(scope="module")
def bundled():
    return load_predictor("nuclei_dsb2018")


def agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """`(matched fraction, mean IoU of the matches)` of the reference objects:
    pairs of IoU > 0.5 (at most one such partner each)."""
    counts = overlaps(reference, other).astype(np.float64)
    inter = counts[1:, 1:]
    union = counts[1:].sum(1)[:, None] + counts[:, 1:].sum(0)[None] - inter
    iou = inter / np.maximum(union, 1)
    best = iou.max(1) if iou.shape[1] else np.zeros(len(iou))
    matched = best[best > 0.5]
    return len(matched) / max(len(best), 1), float(matched.mean()) if len(matched) else 0.0


def objects(predictor, image, **options) -> np.ndarray:
    return label_instances(predict_image(predictor, image, **options), predictor.target)[0]


@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_the_bundled_model_finds_the_same_nuclei_at_half_double_and_dim(bundled, name):
    image = read_image(REPO / "datasets" / "nuclei" / f"{name}.png", 3)
    height, width = image.shape[:2]
    reference = objects(bundled, image, object_size="auto")
    double = objects(bundled, resize(image, 2 * height, 2 * width), object_size="auto")
    half = objects(bundled, resize(image, height // 2, width // 2), object_size="auto")
    dim = objects(bundled, image * 0.25, object_size="auto")
    mapped = {"2x": double[::2, ::2],
              "0.5x": np.kron(half, np.ones((2, 2), half.dtype))[:height, :width],
              "1/4 brightness": dim}
    for view, ids in mapped.items():
        matched, iou = agreement(reference, ids)
        assert matched >= 0.8 and iou >= 0.8, (
            f"{name} at {view}: {matched:.2f} matched, IoU {iou:.2f}")


def test_without_rescaling_small_nuclei_at_half_size_are_lost(bundled):
    """The check above can fail: at half size, this image's nuclei (8 px)
    are mostly missed unless the image is brought back to the training size."""
    image = read_image(REPO / "datasets" / "nuclei" / f"{SAMPLE_IMAGES[1]}.png", 3)
    height, width = image.shape[:2]
    reference = objects(bundled, image)
    half = objects(bundled, resize(image, height // 2, width // 2))
    matched, _ = agreement(reference, np.kron(half, np.ones((2, 2), half.dtype))[:height, :width])
    assert matched < 0.6
