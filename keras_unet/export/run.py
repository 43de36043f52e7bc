"""Exporting a training run: every precision asked for, one report.

Calibration images come from the run's training split, verification images
from its validation split (held out), both preprocessed as in training.
A precision that fails its verification is refused (no file written) while
the others are still exported; `export_report.json` lists what was written
and what was refused, and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from keras_unet import files
from keras_unet.data.readers import read_image
from keras_unet.export.errors import ExportError, ExportVerificationError
from keras_unet.export.formats import OTHER_FORMATS, export_other
from keras_unet.export.report import ExportReport
from keras_unet.export.tflite import PRECISIONS, export_tflite
from keras_unet.export.verify import DEFAULT_AGREEMENT, check_min_agreement
from keras_unet.inference.predict import (
    InferenceError,
    load_keras_model,
    model_config,
    model_file,
    pad_image,
    trained_flips,
)
from keras_unet.inference.scale import rescale_rule
from keras_unet.training.runs import RunFolder
from keras_unet.training.train import TrainConfig, load_training_data

FORMAT_FILES = {"saved_model": "saved_model", "onnx": "model.onnx"}


def image_windows(
    paths: list[str], size: tuple[int, int], channels: int, *, limit: int,
    random_crops: bool = False, seed: int = 0,
) -> np.ndarray:
    """Windows of the export size from image files, preprocessed as in training.

    Args:
        paths: Image files.
        size: `(height, width)` of the windows.
        channels: Model input channels.
        limit: Number of windows (cycling over the images).
        random_crops: Random windows (calibration) instead of centred ones.
        seed: Seed of the random windows.

    Returns:
        float32 `(limit, H, W, C)` in [0, 1]; images smaller than the window
        are padded by reflection.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    windows = []
    for i in range(limit):
        image = pad_image(read_image(paths[i % len(paths)], channels), height, width)
        spare_h, spare_w = image.shape[0] - height, image.shape[1] - width
        if random_crops:
            top, left = rng.integers(0, spare_h + 1), rng.integers(0, spare_w + 1)
        else:
            top, left = spare_h // 2, spare_w // 2
        windows.append(image[top:top + height, left:left + width])
    return np.stack(windows)


def export_run(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    precisions: Iterable[str] = ("float32", "float16", "int8"),
    formats: Iterable[str] = (),
    input_size: tuple[int, int] | None = (256, 256),
    dynamic: bool = False,
    data: str | os.PathLike | None = None,
    calibration_samples: int = 64,
    verification_samples: int = 16,
    io_type: str = "float32",
    min_agreement: float | None = None,
    num_threads: int | None = None,
    latency_runs: int = 20,
    about: dict | None = None,
) -> list[ExportReport]:
    """Exports a training run (or a `.keras` file) at several precisions.

    Args:
        source: A run folder (from `train`; its `best.keras`), one of its
            checkpoints (e.g. `run/checkpoints/last.keras`), a `.keras`
            file, or the name of a bundled model (with `data`).
        output_dir: Folder for `model_<precision>.tflite` files and sidecars.
        precisions: Which TFLite precisions.
        formats: Other formats too: `"saved_model"`, `"onnx"`.
        input_size: Fixed `(height, width)` of the exported models.
        dynamic: Keep height/width dynamic instead (models that allow it).
        data: Dataset folder; default: the run's. Required for a `.keras`
            file outside a run folder.
        calibration_samples: Calibration windows for int8 (at least 1).
        verification_samples: Held-out windows for the verification (at
            least 1).
        io_type: Input/output type of int8 models.
        min_agreement: Override of the per-precision agreement thresholds,
            a fraction in [0, 1].
        num_threads: LiteRT threads.
        latency_runs: Timed runs per latency median.
        about: Model `name`, `description`, `version`, `author` and
            `license` for the metadata of every file.

    Returns:
        One `ExportReport` per exported file.

    Raises:
        ExportError: On bad arguments or a source that is not a run or a
            model; after the loop, if a precision could not be converted.
        ExportVerificationError: After the loop, if an export disagreed
            with Keras (the others are written, and the report says which).
    """
    precisions, formats = list(precisions), list(formats)
    _check_arguments(precisions, formats, input_size, calibration_samples,
                     verification_samples, min_agreement)
    model, config, model_path = _load_source(source, data)
    trained = model_config(model_path)
    recorded = {"test_time_flips": list(trained_flips(trained))}
    object_size = trained.get("object_size")
    if object_size is not None:
        recorded["object_size"] = {**object_size, "rescale": rescale_rule()}
    if config.ignore_index is not None:
        recorded["ignore_index"] = config.ignore_index
    train_set, val_set = load_training_data(config)
    channels = model.input_shape[-1]
    size = None if dynamic else input_size
    window = size or (config.crop_size, config.crop_size)
    verification = image_windows(val_set.images, window, channels, limit=verification_samples)
    calibration = image_windows(train_set.images, window, channels,
                                limit=calibration_samples, random_crops=True, seed=1)
    output_dir = Path(output_dir)
    reports, refused = [], []
    jobs = [("tflite", p) for p in precisions] + [("format", f) for f in formats]
    for kind, name in jobs:
        try:
            if kind == "tflite":
                reports.append(export_tflite(
                    model, output_dir / f"model_{name}.tflite", names=train_set.names,
                    verification_images=verification, precision=name, input_size=size,
                    representative=(x[None] for x in calibration), io_type=io_type,
                    min_agreement=min_agreement, num_threads=num_threads,
                    latency_runs=latency_runs, about=about, recorded=recorded,
                ))
            else:
                reports.append(export_other(
                    model, output_dir / FORMAT_FILES[name], name,
                    verification_images=verification, input_size=size,
                    min_agreement=DEFAULT_AGREEMENT["float32"]
                    if min_agreement is None else min_agreement,
                    names=train_set.names, about=about, recorded=recorded,
                ))
        except (ExportError, ExportVerificationError) as err:
            refused.append((name, err))
    files.write_text(output_dir / "export_report.json", json.dumps({
        "written": [asdict(r) for r in reports],
        "refused": [{"precision": name, "error": type(err).__name__, "reason": str(err)}
                    for name, err in refused],
    }, indent=2) + "\n")
    if refused:
        done = ", ".join(r.precision for r in reports) or "nothing"
        message = "; ".join(str(err) for _, err in refused)
        kind = ExportVerificationError if all(
            isinstance(err, ExportVerificationError) for _, err in refused) else ExportError
        raise kind(f"{message} (written: {done}; see {output_dir / 'export_report.json'})")
    return reports


def _check_arguments(precisions, formats, input_size, calibration, verification,
                     min_agreement) -> None:
    """Refuses bad export arguments, naming the flag."""
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ExportError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    for fmt in formats:
        if fmt not in OTHER_FORMATS:
            raise ExportError(f"--format {fmt}: expected one of {', '.join(OTHER_FORMATS)}")
    if input_size is not None and not all(isinstance(s, int) and s > 0 for s in input_size):
        raise ExportError(f"--input-size {input_size}: sizes must be positive integers")
    for flag, value in (("--calibration-samples", calibration),
                        ("--verification-samples", verification)):
        if not isinstance(value, int) or value < 1:
            raise ExportError(f"{flag} {value}: must be at least 1")
    try:
        check_min_agreement(min_agreement)
    except ValueError as err:
        raise ExportError(str(err)) from None


def _load_source(source: str | os.PathLike, data):
    """`(model, TrainConfig, model file)` of a run folder (its best model) or
    a `.keras` file (a run's checkpoint comes with the run's config)."""
    try:
        model_path = model_file(source)
        if model_path.suffix != ".keras":
            raise ExportError(f"{source}: expected a run folder or a .keras file")
        model = load_keras_model(model_path)
    except InferenceError as err:
        raise ExportError(str(err)) from None
    run = RunFolder(model_path.parent.parent)  # a checkpoint: run/checkpoints/x.keras
    inside = model_path.parent == run.checkpoints and run.config.is_file()
    config = TrainConfig.from_file(run.config) if inside else None
    if config is None:
        if data is None:
            raise ExportError("a .keras model outside a run folder (a bundled one too) needs "
                              "--data: a dataset folder to calibrate and verify the export on")
        config = TrainConfig(data=str(data), channels=model.input_shape[-1])
    elif data is not None:
        config = dataclasses.replace(config, data=str(data), images_dir=None, masks_dir=None)
    return model, config, model_path
