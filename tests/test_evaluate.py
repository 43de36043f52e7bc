"""Tests for keras_unet.evaluation.evaluate against hand-computed confusion matrices."""

import csv

import numpy as np
import PIL.Image
import pytest

from keras_unet.data.pairs import load_dataset
from keras_unet.data.readers import save_mask
from keras_unet.evaluation.evaluate import evaluate_dataset
from keras_unet.evaluation.scores import confusion, format_confusion, per_class_scores
from keras_unet.inference.predict import Predictor

TRUTH = np.array([[0, 0, 1, 1], [2, 2, 1, 255]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
# rows truth, columns prediction, ignore skipped:
#   0: [1, 1, 0]   1: [1, 2, 0]   2: [1, 0, 1]
CM = np.array([[1, 1, 0], [1, 2, 0], [1, 0, 1]])


def test_confusion_matrix_matches_hand_count():
    np.testing.assert_array_equal(confusion(TRUTH, PRED, 3), CM)


def test_per_class_scores_from_the_matrix():
    scores = per_class_scores(CM, ["_background_", "a", "b"])
    a = scores["classes"]["a"]
    assert a["iou"] == pytest.approx(2 / 4) and a["dice"] == pytest.approx(4 / 6)
    assert a["precision"] == pytest.approx(2 / 3) and a["recall"] == pytest.approx(2 / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 7)
    # bg: TP 1, FP 2, FN 1; a: TP 2, FP 1, FN 1; b: TP 1, FP 0, FN 1
    assert scores["mean_iou"] == pytest.approx(np.mean([1 / 4, 2 / 4, 1 / 2]))


def test_absent_classes_are_undefined_not_zero():
    scores = per_class_scores(np.array([[5, 0], [0, 0]]), ["_background_", "x"])
    assert scores["classes"]["x"]["iou"] is None and scores["mean_iou"] == 1.0


def test_evaluate_dataset_writes_the_report(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "labels.txt").write_text("_background_\na\nb\n")
    for i in range(3):
        PIL.Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        save_mask(tmp_path / "masks" / f"{i}.png", TRUTH.astype(np.uint8))

    def oracle(batch):  # predicts PRED for every image, as one-hot probabilities
        return np.eye(3, dtype=np.float32)[PRED][None].repeat(len(batch), 0)

    predictor = Predictor(oracle, None, 3, 1, "memory")
    result = evaluate_dataset(predictor, load_dataset(tmp_path), tmp_path / "report", worst=2)
    np.testing.assert_array_equal(result["confusion_matrix"], 3 * CM)
    for name in ("scores.json", "per_image.csv", "confusion.png"):
        assert (tmp_path / "report" / name).is_file()
    assert len(list((tmp_path / "report" / "worst").glob("*.png"))) == 2
    assert "_background_" in format_confusion(CM, ["_background_", "a", "b"])


def test_evaluate_scores_objects_when_the_dataset_has_instances(tmp_path):
    from test_instances import touching_discs

    from keras_unet.data.instances import boundary_target
    from keras_unet.data.readers import save_instances

    ids = touching_discs()
    for sub in ("images", "masks", "instances"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labels.txt").write_text("_background_\nnucleus\n")
    PIL.Image.fromarray(np.where(ids > 0, 200, 20).astype(np.uint8)).save(
        tmp_path / "images" / "a.png")
    save_mask(tmp_path / "masks" / "a.png", (ids > 0).astype(np.uint8))
    save_instances(tmp_path / "instances" / "a.png", ids)
    dataset = load_dataset(tmp_path)
    target = boundary_target((ids > 0).astype(np.uint8), ids, 2)
    perfect = np.eye(3, dtype=np.float32)[target][None]
    objects = Predictor(lambda b: perfect, None, 3, 1, "oracle", "instances", ["bg", "n"])
    semantic = Predictor(lambda b: (ids > 0).astype(np.float32)[None, ..., None], None, 3, 1,
                         "blob")
    found = evaluate_dataset(objects, dataset, tmp_path / "objects")["objects"]
    merged = evaluate_dataset(semantic, dataset, tmp_path / "blob")["objects"]
    assert found["tp"] == 2 and found["merged"] == 0 and found["mean_ap"] > 0.9
    assert merged["merged"] == 2 and merged["tp"] <= 1
    with open(tmp_path / "objects" / "per_image.csv") as f:
        (row,) = csv.DictReader(f)
    assert float(row["mean_ap"]) > 0.9
    # A perfect one-hot prediction is sure of every object pixel.
    assert float(row["uncertain_share"]) == 0.0


def test_a_run_model_is_scored_on_its_validation_split_by_default(tiny_nuclei, tmp_path):
    from keras_unet.training.runs import evaluation_pairs
    from keras_unet.training.train import TrainConfig, train

    config = TrainConfig(data=str(tiny_nuclei), work_dir=str(tmp_path / "run"), crop_size=32,
                         batch_size=2, epochs=1, steps_per_epoch=1, val_fraction=0.25,
                         model={"filters": 2, "depth": 2}, tensorboard=False, verbose=0)
    train(config)
    model = tmp_path / "run" / "checkpoints" / "best.keras"
    val, split = evaluation_pairs(model)
    assert len(val.images) == 2 and split.startswith("validation split of")
    train_part, _ = evaluation_pairs(model, split="train")
    assert len(train_part.images) == 6 and not set(train_part.images) & set(val.images)
    everything, split = evaluation_pairs(model, data=tiny_nuclei, split="all")
    assert len(everything.images) == 8 and split == "all 8 pairs"
