"""Tests for keras_unet.training.train and the `train` command (tiny models, real nuclei)."""

import csv
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import PIL.Image
import pytest
from conftest import REPO

from keras_unet.cli import main
from keras_unet.training.train import TrainConfig, TrainingError, load_training_data, train

TINY_MODEL = {"filters": 4, "depth": 2, "normalization": "batch"}


def tiny_config(data, work_dir, **overrides):
    settings = dict(
        data=str(data), work_dir=str(work_dir), crop_size=64, batch_size=4, epochs=3,
        steps_per_epoch=3, lr=1e-2, schedule="constant", model=dict(TINY_MODEL),
        val_fraction=0.25, tensorboard=False, verbose=0, deterministic=True,
    )
    return TrainConfig(**{**settings, **overrides})


def test_tiny_model_loss_decreases_and_run_folder_is_complete(tiny_nuclei, tmp_path):
    result = train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=6))
    loss = result.history["loss"]
    assert loss[-1] < loss[0]
    run = tmp_path / "run"
    for name in ("config.json", "labels.txt", "checkpoints/best.keras",
                 "checkpoints/last.keras", "log.csv", "curves.png", "summary.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["model"] == TINY_MODEL
    scores = json.loads((run / "summary.json").read_text())
    assert set(scores["classes"]) == {"_background_", "nucleus"}
    assert keras.models.load_model(run / "checkpoints/best.keras").output_shape[-1] == 1


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated interruption")


def test_resume_continues_from_the_saved_epoch_with_optimizer_state(
        tiny_nuclei, tmp_path, monkeypatch):
    import keras_unet.training.train as training

    config = tiny_config(tiny_nuclei, tmp_path / "run", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[Interrupt()])
    recorded = (tmp_path / "run" / "object_size.json").read_text()

    def measured_again(*args, **kwargs):
        raise AssertionError("the resumed run measured its objects again")

    # The split is the run's, so its object size is too: not read again.
    monkeypatch.setattr(training, "dataset_object_size", measured_again)
    result = train(config)
    assert (tmp_path / "run" / "object_size.json").read_text() == recorded
    assert result.initial_epoch == 2
    with open(tmp_path / "run" / "log.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2, 3]
    last = keras.models.load_model(tmp_path / "run/checkpoints/last.keras")
    assert int(last.optimizer.iterations.numpy()) == 4 * config.steps_per_epoch


class Poison(keras.callbacks.Callback):
    """Turns the weights into NaN, as a diverging run would."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            layer = self.model.get_layer("head_conv")
            layer.set_weights([np.full_like(w, np.nan) for w in layer.get_weights()])


def test_nan_loss_stops_training_with_a_clear_message(tiny_nuclei, tmp_path):
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, batch 2.*--lr"):
        train(tiny_config(tiny_nuclei, tmp_path / "run"), extra_callbacks=[Poison()])
    assert not (tmp_path / "run" / "checkpoints" / "best.keras").exists()


def log_rows(run):
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def test_a_nan_run_never_replaces_the_good_model_of_a_finished_run(tiny_nuclei, tmp_path):
    config = tiny_config(tiny_nuclei, tmp_path / "run", epochs=2)
    train(config)
    best = tmp_path / "run" / "checkpoints" / "best.keras"
    good = best.read_bytes()
    with pytest.raises(TrainingError, match="loss became nan"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=4), extra_callbacks=[Poison()])
    assert best.read_bytes() == good
    model = keras.models.load_model(best)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert len(log_rows(tmp_path / "run")) == 2
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epochs_done"] == 2  # the 2-epoch run is intact; the continuation failed


def test_a_logits_model_trains_as_the_same_model_with_its_activation(tiny_nuclei, tmp_path):
    """`model.output_activation: null` (logits): the losses and metrics must
    apply the sigmoid themselves. With the same seed the two runs start from
    the same weights (the activation has none), so they must log the same
    losses and scores and predict the same probabilities."""
    from keras_unet.inference.predict import load_predictor

    runs = {}
    for name, activation in (("sigmoid", "auto"), ("logits", None)):
        config = tiny_config(tiny_nuclei, tmp_path / name, epochs=2,
                             model={**TINY_MODEL, "output_activation": activation})
        train(config)
        runs[name] = log_rows(tmp_path / name)
    for key in ("loss", "dice", "val_loss", "val_dice"):
        assert [float(r[key]) for r in runs["logits"]] == pytest.approx(
            [float(r[key]) for r in runs["sigmoid"]], rel=1e-3, abs=1e-4), key
    image = np.asarray(PIL.Image.open(sorted((tiny_nuclei / "images").glob("*.png"))[0])
                       .convert("RGB"), np.float32)[None, :64, :64] / 255
    probabilities = [load_predictor(tmp_path / name / "checkpoints/best.keras")(image)
                     for name in runs]
    np.testing.assert_allclose(*probabilities, atol=1e-3)


def test_rerunning_a_finished_run_trains_nothing_and_more_epochs_continue_it(
        tiny_nuclei, tmp_path, capsys):
    run = tmp_path / "run"
    config = tiny_config(tiny_nuclei, run, epochs=2)
    first = train(config)
    stamp = (run / "checkpoints" / "best.keras").stat().st_mtime_ns
    again = train(config)
    assert again.already_finished and again.scores == first.scores
    assert (run / "checkpoints" / "best.keras").stat().st_mtime_ns == stamp
    assert len(log_rows(run)) == 2
    longer = train(tiny_config(tiny_nuclei, run, epochs=3))
    assert not longer.already_finished and longer.initial_epoch == 2
    assert [int(r["epoch"]) for r in log_rows(run)] == [0, 1, 2]
    last = keras.models.load_model(run / "checkpoints" / "last.keras")
    assert int(last.optimizer.iterations.numpy()) == 3 * config.steps_per_epoch


def test_another_configuration_in_the_same_folder_is_refused_unless_forced(tiny_nuclei,
                                                                            tmp_path):
    from keras_unet.training.runs import RunFolderError

    run = tmp_path / "run"
    train(tiny_config(tiny_nuclei, run, epochs=2))
    other = tiny_config(tiny_nuclei, run, epochs=1, lr=1e-3)
    with pytest.raises(RunFolderError, match=r"another configuration \(lr: 0.01 before, "
                                             r"0.001 now\).*--force"):
        train(other)
    with pytest.raises(RunFolderError, match="already trained 2 epochs, more than the 1"):
        train(tiny_config(tiny_nuclei, run, epochs=1))
    result = train(other, force=True)
    assert result.initial_epoch == 0 and len(log_rows(run)) == 1
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-3


def test_a_resumed_deterministic_run_repeats_the_uninterrupted_one(tiny_nuclei, tmp_path):
    whole = train(tiny_config(tiny_nuclei, tmp_path / "whole", epochs=4))
    config = tiny_config(tiny_nuclei, tmp_path / "parts", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[Interrupt()])
    parts = train(config)
    assert parts.initial_epoch == 2
    for key in ("loss", "val_loss", "val_dice"):
        np.testing.assert_allclose(parts.history[key], whole.history[key], rtol=1e-5,
                                   err_msg=key)
    # best.keras is the best epoch of the whole run, also across the resume
    rows = log_rows(tmp_path / "parts")
    best = max(range(4), key=lambda i: float(rows[i]["val_dice"]))
    state = json.loads((tmp_path / "parts" / "state.json").read_text())
    assert state["best_epoch"] == best
    assert parts.scores["foreground_dice"] == pytest.approx(float(rows[best]["val_dice"]),
                                                            rel=1e-6)


KILLABLE = """
import json, os, signal, sys
config = json.loads(sys.argv[1])
kill_at = sys.argv[2]
if kill_at == "save":  # die inside the second checkpoint save, before its rename
    import keras_unet.files as files
    replace, saves = os.replace, []
    def dying_replace(src, dst):
        if str(dst).endswith(".keras"):
            saves.append(dst)
            if len(saves) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
    files.os.replace = dying_replace
from keras_unet.training.train import TrainConfig, train
train(TrainConfig(**config))
"""


# The GPU defaults (float16 compute, XLA), forced on, on the CPU.
GPU_SETTINGS = dict(mixed_precision="float16", jit_compile="on", deterministic=False)


# The float32 mid-epoch kill is the GPU-settings one's twin: slow-marked.
@pytest.mark.parametrize("kill_at, gpu", [pytest.param("mid_epoch", False, marks=pytest.mark.slow),
                                          ("save", False), ("mid_epoch", True)])
def test_a_killed_run_leaves_loadable_files_and_resumes(tiny_nuclei, tmp_path, kill_at, gpu):
    import signal
    import time

    run = tmp_path / "run"
    settings = dict(data=str(tiny_nuclei), work_dir=str(run), crop_size=64, batch_size=4,
                    epochs=4, steps_per_epoch=6, lr=1e-2, schedule="constant",
                    model=dict(TINY_MODEL), val_fraction=0.25, tensorboard=False,
                    verbose=0, deterministic=True)
    settings.update(GPU_SETTINGS if gpu else {})
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, json.dumps(settings), kill_at],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    if kill_at == "mid_epoch":
        deadline = time.time() + 300
        while time.time() < deadline and child.poll() is None:
            state = run / "state.json"
            if state.is_file() and json.loads(state.read_text())["epochs_done"] >= 1:
                time.sleep(0.5)  # into the next epoch
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    child.wait(timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()[-2000:]
    done = json.loads((run / "state.json").read_text())["epochs_done"]
    assert 1 <= done < 4
    for path in [*run.rglob("*.keras")]:  # everything on disk loads, even now
        if not path.name.startswith("."):
            keras.models.load_model(path)
    result = train(TrainConfig(**settings))
    assert result.initial_epoch == done
    rows = log_rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    best = max(range(4), key=lambda i: float(rows[i]["val_dice"]))
    assert json.loads((run / "state.json").read_text())["best_epoch"] == best
    for name in ("best.keras", "last.keras"):
        keras.models.load_model(run / "checkpoints" / name)
    assert not [p.name for p in run.rglob(".*tmp*")]


def test_config_file_is_loaded_and_flags_override_it(tiny_nuclei, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data: {tiny_nuclei}\nepochs: 1\nsteps_per_epoch: 1\ncrop_size: 32\n"
        "batch_size: 2\ntensorboard: false\nverbose: 0\nmodel: {filters: 4, depth: 2}\n"
    )
    code = main(["train", "--config", str(config), "--work-dir", str(tmp_path / "run"),
                 "--filters", "2", "--normalization", "batch"])
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["model"] == {
        "filters": 2, "depth": 2, "normalization": "batch"}
    assert "nucleus" in capsys.readouterr().out


def test_unknown_config_keys_are_rejected(tmp_path):
    (tmp_path / "c.json").write_text('{"epocs": 3}')
    with pytest.raises(ValueError, match=r"c.json: unknown config keys \['epocs'\]"):
        TrainConfig.from_file(tmp_path / "c.json")


def test_cli_reports_bad_datasets_naming_the_folder(tmp_path, capsys):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty")]) == 1
    assert "empty/images: no images" in capsys.readouterr().err


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


WORKER = """
import json, sys
from keras_unet.training.train import TrainConfig, train
config = TrainConfig(**json.loads(sys.argv[1]))
train(config)
"""


def test_two_local_workers_train_and_agree_on_the_weights(tiny_nuclei, tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    config = dict(data=str(tiny_nuclei), work_dir=str(tmp_path / "run"), crop_size=32,
                  batch_size=4, epochs=2, steps_per_epoch=2, lr=1e-2,
                  model={"filters": 4, "depth": 2}, tensorboard=False, verbose=0,
                  deterministic=True, early_stopping=0)
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(config)], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    chief = keras.models.load_model(tmp_path / "run/checkpoints/last.keras")
    other = keras.models.load_model(tmp_path / "run/worker-1/checkpoints/last.keras")
    for a, b in zip(chief.get_weights(), other.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(chief.optimizer.iterations.numpy()) == 4


class OptimizerProbe(keras.callbacks.Callback):
    """Records how the model is compiled and its optimizer state at the
    start and end of `fit`."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def _state(self):
        return [np.array(v) for v in self.model.optimizer.variables]

    def on_train_begin(self, logs=None):
        self.seen["jit_compile"] = self.model.jit_compile
        self.seen["optimizer"] = type(self.model.optimizer).__name__
        self.seen["begin"] = self._state()

    def on_train_end(self, logs=None):
        self.seen["end"] = self._state()


def test_mixed_precision_and_xla_path_trains_and_leaves_the_global_policy(tiny_nuclei, tmp_path):
    """The GPU settings (float16 compute, XLA), forced on, on the CPU: XLA
    really compiles the step (it did not, silently, with op determinism on)."""
    import warnings

    probe = OptimizerProbe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1, steps_per_epoch=2,
                                   **GPU_SETTINGS), extra_callbacks=[probe])
    assert not [w for w in caught if "support `jit_compile=True`" in str(w.message)]
    assert probe.seen["jit_compile"] is True
    assert probe.seen["optimizer"] == "LossScaleOptimizer"
    assert np.isfinite(result.history["loss"]).all()
    assert result.model.get_layer("enc1_conv1").compute_dtype == "float16"
    assert result.model.output.dtype == "float32"  # the head runs in float32
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_bfloat16_run_needs_no_loss_scaling_and_its_model_loads_in_float32(tiny_nuclei,
                                                                             tmp_path):
    """The CPU's mixed precision: bfloat16 compute, a plain optimizer (the
    exponent range of float32), and a checkpoint that inference reads in
    float32."""
    from keras_unet.inference.predict import load_keras_model

    probe = OptimizerProbe()
    result = train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1, steps_per_epoch=2,
                               mixed_precision="bfloat16"), extra_callbacks=[probe])
    assert probe.seen["optimizer"] == "Adam"
    assert result.model.get_layer("enc1_conv1").compute_dtype == "bfloat16"
    assert np.isfinite(result.history["loss"]).all()
    loaded = load_keras_model(result.run_dir / "checkpoints" / "best.keras")
    assert loaded.get_layer("enc1_conv1").compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_mixed_precision_run_continues_with_its_whole_optimizer_state(tiny_nuclei, tmp_path):
    """Continuing a finished run (more --epochs) brings back Adam's moments
    and the loss scale, exactly as the last epoch left them."""
    first, second = OptimizerProbe(), OptimizerProbe()
    train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1, **GPU_SETTINGS),
          extra_callbacks=[first])
    result = train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=2, **GPU_SETTINGS),
                   extra_callbacks=[second])
    assert result.initial_epoch == 1 and len(result.history["loss"]) == 2
    assert len(second.seen["begin"]) == len(first.seen["end"]) > 0
    for before, after in zip(first.seen["end"], second.seen["begin"]):
        np.testing.assert_array_equal(before, after)
    assert any(np.any(v != 0) for v in second.seen["begin"])  # a state, not zeros


def test_xla_and_deterministic_kernels_together_are_a_config_error(tiny_nuclei, tmp_path):
    from keras_unet.training.config import ConfigError

    with pytest.raises(ConfigError, match="exclude each other"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", jit_compile="on"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_frozen_backbone_is_unfrozen_at_the_chosen_epoch(tiny_nuclei, tmp_path):
    config = tiny_config(
        tiny_nuclei, tmp_path / "run", epochs=2, steps_per_epoch=1, crop_size=64,
        model={"backbone": "mobilenet_v2", "filters": 4, "freeze_encoder": True},
        unfreeze_epoch=1,
    )

    class Snapshot(keras.callbacks.Callback):
        weights = {}

        def on_epoch_end(self, epoch, logs=None):
            encoder = self.model.get_layer("encoder")
            self.weights[epoch] = [w.copy() for w in encoder.get_weights()]
            self.weights[f"trainable{epoch}"] = encoder.trainable

    snapshot = Snapshot()
    initial = None

    class Start(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            nonlocal initial
            if initial is None:
                initial = [w.copy() for w in self.model.get_layer("encoder").get_weights()]

    train(config, extra_callbacks=[Start(), snapshot])
    assert snapshot.weights["trainable0"] is False and snapshot.weights["trainable1"] is True
    assert all(np.array_equal(a, b) for a, b in zip(initial, snapshot.weights[0]))
    assert not all(np.array_equal(a, b) for a, b in zip(initial, snapshot.weights[1]))


class FirstWeights(keras.callbacks.Callback):
    """Keeps the weights the model has when training begins."""

    weights = None

    def on_train_begin(self, logs=None):
        FirstWeights.weights = [w.copy() for w in self.model.get_weights()]


def test_fine_tuning_starts_from_the_earlier_model(tiny_nuclei, tmp_path):
    train(tiny_config(tiny_nuclei, tmp_path / "first", epochs=1))
    earlier = keras.models.load_model(tmp_path / "first/checkpoints/best.keras")
    train(tiny_config(tiny_nuclei, tmp_path / "second", epochs=1,
                      init_from=str(tmp_path / "first")), extra_callbacks=[FirstWeights()])
    for a, b in zip(FirstWeights.weights, earlier.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fine_tuning_with_a_new_class_gets_a_new_head_and_other_maps_are_refused(
        tiny_nuclei, tmp_path, caplog):
    import shutil

    from keras_unet.training.config import ConfigError

    train(tiny_config(tiny_nuclei, tmp_path / "first", epochs=1))
    grown = tmp_path / "grown"
    shutil.copytree(tiny_nuclei, grown)
    (grown / "labels.txt").write_text("__ignore__\n_background_\nnucleus\ncell\n")
    with caplog.at_level("WARNING", logger="keras_unet"):
        result = train(tiny_config(grown, tmp_path / "second", epochs=1,
                                   init_from=str(tmp_path / "first")))
    assert "new output head" in caplog.text
    assert result.model.output_shape[-1] == 3
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_nuclei, renamed)
    (renamed / "labels.txt").write_text("__ignore__\n_background_\ncell\n")
    with pytest.raises(ConfigError, match=r"its classes \['_background_', 'nucleus'\] are not"):
        train(tiny_config(renamed, tmp_path / "third", epochs=1,
                          init_from=str(tmp_path / "first")))
    wider = tiny_config(tiny_nuclei, tmp_path / "fourth", epochs=1,
                        init_from=str(tmp_path / "first"),
                        model={**TINY_MODEL, "filters": 8})
    with pytest.raises(ConfigError, match=r"built with filters=4, this model with filters=8"):
        train(wider)
    assert not (tmp_path / "fourth").exists()  # refused before the folder was made
    # A bare .keras file records no options: its layers' shapes are compared.
    shutil.copy(tmp_path / "first" / "checkpoints" / "best.keras", tmp_path / "bare.keras")
    wider.init_from = str(tmp_path / "bare.keras")
    with pytest.raises(ConfigError, match=r"layer 'enc1_conv1' has weights of shapes"):
        train(wider)


def test_border_weights_and_the_instance_target_train(tiny_nuclei, tmp_path, capsys):
    result = train(tiny_config(tiny_nuclei, tmp_path / "border", epochs=1, border_weights=True,
                               verbose=2))
    assert np.isfinite(result.history["loss"]).all()
    assert "epoch 1/1  loss" in capsys.readouterr().out  # one plain line per epoch
    result = train(tiny_config(tiny_nuclei, tmp_path / "objects", epochs=1,
                               target="instances"))
    assert result.model.output_shape[-1] == 3  # background, nucleus, boundary
    assert {"val_ap", "val_f1"} <= set(result.history)
    assert result.scores["objects"]["images"] == 2


def test_a_time_budget_sizes_the_run_to_fit(tiny_nuclei, tmp_path, caplog):
    with caplog.at_level("INFO", logger="keras_unet"):
        result = train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=500,
                                   time_budget=0.25, early_stopping=0))
    assert "time budget 0.25 min:" in caplog.text and "s per step" in caplog.text
    planned = json.loads((tmp_path / "run" / "state.json").read_text())["epochs"]
    assert 1 <= planned < 500 and len(result.history["loss"]) == planned


def test_an_oversampling_list_must_name_training_pairs_and_draw_some(tiny_nuclei, tmp_path):
    from keras_unet.training.config import ConfigError

    table = tmp_path / "times.csv"
    table.write_text("name,times\nnot_a_pair,3\n")
    with pytest.raises(ConfigError, match=r"times.csv: names no training pair: \['not_a_pair'\]"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", oversample=str(table)))
    table.write_text("a,two\n")
    with pytest.raises(ConfigError, match="line 1 must be `name,times`"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", oversample=str(table)))
    config = tiny_config(tiny_nuclei, tmp_path / "run", oversample=str(table))
    train_set, _ = load_training_data(config)
    table.write_text("".join(f"{name},0\n" for name in train_set.stems))
    with pytest.raises(ConfigError, match="every training pair is drawn 0 times"):
        train(config)


@pytest.mark.parametrize("option, message", [
    ({"normalization": "foo"}, "model: normalization='foo' is not supported"),
    ({"filters": "many"}, "model: filters='many' must be an integer >= 1"),
    ({"bogus": 1}, "model: unknown options ['bogus']"),
])
def test_a_bad_model_option_is_a_config_error_and_trains_nothing(tiny_nuclei, tmp_path,
                                                                 option, message):
    from keras_unet.training.config import ConfigError

    config = tiny_config(tiny_nuclei, tmp_path / "run", model={**TINY_MODEL, **option})
    with pytest.raises(ConfigError) as raised:
        train(config)
    assert message in str(raised.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_area_sampling_makes_a_pass_as_many_crops_as_the_images_hold(tiny_nuclei, tmp_path):
    config = tiny_config(tiny_nuclei, tmp_path / "run", epochs=1, steps_per_epoch=None,
                         crop_size=64, batch_size=4, sampling="area")
    train_set, _ = load_training_data(config)
    stems = train_set.stems
    table = tmp_path / "times.csv"
    table.write_text(f"name,times\n{stems[0]},3\n{stems[1]},0\n")
    config.oversample = str(table)

    def crops(path):  # by hand: the crops of 64x64 that the image's area holds
        width, height = PIL.Image.open(path).size
        return max(1, round(width * height / 64**2))

    times = [3, 0] + [1] * (len(stems) - 2)
    per_pass = sum(t * crops(path) for t, path in zip(times, train_set.images))
    assert per_pass > 2 * len(stems)  # the sample's images hold many crops each
    train(config)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["examples_seen"] == -(-per_pass // 4) * 4  # one pass: whole batches


def class_weights_logged(caplog) -> list[float]:
    line = next(message for message in (r.getMessage() for r in caplog.records)
                if message.startswith("class weights"))
    return json.loads(line.split(":", 1)[1])


@pytest.mark.parametrize("weighting, power", [("median_frequency", 1.0),
                                             ("sqrt_median_frequency", 0.5)])
def test_class_weights_are_counted_on_the_training_split_only(
        tiny_nuclei, tmp_path, caplog, weighting, power):
    from keras_unet.data.readers import read_mask

    config = tiny_config(tiny_nuclei, tmp_path / "run", epochs=1, steps_per_epoch=1,
                         class_weighting=weighting, val_fraction=0.5)
    with caplog.at_level("INFO", logger="keras_unet"):
        train(config)
    train_set, val_set = load_training_data(config)

    def median_frequency(paths):  # by hand: (median of the frequencies / frequency) ** power
        counts = sum(np.bincount(read_mask(p).ravel(), minlength=2)[:2] for p in paths)
        frequency = counts / counts.sum()
        return (np.median(frequency) / frequency) ** power

    expected = median_frequency(train_set.masks)
    np.testing.assert_allclose(class_weights_logged(caplog), expected, atol=1e-3)
    # The validation masks would have changed them.
    assert not np.allclose(median_frequency(train_set.masks + val_set.masks), expected,
                           atol=1e-3)


def test_class_balancing_of_the_instance_target_weighs_the_boundary(
        tiny_nuclei, tmp_path, caplog):
    # The masks hold no boundary pixels: counted from them, the boundary
    # class got weight 0 and was never learned.
    with caplog.at_level("INFO", logger="keras_unet"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1, steps_per_epoch=1,
                          target="instances", class_weighting="median_frequency"))
    background, nucleus, boundary = class_weights_logged(caplog)
    assert boundary > nucleus > 0 and background > 0


def test_an_instance_head_is_not_reused_for_a_semantic_class_of_the_same_channel_count(
        tiny_nuclei, tmp_path, caplog):
    """nuclei_dsb2018's channels are background, nucleus, boundary: a
    background/nucleus/cytoplasm dataset gets a new head, and is told so."""
    import shutil

    from keras_unet.models import pretrained

    card = pretrained.model_card("nuclei_dsb2018")
    data = tmp_path / "three"
    shutil.copytree(tiny_nuclei, data)
    (data / "labels.txt").write_text("__ignore__\n_background_\nnucleus\ncytoplasm\n")
    with caplog.at_level("WARNING", logger="keras_unet"):
        train(tiny_config(data, tmp_path / "run", epochs=1, steps_per_epoch=1, lr=1e-9,
                          model=card["model"], init_from="nuclei_dsb2018"),
              extra_callbacks=[HeadProbe(probe := {})])
    assert "new output head (semantic target, classes ['_background_', 'nucleus', " \
           "'cytoplasm']; it had the instances target" in caplog.text
    bundled = keras.models.load_model(pretrained.model_path("nuclei_dsb2018"))
    reused = [np.array_equal(a, b) for a, b in
              zip(probe["head"], bundled.get_layer("head_conv").get_weights())]
    assert not any(reused)
    assert np.array_equal(probe["enc1"], bundled.get_layer("enc1_conv1").get_weights()[0])


class HeadProbe(keras.callbacks.Callback):
    """Keeps the head's and the first convolution's weights as training starts."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def on_train_begin(self, logs=None):
        self.seen["head"] = [w.copy() for w in self.model.get_layer("head_conv").get_weights()]
        self.seen["enc1"] = self.model.get_layer("enc1_conv1").get_weights()[0].copy()


def test_a_missing_model_to_fine_tune_is_named_before_the_run_folder_is_made(
        tiny_nuclei, tmp_path):
    from keras_unet.models import pretrained
    from keras_unet.training.config import ConfigError

    with pytest.raises(ConfigError, match=r"--init-from .*nowhere\.keras: no such file"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1,
                          init_from=str(tmp_path / "nowhere.keras")))
    (tmp_path / "unfinished").mkdir()  # a run folder where no epoch finished
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"this run folder has no checkpoints/best\.keras"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1,
                          init_from=str(tmp_path / "unfinished")))
    (tmp_path / "photos").mkdir()  # any other folder
    with pytest.raises(ConfigError, match=r"photos: not a training run folder \(no config"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1,
                          init_from=str(tmp_path / "photos")))
    # A .keras file cut short (a copy interrupted): its name and what is wrong.
    truncated = tmp_path / "broken.keras"
    truncated.write_bytes(pretrained.model_path("nuclei_dsb2018").read_bytes()[:5000])
    with pytest.raises(ConfigError, match=r"broken\.keras: not a valid \.keras model file"):
        train(tiny_config(tiny_nuclei, tmp_path / "run", epochs=1, init_from=str(truncated)))
    assert not (tmp_path / "run").exists()


def test_a_model_without_a_label_map_is_not_trusted_with_its_head(tiny_nuclei, tmp_path,
                                                                   caplog):
    import shutil

    train(tiny_config(tiny_nuclei, tmp_path / "first", epochs=1))
    shutil.copy(tmp_path / "first" / "checkpoints" / "best.keras", tmp_path / "bare.keras")
    with caplog.at_level("WARNING", logger="keras_unet"):
        train(tiny_config(tiny_nuclei, tmp_path / "second", epochs=1,
                          init_from=str(tmp_path / "bare.keras")))
    assert "it has no label map beside it (labels.txt)" in caplog.text


def test_a_run_killed_after_its_last_epoch_is_scored_without_more_training(
        tiny_nuclei, tmp_path, caplog):
    config = tiny_config(tiny_nuclei, tmp_path / "run", epochs=1)
    first = train(config)
    state_file = tmp_path / "run" / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))  # killed before this
    with caplog.at_level("INFO", logger="keras_unet"):
        again = train(config)
    assert "every epoch (1) was trained; scoring the run" in caplog.text
    assert "continuing at epoch" not in caplog.text
    assert len(again.history["loss"]) == 1
    assert json.loads(state_file.read_text())["finished"]
    assert again.scores["foreground_dice"] == pytest.approx(first.scores["foreground_dice"])


def test_a_finished_run_killed_before_its_summary_is_scored_again(tiny_nuclei, tmp_path,
                                                                  capsys):
    config = tiny_config(tiny_nuclei, tmp_path / "run", epochs=1)
    first = train(config)
    (tmp_path / "run" / "summary.json").unlink()  # as a kill just before writing it leaves
    code = main(["train", "--config", str(tmp_path / "run" / "config.json"), "--epochs", "1"])
    out = capsys.readouterr()
    assert code == 0 and "this run finished before" in out.out, out.err
    again = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert again["foreground_dice"] == pytest.approx(first.scores["foreground_dice"])


def test_a_missing_checkpoint_named_by_the_state_says_what_to_do(tiny_nuclei, tmp_path,
                                                                 capsys):
    config = tiny_config(tiny_nuclei, tmp_path / "run", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[Interrupt()])
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    (tmp_path / "run" / state["backup"]).unlink()
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()
              and p.name != ".lock"}
    code = main(["train", "--config", str(tmp_path / "run" / "config.json")])
    err = capsys.readouterr().err
    assert code != 0 and "the checkpoint of epoch 2 that state.json names is missing" in err
    assert "put it back to continue the run, or start over with --force" in err
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in before} == before  # nothing touched
