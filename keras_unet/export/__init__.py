"""Export to TFLite (LiteRT) and other formats, verified against Keras.

- `tflite`: conversion at every precision and its verification.
- `graph`: exact rewrites of a model into the ops LiteRT runs fastest, which
  the conversion applies.
- `verify`: agreement of an exported model with Keras, and latency.
- `web`: a static page that runs the model with MediaPipe Tasks for the web.

The sidecar JSON an app needs (`sidecar`, `embed_metadata`, `read_metadata`)
is defined in `keras_unet.models.metadata`, which inference reads too; it is
re-exported here.
- `formats`: SavedModel and ONNX.
- `run`: a whole training run at several precisions, with one report.

The names below load their module on first use (as the top-level package
does), so `keras_unet.models.metadata` can be read without TensorFlow.
"""

from keras_unet.lazy import lazy_exports

_EXPORTS = {  # public name -> module that defines it
    name: module if "." in module else f"keras_unet.export.{module}" for name, module in {
        "ExportError": "errors",
        "ExportVerificationError": "errors",
        "OTHER_FORMATS": "formats",
        "export_other": "formats",
        "METADATA_NAME": "keras_unet.models.metadata",
        "embed_metadata": "keras_unet.models.metadata",
        "read_metadata": "keras_unet.models.metadata",
        "sidecar": "keras_unet.models.metadata",
        "ExportReport": "report",
        "export_run": "run",
        "image_windows": "run",
        "PRECISIONS": "tflite",
        "convert": "tflite",
        "export_tflite": "tflite",
        "fixed_size_model": "tflite",
        "op_names": "tflite",
        "Agreement": "verify",
        "DEFAULT_AGREEMENT": "verify",
        "compare": "verify",
    }.items()
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
