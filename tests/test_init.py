"""Tests for the package's public names (keras_unet/__init__.py)."""

import importlib
import json

import pytest

import keras_unet


@pytest.mark.parametrize("name", keras_unet.__all__)
def test_every_public_name_is_the_object_of_its_module(name):
    module = importlib.import_module(keras_unet._EXPORTS[name])
    assert getattr(keras_unet, name) is getattr(module, name)
    assert name in dir(keras_unet)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'build_unnet'"):
        keras_unet.build_unnet  # noqa: B018


def test_converting_labelme_files_does_not_load_tensorflow(tmp_path, run_python):
    folder = tmp_path / "in"
    folder.mkdir()
    shape = {"label": "cat", "points": [[1, 1], [6, 6]], "shape_type": "rectangle"}
    (folder / "a.json").write_text(json.dumps(
        {"shapes": [shape], "imageData": None, "imagePath": "a.png",
         "imageHeight": 8, "imageWidth": 8}))
    import numpy as np
    import PIL.Image
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    loaded = run_python(
        "import sys, keras_unet\n"
        "from keras_unet.cli import main\n"
        f"code = main(['labelme2masks', r'{folder}', r'{tmp_path / 'out'}', '--workers', '1'])\n"
        "assert code == 0, code\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
    )
    assert loaded.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "masks" / "a.png").is_file()


def test_import_keras_unet_after_keras_registers_the_losses_and_metrics(run_python):
    registered = run_python(
        "import keras, keras_unet\n"
        "print(keras.saving.get_registered_object('keras_unet>DiceCELoss') is not None,"
        " keras.saving.get_registered_object('keras_unet>IoU') is not None)\n"
    )
    assert registered.split()[-2:] == ["True", "True"]
