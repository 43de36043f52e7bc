"""Tests for keras_unet.training.runs: the run folder's commit protocol."""

import csv
import io
import json

import keras
import numpy as np
import pytest

from keras_unet import build_unet
from keras_unet.training.runs import RunFolder, RunFolderError, RunState, history_csv


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = build_unet((None, None, 1), 1, filters=2, depth=1)
    model.compile("adam", "binary_crossentropy")
    return model


def commit_epochs(run, model, scores):
    """Commits one epoch per validation score; returns the weights of each."""
    state, weights = RunState(epochs=len(scores)), []
    for value in scores:
        model.get_layer("head_conv").bias.assign([value])  # a fingerprint of the epoch
        state.record({"loss": 1.0 - value, "val_dice": value}, examples=8)
        run.commit(state, model)
        weights.append([w.copy() for w in model.get_weights()])
    return state, weights


def same_weights(path, expected):
    loaded = keras.models.load_model(path)
    return all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), expected))


def test_best_and_last_are_the_committed_epochs(tmp_path):
    run = RunFolder(tmp_path / "run")
    state, weights = commit_epochs(run, tiny_model(), [0.5, 0.7, 0.6])
    saved = run.read_state()
    assert (saved.epochs_done, saved.best_epoch, saved.best_value) == (3, 1, 0.7)
    assert saved.examples_seen == 24
    assert same_weights(run.best, weights[1]) and same_weights(run.last, weights[2])
    assert [p.name for p in run.backups.iterdir()] == ["epoch-0003.keras"]
    rows = list(csv.DictReader(open(run.log)))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["val_dice"]) for r in rows] == [0.5, 0.7, 0.6]


def test_non_finite_weights_are_never_committed(tmp_path):
    run = RunFolder(tmp_path / "run")
    model = tiny_model()
    state, weights = commit_epochs(run, model, [0.5])
    before = run.state.read_bytes()
    head = model.get_layer("head_conv")
    head.kernel.assign(np.full(head.kernel.shape, np.nan, "float32"))
    state.record({"loss": float("nan"), "val_dice": 0.9}, examples=8)
    with pytest.raises(RunFolderError, match="non-finite weights.*Lower the learning rate"):
        run.commit(state, model)
    assert run.state.read_bytes() == before
    assert same_weights(run.best, weights[0]) and same_weights(run.last, weights[0])


def test_publish_finishes_what_a_killed_process_left_undone(tmp_path):
    """A kill between the commit (state.json) and the derived files."""
    run = RunFolder(tmp_path / "run")
    state, weights = commit_epochs(run, tiny_model(), [0.5, 0.8])
    run.best.unlink()  # as if killed before best.keras was linked
    run.last.unlink()
    run.log.write_text("epoch,loss\n0,0.5\n")  # an older log
    run.publish(run.read_state())
    assert same_weights(run.best, weights[1]) and same_weights(run.last, weights[1])
    assert len(list(csv.DictReader(open(run.log)))) == 2


def test_a_damaged_state_file_is_a_clear_error(tmp_path):
    run = RunFolder(tmp_path)
    run.state.write_text("{not json")
    with pytest.raises(RunFolderError, match="state.json: cannot be read .* --force"):
        run.read_state()


def test_clear_removes_training_outputs_only(tmp_path):
    run = RunFolder(tmp_path / "run")
    commit_epochs(run, tiny_model(), [0.5])
    (run.path / "notes.txt").write_text("mine")
    run.clear()
    assert not run.holds_a_run()
    assert (run.path / "notes.txt").read_text() == "mine"


def test_history_csv_has_every_column_in_order_of_appearance():
    text = history_csv([{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5, "val_ap": 0.3}])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["epoch", "loss", "val_ap"]
    assert rows[0]["val_ap"] == "" and rows[1]["val_ap"] == "0.3"
    assert json.loads(json.dumps(RunState(epochs=3).__dict__))["epochs_done"] == 0


def test_a_second_training_in_a_held_run_folder_is_refused_naming_the_holder(
        tiny_nuclei, tmp_path, capsys):
    import subprocess
    import sys

    from keras_unet.cli import main

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from keras_unet.training.runs import RunFolder\n"
         f"with RunFolder({str(run)!r}).lock():\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["train", "--data", str(tiny_nuclei), "--work-dir", str(run), "--epochs", "1",
                     "--steps-per-epoch", "1", "--crop-size", "32", "--filters", "4",
                     "--depth", "2", "--no-tensorboard"])
        err = capsys.readouterr().err
        assert code != 0 and f"is in use by another training run (process {holder.pid} on" in err
        assert "Traceback" not in err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    # The lock went with its process: the folder trains now.
    code = main(["train", "--data", str(tiny_nuclei), "--work-dir", str(run), "--epochs", "1",
                 "--steps-per-epoch", "1", "--crop-size", "32", "--filters", "4", "--depth", "2",
                 "--no-tensorboard"])
    assert code == 0 and (run / "checkpoints" / "best.keras").is_file()


def test_a_run_keeps_its_recorded_split_when_the_dataset_grows(tiny_nuclei, tmp_path, caplog):
    import logging
    import shutil

    from keras_unet.training.runs import evaluation_pairs
    from keras_unet.training.train import TrainConfig, train

    data = tmp_path / "data"
    shutil.copytree(tiny_nuclei, data)
    settings = dict(data=str(data), work_dir=str(tmp_path / "run"), crop_size=32, batch_size=2,
                    steps_per_epoch=1, model={"filters": 4, "depth": 2}, val_fraction=0.25,
                    tensorboard=False, verbose=0)
    train(TrainConfig(epochs=1, **settings))
    recorded = json.loads((tmp_path / "run" / "split.json").read_text())
    # A new pair, sorted first, shifts the random split of the folder as it is now.
    for sub in ("images", "masks", "instances"):
        source = sorted((data / sub).glob("*.png"))[-1]
        shutil.copy(source, data / sub / "000_new.png")
    with caplog.at_level(logging.WARNING, logger="keras_unet.training.runs"):
        train(TrainConfig(epochs=2, **settings))
    assert "the dataset changed since the run began (1 pairs added, 0 gone)" in caplog.text
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == recorded
    val, _ = evaluation_pairs(tmp_path / "run" / "checkpoints" / "best.keras", split="val")
    assert val.stems == recorded["val"] and "000_new" not in val.stems


def test_a_run_that_fails_before_writing_leaves_no_folder_it_made(tmp_path):
    """Bad data is found after the lock is taken: no empty run folder stays."""
    made = RunFolder(tmp_path / "new" / "run")
    with pytest.raises(ValueError), made.lock():
        raise ValueError("bad data")
    assert not made.path.exists() and (tmp_path / "new").is_dir()
    # A folder the user made is theirs, empty or not.
    (tmp_path / "mine").mkdir()
    with pytest.raises(ValueError), RunFolder(tmp_path / "mine").lock():
        raise ValueError("bad data")
    assert (tmp_path / "mine").is_dir()
    # A run that wrote something keeps its folder.
    kept = RunFolder(tmp_path / "kept")
    with kept.lock():
        (kept.path / "config.json").write_text("{}")
    assert (kept.path / "config.json").is_file()
