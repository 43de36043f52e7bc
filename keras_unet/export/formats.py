"""Other formats: a SavedModel (TF Serving) or an ONNX file, verified like TFLite."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from keras_unet import files
from keras_unet.export.errors import ExportError, ExportVerificationError
from keras_unet.export.report import ExportReport
from keras_unet.export.tflite import exported_output_kind, fixed_size_model
from keras_unet.export.verify import compare
from keras_unet.inference.predict import model_multiple, target_from_outputs, tiling_recipe
from keras_unet.logs import native_output_silenced
from keras_unet.models.metadata import FLOAT_IO, METADATA_NAME, labels_file_text, sidecar
from keras_unet.models.model_metadata import LABELS_FILE

log = logging.getLogger(__name__)

OTHER_FORMATS = ("saved_model", "onnx")


def export_other(
    model,
    output: str | os.PathLike,
    fmt: str,
    *,
    verification_images: np.ndarray,
    input_size: tuple[int, int] | None = None,
    min_agreement: float = 0.999,
    names: list[str] | None = None,
    about: dict | None = None,
    recorded: dict | None = None,
) -> ExportReport:
    """Exports a SavedModel (TF Serving) or ONNX model, verified like TFLite.

    Uses Keras 3's exporters (`model.export`); the SavedModel is run with
    `tf.saved_model.load`, the ONNX file with onnxruntime (extra `onnx`).
    An ONNX file with class names gets what a `.tflite` file gets: the
    sidecar (`model.json`) and `labels.txt` (one label per output channel)
    beside it, and the sidecar JSON and the labels in its `metadata_props`
    (keys `keras_unet` and `labels`).

    Args:
        model: A Keras segmentation model.
        output: A folder (`saved_model`) or an `.onnx` file.
        fmt: `"saved_model"` or `"onnx"`.
        verification_images: float32 `(N, H, W, C)` held-out images.
        input_size: Fixed `(height, width)`, or `None` for the model's.
        min_agreement: Required mask agreement with the Keras model.
        names: Class names by id (for the ONNX sidecar and labels).
        about: Model card of the sidecar (see `sidecar`).
        recorded: What the model records of its training, for the sidecar
            (see `keras_unet.models.metadata.sidecar`).

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
            with native_output_silenced():  # e.g. its notice on tf2onnx's Resize attribute
                session = onnxruntime.InferenceSession(str(tmp),
                                                       providers=["CPUExecutionProvider"])
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
    meta = None
    if fmt == "onnx" and names is not None:
        fixed = export_model.input_shape[1:3]
        meta = sidecar(export_model, exported_output_kind(model), names, "float32", output,
                       FLOAT_IO, target=target_from_outputs(model.output_shape[-1], names),
                       size_multiple=model_multiple(model), about=about, fmt="onnx",
                       tiling=tiling_recipe(fixed) if all(fixed) else None,
                       recorded=recorded)
        meta["verification"] = asdict(agreement)
        _add_onnx_metadata(tmp, meta)
    _remove(output)
    os.replace(tmp, output)
    sidecar_path = ""
    if meta is not None:
        files.write_text(output.parent / LABELS_FILE, labels_file_text(meta))
        sidecar_path = str(output.with_suffix(".json"))
        files.write_text(sidecar_path, json.dumps(meta, indent=2) + "\n")
    outputs = [output] if output.is_file() else [p for p in output.rglob("*") if p.is_file()]
    report = ExportReport(str(output), fmt, sum(p.stat().st_size for p in outputs), [], agreement,
                          sidecar=sidecar_path)
    log.debug("%s", report.format())
    return report


def _add_onnx_metadata(path: Path, meta: dict) -> None:
    """Writes the sidecar and the channel labels into an ONNX file's `metadata_props`."""
    import onnx

    model = onnx.load(str(path))
    props = {METADATA_NAME: json.dumps(meta), "labels": "\n".join(meta["output"]["labels"])}
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _remove(path: Path) -> None:
    """Deletes a file or folder if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
