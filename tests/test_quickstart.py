"""Tests for keras_unet.quickstart: the main job's rerun and recap."""

import json

import pytest

from keras_unet.data.pairs import DatasetError
from keras_unet.quickstart import recap, run_main_job


def row(dice, ap):
    return {"images": 14, "foreground_dice": dice, "mean_ap": ap, "f1": 0.5, "missed": 1,
            "split": 0, "merged": 2}


REPORT = {
    "dataset": "datasets/nuclei", "validation_images": 14,
    "comparison": {
        "otsu": {"all": row(0.90, 0.40), "fluorescence": row(0.92, 0.42)},
        "otsu_watershed": {"all": row(0.90, 0.35), "fluorescence": row(0.92, 0.37)},
        "unet": {"all": row(0.93, 0.55), "fluorescence": row(0.94, 0.57)},
    },
    "exports": {"int8": {"path": "export/model_int8.tflite", "bytes": 530000,
                         "mask_agreement": 0.998, "latency_ms": {}}},
    "files": {"model": "run/checkpoints/best.keras"},
    "seconds": 540.0,
}


def test_a_finished_main_job_reports_its_results_and_trains_nothing(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    assert run_main_job(work_dir=str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "finished before" in out and "--force" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"image,kind\na,fluo\n"])
def test_a_bad_modalities_file_is_named_before_anything_runs(tmp_path, content):
    dataset = tmp_path / "labelme"
    dataset.mkdir()
    (dataset / "modalities.csv").write_bytes(content)
    with pytest.raises(DatasetError, match="modalities.csv: must be a UTF-8 CSV with `name`"):
        run_main_job(str(dataset), work_dir=str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_a_dataset_of_other_classes_is_told_how_to_train_before_anything_trains(tmp_path):
    """The main job fine-tunes the nucleus model; a LabelMe folder of cats is
    converted, then sent to `train` with the converted folder's path."""
    import PIL.Image

    dataset = tmp_path / "labelme"
    dataset.mkdir()
    PIL.Image.new("RGB", (32, 32)).save(dataset / "a.png")
    (dataset / "a.json").write_text(json.dumps({
        "version": "5.5.0", "flags": {}, "imagePath": "a.png", "imageData": None,
        "imageHeight": 32, "imageWidth": 32,
        "shapes": [{"label": "cat", "points": [[2, 2], [20, 2], [20, 20]],
                    "shape_type": "polygon", "group_id": None, "flags": {}}]}))
    work = tmp_path / "work"
    with pytest.raises(DatasetError, match=r"the classes \['cat'\] are not the main job's "
                                           r"\['nucleus'\]: .* keras-unet train --data "):
        run_main_job(str(dataset), work_dir=str(work))
    assert (work / "data" / "masks" / "a.png").is_file() and not (work / "run").exists()


def test_the_recap_compares_the_unet_with_the_better_baseline():
    text = recap(REPORT)
    assert "U-Net vs the better baseline (Otsu)" in text
    assert "Dice +0.030, mean AP +0.150" in text
    assert "fluorescence" in text and "export int8" in text and "99.80%" in text
    assert "took 9.0 min" in text


def test_the_main_job_fine_tunes_the_bundled_model_and_exports_what_it_scored(tmp_path, capsys):
    """One epoch of the whole path: conversion, fine-tuning, comparison, export."""
    assert run_main_job(work_dir=str(tmp_path), epochs=1) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["init_from"] == "nuclei_dsb2018" and config["epochs"] == 1
    assert report["files"]["model"] == str(tmp_path / "run" / "checkpoints" / "last.keras")
    comparison = report["comparison"]
    assert set(comparison["unet"]) == {"all", "fluorescence", "color_brightfield"}
    assert comparison["unet"]["all"]["images"] == report["validation_images"] == 29
    # Started from the bundled model, one epoch keeps it above the Otsu threshold.
    assert comparison["unet"]["all"]["foreground_dice"] > comparison["otsu"]["all"][
        "foreground_dice"]
    assert set(report["exports"]) == {"float32", "int8"}
    assert report["exports"]["int8"]["mask_agreement"] >= 0.99
    out = capsys.readouterr().out
    assert "fine-tuning the bundled nucleus U-Net" in out and "== recap" in out
