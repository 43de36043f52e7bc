"""Other formats: a SavedModel (TF Serving) or an ONNX file, verified like TFLite."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from keras_unet.export.errors import ExportError, ExportVerificationError
from keras_unet.export.report import ExportReport
from keras_unet.export.tflite import fixed_size_model
from keras_unet.export.verify import compare

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
    log.debug("%s", report.format())
    return report


def _remove(path: Path) -> None:
    """Deletes a file or folder if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
