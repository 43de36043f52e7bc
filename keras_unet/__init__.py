"""keras-unet: U-Net semantic segmentation on Keras 3, from LabelMe to TFLite.

The public API is importable from the top level (`from keras_unet import
build_unet`). Names are resolved lazily, so that the LabelMe tools do not pay
for importing Keras and TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "build_unet": "keras_unet.model",
    "output_size": "keras_unet.model",
    "valid_input_size": "keras_unet.model",
    "CrossEntropyLoss": "keras_unet.losses",
    "DiceCELoss": "keras_unet.losses",
    "DiceLoss": "keras_unet.losses",
    "FocalLoss": "keras_unet.losses",
    "TverskyLoss": "keras_unet.losses",
    "get_loss": "keras_unet.losses",
    "Dice": "keras_unet.metrics",
    "IoU": "keras_unet.metrics",
    "LabelMeError": "keras_unet.labelme",
    "read_annotation": "keras_unet.labelme",
    "rasterize": "keras_unet.labelme",
    "labelme_to_masks": "keras_unet.convert",
    "masks_to_labelme": "keras_unet.convert",
    "read_labels": "keras_unet.labels",
    "overlay": "keras_unet.visualize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_unet' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
