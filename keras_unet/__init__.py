"""keras-unet: U-Net semantic segmentation on Keras 3, from LabelMe to TFLite.

The public names below load on first use, so `import keras_unet` (and the
`keras-unet labelme2masks` command) does not load TensorFlow: the LabelMe
converter needs only NumPy and Pillow.

The losses and metrics are registered with Keras as soon as any Keras part
of keras-unet is used, and by `import keras_unet` itself when Keras is
already loaded. So after `import keras, keras_unet` (or
`from keras_unet import ...`), a compiled `.keras` model loads with a plain
`keras.models.load_model`, without `custom_objects`.
"""

import importlib
import sys

__version__ = "0.1.0"

_EXPORTS = {  # public name -> module that defines it
    "labelme_to_masks": "keras_unet.convert",
    "masks_to_labelme": "keras_unet.convert",
    "LabelMeError": "keras_unet.labelme",
    "rasterize": "keras_unet.labelme",
    "read_annotation": "keras_unet.labelme",
    "read_labels": "keras_unet.labels",
    "overlay": "keras_unet.visualize",
    "CrossEntropyLoss": "keras_unet.losses",
    "DiceCELoss": "keras_unet.losses",
    "DiceLoss": "keras_unet.losses",
    "FocalLoss": "keras_unet.losses",
    "TverskyLoss": "keras_unet.losses",
    "get_loss": "keras_unet.losses",
    "Dice": "keras_unet.metrics",
    "IoU": "keras_unet.metrics",
    "build_unet": "keras_unet.model",
    "output_size": "keras_unet.model",
    "size_multiple": "keras_unet.model",
    "valid_input_size": "keras_unet.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Imports the module behind a public name on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_unet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if "keras" in sys.modules:  # Keras costs nothing more now: register the custom objects
    importlib.import_module("keras_unet.losses")
    importlib.import_module("keras_unet.metrics")
