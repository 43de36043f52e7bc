"""Tests for keras_unet/logs.py: commands are quiet unless `--verbose`."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from keras_unet import build_unet

PREDICT = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
# What TensorFlow itself writes when it loads on a CPU machine (oneDNN notice,
# absl's preamble, the CUDA stubs) and runs a model.
NATIVE_MARKERS = ("oneDNN", "absl::InitializeLog", "I0000 ")


@pytest.fixture(scope="module")
def model_and_image(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    build_unet((None, None, 3), 1, filters=2, depth=2).save(root / "model.keras")
    (root / "images").mkdir()
    PIL.Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "images" / "a.png")
    return root


def predict(root: Path, out: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PREDICT), str(root / "model.keras"), str(root / "images"),
         str(root / out), *flags],
        capture_output=True, text=True, timeout=300,
    )


def test_a_command_is_quiet_by_default_and_verbose_brings_tensorflow_back(model_and_image):
    quiet = predict(model_and_image, "quiet")
    assert quiet.returncode == 0, quiet.stderr
    output = quiet.stdout + quiet.stderr
    assert not [m for m in NATIVE_MARKERS if m in output], output
    assert (model_and_image / "quiet" / "masks" / "a.png").is_file()

    verbose = predict(model_and_image, "verbose", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    # The same run with --verbose shows TensorFlow's own messages: the quiet
    # run above was quiet because of keras-unet, not because TF said nothing.
    assert [m for m in NATIVE_MARKERS if m in verbose.stdout + verbose.stderr]


@pytest.mark.parametrize("quiet", [True, False])
def test_onnx_runtimes_own_notices_are_silenced_like_tensorflows(tmp_path, capfd, quiet):
    """tf2onnx writes the percentile layer's nearest-neighbour resize with an
    attribute ONNX Runtime warns about from C++ when it loads the model."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from keras_unet.export.formats import export_other
    from keras_unet.logs import set_quiet

    model = build_unet((32, 32, 3), 1, filters=2, depth=2,
                       input_normalization="per_image_percentile")
    images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    set_quiet(quiet)
    try:
        export_other(model, tmp_path / "m.onnx", "onnx", verification_images=images)
    finally:
        set_quiet(False)
    said = capfd.readouterr()
    assert ("onnxruntime" in said.out + said.err) is not quiet
