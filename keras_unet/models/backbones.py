"""Pretrained encoders from `keras.applications` for `build_unet(backbone=...)`.

The encoder is the Keras Applications model without its classifier. Skip
connections are taken at the last feature map of each stride (2, 4, 8, 16;
stride 32 feeds the decoder), found by walking the model's layers and
reading their output sizes, not by layer indices that change across Keras
versions. A backbone without a stride-2 feature map (ConvNeXt starts at
stride 4) simply has no skip there.

All keras-unet models take float images in [0, 1]. What each backbone
expects instead (0-255, [-1, 1], or Caffe-style BGR minus the ImageNet mean)
is done by layers inside the model, so exported models take [0, 1] images
too. Greyscale inputs are repeated to three channels, so ImageNet weights
apply unchanged.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_unet.errors import KerasUnetError

if TYPE_CHECKING:
    import keras

# Keras is imported inside the functions, so that the table of names
# (`BACKBONES`) can be read without loading TensorFlow (the CLI's help).

# name -> (keras.applications constructor, input convention, extra kwargs)
BACKBONES = {
    "mobilenet_v2": ("MobileNetV2", "tf", {}),
    "mobilenet_v3_small": ("MobileNetV3Small", "0-255", {"include_preprocessing": True}),
    "mobilenet_v3_large": ("MobileNetV3Large", "0-255", {"include_preprocessing": True}),
    "efficientnet_b0": ("EfficientNetB0", "0-255", {}),
    "efficientnet_b1": ("EfficientNetB1", "0-255", {}),
    "efficientnet_b2": ("EfficientNetB2", "0-255", {}),
    "efficientnet_b3": ("EfficientNetB3", "0-255", {}),
    "resnet50": ("ResNet50", "caffe", {}),
    "convnext_tiny": ("ConvNeXtTiny", "0-255", {"include_preprocessing": True}),
}
STRIDES = (2, 4, 8, 16, 32)
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
DOWNLOAD_TIMEOUT_S = 15
# Batch-norm momentum of an encoder trained from scratch (the decoder's, PyTorch's).
SCRATCH_BN_MOMENTUM = 0.9


class BackboneWeightsError(KerasUnetError, RuntimeError):
    """Backbone weights that were asked for but cannot be had."""


def feature_layers(model: keras.Model) -> dict[int, int | None]:
    """The last layer at each stride of a backbone, found from output sizes.

    Args:
        model: A `keras.applications` model built with a static input size
            divisible by 32.

    Returns:
        `{stride: index into model.layers, or None}` for strides 2..32.
        Indices (not names) carry over to another instance of the same
        architecture, whose auto-generated layer names may differ.
    """
    height = model.input_shape[1]
    found: dict[int, int | None] = {s: None for s in STRIDES}
    for index, layer in enumerate(model.layers):
        shape = layer.output.shape if hasattr(layer, "output") else None
        if shape is None or len(shape) != 4 or shape[1] is None:
            continue
        stride = height // shape[1]
        if stride in found and height == shape[1] * stride:
            found[stride] = index
    return found


def _preprocess(x, convention: str):
    """Maps [0, 1] images to what the backbone expects (as layers)."""
    from keras import layers

    if convention == "tf":
        return layers.Rescaling(2.0, offset=-1.0, name="preprocess")(x)
    x = layers.Rescaling(255.0, name="preprocess")(x)
    if convention == "caffe":
        # RGB -> BGR and minus the ImageNet mean, as a fixed 1x1 convolution.
        flip = np.zeros((1, 1, 3, 3), np.float32)
        for i in range(3):
            flip[0, 0, i, 2 - i] = 1.0
        conv = layers.Conv2D(3, 1, trainable=False, name="preprocess_caffe")
        x = conv(x)
        conv.set_weights([flip, -np.asarray(IMAGENET_BGR_MEAN, np.float32)])
    return x


def _instantiate(name: str, input_shape, weights):
    import keras

    constructor, _, extra = BACKBONES[name]
    return getattr(keras.applications, constructor)(
        input_shape=input_shape, include_top=False, weights=weights, **extra
    )


def _settle_batch_norm(backbone) -> None:
    """Gives a randomly initialized encoder's batch norms the decoder's momentum.

    Keras Applications keep their moving statistics with momentum 0.99 to
    0.999, right for fine-tuning ImageNet weights whose statistics are
    already good. Trained from scratch, those statistics stay near their
    initial values for thousands of steps, so the model scores near zero in
    inference mode while it trains well: MobileNetV2 (momentum 0.999) on
    CamVid kept a validation mIoU of 0.02-0.03 for its first 800 steps while
    its training IoU rose to 0.23. With `SCRATCH_BN_MOMENTUM` they follow
    within a few dozen steps.
    """
    import keras

    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = SCRATCH_BN_MOMENTUM


def _fused_batch_norm(backbone):
    """The backbone with its batch norms as `FusedBatchNormalization`, same weights.

    Keras Applications build plain `BatchNormalization` layers, whose
    unfused training path (and float32 casts in mixed precision) kept the
    `street-cpu` recipe's MobileNetV2 training step at 1110 ms in float32 on a
    2-core Xeon, against 925 ms fused (`benchmarks/bench_precision.py`).
    """
    import keras

    from keras_unet.models.blocks import FusedBatchNormalization

    def clone(layer):
        cls = (FusedBatchNormalization if type(layer) is keras.layers.BatchNormalization
               else layer.__class__)
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(backbone, clone_function=clone)
    copy.set_weights(backbone.get_weights())
    return copy


def _imagenet(name: str, input_shape):
    """Builds a backbone with ImageNet weights; a clear error when offline."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return _instantiate(name, input_shape, "imagenet")
    except Exception as err:  # get_file raises bare Exceptions on URL errors
        raise BackboneWeightsError(
            f"ImageNet weights for backbone {name!r} could not be downloaded ({err}). "
            "Without network access, download the Keras Applications weights file "
            "elsewhere (the '_notop' .h5) and pass backbone_weights='path/to/file.h5'."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def build_encoder(
    inputs,
    name: str,
    weights: str | os.PathLike | None = None,
) -> tuple[list, keras.Model]:
    """Builds a backbone encoder on `inputs` and returns its feature maps.

    Args:
        inputs: Image tensor `(B, H, W, 1 or 3)` in [0, 1].
        name: One of `BACKBONES`.
        weights: `None` (random), `"imagenet"`, or a path to a weights file
            of the Keras Applications model.

    Returns:
        `(features, encoder)`: the feature maps at strides 2..32 (`None`
        where the backbone has none) and the encoder model (a layer named
        `"encoder"`, to freeze or unfreeze).

    Raises:
        ValueError: For an unknown backbone or channel count.
        BackboneWeightsError: If ImageNet weights cannot be downloaded.
        FileNotFoundError: If the weights path does not exist.
    """
    import keras
    from keras import layers

    if name not in BACKBONES:
        raise ValueError(
            f"backbone={name!r} is not supported; expected one of "
            f"{', '.join(repr(b) for b in BACKBONES)} or None."
        )
    channels = inputs.shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"backbone={name!r} needs 1 or 3 input channels, got {channels}")
    x = inputs
    if channels == 1:  # ImageNet weights expect RGB: repeat the grey channel
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    x = _preprocess(x, BACKBONES[name][1])

    height, width = inputs.shape[1:3]
    shape = (height, width, 3)
    if weights == "imagenet":
        backbone = _imagenet(name, shape)
    else:
        backbone = _instantiate(name, shape, None)
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"backbone_weights file not found: {weights}")
            backbone.load_weights(str(weights))
        else:
            _settle_batch_norm(backbone)
    probe = backbone if height and width and not height % 32 and not width % 32 else (
        _instantiate(name, (224, 224, 3), None))
    found = feature_layers(probe)
    wanted = [found[s] for s in STRIDES if found[s] is not None]
    names = [backbone.layers[i].name for i in wanted]
    backbone = _fused_batch_norm(backbone)
    encoder = keras.Model(
        backbone.input, [backbone.get_layer(n).output for n in names], name="encoder"
    )
    outputs = encoder(x)
    by_index = dict(zip(wanted, outputs))
    return [by_index.get(found[s]) for s in STRIDES], encoder
