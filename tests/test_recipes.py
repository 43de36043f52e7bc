"""Tests for keras_unet.training.recipes and `train --recipe`."""

import importlib.util
import sys

import pytest
from conftest import REPO

from keras_unet.cli import build_parser, main
from keras_unet.cli.train import config_from_args
from keras_unet.training.config import TrainConfig
from keras_unet.training.recipes import RECIPES, recipe


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_is_a_valid_config(name):
    config = TrainConfig.from_values({**recipe(name), "data": "d"}, name)
    config.validate()


def test_a_recipe_is_a_copy():
    recipe("street-cpu")["model"]["filters"] = 1
    assert RECIPES["street-cpu"]["model"]["filters"] == 24


def test_flags_override_the_recipe_and_keep_the_rest():
    args = build_parser().parse_args(["train", "--recipe", "street-cpu", "--data", "d",
                                      "--epochs", "3", "--filters", "8", "--ignore-index", "11"])
    config = config_from_args(args)
    assert (config.loss, config.class_weighting, config.crop_size) == (
        "dice_ce", "median_frequency", 256)
    assert config.epochs == 3 and config.ignore_index == 11
    assert config.model == {"backbone": "mobilenet_v2", "filters": 8, "normalization": "batch"}
    assert config.augment["vertical_flip"] is False  # street scenes keep the sky up


def test_a_recipe_and_a_config_file_together_are_refused(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"data": "d"}')
    code = main(["train", "--recipe", "nuclei-cpu", "--config", str(tmp_path / "c.json")])
    assert code == 1 and "give one of them" in capsys.readouterr().err


@pytest.mark.parametrize("script, recipes", [("bench_accuracy", ("nuclei-cpu", "nuclei-gpu")),
                                             ("bench_camvid", ("street-cpu", "street-gpu"))])
def test_the_benchmarks_measure_the_package_recipes(script, recipes, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(script, REPO / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, script, module)
    spec.loader.exec_module(module)
    assert [module.RECIPES["cpu"], module.RECIPES["gpu"]] == [RECIPES[r] for r in recipes]
