"""The README's Python examples run as written (a newcomer copies them first)."""

import json
import re
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from conftest import REPO, oracle_python

from keras_unet.export import export_tflite
from keras_unet.inference import load_predictor, predict_files


def test_the_keras_example_of_the_readme_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use the model in your own Keras code", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "unet.keras").is_file()


def deploy_snippets() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deploy:", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize("runtime, index", [("litert", 0), ("mediapipe", 1),
                                            ("tflite_support", 2)])
def test_the_deploy_snippets_give_predicts_mask(model, held_out, tmp_path, runtime, index):
    """Each runtime's snippet, on a greyscale PNG of the model's size (which
    the snippets convert to RGB), gives `keras-unet predict`'s class mask."""
    names, verification, _ = held_out
    export_tflite(model, tmp_path / "exported" / "model_float32.tflite", names=names,
                  verification_images=verification, input_size=(128, 128), latency_runs=0)
    grey = np.round(verification[0].mean(-1) * 255).astype(np.uint8)
    PIL.Image.fromarray(grey).save(tmp_path / "image.png")
    python = sys.executable if runtime == "litert" else str(oracle_python(runtime))
    code = deploy_snippets()[index] + (
        "\nimport json\nnp.save('mask.npy', np.asarray(mask).reshape(128, 128))\n"
        "print(json.dumps(list(labels)))\n")
    result = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == names
    predict_files(load_predictor(tmp_path / "exported" / "model_float32.tflite"),
                  tmp_path / "image.png", tmp_path / "predicted")
    ours = np.asarray(PIL.Image.open(tmp_path / "predicted" / "masks" / "image.png"))
    assert (np.load(tmp_path / "mask.npy") == ours).mean() >= 0.9999
