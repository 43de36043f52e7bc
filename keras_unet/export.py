"""Export to TFLite (LiteRT), verified against the Keras model.

Precisions:

| precision | weights | activations | input/output |
|---|---|---|---|
| float32 | float32 | float32 | float32 |
| float16 | float16 | float32 | float32 |
| dynamic_int8 | int8 | float32 (int8 on the fly) | float32 |
| int8 | int8 | int8, calibrated | float32, int8 or uint8 (`io_type`) |

The export uses `tf.lite.TFLiteConverter.from_keras_model` on a copy of the
model with a fixed batch of 1 and (by default) a fixed height and width,
which is what mobile GPU/NPU delegates want; built-in ops only, so an
unsupported op fails the export instead of becoming a Flex op that LiteRT
cannot run.

Every export is verified before it counts as done: the `.tflite` file runs in
LiteRT's interpreter beside the Keras model on held-out images, and the
export fails (`ExportVerificationError`) if their masks agree less than the
threshold of the precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from keras_unet import files
from keras_unet.labels import labels_text

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")
# Minimum mask agreement (fraction of pixels with the same class) per precision.
DEFAULT_AGREEMENT = {"float32": 0.999, "float16": 0.999, "dynamic_int8": 0.99, "int8": 0.99}
IO_TYPES = ("float32", "int8", "uint8")


class ExportError(ValueError):
    """An export that cannot be made (bad option, unsupported op...)."""


class ExportVerificationError(RuntimeError):
    """The exported model disagrees with the Keras model beyond the threshold."""


@dataclass
class Agreement:
    """How closely an exported model reproduces the Keras model.

    Attributes:
        images: Number of verification images.
        max_abs_diff: Largest difference of the output probabilities.
        mask_agreement: Fraction of pixels with the same predicted class.
        mask_iou: Mean over classes of the IoU between the two masks.
    """

    images: int
    max_abs_diff: float
    mask_agreement: float
    mask_iou: float


@dataclass
class ExportReport:
    """What an export produced and measured.

    Attributes:
        path: The `.tflite` file.
        precision: One of `PRECISIONS`.
        size_bytes: File size.
        ops: Operator names in the graph.
        agreement: Verification against the Keras model.
        latency_ms: Median single-image latency, `{"keras": .., "tflite": ..}`.
        sidecar: The JSON sidecar path.
    """

    path: str
    precision: str
    size_bytes: int
    ops: list[str]
    agreement: Agreement
    latency_ms: dict = field(default_factory=dict)
    sidecar: str = ""

    def format(self) -> str:
        """One human-readable line."""
        a = self.agreement
        latency = ", ".join(f"{k} {v:.1f} ms" for k, v in self.latency_ms.items())
        return (
            f"{self.precision:<12} {self.size_bytes / 1e6:7.2f} MB  mask agreement "
            f"{a.mask_agreement:.4%}  mask IoU {a.mask_iou:.4f}  max|diff| "
            f"{a.max_abs_diff:.2e}  {latency}  -> {self.path}"
        )


def fixed_size_model(model, input_size: tuple[int, int] | None):
    """A copy of `model` with batch 1 and, if given, a fixed height/width.

    Args:
        model: A Keras model.
        input_size: `(height, width)`, or `None` to keep them dynamic.

    Returns:
        A new `keras.Model` sharing the weights.

    Raises:
        ExportError: If the size is not a multiple the model can take.
    """
    import keras

    from keras_unet.inference import model_multiple

    channels = model.input_shape[-1]
    if input_size is None:
        height, width = model.input_shape[1:3]
    else:
        height, width = input_size
        multiple = model_multiple(model)
        if height % multiple or width % multiple:
            raise ExportError(
                f"input size {height}x{width} must be a multiple of {multiple} (2**depth)"
            )
    inputs = keras.Input((height, width, channels), batch_size=1, name="image")
    return keras.Model(inputs, model(inputs), name=f"{model.name}_export")


def convert(
    model,
    precision: str = "float32",
    *,
    representative: Iterable[np.ndarray] | None = None,
    io_type: str = "float32",
) -> bytes:
    """Converts a (batch-1) Keras model to a TFLite flatbuffer.

    Args:
        model: Keras model, e.g. from `fixed_size_model`.
        precision: One of `PRECISIONS`.
        representative: Calibration images, float32 `(1, H, W, C)` in
            [0, 1] (required for `"int8"`).
        io_type: Input/output type of `"int8"` models.

    Returns:
        The `.tflite` bytes.

    Raises:
        ExportError: On an unknown option, missing calibration data or a
            conversion failure.
    """
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ExportError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if io_type not in IO_TYPES:
        raise ExportError(f"io_type={io_type!r}: expected one of {', '.join(IO_TYPES)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        if representative is None:
            raise ExportError("int8 export needs representative images for calibration")
        samples = [np.asarray(x, np.float32) for x in representative]
        if not samples:
            raise ExportError("int8 export got no representative images")
        converter.representative_dataset = lambda: ([x] for x in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
    printed = io.StringIO()
    try:
        # The converter prints the whole intermediate SavedModel signature.
        with contextlib.redirect_stdout(printed):
            return converter.convert()
    except Exception as err:  # the converter raises many types
        raise ExportError(f"TFLite conversion failed: {err}") from None
    finally:
        log.debug("converter output:\n%s", printed.getvalue())


def op_names(tflite_path: str | os.PathLike) -> list[str]:
    """Sorted distinct operator names of a `.tflite` model (custom ops as CUSTOM:name)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    names = set()
    for index, code in enumerate(model.operatorCodes):
        name = flatbuffer_utils.opcode_to_name(model, index)
        if name == "CUSTOM" or name is None:
            custom = code.customCode
            name = f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}"
        names.add(name)
    return sorted(names)


def compare(keras_outputs: np.ndarray, tflite_outputs: np.ndarray) -> Agreement:
    """Agreement of two batches of model outputs `(N, H, W, K)`.

    Args:
        keras_outputs: Reference probabilities.
        tflite_outputs: Exported model probabilities.

    Returns:
        An `Agreement`.
    """
    from keras_unet.evaluate import confusion, per_class_scores, predicted_classes

    a = predicted_classes(keras_outputs)
    b = predicted_classes(tflite_outputs)
    classes = max(2, keras_outputs.shape[-1])
    matrix = confusion(a, b, classes)
    ious = [s["iou"] for s in per_class_scores(matrix, [str(i) for i in range(classes)])[
        "classes"].values() if s["iou"] is not None]
    return Agreement(
        images=len(a),
        max_abs_diff=float(np.abs(keras_outputs - tflite_outputs).max()),
        mask_agreement=float((a == b).mean()),
        mask_iou=float(np.mean(ious)),
    )


def median_latency_ms(fn, sample: np.ndarray, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of `fn(sample)` in milliseconds."""
    for _ in range(warmup):
        fn(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(sample)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def sidecar(
    model, output_kind: str, names: list[str], precision: str, tflite_path: Path, io: dict
) -> dict:
    """What a mobile app needs to run the exported model.

    Args:
        model: The exported Keras model (batch 1, export size).
        output_kind: `"sigmoid"`, `"softmax"` or `"logits"`.
        names: Class names by id.
        precision: Export precision.
        tflite_path: The `.tflite` file.
        io: Input/output details from the LiteRT interpreter.

    Returns:
        The sidecar dictionary (written as JSON beside the model).
    """
    _, height, width, channels = model.input_shape
    outputs = model.output_shape[-1]
    return {
        "model": tflite_path.name,
        "format": "tflite",
        "precision": precision,
        "input": {
            "shape": [1, height, width, channels],
            "layout": "NHWC",
            "color": "grayscale" if channels == 1 else "RGB",
            "dtype": io["input"]["dtype"],
            "normalization": {
                "description": "x = pixel / 255 (8-bit images); no mean/std",
                "scale": 1 / 255, "mean": 0.0, "std": 1.0,
            },
            "quantization": io["input"]["quantization"],
        },
        "output": {
            "shape": [1, height, width, outputs],
            "dtype": io["output"]["dtype"],
            "kind": output_kind,
            "threshold": 0.5 if outputs == 1 else None,
            "quantization": io["output"]["quantization"],
            "mask": "argmax over channels" if outputs > 1 else "probability > threshold",
        },
        "labels": names,
        "ignore_id": 255,
        "labels_file": "labels.txt",
    }


def output_kind(model) -> str:
    """`"sigmoid"`, `"softmax"` or `"logits"`, from a keras-unet model's head."""
    try:
        activation = model.get_layer("head_act").get_config()["activation"]
    except ValueError:  # not built by build_unet
        return "logits"
    return activation if activation in ("sigmoid", "softmax") else "logits"


def _io_details(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    details = {}
    for key, (d,) in (("input", interpreter.get_input_details()),
                      ("output", interpreter.get_output_details())):
        scale, zero = d["quantization"]
        details[key] = {
            "dtype": np.dtype(d["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None,
        }
    return details


def export_tflite(
    model,
    output: str | os.PathLike,
    *,
    names: list[str],
    verification_images: np.ndarray,
    precision: str = "float32",
    input_size: tuple[int, int] | None = None,
    representative: Iterable[np.ndarray] | None = None,
    io_type: str = "float32",
    min_agreement: float | None = None,
    num_threads: int | None = None,
    latency_runs: int = 20,
) -> ExportReport:
    """Exports a Keras model to `.tflite`, verifies it and writes its sidecar.

    Args:
        model: A Keras segmentation model (input in [0, 1]).
        output: The `.tflite` path; `labels.txt` and `<name>.json` are
            written beside it.
        names: Class names by id.
        verification_images: float32 `(N, H, W, C)` held-out images at the
            export size, in [0, 1].
        precision: One of `PRECISIONS`.
        input_size: Fixed `(height, width)`; `None` keeps the model's
            (dynamic if the model is dynamic).
        representative: Calibration images for `"int8"` (each `(1, H, W, C)`).
        io_type: Input/output type of `"int8"` models.
        min_agreement: Required mask agreement (default per precision).
        num_threads: LiteRT threads for verification and timing.
        latency_runs: Timed runs for the latency medians (0 skips timing).

    Returns:
        The `ExportReport`.

    Raises:
        ExportError: If the model cannot be converted.
        ExportVerificationError: If the `.tflite` model disagrees with Keras.
    """
    import tensorflow as tf

    from keras_unet.inference import load_predictor

    output = Path(output)
    export_model = fixed_size_model(model, input_size)
    flatbuffer = convert(export_model, precision, representative=representative, io_type=io_type)
    tmp = output.with_name(f".{output.stem}.unverified.tflite")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(flatbuffer)
    try:
        ops = op_names(tmp)
        flex = [op for op in ops if op.startswith("CUSTOM")]
        if flex:
            raise ExportError(f"{output}: the model needs ops LiteRT lacks: {flex}")
        predictor = load_predictor(tmp, num_threads)
        run_keras = tf.function(lambda x: export_model(x, training=False))
        images = np.asarray(verification_images, np.float32)
        keras_out = np.concatenate([np.asarray(run_keras(x[None])) for x in images])
        tflite_out = predictor(images)
        agreement = compare(keras_out, tflite_out)
        threshold = DEFAULT_AGREEMENT[precision] if min_agreement is None else min_agreement
        if agreement.mask_agreement < threshold:
            raise ExportVerificationError(
                f"{output}: the {precision} model agrees with Keras on only "
                f"{agreement.mask_agreement:.3%} of pixels of {len(images)} images "
                f"(required {threshold:.3%}; mask IoU {agreement.mask_iou:.4f}, "
                f"max |diff| {agreement.max_abs_diff:.3g}). Not written."
            )
        latency = {}
        if latency_runs:
            one = images[:1]
            latency = {
                "keras": median_latency_ms(lambda x: np.asarray(run_keras(x)), one, latency_runs),
                "tflite": median_latency_ms(predictor, one, latency_runs),
            }
        meta = sidecar(export_model, output_kind(model), names, precision, output,
                       _io_details(tmp))
        meta["verification"] = asdict(agreement)
        meta["ops"] = ops
        embed_metadata(tmp, meta)
        # The metadata must not change what the model computes.
        if not np.array_equal(load_predictor(tmp, num_threads)(images[:1]), tflite_out[:1]):
            raise ExportError(f"{output}: embedding the metadata changed the outputs")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    files.write_text(output.parent / "labels.txt", labels_text(names))
    sidecar_path = output.with_suffix(".json")
    files.write_text(sidecar_path, json.dumps(meta, indent=2) + "\n")
    report = ExportReport(str(output), precision, output.stat().st_size, ops, agreement,
                          latency, str(sidecar_path))
    log.info("%s", report.format())
    return report


METADATA_NAME = "keras_unet"


def embed_metadata(tflite_path: str | os.PathLike, meta: dict) -> None:
    """Stores `meta` as JSON in the `.tflite` file's metadata, in place.

    A custom metadata entry named `"keras_unet"` (TFLite's `Model.metadata`
    list), written with LiteRT's own flatbuffer tools: `tflite-support`,
    the usual metadata library, cannot be installed beside TensorFlow 2.21.
    An existing entry of that name is replaced.

    Args:
        tflite_path: The model file.
        meta: JSON-serializable dictionary (the sidecar content).
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    model.metadata = [*kept, entry]
    flatbuffer_utils.write_model(model, str(tflite_path))


def read_metadata(tflite_path: str | os.PathLike) -> dict | None:
    """The keras-unet metadata embedded in a `.tflite` file, or `None`."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    for entry in model.metadata or []:
        if _name(entry.name) == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    return None


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


OTHER_FORMATS = ("saved_model", "onnx")


def export_other(
    model,
    output: str | os.PathLike,
    fmt: str,
    *,
    verification_images: np.ndarray,
    input_size: tuple[int, int] | None = None,
    min_agreement: float = 0.999,
) -> ExportReport:
    """Exports a SavedModel (TF Serving) or ONNX model, verified like TFLite.

    Uses Keras 3's exporters (`model.export`); the SavedModel is run with
    `tf.saved_model.load`, the ONNX file with onnxruntime (extra `onnx`).

    Args:
        model: A Keras segmentation model.
        output: A folder (`saved_model`) or an `.onnx` file.
        fmt: `"saved_model"` or `"onnx"`.
        verification_images: float32 `(N, H, W, C)` held-out images.
        input_size: Fixed `(height, width)`, or `None` for the model's.
        min_agreement: Required mask agreement with the Keras model.

    Returns:
        An `ExportReport` (precision float32, no op list).

    Raises:
        ExportError: On an unknown format or a missing ONNX runtime.
        ExportVerificationError: If the export disagrees with Keras.
    """
    import tensorflow as tf

    if fmt not in OTHER_FORMATS:
        raise ExportError(f"format={fmt!r}: expected one of {', '.join(OTHER_FORMATS)}")
    output = Path(output)
    export_model = fixed_size_model(model, input_size)
    images = np.asarray(verification_images, np.float32)
    export_model(images[:1])  # the ONNX exporter needs the model called once
    tmp = output.with_name(f".{output.name}.unverified")
    _remove(tmp)
    with contextlib.redirect_stdout(io.StringIO()):
        if fmt == "saved_model":
            export_model.export(str(tmp), format="tf_saved_model")
            loaded = tf.saved_model.load(str(tmp))
            run = lambda x: np.asarray(loaded.serve(x))  # noqa: E731
        else:
            try:
                import onnxruntime
            except ImportError:
                raise ExportError("ONNX export needs: pip install 'keras-unet-kit[onnx]'") from None
            export_model.export(str(tmp), format="onnx")
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            run = lambda x: session.run(None, {name: x})[0]  # noqa: E731
    keras_out = np.concatenate([np.asarray(export_model(x[None], training=False)) for x in images])
    exported = np.concatenate([run(x[None]) for x in images])
    agreement = compare(keras_out, exported)
    if agreement.mask_agreement < min_agreement:
        _remove(tmp)
        raise ExportVerificationError(
            f"{output}: the {fmt} export agrees with Keras on only "
            f"{agreement.mask_agreement:.3%} of pixels (required {min_agreement:.3%})"
        )
    _remove(output)
    os.replace(tmp, output)
    outputs = [output] if output.is_file() else [p for p in output.rglob("*") if p.is_file()]
    report = ExportReport(str(output), fmt, sum(p.stat().st_size for p in outputs), [], agreement)
    log.info("%s", report.format())
    return report


def _remove(path: Path) -> None:
    """Deletes a file or folder if it exists."""
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
    from keras_unet.inference import pad_image, read_image

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
) -> list[ExportReport]:
    """Exports a training run (or a `.keras` file) at several precisions.

    Calibration images come from the run's training split, verification
    images from its validation split (held out), both preprocessed as in
    training.

    Args:
        source: A run folder (from `train`) or a `.keras` file.
        output_dir: Folder for `model_<precision>.tflite` files and sidecars.
        precisions: Which TFLite precisions.
        formats: Other formats too: `"saved_model"`, `"onnx"`.
        input_size: Fixed `(height, width)` of the exported models.
        dynamic: Keep height/width dynamic instead (models that allow it).
        data: Dataset folder; default: the run's. Required for a bare
            `.keras` file.
        calibration_samples: Calibration windows for int8.
        verification_samples: Held-out windows for the verification.
        io_type: Input/output type of int8 models.
        min_agreement: Override of the per-precision agreement thresholds.
        num_threads: LiteRT threads.
        latency_runs: Timed runs per latency median.

    Returns:
        One `ExportReport` per precision.

    Raises:
        ExportError: On bad arguments or a failed conversion.
        ExportVerificationError: If an export disagrees with Keras.
    """
    import keras

    from keras_unet.train import TrainConfig, load_training_data

    source = Path(source)
    if source.is_dir():
        config = TrainConfig.from_file(source / "config.json")
        model_path = source / "checkpoints" / "best.keras"
    elif source.suffix == ".keras":
        config, model_path = None, source
    else:
        raise ExportError(f"{source}: expected a run folder or a .keras file")
    if not model_path.is_file():
        raise ExportError(f"{model_path}: model not found")
    model = keras.models.load_model(model_path, compile=False)
    if config is None:
        if data is None:
            raise ExportError("a bare .keras model needs --data (a dataset folder)")
        config = TrainConfig(data=str(data), channels=model.input_shape[-1])
    elif data is not None:
        config = dataclasses.replace(config, data=str(data), images_dir=None, masks_dir=None)
    train_set, val_set, _ = load_training_data(config)
    channels = model.input_shape[-1]
    size = None if dynamic else input_size
    window = size or (config.crop_size, config.crop_size)
    verification = image_windows(val_set.images, window, channels, limit=verification_samples)
    calibration = image_windows(train_set.images, window, channels,
                                limit=calibration_samples, random_crops=True, seed=1)
    output_dir = Path(output_dir)
    reports = []
    for precision in precisions:
        reports.append(export_tflite(
            model, output_dir / f"model_{precision}.tflite", names=train_set.names,
            verification_images=verification, precision=precision, input_size=size,
            representative=(x[None] for x in calibration), io_type=io_type,
            min_agreement=min_agreement, num_threads=num_threads, latency_runs=latency_runs,
        ))
    suffixes = {"saved_model": "saved_model", "onnx": "model.onnx"}
    for fmt in formats:
        if fmt not in suffixes:
            raise ExportError(f"format={fmt!r}: expected one of {', '.join(suffixes)}")
        reports.append(export_other(
            model, output_dir / suffixes[fmt], fmt, verification_images=verification,
            input_size=size, min_agreement=DEFAULT_AGREEMENT["float32"]
            if min_agreement is None else min_agreement,
        ))
    files.write_text(output_dir / "export_report.json",
                     json.dumps([asdict(r) for r in reports], indent=2) + "\n")
    return reports
