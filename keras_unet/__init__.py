"""keras-unet: U-Net semantic segmentation on Keras 3, from LabelMe to TFLite.

Importing the package registers its losses and metrics with Keras, so a
compiled `.keras` model loads with a plain `keras.models.load_model` after
`import keras_unet`.
"""

from keras_unet.convert import labelme_to_masks, masks_to_labelme
from keras_unet.labelme import LabelMeError, rasterize, read_annotation
from keras_unet.labels import read_labels
from keras_unet.losses import (
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
    get_loss,
)
from keras_unet.metrics import Dice, IoU
from keras_unet.model import build_unet, output_size, size_multiple, valid_input_size
from keras_unet.visualize import overlay

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyLoss",
    "Dice",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "IoU",
    "LabelMeError",
    "TverskyLoss",
    "build_unet",
    "get_loss",
    "labelme_to_masks",
    "masks_to_labelme",
    "output_size",
    "size_multiple",
    "overlay",
    "rasterize",
    "read_annotation",
    "read_labels",
    "valid_input_size",
]
