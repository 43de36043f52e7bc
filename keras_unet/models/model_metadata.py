"""The standard TFLite Model Metadata that mobile runtimes read.

MediaPipe Tasks (`ImageSegmenter` on Android, iOS, the web and Python) and
the TFLite Task Library refuse a float-input image model without it: they
read how to normalize the image and which label belongs to which output
channel from a model `metadata` entry named `TFLITE_METADATA`, whose buffer
is a `ModelMetadata` flatbuffer (file identifier `M001`, the published
`metadata_schema.fbs` of tflite-support), and read the label file itself
from a zip archive appended to the model.

This module writes that flatbuffer with the `flatbuffers` runtime (our own
implementation of the schema's tables: tflite-support cannot be installed
beside TensorFlow 2.21) and packs the associated files. Only fields of
schema version 1.0 are written.

Schema slots used (field numbers in declaration order):

| table | slots |
|---|---|
| ModelMetadata | 0 name, 1 description, 2 version, 3 subgraph_metadata, 4 author, |
| | 5 license, 7 min_parser_version |
| SubGraphMetadata | 0 name, 2 input_tensor_metadata, 3 output_tensor_metadata |
| TensorMetadata | 0 name, 1 description, 3 content, 4 process_units, 5 stats, |
| | 6 associated_files |
| Content | 0 content_properties_type, 1 content_properties, 2 range |
| ImageProperties | 0 color_space |
| ValueRange | 0 min, 1 max |
| ProcessUnit | 0 options_type, 1 options |
| NormalizationOptions | 0 mean, 1 std |
| Stats | 0 max, 1 min |
| AssociatedFile | 0 name, 1 description, 2 type |
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import flatbuffers
import numpy as np

METADATA_ENTRY = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"

# Enum and union values of metadata_schema.fbs.
COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # union ContentProperties
_NORMALIZATION_OPTIONS = 1  # union ProcessUnitOptions
_TENSOR_AXIS_LABELS = 2  # enum AssociatedFileType


@dataclass(frozen=True)
class ImageSegmenterMetadata:
    """What the standard metadata of an image segmentation model says.

    Attributes:
        name: Model name.
        description: What the model segments.
        version: Model version.
        author: Who made it.
        license: The model's licence.
        color_space: `"RGB"` or `"GRAYSCALE"`.
        mean: Per-channel (or one) mean of `(pixel - mean) / std`, the
            normalization applied to 0-255 pixels before the model.
        std: Per-channel (or one) standard deviation of the same.
        value_range: `(min, max)` of the input tensor's values (after
            normalization and, for integer inputs, quantization).
        labels: One label per output channel, in order.
        output_description: What the output tensor holds.
    """

    name: str
    description: str
    version: str
    author: str
    license: str
    color_space: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    value_range: tuple[float, float]
    labels: tuple[str, ...]
    output_description: str


def metadata_flatbuffer(meta: ImageSegmenterMetadata) -> bytes:
    """The `ModelMetadata` flatbuffer of an image segmentation model.

    The input tensor gets `ImageProperties` (colour space), a
    `NormalizationOptions` process unit and `Stats` (value range); the
    output tensor `ImageProperties` over dimensions 1-2 (height, width)
    and the label file as a `TENSOR_AXIS_LABELS` associated file.

    Args:
        meta: What to write.

    Returns:
        The flatbuffer bytes (file identifier `M001`).

    Raises:
        ValueError: On an unknown colour space or an empty mean/std.
    """
    if meta.color_space not in COLOR_SPACES:
        raise ValueError(f"color_space={meta.color_space!r}: expected one of "
                         f"{', '.join(COLOR_SPACES)}")
    if not meta.mean or not meta.std:
        raise ValueError("mean and std need at least one value each")
    b = _Builder()
    # Children first: a flatbuffer table is written after what it points to.
    image = b.table({0: ("u8", COLOR_SPACES[meta.color_space])})
    input_content = b.table({0: ("u8", _IMAGE_PROPERTIES), 1: ("offset", image)})
    normalization = b.table({0: ("offset", b.floats(meta.mean)),
                             1: ("offset", b.floats(meta.std))})
    unit = b.table({0: ("u8", _NORMALIZATION_OPTIONS), 1: ("offset", normalization)})
    low, high = meta.value_range
    stats = b.table({0: ("offset", b.floats([high])), 1: ("offset", b.floats([low]))})
    input_tensor = b.table({
        0: ("offset", b.string("image")),
        1: ("offset", b.string("Input image, pixels normalized as (pixel - mean) / std.")),
        3: ("offset", input_content),
        4: ("offset", b.offsets([unit])),
        5: ("offset", stats),
    })
    labels_file = b.table({
        0: ("offset", b.string(LABELS_FILE)),
        1: ("offset", b.string("One label per output channel, in channel order.")),
        2: ("u8", _TENSOR_AXIS_LABELS),
    })
    mask = b.table({0: ("u8", COLOR_SPACES["GRAYSCALE"])})
    spatial = b.table({0: ("i32", 1), 1: ("i32", 2)})
    output_content = b.table({0: ("u8", _IMAGE_PROPERTIES), 1: ("offset", mask),
                              2: ("offset", spatial)})
    output_tensor = b.table({
        0: ("offset", b.string("segmentation_masks")),
        1: ("offset", b.string(meta.output_description)),
        3: ("offset", output_content),
        6: ("offset", b.offsets([labels_file])),
    })
    subgraph = b.table({
        0: ("offset", b.string(meta.name)),
        2: ("offset", b.offsets([input_tensor])),
        3: ("offset", b.offsets([output_tensor])),
    })
    root = b.table({
        0: ("offset", b.string(meta.name)),
        1: ("offset", b.string(meta.description)),
        2: ("offset", b.string(meta.version)),
        3: ("offset", b.offsets([subgraph])),
        4: ("offset", b.string(meta.author)),
        5: ("offset", b.string(meta.license)),
        7: ("offset", b.string(MIN_PARSER_VERSION)),
    })
    return b.finish(root)


def associated_files_zip(files: dict[str, str]) -> bytes:
    """A zip archive of the associated files, to append to the model.

    Stored uncompressed, as tflite-support packs them, so every runtime's
    zip reader finds them.

    Args:
        files: `{name: text}`.

    Returns:
        The archive bytes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)),
                             text.encode("utf-8"))
    return buffer.getvalue()


class _Builder:
    """A thin layer over `flatbuffers.Builder` for tables by slot number."""

    _SCALARS = {"u8": "PrependUint8Slot", "i32": "PrependInt32Slot"}

    def __init__(self):
        self._b = flatbuffers.Builder(1024)

    def string(self, text: str) -> int:
        return self._b.CreateString(text)

    def floats(self, values) -> int:
        return self._b.CreateNumpyVector(np.asarray(values, "<f4"))

    def offsets(self, items: list[int]) -> int:
        self._b.StartVector(4, len(items), 4)
        for item in reversed(items):
            self._b.PrependUOffsetTRelative(item)
        return self._b.EndVector()

    def table(self, fields: dict[int, tuple[str, int]]) -> int:
        """A table of `{slot: (kind, value)}`, kind `"offset"`, `"u8"` or `"i32"`."""
        self._b.StartObject(max(fields, default=-1) + 1)
        for slot, (kind, value) in fields.items():
            if kind == "offset":
                self._b.PrependUOffsetTRelativeSlot(slot, value, 0)
            else:
                # A default of None makes the builder write the value even
                # when it equals the schema default (0).
                getattr(self._b, self._SCALARS[kind])(slot, value, None)
        return self._b.EndObject()

    def finish(self, root: int) -> bytes:
        self._b.Finish(root, file_identifier=FILE_IDENTIFIER)
        return bytes(self._b.Output())
