"""Tests for keras_unet.models.pretrained: the bundled models, usable by name."""

import dataclasses
import hashlib
import json

import keras
import numpy as np
import PIL.Image
import pytest

from keras_unet.cli import main
from keras_unet.data.labelme import read_annotation
from keras_unet.evaluation.baselines import score_methods
from keras_unet.inference.predict import load_keras_model, load_predictor
from keras_unet.models import pretrained
from keras_unet.models.model import build_unet
from keras_unet.quickstart import SAMPLE_DATASET, SAMPLE_TRAINING, read_groups
from keras_unet.training.config import ConfigError, TrainConfig, absolute_paths
from keras_unet.training.train import initialize_from, load_init_model, load_training_data

NAME = "nuclei_dsb2018"


def test_the_nucleus_model_is_bundled_and_unknown_names_are_refused():
    assert NAME in pretrained.available()
    assert pretrained.model_path(NAME).is_file()
    with pytest.raises(pretrained.PretrainedError, match=r"'nucleii' is not a bundled model; "
                                                          r"bundled: .*nuclei_dsb2018"):
        pretrained.model_path("nucleii")


def test_the_card_matches_the_file_and_the_main_jobs_model_options():
    card = pretrained.model_card(NAME)
    data = pretrained.model_path(NAME).read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["model_sha256"]
    model = load_keras_model(pretrained.model_path(NAME))
    assert model.count_params() == card["parameters"]
    assert len(data) < 4.2 * card["parameters"]  # float32 weights, no optimizer state
    assert card["model"] == SAMPLE_TRAINING["model"]
    assert card["target"] == SAMPLE_TRAINING["target"] == "instances"
    assert model.input_shape[-1] == card["input"]["channels"] == SAMPLE_TRAINING["channels"]
    assert model.output_shape[-1] == 3  # background, nucleus, boundary


def test_a_path_of_the_same_name_wins_over_the_bundled_model(tmp_path, monkeypatch):
    assert pretrained.resolve(NAME) == pretrained.model_path(NAME)
    assert pretrained.resolve("runs/x.keras") == pretrained.Path("runs/x.keras")
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).mkdir()
    assert pretrained.resolve(NAME) == pretrained.Path(NAME)


def test_a_bundled_name_survives_the_saved_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data="data", work_dir="run", init_from=NAME)
    config.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["init_from"] == NAME
    assert saved["data"] == str(tmp_path / "data")
    assert TrainConfig.from_file(tmp_path / "config.json").init_from == NAME
    other = absolute_paths(dataclasses.asdict(TrainConfig(init_from="runs/first")))
    assert other["init_from"] == str(tmp_path / "runs" / "first")
    # In a config file, a folder of that name beside the file is meant.
    (tmp_path / "project" / NAME).mkdir(parents=True)
    (tmp_path / "project" / "config.json").write_text(json.dumps({"init_from": NAME}))
    loaded = TrainConfig.from_file(tmp_path / "project" / "config.json")
    assert loaded.init_from == str(tmp_path / "project" / NAME)


def test_fine_tuning_by_name_starts_from_the_bundled_weights():
    model = build_unet((None, None, 3), 3, **SAMPLE_TRAINING["model"])
    initialize_from(model, load_init_model(NAME, SAMPLE_TRAINING["model"]),
                    ["_background_", "nucleus"], "instances")
    bundled = load_keras_model(pretrained.model_path(NAME))
    for new, old in zip(model.weights, bundled.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new),
                                      keras.ops.convert_to_numpy(old))


def test_fine_tuning_with_other_model_options_names_them_and_keeps_no_run(tiny_nuclei,
                                                                          tmp_path, capsys):
    """`--input-normalization per_image` (the bundled model's option until
    2026-12-04) gives the same layer names and, for most layers, the same
    shapes: the error names the option and its value, not a layer's shape."""
    code = main(["train", "--data", str(tiny_nuclei), "--work-dir", str(tmp_path / "run"),
                 "--init-from", NAME, "--target", "instances", "--filters", "16",
                 "--depth", "4", "--normalization", "batch",
                 "--input-normalization", "per_image", "--epochs", "1",
                 "--steps-per-epoch", "1", "--crop-size", "64", "--no-tensorboard"])
    err = capsys.readouterr().err
    assert code == 1
    assert ("it was built with input_normalization='per_image_percentile', this model with "
            "input_normalization='per_image'") in err and "--input-normalization" in err
    assert not (tmp_path / "run").exists()


def test_fine_tuning_may_change_what_the_weights_do_not_depend_on():
    options = dict(SAMPLE_TRAINING["model"], dropout=0.2)
    initialize_from(build_unet((None, None, 3), 3, **options), load_init_model(NAME, options),
                    ["_background_", "nucleus"], "instances")
    with pytest.raises(ConfigError, match=r"built with depth=4, this model with depth=3"):
        load_init_model(NAME, dict(options, depth=3))


def test_the_bundled_model_beats_the_otsu_baselines_on_the_samples_held_out_images(
        nuclei_dataset):
    """Its training images (DSB2018's training split) hold none of these."""
    config = TrainConfig(data=str(nuclei_dataset), val_list=str(SAMPLE_DATASET / "val.txt"),
                         **SAMPLE_TRAINING)
    _, val = load_training_data(config)
    assert len(val.images) == 29
    predictor = load_predictor(NAME)
    assert predictor.names == ["_background_", "nucleus"] and predictor.target == "instances"
    table = score_methods(val, {"unet": predictor}, read_groups(SAMPLE_DATASET))
    unet = table["unet"]
    for baseline in ("otsu", "otsu_watershed"):
        assert unet["all"]["foreground_dice"] > table[baseline]["all"]["foreground_dice"]
        for group, scores in unet.items():  # objects: in every modality
            assert scores["mean_ap"] > table[baseline][group]["mean_ap"] + 0.01, group


def test_predict_by_name_writes_the_objects_of_a_held_out_image(tmp_path):
    """`keras-unet predict nuclei_dsb2018 IMAGE OUT`, as a user types it."""
    name = (SAMPLE_DATASET / "val.txt").read_text().split()[0]
    code = main(["predict", NAME, str(SAMPLE_DATASET / f"{name}.png"), str(tmp_path)])
    assert code == 0
    objects = np.asarray(PIL.Image.open(tmp_path / "instances" / f"{name}.png"))
    truth = len(read_annotation(SAMPLE_DATASET / f"{name}.json").shapes)
    found = len(np.unique(objects)) - 1
    assert objects.dtype == np.uint16 and 0.5 * truth <= found <= 1.5 * truth


def test_a_bundled_model_keeps_its_target_whatever_labels_are_given(tiny_nuclei, tmp_path,
                                                                    capsys):
    """--labels of three classes cannot turn the instance model (background,
    nucleus, boundary) into a three-class semantic one."""
    (tmp_path / "labels3.txt").write_text("__ignore__\n_background_\nnucleus\ncytoplasm\n")
    image = sorted((tiny_nuclei / "images").glob("*.png"))[0]
    code = main(["predict", "nuclei_dsb2018", str(image), str(tmp_path / "out"),
                 "--labels", str(tmp_path / "labels3.txt")])
    err = capsys.readouterr().err
    assert code == 1 and "instances models of 3 classes have 4" in err
    assert not (tmp_path / "out").exists()


def test_a_bundled_model_exports_by_name_with_data(tiny_nuclei, tmp_path, capsys):
    code = main(["export", "nuclei_dsb2018", str(tmp_path / "noData"), "--precision", "float32"])
    assert code == 1 and "(a bundled one too) needs --data" in capsys.readouterr().err
    code = main(["export", "nuclei_dsb2018", str(tmp_path / "out"), "--data", str(tiny_nuclei),
                 "--precision", "float32", "--input-size", "64", "--verification-samples", "2"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "out" / "model_float32.json").read_text())
    assert meta["target"] == "instances" and meta["labels"] == ["_background_", "nucleus"]
