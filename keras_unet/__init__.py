"""keras-unet: U-Net semantic segmentation on Keras 3, from LabelMe to TFLite.

The public names below load on first use, so `import keras_unet` (and the
`keras-unet labelme2masks` command) does not load TensorFlow: the LabelMe
converter needs only NumPy and Pillow.

The custom layers, losses and metrics are registered with Keras as soon as
any Keras part of keras-unet is used, and by `import keras_unet` itself
when Keras is already loaded. So after `import keras, keras_unet` (or
`from keras_unet import ...`), a compiled `.keras` model loads with a plain
`keras.models.load_model`, without `custom_objects`.
"""

import importlib
import sys

from keras_unet.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {  # public name -> module that defines it
    "labelme_to_masks": "keras_unet.data.convert",
    "masks_to_labelme": "keras_unet.data.convert",
    "LabelMeError": "keras_unet.data.labelme",
    "rasterize": "keras_unet.data.labelme",
    "read_annotation": "keras_unet.data.labelme",
    "read_labels": "keras_unet.data.labels",
    "overlay": "keras_unet.data.visualize",
    "CrossEntropyLoss": "keras_unet.training.losses",
    "DiceCELoss": "keras_unet.training.losses",
    "DiceLoss": "keras_unet.training.losses",
    "FocalLoss": "keras_unet.training.losses",
    "TverskyLoss": "keras_unet.training.losses",
    "get_loss": "keras_unet.training.losses",
    "Dice": "keras_unet.training.metrics",
    "IoU": "keras_unet.training.metrics",
    "build_unet": "keras_unet.models.model",
    "float32_copy": "keras_unet.models.model",
    "output_size": "keras_unet.models.model",
    "size_multiple": "keras_unet.models.model",
    "valid_input_size": "keras_unet.models.model",
    "ObjectScores": "keras_unet.evaluation.scores",
    "object_scores": "keras_unet.evaluation.scores",
    "label_instances": "keras_unet.data.instances",
    "TrainConfig": "keras_unet.training.config",
    "load_predictor": "keras_unet.inference.predict",
    "predict_files": "keras_unet.inference.predict",
    "evaluate_dataset": "keras_unet.evaluation.evaluate",
    "export_run": "keras_unet.export.run",
    "LabelMeOutput": "keras_unet.inference.preannotate",
    "check_dataset": "keras_unet.data.pairs",
    "load_dataset": "keras_unet.data.pairs",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

# Modules whose import registers keras-unet's custom Keras objects (the
# layers and initializer of `build_unet`, the losses, the metrics).
_KERAS_OBJECT_MODULES = (
    "keras_unet.models.blocks",
    "keras_unet.training.losses",
    "keras_unet.training.metrics",
)


def register_keras_objects() -> None:
    """Registers every custom Keras object a keras-unet model can hold.

    `keras.models.load_model` finds them by name afterwards; `load_predictor`
    and the commands call this before loading a `.keras` file.
    """
    for module in _KERAS_OBJECT_MODULES:
        importlib.import_module(module)


if "keras" in sys.modules:  # Keras costs nothing more now
    register_keras_objects()
