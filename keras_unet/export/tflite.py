"""TFLite (LiteRT) conversion of a Keras model, verified before it is written.

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

int8 keeps a model's per-image normalization (`input_normalization=
"per_image"` or `"per_image_percentile"`) in float32: its mean, square
root, division and percentiles over a whole image lose too much in int8
(measured on the sample model: 94.9 % of pixels agree with Keras fully
quantized, 99.6 % with the standardization in float, the same size). The
rest of the model is int8; such models take float32 input and output.

Every export is verified before it counts as done: the `.tflite` file runs in
LiteRT's interpreter beside the Keras model on held-out images, and the
export fails (`ExportVerificationError`) if their masks agree less than the
threshold of the precision.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from keras_unet import files
from keras_unet.export.errors import ExportError, ExportVerificationError
from keras_unet.export.report import ExportReport
from keras_unet.export.verify import (
    DEFAULT_AGREEMENT,
    check_min_agreement,
    compare,
    median_latency_ms,
)
from keras_unet.inference.predict import load_predictor, model_multiple, tiling_recipe
from keras_unet.logs import native_output_silenced
from keras_unet.models.metadata import (
    PER_IMAGE_LAYERS,
    embed_metadata,
    io_details,
    labels_file_text,
    nested_layers,
    output_kind,
    sidecar,
)
from keras_unet.models.model_metadata import LABELS_FILE

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")
IO_TYPES = ("float32", "int8", "uint8")
# Layers an int8 model keeps in float32 (whole-image statistics).
FLOAT_LAYERS = PER_IMAGE_LAYERS


def fixed_size_model(model, input_size: tuple[int, int] | None):
    """A copy of `model` with batch 1, if given a fixed height/width, and
    one output channel per class, computing in float32 (a mixed-precision
    model's casts do not convert; the precision is the export's choice).

    A one-channel sigmoid model (two classes) gets a second channel: the
    outputs are `(1 - p, p)`, the probabilities of class 0 and class 1, so
    that category = argmax = class id in every runtime (the TFLite Task
    Library takes the argmax of a single channel, always 0) and apps read
    all models alike. The mask is unchanged: `p > 0.5` is the argmax. A
    logits model (`output_activation=None`) gets its softmax (sigmoid for
    one channel) in the graph, so every export returns probabilities.

    Args:
        model: A Keras model.
        input_size: `(height, width)`, or `None` to keep them dynamic.

    Returns:
        A new `keras.Model` sharing the weights.

    Raises:
        ExportError: If the size is not a multiple the model can take.
    """
    import keras

    from keras_unet.models.model import float32_copy

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
    outputs = float32_copy(model)(inputs)
    one_channel = model.output_shape[-1] == 1
    if output_kind(model) == "logits":  # as the training losses read them
        outputs = (keras.ops.sigmoid(outputs) if one_channel
                   else keras.ops.softmax(outputs, axis=-1))
    if one_channel:
        outputs = keras.ops.concatenate([1.0 - outputs, outputs], axis=-1)
    return keras.Model(inputs, outputs, name=f"{model.name}_export")


def exported_output_kind(model) -> str:
    """What the outputs of `fixed_size_model(model)` are: probabilities that
    sum to 1, read like a softmax (a sigmoid head becomes two, logits get
    their activation), or a multi-label sigmoid model's own."""
    sigmoid = output_kind(model) == "sigmoid" and model.output_shape[-1] > 1
    return "sigmoid" if sigmoid else "softmax"


def convert(
    model,
    precision: str = "float32",
    *,
    representative: Iterable[np.ndarray] | None = None,
    io_type: str = "float32",
) -> bytes:
    """Converts a (batch-1) Keras model to a TFLite flatbuffer.

    What is converted is `keras_unet.export.graph.litert_graph(model)`: the
    same values, with the ops LiteRT runs slowly replaced by equivalent ones
    (a U-Net's up-convolutions become `CONV_2D` and `DEPTH_TO_SPACE`).

    Args:
        model: Keras model, e.g. from `fixed_size_model`.
        precision: One of `PRECISIONS`.
        representative: Calibration images, float32 `(1, H, W, C)` in
            [0, 1] (required for `"int8"`).
        io_type: Input/output type of `"int8"` models.

    Returns:
        The `.tflite` bytes.

    Raises:
        ExportError: On an unknown option, missing calibration data, an
            int8 `io_type` for a model with per-image normalization, or a
            conversion failure.
    """
    import tensorflow as tf

    from keras_unet.export.graph import litert_graph

    if precision not in PRECISIONS:
        raise ExportError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if io_type not in IO_TYPES:
        raise ExportError(f"io_type={io_type!r}: expected one of {', '.join(IO_TYPES)}")
    model = litert_graph(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    float_nodes = []
    if precision == "int8":
        if representative is None:
            raise ExportError("int8 export needs representative images for calibration")
        samples = [np.array(x, np.float32) for x in representative]
        if not samples:
            raise ExportError("int8 export got no representative images")
        # The input range is calibrated to exactly [0, 1], so an integer input
        # is the 8-bit pixel itself (uint8: scale 1/255, zero point 0; int8:
        # pixel - 128), as MediaPipe and Edge TPU feed it.
        samples[0][0, 0, 0, :], samples[0][0, -1, -1, :] = 0.0, 1.0
        converter.representative_dataset = lambda: ([x] for x in samples)
        float_nodes = _float_nodes(model)
        if float_nodes and io_type != "float32":
            raise ExportError(
                f"io_type={io_type!r}: a model with per-image normalization keeps it in "
                "float32, so its int8 export takes float32 input and output (io_type "
                "float32); for integer input, train with --input-normalization none"
            )
        if not float_nodes:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    printed = io.StringIO()
    try:
        # The converter prints the whole intermediate SavedModel signature
        # (Python) and a quantization summary (C++).
        with contextlib.redirect_stdout(printed), native_output_silenced(), \
                warnings.catch_warnings():
            # The debugger runs TF's own (deprecated) interpreter and warns of it.
            warnings.simplefilter("ignore", UserWarning)
            if float_nodes:  # int8 only
                # Selective quantization: the documented use of the
                # quantization debugger's deny list. Denying a percentile
                # layer's nodes by name leaves its sort (TOPK_V2) int8; only
                # denying the op keeps it float.
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=converter.representative_dataset,
                    debug_options=tf.lite.experimental.QuantizationDebugOptions(
                        denylisted_nodes=float_nodes, denylisted_ops=["TOPK_V2"]))
                return debugger.get_nondebug_quantized_model()
            return converter.convert()
    except Exception as err:  # the converter raises many types
        _check_temporary_space()
        first = str(err).strip().split("<unknown>", 1)[0].strip()[:300]
        raise ExportError(f"TFLite conversion failed: {first} (--verbose shows the converter's "
                          "log)") from None
    finally:
        log.debug("converter output:\n%s", printed.getvalue())


def _check_temporary_space(probe_bytes: int = 1 << 20) -> None:
    """Names a full (or size-limited) temporary folder, where the converter
    writes its intermediate SavedModel and fails with cryptic errors.

    Raises:
        ExportError: If a probe file cannot be written there.
    """
    import tempfile

    folder = tempfile.gettempdir()
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * probe_bytes)
            probe.flush()
    except OSError as err:
        raise ExportError(
            f"{folder}: cannot write there ({err.strerror or err}); the TFLite converter needs "
            "room for a temporary copy of the model: free disk space, or point TMPDIR to a "
            "folder that has some") from None


def _float_nodes(model) -> list[str]:
    """TFLite tensor names of the `FLOAT_LAYERS` inside `model` (nested models too).

    The names are read from a float32 conversion of the model; a tensor
    belongs to a layer when one part of its `/`-separated name is the
    layer's name, possibly with the `_N` suffix Keras adds per call.
    """
    from ai_edge_litert.interpreter import Interpreter

    names = {layer.name for layer in nested_layers(model)
             if type(layer).__name__ in FLOAT_LAYERS}
    if not names:
        return []
    pattern = re.compile("|".join(rf"{re.escape(n)}(_\d+)?" for n in sorted(names)))
    tensors = Interpreter(model_content=convert(model, "float32")).get_tensor_details()
    return [t["name"] for t in tensors
            if any(pattern.fullmatch(part) for part in t["name"].split(";")[0].split("/"))]


def _warn_of_mobile_runtimes(model, output: Path) -> None:
    """Logs what MediaPipe Tasks and the Task Library cannot run."""
    _, height, width, channels = model.input_shape
    if channels != 3:
        log.warning("%s: MediaPipe Tasks and the TFLite Task Library take 3-channel (RGB) "
                    "segmentation models only; this %d-channel model runs in LiteRT (train "
                    "with --channels 3 for them)", output, channels)
    if not height or not width:
        log.warning("%s: a model of dynamic size runs in LiteRT with resize_tensor_input; "
                    "MediaPipe Tasks runs it at 1x1 and fails (export a fixed --input-size "
                    "for it)", output)


def _check_pixel_input(details: dict, output: Path) -> None:
    """Checks that an integer input is the 8-bit pixel (quantization step 1/255).

    Raises:
        ExportError: If the converter chose another input quantization.
    """
    quantization = details["quantization"]
    if details["dtype"] == "float32" or quantization is None:
        return
    expected_zero = {"uint8": 0, "int8": -128}[details["dtype"]]
    if (abs(quantization["scale"] * 255 - 1) > 1e-5
            or quantization["zero_point"] != expected_zero):
        raise ExportError(
            f"{output}: the {details['dtype']} input is quantized with scale "
            f"{quantization['scale']:.6g} and zero point {quantization['zero_point']}, not "
            f"1/255 and {expected_zero}: apps could not feed it 8-bit pixels")


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
    about: dict | None = None,
    recorded: dict | None = None,
) -> ExportReport:
    """Exports a Keras model to `.tflite`, verifies it and writes its sidecar.

    The file carries the sidecar and the standard TFLite metadata (see
    `keras_unet.models.metadata`), so MediaPipe Tasks and the TFLite Task
    Library load it as it is. `labels.txt` beside it names each output
    category, one per line, in channel order.

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
        about: Model `name`, `description`, `version`, `author` and
            `license` for the metadata.
        recorded: What the model records of its training, for the sidecar
            (see `keras_unet.models.metadata.sidecar`).

    Returns:
        The `ExportReport`.

    Raises:
        ExportError: If the model cannot be converted.
        ExportVerificationError: If the `.tflite` model disagrees with Keras.
    """
    import tensorflow as tf

    check_min_agreement(min_agreement)
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
        predictor = load_predictor(tmp, num_threads, labels=names)
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
        io = io_details(tmp)
        _check_pixel_input(io["input"], output)
        fixed = export_model.input_shape[1:3]
        meta = sidecar(export_model, exported_output_kind(model), names, precision, output,
                       io, target=predictor.target, size_multiple=model_multiple(model),
                       tiling=tiling_recipe(fixed) if all(fixed) else None, about=about,
                       recorded=recorded)
        meta["verification"] = asdict(agreement)
        meta["ops"] = ops
        embed_metadata(tmp, meta)
        _warn_of_mobile_runtimes(export_model, output)
        # The metadata must not change what the model computes.
        embedded = load_predictor(tmp, num_threads, labels=names)
        if not np.array_equal(embedded(images[:1]), tflite_out[:1]):
            raise ExportError(f"{output}: embedding the metadata changed the outputs")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    files.write_text(output.parent / LABELS_FILE, labels_file_text(meta))
    sidecar_path = output.with_suffix(".json")
    files.write_text(sidecar_path, json.dumps(meta, indent=2) + "\n")
    report = ExportReport(str(output), precision, output.stat().st_size, ops, agreement,
                          latency, str(sidecar_path))
    log.debug("%s", report.format())
    return report
