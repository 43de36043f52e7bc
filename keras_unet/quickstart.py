"""The main job: LabelMe sample -> masks -> trained U-Net -> scores -> TFLite.

`keras-unet` with no arguments runs it on the bundled sample
(`datasets/nuclei`, DSB2018 nuclei as LabelMe polygons): it converts the
annotations (with instance masks), fine-tunes the bundled nucleus model
(`keras_unet.models.pretrained`, pre-trained on DSB2018 images that are not in the
sample) on the sample's training images, compares the result on the
held-out images with two Otsu baselines, on pixels (foreground Dice) and on
objects (mean AP over IoU 0.5:0.95, the DSB2018 score), per imaging
modality, and exports verified TFLite models. The model compared and
exported is the last one of the training: picking an epoch by its score on
the held-out images would flatter it.

A rerun reports the results it has; `force=True` redoes the training and
the export.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from keras_unet import files
from keras_unet.data.convert import labelme_to_masks
from keras_unet.data.labels import BACKGROUND_LABEL, read_labels
from keras_unet.data.pairs import DatasetError
from keras_unet.evaluation.baselines import format_comparison, score_methods
from keras_unet.export.run import export_run
from keras_unet.inference.predict import find_labels, load_predictor
from keras_unet.models import pretrained
from keras_unet.training.recipes import STAIN_AUGMENTATION
from keras_unet.training.runs import RunFolder
from keras_unet.training.train import TrainConfig, load_training_data, train

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATASET = REPO_ROOT / "datasets" / "nuclei"

# The recipe for a 2-core CPU, chosen by measurement (see
# docs/benchmarks/main-job.md): from scratch, 54 images and 6 minutes only tie the Otsu
# baselines; fine-tuning the bundled nucleus model beats them. A gentle
# learning rate (1e-4) keeps what it learned on fluorescence (with 1e-3 the
# mean AP fell from 0.38 to 0.35) while it adapts to the sample's stains.
SAMPLE_TRAINING = dict(
    target="instances",
    init_from="nuclei_dsb2018",
    channels=3,
    crop_size=128,
    batch_size=8,
    epochs=10,
    steps_per_epoch=25,
    lr=1e-4,
    model={"filters": 16, "depth": 4, "normalization": "batch",
           "input_normalization": "per_image_percentile"},
    augment=dict(STAIN_AUGMENTATION),
    early_stopping=0,
)
SAMPLE_EXPORT = dict(precisions=("float32", "int8"), input_size=(256, 256),
                     calibration_samples=32, verification_samples=14, latency_runs=10)
METHOD_NAMES = {"unet": "U-Net", "otsu": "Otsu", "otsu_watershed": "Otsu + watershed"}


def read_groups(dataset_dir: Path) -> dict[str, str] | None:
    """`name -> modality` from the dataset's `modalities.csv`, if it has one.

    Args:
        dataset_dir: The LabelMe folder.

    Returns:
        The modality of each image named, or `None` without the file.

    Raises:
        keras_unet.data.pairs.DatasetError: If the file is not a UTF-8 CSV with
            `name` and `modality` columns.
    """
    path = dataset_dir / "modalities.csv"
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {row["name"]: row["modality"] for row in csv.DictReader(f)}
    except (UnicodeDecodeError, csv.Error, KeyError) as err:
        raise DatasetError(f"{path}: must be a UTF-8 CSV with `name` and `modality` columns "
                           f"({type(err).__name__}: {err})") from None


def check_classes(data_dir: Path) -> None:
    """Checks that a converted dataset has the bundled nucleus model's classes.

    The main job fine-tunes that model and compares it with baselines of one
    foreground class; a dataset of other classes is trained with `train`.

    Args:
        data_dir: The converted dataset (`labels.txt`).

    Raises:
        keras_unet.data.pairs.DatasetError: If its classes are not the
            model's, naming both and the commands that train on it.
    """
    model_names, _ = find_labels(pretrained.model_path(SAMPLE_TRAINING["init_from"]))
    names = read_labels(data_dir / "labels.txt")
    if names != model_names:
        def classes(of):
            return [n for n in of if n != BACKGROUND_LABEL]

        raise DatasetError(
            f"{data_dir}: the classes {classes(names)} are not the main job's "
            f"{classes(model_names)}: it "
            "fine-tunes the bundled nucleus model and compares it with Otsu baselines of "
            "one foreground class. The masks are converted; train on them with keras-unet "
            f"train --data {data_dir} --work-dir RUN (then keras-unet evaluate RUN and "
            "keras-unet export RUN EXPORT)")


def run_main_job(
    dataset_dir: str | None = None,
    work_dir: str = "runs/sample",
    epochs: int | None = None,
    force: bool = False,
) -> int:
    """Converts, trains, compares and exports; prints a recap.

    Args:
        dataset_dir: Folder of LabelMe JSON files (with `val.txt` and
            `modalities.csv`, optional); default the bundled sample.
        work_dir: Output folder (`data/` dataset, `run/` training run,
            `export/` TFLite models, `report.json`).
        epochs: Override of the sample's training epochs.
        force: Redo a main job that finished before (training and export).

    Returns:
        Exit code: 0, or 1 if some annotation files failed to convert.

    Raises:
        keras_unet.data.pairs.DatasetError: If `modalities.csv` cannot be used
            (see `read_groups`), or the dataset's classes are not the
            nucleus model's (see `check_classes`).
        keras_unet.export.ExportVerificationError: If an export disagrees
            with the Keras model.
    """
    start = time.perf_counter()
    work = Path(work_dir)
    dataset_dir = Path(dataset_dir) if dataset_dir else SAMPLE_DATASET
    report_path = work / "report.json"
    if report_path.is_file() and not force:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        print(f"{work}: the main job finished before; its results follow (--force redoes "
              "it).\n")
        print(recap(report))
        return 0

    groups = read_groups(dataset_dir)  # a bad file is named before anything trains
    print(f"[1/4] LabelMe -> masks: {dataset_dir} -> {work / 'data'}")
    summary = labelme_to_masks(dataset_dir, work / "data", instances=True, progress=True)
    print(summary.format())
    check_classes(work / "data")

    print("\n[2/4] fine-tuning the bundled nucleus U-Net (nuclei_dsb2018; one line per epoch)")
    val_list = dataset_dir / "val.txt"
    settings = dict(SAMPLE_TRAINING, epochs=epochs or SAMPLE_TRAINING["epochs"])
    config = TrainConfig(
        data=str(work / "data"),
        val_list=str(val_list) if val_list.is_file() else None,
        work_dir=str(work / "run"),
        verbose=1 if sys.stdout.isatty() else 2,
        **settings,
    )
    result = train(config, force=force)

    print(f"\n[3/4] the U-Net against Otsu baselines on the {dataset_dir.name} validation images")
    _, val_set = load_training_data(config)
    model_path = RunFolder(result.run_dir).last
    predictor = load_predictor(model_path)
    comparison = score_methods(val_set, {"unet": predictor}, groups, progress=True)
    print(format_comparison(comparison))

    print(f"\n[4/4] TFLite export, verified against Keras -> {work / 'export'}")
    reports = export_run(model_path, work / "export", **SAMPLE_EXPORT)
    for report in reports:
        print(report.format())
    record = {
        "dataset": str(dataset_dir),
        "validation_images": len(val_set.images),
        "comparison": comparison,
        "exports": {r.precision: {"path": r.path, "bytes": r.size_bytes,
                                  "mask_agreement": r.agreement.mask_agreement,
                                  "latency_ms": r.latency_ms} for r in reports},
        "files": {"model": str(model_path),
                  "curves": str(result.run_dir / "curves.png"),
                  "report": str(report_path)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    files.write_text(report_path, json.dumps(record, indent=2) + "\n")
    print()
    print(recap(record))
    return 1 if summary.errors else 0


def recap(report: dict) -> str:
    """The closing block of the main job: scores against the baselines,
    exports, and where the files are."""
    lines = ["== recap " + "=" * 62]
    comparison = report["comparison"]
    groups = list(comparison["unet"])
    lines.append(f"{'':18}" + "".join(f"{g:>22}" for g in groups))
    lines.append(f"{'':18}" + "".join(f"{'fg Dice':>11}{'mean AP':>11}" for _ in groups))
    for method in ("unet", "otsu", "otsu_watershed"):
        row = comparison[method]
        lines.append(f"{METHOD_NAMES[method]:<18}" + "".join(
            f"{row[g]['foreground_dice']:>11.3f}{row[g]['mean_ap']:>11.3f}" for g in groups))
    unet = comparison["unet"]["all"]
    best = max(("otsu", "otsu_watershed"), key=lambda m: comparison[m]["all"]["mean_ap"])
    lines.append(
        f"U-Net vs the better baseline ({METHOD_NAMES[best]}), all "
        f"{unet['images']} validation images: Dice "
        f"{unet['foreground_dice'] - comparison[best]['all']['foreground_dice']:+.3f}, "
        f"mean AP {unet['mean_ap'] - comparison[best]['all']['mean_ap']:+.3f}")
    for precision, e in report["exports"].items():
        lines.append(f"export {precision:<8} {e['bytes'] / 1e6:5.2f} MB, "
                     f"{e['mask_agreement']:.2%} of pixels agree with Keras -> {e['path']}")
    for name, path in report["files"].items():
        lines.append(f"{name:<7} {path}")
    lines.append(f"took {report['seconds'] / 60:.1f} min")
    return "\n".join(lines)
