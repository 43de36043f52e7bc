"""Shared fixtures and settings for the keras-unet tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def run_python():
    """Runs code in a fresh interpreter and returns its stdout; fails the
    test, with the end of stderr, if the code fails."""
    def run(code: str) -> str:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    return run


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """`../shared/datasets` beside the checkout; skips where it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS} (a user's clone)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def nuclei_dataset(tmp_path_factory) -> Path:
    """The bundled LabelMe sample converted to a dataset folder (83 pairs, with instances)."""
    from keras_unet.data.convert import labelme_to_masks

    out = tmp_path_factory.mktemp("nuclei")
    summary = labelme_to_masks(REPO / "datasets" / "nuclei", out, instances=True, workers=2)
    assert not summary.errors
    return out


@pytest.fixture(scope="session")
def tiny_nuclei(nuclei_dataset, tmp_path_factory) -> Path:
    """Eight real nucleus image/mask/instance triples (the first, sorted by name)."""
    import shutil

    out = tmp_path_factory.mktemp("tiny_nuclei")
    shutil.copy(nuclei_dataset / "labels.txt", out / "labels.txt")
    for sub in ("images", "masks", "instances"):
        (out / sub).mkdir()
        for path in sorted((nuclei_dataset / sub).glob("*.png"))[:8]:
            shutil.copy(path, out / sub / path.name)
    return out


@pytest.fixture(scope="session")
def trained_run(nuclei_dataset, tmp_path_factory):
    """A small U-Net trained for 120 steps on the real nuclei sample.

    Exports are checked on it because agreement on an untrained model or
    on noise proves little.
    """
    from keras_unet.training.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        data=str(nuclei_dataset), work_dir=str(run), crop_size=64, batch_size=8, epochs=3,
        steps_per_epoch=40, lr=5e-3, model={"filters": 8, "depth": 3, "normalization": "batch"},
        tensorboard=False, verbose=0, val_fraction=0.2, early_stopping=0, deterministic=True,
        # float32 on every CPU (`auto` is bfloat16 where the CPU has it): the
        # exports are compared with the checkpoint as Keras loads it.
        mixed_precision="off",
    )
    result = train(config)
    # It learned something (all-foreground would score about 0.3 here).
    assert result.scores["classes"]["nucleus"]["dice"] > 0.4
    return run, config


@pytest.fixture(scope="session")
def held_out(trained_run):
    """`(names, verification, calibration)`: 128x128 windows of the run's
    validation and training images."""
    from keras_unet.export import image_windows
    from keras_unet.training.train import load_training_data

    _, config = trained_run
    train_set, val_set = load_training_data(config)
    verification = image_windows(val_set.images, (128, 128), 3, limit=8)
    calibration = image_windows(train_set.images, (128, 128), 3, limit=16, random_crops=True)
    return train_set.names, verification, calibration


@pytest.fixture(scope="session")
def model(trained_run):
    """The trained run's best model."""
    import keras

    run, _ = trained_run
    return keras.models.load_model(run / "checkpoints/best.keras", compile=False)


# Test-time oracles that cannot share an environment with TensorFlow 2.21:
# name -> (environment variable, virtual environment in the checkout).
ORACLES = {
    "mediapipe": ("KERAS_UNET_MEDIAPIPE_PYTHON", ".venv-mediapipe"),
    "tflite_support": ("KERAS_UNET_TFLITE_SUPPORT_PYTHON", ".venv-tflite-support"),
}


def oracle_python(oracle: str) -> Path:
    """The Python of an oracle's own environment; skips where it is absent."""
    variable, venv = ORACLES[oracle]
    python = Path(os.environ.get(variable, REPO / venv / "bin" / "python"))
    if not python.is_file():
        pytest.skip(f"{oracle} oracle not installed: no {python} (bash .ci/run creates "
                    f"it, or set {variable})")
    return python


@pytest.fixture(scope="session")
def run_oracle():
    """Runs `tests/oracles/<script>.py` in an oracle's own environment.

    `run(oracle, script, model, *images, out=folder)` returns the
    `result.json` the script writes into `out`; skips where the environment
    is absent (`.ci/run` creates it), fails with the end of stderr where the
    script fails.
    """
    import json

    def run(oracle: str, script: str, *args, out: Path) -> dict:
        command = [str(oracle_python(oracle)), str(REPO / "tests" / "oracles" / f"{script}.py"),
                   *map(str, args[:1]), str(out), *map(str, args[1:])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((out / "result.json").read_text())

    return run


@pytest.fixture(scope="session")
def camvid_pairs(shared_datasets, tmp_path_factory) -> Path:
    """Six real CamVid street scenes (480x360, ids 0..10, void 11) with the
    dataset's own plain `labels.txt` (Sky, Building, ..., Unlabelled)."""
    import shutil

    source = shared_datasets / "camvid"
    if not source.is_dir():
        pytest.skip(f"CamVid not found at {source}")
    out = tmp_path_factory.mktemp("camvid")
    shutil.copy(source / "labels.txt", out / "labels.txt")
    for sub in ("images", "masks"):
        (out / sub).mkdir()
        for path in sorted((source / "train" / sub).glob("*.png"))[:6]:
            shutil.copy(path, out / sub / path.name)
    return out


def squares(sides, size=128):
    """An instance mask of squares of the given sides, 1 px apart, ids 1..n."""
    import numpy as np

    ids = np.zeros((size, size), np.uint16)
    x = 0
    for i, side in enumerate(sides, 1):
        ids[:side, x:x + side] = i
        x += side + 1
    return ids
