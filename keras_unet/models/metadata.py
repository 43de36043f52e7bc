"""What an app needs to run an exported model: the sidecar JSON, embedded too.

The sidecar (`model_<precision>.json` beside the `.tflite` file) says how to
feed the model and read its output: input shape, colour, dtype and
quantization, normalization (in the `NormalizationOptions` convention,
`(pixel - mean) / std` on 0-255 pixels), output kind, class names and the
label of every output category, the target (an instance model's boundary
class and its post-processing), how `predict` tiles large images, the op
list and the measured agreement with Keras.

Two metadata entries carry it inside the `.tflite` file:

- `keras_unet`: the sidecar itself, as JSON (`read_metadata`);
- `TFLITE_METADATA`: the standard TFLite Model Metadata, with the label
  file appended to the model as a zip archive, which MediaPipe Tasks and
  the TFLite Task Library need to load the model at all
  (`keras_unet.models.model_metadata`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from keras_unet.data.instances import (
    BOUNDARY_LABEL,
    MIN_DIAMETER_FRACTION,
    MIN_SEED_SIZE,
    SEED_THRESHOLD,
    min_object_size,
)
from keras_unet.data.labels import BACKGROUND_LABEL
from keras_unet.models.model_metadata import (
    LABELS_FILE,
    METADATA_ENTRY,
    ImageSegmenterMetadata,
    associated_files_zip,
    metadata_flatbuffer,
)

METADATA_NAME = "keras_unet"
# `io_details` of a model with float32 input and output.
FLOAT_IO = {key: {"dtype": "float32", "quantization": None} for key in ("input", "output")}
# The layers of a model's per-image normalization (`input_normalization`).
IN_GRAPH_NORMALIZATION = {
    "PerImageStandardization": "per-image standardization (inside the model)",
    "PercentileAndStandardization": "per-image standardization and percentile scaling, "
                                    "as more channels (inside the model)",
}
PER_IMAGE_LAYERS = tuple(IN_GRAPH_NORMALIZATION)
# 8-bit pixels -> model input: x = (pixel - mean) / std.
PIXEL_MEAN, PIXEL_STD = 0.0, 255.0


def category_labels(names: list[str], target: str = "semantic") -> list[str]:
    """The label of each output channel of an exported model, in order.

    Channel i is class i (exports of one-channel sigmoid models have two
    channels, see `keras_unet.export.tflite.fixed_size_model`); instance
    models add their last channel, the boundary between objects
    (`_boundary_`).

    Args:
        names: Class names by id.
        target: `"semantic"` or `"instances"`.

    Returns:
        The labels, one per output channel.
    """
    return [*names, BOUNDARY_LABEL] if target == "instances" else list(names)


def labels_file_text(meta: dict) -> str:
    """The `labels.txt` of an export: one label per output channel, in order."""
    return "\n".join(meta["output"]["labels"]) + "\n"


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
    tiling: dict | None = None,
    about: dict | None = None,
    recorded: dict | None = None,
    fmt: str = "tflite",
) -> dict:
    """What a mobile app needs to run the exported model.

    Args:
        model: The exported Keras model (batch 1, export size).
        output_kind: `"sigmoid"`, `"softmax"` or `"logits"`.
        names: Class names by id.
        precision: Export precision.
        tflite_path: The exported file.
        io: Input/output details from `io_details` (`FLOAT_IO` for a
            float model in another format).
        target: `"semantic"` or `"instances"`.
        size_multiple: Input sizes must be multiples of this (dynamic models).
        tiling: How `predict` runs images of another size
            (`keras_unet.inference.predict.tiling_recipe`).
        about: Model `name`, `description`, `version`, `author` and
            `license` for the standard metadata (defaults filled in).
        recorded: What the model records of its training, copied into the
            sidecar: `object_size`, the training objects' median diameter
            and range in pixels (`predict --object-size` rescales images to
            it; see `keras_unet.inference.scale`), `test_time_flips`,
            the flips its training showed it (`predict --tta` averages over
            those), and `ignore_index`, the void value of its training masks
            (`evaluate` reads masks with it).

    Returns:
        The sidecar dictionary (written as JSON beside the model).
    """
    _, height, width, channels = model.input_shape
    outputs = model.output_shape[-1]
    in_graph = {type(layer).__name__ for layer in nested_layers(model)} & set(PER_IMAGE_LAYERS)
    meta = {
        "model": tflite_path.name,
        "format": fmt,
        "precision": precision,
        "target": target,
        "about": _about(about, names, target, precision),
        "input": {
            "shape": [1, height, width, channels],
            "layout": "NHWC",
            "color": "grayscale" if channels == 1 else "RGB",
            "dtype": io["input"]["dtype"],
            "normalization": {
                "description": "x = (pixel - mean) / std on 8-bit pixels (0..255), "
                               "as TFLite NormalizationOptions",
                "mean": [PIXEL_MEAN], "std": [PIXEL_STD],
                "in_graph": IN_GRAPH_NORMALIZATION[in_graph.pop()] if in_graph else None,
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
            "labels": category_labels(names, target),
        },
        "labels": names,
        "ignore_id": 255,
        "labels_file": LABELS_FILE,
    }
    if tiling is not None:
        meta["tiling"] = tiling
    meta.update(recorded or {})
    if target == "instances":
        meta["output"]["boundary_channel"] = outputs - 1
        meta["postprocessing"] = {
            "description": (
                "objects: connected foreground pixels whose object classes' probabilities "
                "(all channels but the background and the boundary) sum to more than "
                "seed_threshold (4-connected) of at least min_seed pixels are seeds; a "
                "watershed on the distance to the seeds grows them over the foreground "
                "(argmax != 0); objects under min_size pixels are dropped "
                "(keras_unet.data.instances.label_instances)"),
            "min_seed": MIN_SEED_SIZE,
            "seed_threshold": SEED_THRESHOLD,
            "min_size": min_object_size(meta.get("object_size")),
        }
        if meta.get("object_size"):
            meta["postprocessing"]["min_size_rule"] = (
                f"round(pi / 4 * ({MIN_DIAMETER_FRACTION} * object_size.range[0] / "
                "factor) ** 2) pixels: a circle of that fraction of the training objects' "
                "10th-percentile diameter, where factor is the resize of "
                "object_size.rescale (1 for an image predicted at its own size)")
    return meta


def _about(about: dict | None, names: list[str], target: str, precision: str) -> dict:
    """The model card of the standard metadata, defaults filled in."""
    from keras_unet import __version__

    classes = ", ".join(n for n in names if n != BACKGROUND_LABEL) or "none"
    defaults = {
        "name": "keras-unet segmentation",
        "description": (f"U-Net image segmentation ({target} target, {precision}) made with "
                        f"keras-unet {__version__}; classes: {classes}."),
        "version": "1",
        "author": "",
        "license": "",
    }
    return {**defaults, **{k: v for k, v in (about or {}).items() if v is not None}}


def nested_layers(model):
    """Every layer of a model, nested models' layers too."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from nested_layers(layer)


def output_kind(model) -> str:
    """What a model outputs: `"sigmoid"`, `"softmax"` or `"logits"`.

    Read from a keras-unet model's head (`head_act`), else from the layer
    that makes the model's output: a `Softmax` layer, or a layer whose
    `activation` is softmax or sigmoid. Anything else counts as logits.

    Args:
        model: A Keras model with one output.

    Returns:
        The output kind.
    """
    try:
        layer = model.get_layer("head_act")
    except ValueError:  # not built by build_unet
        layer = model.layers[-1]
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = layer.get_config().get("activation")
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


def standard_metadata(meta: dict) -> ImageSegmenterMetadata:
    """The standard TFLite metadata that matches a sidecar.

    Float inputs take `(pixel - 0) / 255`; integer inputs (an int8 model
    with uint8 or int8 input) take the pixels as they are, the quantization
    being `1/255` per step, so their value range is that of the dtype.

    Args:
        meta: A sidecar (`sidecar`).

    Returns:
        The `ImageSegmenterMetadata` to embed.
    """
    dtype = np.dtype(meta["input"]["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        value_range = (float(info.min), float(info.max))
    else:
        value_range = ((0 - PIXEL_MEAN) / PIXEL_STD, (255 - PIXEL_MEAN) / PIXEL_STD)
    kind = meta["output"]["kind"]
    about = meta["about"]
    return ImageSegmenterMetadata(
        name=about["name"], description=about["description"], version=about["version"],
        author=about["author"], license=about["license"],
        color_space="GRAYSCALE" if meta["input"]["color"] == "grayscale" else "RGB",
        mean=(PIXEL_MEAN,), std=(PIXEL_STD,), value_range=value_range,
        labels=tuple(meta["output"]["labels"]),
        output_description={
            "softmax": "Per-pixel probability of each category (softmax over channels); "
                       "the mask is the argmax.",
            "sigmoid": "Per-pixel probability of the foreground category (sigmoid); the "
                       "mask is probability > 0.5.",
        }.get(kind, "Per-pixel scores of each category (logits); the mask is the argmax."),
    )


def embed_metadata(tflite_path: str | os.PathLike, meta: dict) -> None:
    """Stores `meta` in the `.tflite` file's metadata, in place.

    Writes two entries of TFLite's `Model.metadata` list (an existing
    entry of either name is replaced) with LiteRT's own flatbuffer tools:
    `keras_unet`, the sidecar as JSON, and `TFLITE_METADATA`, the standard
    metadata (`standard_metadata`), then appends the label file as a zip
    archive, the layout tflite-support writes and MediaPipe reads.

    Args:
        tflite_path: The model file.
        meta: JSON-serializable dictionary (the sidecar content).
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    entries = {
        METADATA_NAME: json.dumps(meta).encode(),
        METADATA_ENTRY: metadata_flatbuffer(standard_metadata(meta)),
    }
    kept = [m for m in (model.metadata or []) if _name(m.name) not in entries]
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        kept.append(entry)
    model.metadata = kept
    flatbuffer_utils.write_model(model, str(tflite_path))
    with open(tflite_path, "ab") as f:
        f.write(associated_files_zip({LABELS_FILE: labels_file_text(meta)}))


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
