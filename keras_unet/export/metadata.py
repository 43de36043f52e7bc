"""What an app needs to run an exported model: the sidecar JSON, embedded too.

The sidecar (`model_<precision>.json` beside the `.tflite` file) says how to
feed the model and read its output: input shape, colour, dtype and
quantization, normalization, output kind, class names, the target (an
instance model's boundary class and its post-processing), the op list and
the measured agreement with Keras. The same JSON is embedded in the
`.tflite` file as a custom metadata entry named `keras_unet`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from keras_unet.instances import MIN_OBJECT_SIZE, MIN_SEED_SIZE

METADATA_NAME = "keras_unet"


def sidecar(
    model,
    output_kind: str,
    names: list[str],
    precision: str,
    tflite_path: Path,
    io: dict,
    *,
    target: str = "semantic",
    size_multiple: int = 1,
) -> dict:
    """What a mobile app needs to run the exported model.

    Args:
        model: The exported Keras model (batch 1, export size).
        output_kind: `"sigmoid"`, `"softmax"` or `"logits"`.
        names: Class names by id.
        precision: Export precision.
        tflite_path: The `.tflite` file.
        io: Input/output details from `io_details`.
        target: `"semantic"` or `"instances"`.
        size_multiple: Input sizes must be multiples of this (dynamic models).

    Returns:
        The sidecar dictionary (written as JSON beside the model).
    """
    _, height, width, channels = model.input_shape
    outputs = model.output_shape[-1]
    meta = {
        "model": tflite_path.name,
        "format": "tflite",
        "precision": precision,
        "target": target,
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
            "size_multiple": size_multiple,
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
    if target == "instances":
        meta["output"]["boundary_channel"] = outputs - 1
        meta["postprocessing"] = {
            "description": (
                "objects: connected interior pixels (argmax = a class, 4-connected) of at "
                "least min_seed pixels are seeds; a watershed on the distance to the seeds "
                "grows them over the foreground (argmax != 0); objects under min_size pixels are "
                "dropped (keras_unet.instances.label_instances)"),
            "min_seed": MIN_SEED_SIZE,
            "min_size": MIN_OBJECT_SIZE,
        }
    return meta


def output_kind(model) -> str:
    """`"sigmoid"`, `"softmax"` or `"logits"`, from a keras-unet model's head."""
    try:
        activation = model.get_layer("head_act").get_config()["activation"]
    except ValueError:  # not built by build_unet
        return "logits"
    return activation if activation in ("sigmoid", "softmax") else "logits"


def io_details(path: Path) -> dict:
    """Input and output dtype and quantization of a `.tflite` file.

    Reads the details only; no tensors are allocated.
    """
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
