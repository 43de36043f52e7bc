"""keras-unet: U-Net semantic segmentation on Keras 3, from LabelMe to TFLite."""

from keras_unet.losses import (
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
    get_loss,
)
from keras_unet.metrics import Dice, IoU
from keras_unet.model import build_unet, output_size, valid_input_size

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyLoss",
    "Dice",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "IoU",
    "TverskyLoss",
    "build_unet",
    "get_loss",
    "output_size",
    "valid_input_size",
]
