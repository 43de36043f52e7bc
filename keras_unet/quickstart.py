"""The main job: LabelMe sample -> masks -> trained U-Net -> scores.

`keras-unet` with no arguments runs it on the bundled sample
(`datasets/nuclei`, DSB2018 nuclei as LabelMe polygons). It converts the
annotations, trains a small U-Net sized for a 2-core CPU, and compares its
validation Dice with a plain Otsu threshold on the same images.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image

from keras_unet import files
from keras_unet.convert import labelme_to_masks
from keras_unet.evaluate import confusion, otsu_threshold, per_class_scores

log = logging.getLogger(__name__)

# Small enough to train in about five minutes on 2 CPU cores.
SAMPLE_TRAINING = dict(
    channels=3,
    crop_size=128,
    batch_size=8,
    epochs=24,
    steps_per_epoch=25,
    lr=3e-3,
    model={"filters": 8, "depth": 4, "normalization": "batch"},
    early_stopping=0,
)
SAMPLE_EXPORT = dict(precisions=("float32", "int8"), input_size=(256, 256),
                     calibration_samples=32, verification_samples=14, latency_runs=10)


def otsu_baseline(dataset, minority: bool = False) -> dict:
    """Scores of a per-image Otsu threshold on the validation images.

    Args:
        dataset: `keras_unet.dataset.Dataset` of binary masks.
        minority: False: the plain threshold, foreground = brighter than the
            threshold. True: foreground = the smaller side of the threshold,
            which also gets dark nuclei on bright stains right (a stronger
            baseline than the plain one).

    Returns:
        `per_class_scores` of the pooled confusion matrix.
    """
    from keras_unet.dataset import read_mask

    matrix = np.zeros((2, 2), np.int64)
    for image_path, mask_path in zip(dataset.images, dataset.masks):
        grey = np.asarray(PIL.Image.open(image_path).convert("L"), np.float64)
        upper = grey > otsu_threshold(grey)
        predicted = ~upper if minority and upper.mean() > 0.5 else upper
        truth = read_mask(mask_path, dataset.foreground_value)
        matrix += confusion(truth, predicted.astype(np.uint8), 2)
    return per_class_scores(matrix, dataset.names)


def run_main_job(
    dataset_dir: str, work_dir: str = "runs/sample", epochs: int | None = None
) -> int:
    """Converts, trains, evaluates and exports; prints what it measured.

    Args:
        dataset_dir: Folder of LabelMe JSON files (and `val.txt`, optional).
        work_dir: Output folder (`data/` dataset, `run/` training run,
            `export/` TFLite models, `report.json`).
        epochs: Override of the sample's training epochs.

    Returns:
        Exit code: 0, or 1 if some annotation files failed to convert.

    Raises:
        keras_unet.export.ExportVerificationError: If an export disagrees
            with the Keras model.
    """
    from keras_unet.export import export_run
    from keras_unet.train import TrainConfig, load_training_data, train

    start = time.perf_counter()
    work, dataset_dir = Path(work_dir), Path(dataset_dir)
    print(f"[1/4] LabelMe -> masks: {dataset_dir} -> {work / 'data'}")
    summary = labelme_to_masks(dataset_dir, work / "data", instances=True, progress=True)
    print(summary.format())

    print("[2/4] training a U-Net (Keras progress below)")
    val_list = dataset_dir / "val.txt"
    settings = dict(SAMPLE_TRAINING, epochs=epochs or SAMPLE_TRAINING["epochs"])
    config = TrainConfig(
        data=str(work / "data"),
        val_list=str(val_list) if val_list.is_file() else None,
        work_dir=str(work / "run"),
        verbose=1 if sys.stdout.isatty() else 2,
        **settings,
    )
    result = train(config)

    print("[3/4] validation")
    from keras_unet.evaluate import format_scores

    print(format_scores(result.scores))
    _, val_set, _ = load_training_data(config)
    foreground = val_set.names[1]
    dice = {
        "unet": result.scores["classes"][foreground]["dice"],
        "otsu": otsu_baseline(val_set)["classes"][foreground]["dice"],
        "otsu_minority": otsu_baseline(val_set, minority=True)["classes"][foreground]["dice"],
    }
    print(
        f"foreground Dice on {len(val_set.images)} validation images: U-Net "
        f"{dice['unet']:.3f} | plain Otsu threshold {dice['otsu']:.3f} | Otsu with the "
        f"minority side as foreground {dice['otsu_minority']:.3f}"
    )

    print(f"[4/4] TFLite export, verified against Keras -> {work / 'export'}")
    reports = export_run(result.run_dir, work / "export", **SAMPLE_EXPORT)
    for report in reports:
        print(report.format())
    record = {
        "validation_images": len(val_set.images),
        "foreground_dice": dice,
        "exports": {r.precision: {"bytes": r.size_bytes, "mask_agreement":
                                  r.agreement.mask_agreement, "latency_ms": r.latency_ms}
                    for r in reports},
        "seconds": round(time.perf_counter() - start, 1),
    }
    files.write_text(work / "report.json", json.dumps(record, indent=2) + "\n")
    print(f"run folder: {result.run_dir} (curves.png, checkpoints/best.keras); "
          f"total {record['seconds']} s")
    return 1 if summary.errors else 0
