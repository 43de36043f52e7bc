"""Tests for keras_unet.cli: a user's mistake ends in one clear line.

Every case runs the command as a user would and checks the exit code (2 for
a bad flag value, 1 for an input that cannot be used), that the message
names the flag or file and the problem, and that no traceback is printed.
"""

import json

import numpy as np
import PIL.Image
import pytest

from keras_unet import build_unet
from keras_unet.cli import main
from keras_unet.data.readers import save_mask


def run(args, capsys):
    """`(exit code, stdout + stderr)` of `keras-unet ARGS`."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    return code, output


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A tiny 2-class (sigmoid) .keras model, a damaged copy, and a 3-class labels file."""
    root = tmp_path_factory.mktemp("models")
    model = build_unet((None, None, 3), 1, filters=2, depth=2)
    model.save(root / "good.keras")
    data = (root / "good.keras").read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    (root / "text.keras").write_text("not a model")
    (root / "three.txt").write_text("_background_\na\nb\n")
    return root


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "labels.txt").write_text("_background_\nthing\n")
    for i in range(2):
        PIL.Image.fromarray(np.full((16, 16, 3), 50, np.uint8)).save(
            root / "images" / f"p{i}.png")
        save_mask(root / "masks" / f"p{i}.png", np.eye(16, dtype=np.uint8))
    return root


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    ("--epochs", "0", "argument --epochs: must be at least 1, got 0"),
    ("--crop-size", "0", "argument --crop-size: must be at least 1, got 0"),
    ("--crop-size", "big", "argument --crop-size: expected an integer, got 'big'"),
    ("--val-fraction", "1.5", "argument --val-fraction: must be between 0 and 1"),
    ("--val-fraction", "nan", "argument --val-fraction: expected a finite number"),
    ("--lr", "-1", "argument --lr: must be a positive number"),
    ("--time-budget", "0", "argument --time-budget: must be a positive number"),
])
def test_train_refuses_bad_values_naming_the_flag(capsys, tmp_path, flag, value, message):
    code, output = run(["train", "--data", tmp_path, flag, value], capsys)
    assert code == 2 and message in output


def test_train_refuses_a_crop_size_the_model_cannot_pool(dataset, tmp_path, capsys):
    code, output = run(["train", "--data", dataset, "--work-dir", tmp_path / "r",
                        "--crop-size", "100", "--depth", "4"], capsys)
    assert code == 1
    assert "crop_size (--crop-size) must be a multiple of 16 (2**depth) such as 96 or 112" \
        in output


def test_train_without_data_names_the_flags(capsys, tmp_path):
    code, output = run(["train", "--work-dir", tmp_path], capsys)
    assert code == 1 and "give --data" in output and "--images and --masks" in output


@pytest.mark.parametrize("content, message", [
    ("epochs: [1, 2\n", "not valid YAML"),
    ("epocs: 3\n", "unknown config keys ['epocs']"),
    ("- just\n- a list\n", "expected a mapping of config keys"),
])
def test_train_refuses_a_bad_config_file_naming_it(tmp_path, capsys, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    code, output = run(["train", "--config", config], capsys)
    assert code == 1 and "bad.yaml" in output and message in output


def test_train_refuses_an_unknown_sampling_naming_the_choices(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"data: {tmp_path}\nsampling: pixels\n")
    code, output = run(["train", "--config", config], capsys)
    assert code == 1 and "sampling (--sampling) must be one of 'image', 'area'" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("section, known", [("model", "'filters'"), ("augment", "'flip'")])
def test_train_refuses_unknown_model_and_augment_options_naming_them(tmp_path, capsys,
                                                                     section, known):
    config = tmp_path / "config.yaml"
    config.write_text(f"data: {tmp_path}\n{section}:\n  bogus: 1\n")
    code, output = run(["train", "--config", config], capsys)
    assert code == 1 and f"{section}: unknown options ['bogus']; known: [" in output
    assert known in output and "Traceback" not in output


@pytest.mark.parametrize("flag, content, message", [
    ("--oversample", b"\xff\xfe\x00binary", "the oversampling list is not UTF-8 text"),
    ("--val-list", b"\x9f\x00binary", "the validation list is not UTF-8 text"),
    ("--oversample", b"x" * 200_000 + b",1\n", "not a CSV of `name,times` (field larger"),
    ("--config", b"\x9f\x00binary", "the config file is not UTF-8 text"),
    ("--labels", b"\x9f\x00binary", "the label list is not UTF-8 text"),
])
def test_train_refuses_a_corrupt_list_file_naming_it(dataset, tmp_path, capsys, flag, content,
                                                      message):
    bad = tmp_path / "corrupt.txt"
    bad.write_bytes(content)
    code, output = run(["train", "--data", dataset, "--work-dir", tmp_path / "run",
                        flag, bad], capsys)
    assert code == 1 and f"corrupt.txt: {message}" in output
    assert "Traceback" not in output and not (tmp_path / "run" / "checkpoints").exists()


def test_a_config_json_works_from_another_directory(dataset, tmp_path, capsys, monkeypatch):
    """The saved config stores absolute paths; a hand-written one may use paths
    relative to itself."""
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "config.json"
    config.write_text(json.dumps({"data": "../data", "epochs": 1, "crop_size": 16,
                                  "batch_size": 2, "steps_per_epoch": 1, "tensorboard": False,
                                  "verbose": 0, "model": {"filters": 2, "depth": 2},
                                  "val_fraction": 0.5}))
    monkeypatch.chdir(tmp_path / "cfg")
    code, _ = run(["train", "--config", config, "--work-dir", tmp_path / "run"], capsys)
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"] == str(dataset.resolve())
    monkeypatch.chdir("/")
    code, output = run(["train", "--config", tmp_path / "run" / "config.json"], capsys)
    assert code == 0 and "finished before" in output


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_a_damaged_model_file_is_named_not_a_traceback(model_files, dataset, tmp_path, capsys,
                                                       command, damage):
    model = model_files / f"{damage}.keras"
    args = {"predict": ["predict", model, dataset / "images", tmp_path / "out"],
            "evaluate": ["evaluate", model, "--data", dataset],
            "export": ["export", model, tmp_path / "out", "--data", dataset]}[command]
    code, output = run(args, capsys)
    assert code == 1 and f"{damage}.keras: not a valid .keras model file" in output
    assert "File not found" not in output  # Keras' word for a damaged zip misleads
    assert "truncated or damaged" in output


def test_a_folder_named_like_a_bundled_model_is_said_to_shadow_it(tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nuclei_dsb2018").mkdir()  # an empty folder of that name
    (tmp_path / "img.png").write_bytes(b"")
    code, output = run(["predict", "nuclei_dsb2018", tmp_path / "img.png", tmp_path / "out"],
                       capsys)
    assert code == 1 and "a file or folder of this name here is read, not the bundled" in output


def test_a_run_folder_named_like_a_bundled_model_is_said_to_shadow_it_once(
        model_files, dataset, tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nuclei_dsb2018" / "checkpoints").mkdir(parents=True)
    (tmp_path / "nuclei_dsb2018" / "config.json").write_text("{}")
    shutil.copy(model_files / "good.keras", tmp_path / "nuclei_dsb2018" / "checkpoints" /
                "best.keras")
    code, output = run(["predict", "nuclei_dsb2018", dataset / "images" / "p0.png",
                        tmp_path / "out"], capsys)
    assert code == 0, output
    assert output.count("a file or folder of this name here is read, not the bundled") == 1


def test_a_model_whose_outputs_do_not_fit_the_labels_is_refused(model_files, dataset, tmp_path,
                                                                capsys):
    code, output = run(["predict", model_files / "good.keras", dataset / "images",
                        tmp_path / "out", "--labels", model_files / "three.txt"], capsys)
    assert code == 1
    assert "the model has 1 output channels but" in output and "three.txt" in output


@pytest.mark.parametrize("source, message", [
    ("missing.png", "missing.png: no such file or folder"),
    ("empty", "empty: no images found"),
    ("empty/*.png", "empty/*.png: no images found"),
])
def test_predict_names_an_input_without_images(model_files, tmp_path, capsys, source, message):
    (tmp_path / "empty").mkdir()
    code, output = run(["predict", model_files / "good.keras", tmp_path / source,
                        tmp_path / "out"], capsys)
    assert code == 1 and message in output and "Traceback" not in output


@pytest.mark.parametrize("flag, value, message", [
    ("--tile", "0", "argument --tile: expected positive SIZE or HxW, got '0'"),
    ("--tile", "64x", "argument --tile: expected SIZE or HxW"),
    ("--overlap", "1", "argument --overlap: must be in [0, 0.9]"),
    ("--overlap", "0.999", "argument --overlap: must be in [0, 0.9]"),
])
def test_predict_refuses_bad_tiling(model_files, dataset, tmp_path, capsys, flag, value,
                                    message):
    code, output = run(["predict", model_files / "good.keras", dataset / "images",
                        tmp_path / "out", flag, value], capsys)
    assert code == 2 and message in output


def test_a_tile_size_the_model_cannot_take_is_refused(model_files, dataset, tmp_path, capsys):
    code, output = run(["predict", model_files / "good.keras", dataset / "images",
                        tmp_path / "out", "--tile", "30"], capsys)
    assert code == 1 and "tile size 30x30 must be a multiple of 4" in output


@pytest.mark.parametrize("flag, value, message", [
    ("--verification-samples", "0", "argument --verification-samples: must be at least 1"),
    ("--calibration-samples", "-3", "argument --calibration-samples: must be at least 1"),
    ("--min-agreement", "nan", "argument --min-agreement: expected a finite number"),
    ("--min-agreement", "1.5", "argument --min-agreement: must be a fraction in [0, 1]"),
    ("--input-size", "0", "argument --input-size: expected positive SIZE or HxW"),
])
def test_export_refuses_bad_values(model_files, tmp_path, capsys, flag, value, message):
    code, output = run(["export", model_files / "good.keras", tmp_path / "out", flag, value],
                       capsys)
    assert code == 2 and message in output


@pytest.mark.parametrize("command", [["export", "{model}", "{out}"],
                                     ["predict", "{model}", "image.png", "{out}"],
                                     ["evaluate", "{model}", "--output", "{out}"]])
def test_a_folder_that_is_not_a_run_is_not_taken_for_a_model(tmp_path, capsys, command):
    folder = tmp_path / "notes"
    folder.mkdir()
    args = [a.format(model=folder, out=tmp_path / "out") for a in command]
    code, output = run(args, capsys)
    assert code == 1 and "notes: not a training run folder (no config.json)" in output
    (folder / "config.json").write_text("{}")  # a run where no epoch finished
    code, output = run(args, capsys)
    assert code == 1 and "has no checkpoints/best.keras (no epoch finished)" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("problem, message", [
    ("values", "p1.png: mask values [7] are outside the label map"),
    ("size", "p0.png: mask is 8x16 but its image"),
])
def test_evaluate_names_masks_it_cannot_score(model_files, dataset, tmp_path, capsys, problem,
                                             message):
    if problem == "values":
        save_mask(dataset / "masks" / "p1.png", np.full((16, 16), 7, np.uint8))
    else:
        save_mask(dataset / "masks" / "p0.png", np.zeros((8, 16), np.uint8))
    code, output = run(["evaluate", model_files / "good.keras", "--data", dataset,
                        "--output", tmp_path / "eval"], capsys)
    assert code == 1 and message in output
    assert "1 of 2 image/mask pairs cannot be used" in output  # evaluate trains nothing


def test_evaluate_split_needs_a_run_dataset(model_files, dataset, tmp_path, capsys):
    code, output = run(["evaluate", model_files / "good.keras", "--data", dataset,
                        "--split", "val", "--output", tmp_path / "eval"], capsys)
    assert code == 1 and "--split val: the dataset is not the one" in output


def test_bare_command_says_what_it_runs_and_version_is_known(capsys):
    from keras_unet import __version__

    code, output = run(["--version"], capsys)
    assert code == 0 and f"keras-unet {__version__}" in output
    code, output = run(["export", "--help"], capsys)
    assert code == 0
    for default in ("(default: ['float32', 'float16', 'int8'])", "(default: 64)",
                    "(default: 16)"):
        assert default in " ".join(output.split()), default
    code, output = run(["train", "--help"], capsys)
    assert "(default: 50)" in output and "(default: 8)" in output
    # Train's flags are unset on the parser (the config decides): one default each.
    sampling = " ".join(output.split("--sampling {image,area}")[-1].split()[:14])
    assert "(default: image)" in sampling and "(default: None)" not in output


def test_train_help_lists_the_backbones(capsys):
    code, out = run(["train", "--help"], capsys)
    assert code == 0
    assert all(name in out for name in ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"))
    assert "--ignore-index" in out and "--freeze-encoder" in out


def test_a_street_scene_dataset_trains_and_evaluates_with_its_own_ids(
        camvid_pairs, tmp_path, capsys):
    """CamVid's plain labels.txt and void id 11, a backbone from the command line."""
    code, out = run(["train", "--data", camvid_pairs, "--work-dir", tmp_path / "run",
                     "--ignore-index", 11, "--backbone", "mobilenet_v3_small",
                     "--freeze-encoder", "--unfreeze-epoch", 2, "--epochs", 2,
                     "--steps-per-epoch", 1, "--crop-size", 64, "--batch-size", 2,
                     "--filters", 4, "--no-tensorboard", "--val-fraction", 0.34], capsys)
    assert code == 0, out
    names = (camvid_pairs / "labels.txt").read_text().splitlines()[:11]
    assert (tmp_path / "run" / "labels.txt").read_text().splitlines() == names  # no shift
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["ignore_index"] == 11 and config["model"]["backbone"] == "mobilenet_v3_small"
    assert config["model"]["freeze_encoder"] is True and config["unfreeze_epoch"] == 2
    assert "Sky" in out and "class accuracy" in out and "foreground" not in out
    # A run folder stands for its best model, and evaluate knows its split.
    code, out = run(["evaluate", tmp_path / "run", "--output", tmp_path / "eval"], capsys)
    assert code == 0, out
    assert f"validation split of {tmp_path / 'run'}" in out
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert list(scores["classes"]) == names and scores["foreground_dice"] is None
    assert 0 <= scores["class_accuracy"] <= 1 and "Unlabelled" not in out
    assert "foreground" not in out and "worst images (mean Dice)" in out
    # The export remembers the void id: its scores need no --ignore-index.
    code, out = run(["export", tmp_path / "run", tmp_path / "export", "--precision", "float32",
                     "--input-size", 64, "--verification-samples", 1], capsys)
    assert code == 0, out
    exported = tmp_path / "export" / "model_float32.tflite"
    assert json.loads(exported.with_suffix(".json").read_text())["ignore_index"] == 11
    code, out = run(["evaluate", exported, "--data", camvid_pairs,
                     "--output", tmp_path / "eval_tflite"], capsys)
    assert code == 0, out
    assert list(json.loads((tmp_path / "eval_tflite" / "scores.json").read_text())["classes"]) \
        == names
    image = next((camvid_pairs / "images").iterdir())
    code, out = run(["predict", tmp_path / "run", image, tmp_path / "predicted"], capsys)
    assert code == 0, out
    assert (tmp_path / "predicted" / "masks" / f"{image.stem}.png").is_file()


def test_evaluate_refuses_a_dataset_whose_classes_are_not_the_models(
        model_files, dataset, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(model_files / "good.keras", folder / "m.keras")
    (folder / "labels.txt").write_text("_background_\nnucleus\n")
    before = (dataset / "labels.txt").read_text()
    code, output = run(["evaluate", folder / "m.keras", "--data", dataset,
                        "--output", tmp_path / "eval"], capsys)
    assert code == 1
    assert ("the dataset's classes ['_background_', 'thing'] are not the model's "
            "['_background_', 'nucleus']") in output
    assert (dataset / "labels.txt").read_text() == before and not (tmp_path / "eval").exists()
    # A dataset of binary masks with no label map of its own takes the model's.
    (dataset / "labels.txt").unlink()
    code, output = run(["evaluate", folder / "m.keras", "--data", dataset,
                        "--foreground-value", 1, "--output", tmp_path / "eval"], capsys)
    assert code == 0 and "nucleus" in output


def test_messages_go_to_the_stderr_of_the_moment(monkeypatch):
    """A notebook or test harness may swap `sys.stderr` between two commands;
    the messages of the next one must reach the new stream, not a closed one."""
    import io
    import logging
    import sys

    from keras_unet.cli import quiet

    quiet(False)
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logging.getLogger("keras_unet.test").info("one")
    monkeypatch.setattr(sys, "stderr", second)
    first.close()
    logging.getLogger("keras_unet.test").info("two")
    assert second.getvalue() == "two\n"


def test_object_size_defaults_to_auto_only_for_models_that_record_one():
    from types import SimpleNamespace

    from keras_unet.cli.model import RECORDED, chosen_object_size

    nuclei = SimpleNamespace(object_size={"median_diameter": 17.2, "range": [8.5, 34.3]})
    street = SimpleNamespace(object_size=None)
    assert chosen_object_size(RECORDED, nuclei) == "auto"
    assert chosen_object_size(RECORDED, street) is None
    for given in (None, "auto", 30.0):  # off, auto, a size: as given
        assert chosen_object_size(given, nuclei) == given
    assert chosen_object_size(None, street) is None


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_object_size_help_names_its_default_in_words(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: auto for a model that records its training object size, else off" in text
    assert "object at 0x" not in text  # the sentinel behind that default
