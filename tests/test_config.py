"""Tests for keras_unet.training.config: config files and the checks of their values."""

import pytest

from keras_unet.training.config import ConfigError, TrainConfig


def test_an_infinite_time_budget_is_refused_by_the_config_check(tmp_path):
    (tmp_path / "c.yaml").write_text("data: d\ntime_budget: .inf\n")
    config = TrainConfig.from_file(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"time_budget \(--time-budget\) must be a positive, "
                                          r"finite number of minutes, got inf"):
        config.validate()


def test_an_absurd_boundary_width_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="boundary_width .* at most 16 pixels"):
        TrainConfig(data="d", boundary_width=1000).validate()
    TrainConfig(data="d", boundary_width=16).validate()


def test_an_augmentation_range_that_is_not_a_pair_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("data: d\naugment: {stain: 0.2}\n")
    with pytest.raises(ConfigError, match=r"augment: stain must be a pair of numbers .* "
                                          r"not 0.2"):
        TrainConfig.from_file(tmp_path / "c.yaml").validate()
    TrainConfig(data="d", augment={"stain": [0.2, 0.01], "gamma": None}).validate()


def test_an_oversampling_list_saved_by_excel_reads_and_huge_counts_are_refused(tmp_path):
    csv = tmp_path / "times.csv"
    csv.write_bytes("\ufeffname,times\na,3\n".encode("utf-8"))  # Excel's byte-order mark
    assert TrainConfig(data="d", oversample=str(csv)).repeats(["a", "b"]) == [3, 1]
    csv.write_text("images/b.jpg,2\n")  # an image's path names its pair too
    assert TrainConfig(data="d", oversample=str(csv)).repeats(["a", "b"]) == [1, 2]
    csv.write_text("name,times\na,1000000000\n")
    with pytest.raises(ConfigError, match="line 1: 1000000000 times is more than 1000"):
        TrainConfig(data="d", oversample=str(csv)).repeats(["a"])


def test_every_relative_path_of_a_config_file_starts_at_the_file(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "c.yaml").write_text("data: data\nwork_dir: runs/x\n")
    monkeypatch.chdir(tmp_path)
    config = TrainConfig.from_file("project/c.yaml")
    assert config.data == str(tmp_path / "project" / "data")
    assert config.work_dir == str(tmp_path / "project" / "runs" / "x")


@pytest.mark.parametrize("model, message", [
    ({"input_normalization": "percentile"}, "input_normalization='percentile' is not supported"),
    ({"filters": 0}, "filters=0 must be an integer >= 1"),
    ({"backbone": "resnet9000"}, "backbone='resnet9000' is not supported"),
])
def test_a_bad_model_value_is_refused_before_any_data_is_read(tmp_path, model, message):
    # The data folder does not exist: the check must not get that far.
    config = TrainConfig(data=str(tmp_path / "absent"), work_dir=str(tmp_path), model=model)
    with pytest.raises(ConfigError, match=rf"model: {message}"):
        config.validate()
