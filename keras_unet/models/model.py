"""The U-Net builder: `build_unet()` returns a plain `keras.Model`.

The defaults reproduce the architecture of Ronneberger et al. (2015): four
poolings, 64 base filters doubled per level, two 3x3 convolutions per block,
ReLU, He-normal initialization and 2x2 up-convolutions. The one default that
differs from the paper is `padding="same"`, so that the output has the size of
the input; `padding="valid"` gives the paper's layout (572x572 -> 388x388).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import keras
from keras import layers

from keras_unet.models import blocks
from keras_unet.models.backbones import BACKBONES, build_encoder
from keras_unet.models.metadata import nested_layers

PADDINGS = ("same", "valid")
NORMALIZATIONS = (None, "batch", "group")
UPSAMPLINGS = ("transpose", "nearest", "bilinear")
DROPOUT_POSITIONS = ("bottleneck", "encoder", "decoder", "all")
OUTPUT_ACTIVATIONS = ("auto", "sigmoid", "softmax", None)
# `input_normalization` names and their first layers.
INPUT_NORMALIZATION_LAYERS = {"per_image": blocks.PerImageStandardization,
                              "per_image_percentile": blocks.PercentileAndStandardization}
INPUT_NORMALIZATIONS = (None, *INPUT_NORMALIZATION_LAYERS)
BACKBONE_DEPTH = 5  # a backbone's skips are at strides 2, 4, 8, 16 and 32


def build_unet(
    input_shape: Sequence[int | None] = (None, None, 1),
    num_classes: int = 1,
    *,
    filters: int = 64,
    depth: int = 4,
    convs_per_block: int = 2,
    kernel_size: int = 3,
    activation: str = "relu",
    kernel_initializer: str | keras.initializers.Initializer = "he_normal",
    padding: str = "same",
    normalization: str | None = None,
    dropout: float = 0.0,
    dropout_position: str = "bottleneck",
    upsampling: str = "transpose",
    attention: bool = False,
    residual: bool = False,
    output_activation: str | None = "auto",
    input_normalization: str | None = None,
    backbone: str | None = None,
    backbone_weights: str | None = None,
    freeze_encoder: bool = False,
    name: str = "unet",
) -> keras.Model:
    """Builds a U-Net with the Keras functional API.

    Args:
        input_shape: `(height, width, channels)`. Height and width may be
            `None` for a model that takes any size; inputs must then be sizes
            that the model can pool `depth` times and restore exactly (see
            `valid_input_size`; with `padding="same"`, multiples of
            `2**depth`).
        num_classes: Output channels. 1 gives a sigmoid (binary) model, more
            give a softmax model.
        filters: Filters of the first level; doubled at each deeper level.
        depth: Number of poolings (levels below the first).
        convs_per_block: Convolutions per encoder/decoder block.
        kernel_size: Kernel size of the block convolutions.
        activation: Keras activation of the block convolutions.
        kernel_initializer: Keras initializer of all convolutions;
            `"he_normal"` is drawn with NumPy (`blocks.HeNormal`, the same
            distribution), which is fast on every backend.
        padding: `"same"` (output size = input size) or `"valid"` (the
            paper's layout: unpadded convolutions, center-cropped skip
            connections, output smaller than the input).
        normalization: `None`, `"batch"` or `"group"` after each convolution.
            Batch normalization folds into the convolution in TFLite; group
            normalization does not (avoid it for edge models).
        dropout: Dropout rate; 0 disables dropout.
        dropout_position: Where dropout layers go: `"bottleneck"` (the end of
            the contracting path, as in the paper), `"encoder"` (after every
            encoder block and the bottleneck), `"decoder"` (after every
            decoder block) or `"all"`.
        upsampling: `"transpose"` (2x2 transposed convolution) or
            `"nearest"` / `"bilinear"` (resize then a 2x2 convolution).
        attention: Additive attention gates on the skip connections
            (Attention U-Net, Oktay et al. 2018).
        residual: Residual (shortcut) connections in every block.
        output_activation: `"auto"` (sigmoid for 1 class, softmax for more),
            `"sigmoid"`, `"softmax"`, or `None` for logits.
        input_normalization: `None` (the model takes images in [0, 1]),
            `"per_image"`: a first layer standardizes each image (mean 0,
            standard deviation 1), so brightness and contrast differences
            between images, stains or microscopes matter less, or
            `"per_image_percentile"`: the same, and beside it each image
            scaled by its 1st and 99.8th percentiles (which keeps the faint
            objects of dim fluorescence images; see
            `blocks.PercentileAndStandardization`). It is part of the model,
            so predictions and TFLite exports apply it too.
        backbone: A pretrained encoder from `keras.applications` instead of
            the U-Net encoder (see `keras_unet.models.backbones.BACKBONES`):
            skips at strides 2-16, the decoder has five levels (sizes must be
            multiples of 32), `filters` sets the decoder widths and `depth`
            and `padding="valid"` do not apply.
        backbone_weights: `None` (random), `"imagenet"` (downloaded by
            Keras), or a path to a weights file of the backbone.
        freeze_encoder: Make the backbone non-trainable (its batch
            normalization then runs in inference mode).
        name: Model name.

    Returns:
        A `keras.Model` mapping `(B, H, W, C)` images to
        `(B, H_out, W_out, num_classes)` scores, where `H_out = H` with
        `"same"` padding and `output_size(H)` with `"valid"` padding.

    Raises:
        ValueError: If an option is not one of its allowed values, or if the
            input size cannot be pooled `depth` times and restored exactly
            (the message names the nearest valid sizes).
        keras_unet.models.backbones.BackboneWeightsError: If ImageNet weights are
            asked for and cannot be downloaded.
    """
    check_options(**locals())  # every argument: nothing else is defined yet
    if backbone is not None:
        depth = BACKBONE_DEPTH
    if output_activation == "auto":
        output_activation = "sigmoid" if num_classes == 1 else "softmax"
    if kernel_initializer == "he_normal":
        kernel_initializer = blocks.HeNormal()  # the same, fast on every backend
    conv_kwargs = dict(
        convs=convs_per_block,
        kernel_size=kernel_size,
        padding=padding,
        activation=activation,
        normalization=normalization,
        kernel_initializer=kernel_initializer,
        residual=residual,
    )

    def rate(where: str) -> float:  # dropout of the encoder or the decoder blocks
        return dropout if dropout_position in (where, "all") else 0.0

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if input_normalization is not None:
        x = INPUT_NORMALIZATION_LAYERS[input_normalization](name="input_norm")(x)
    if backbone is None:
        # Contracting path: levels 1..depth, then the bottleneck.
        x, skips = _encoder(x, filters, depth, rate("encoder"), conv_kwargs)
        x = blocks.conv_block(x, filters * 2**depth, name="bottleneck", **conv_kwargs)
        if dropout_position != "decoder":
            x = blocks.dropout(x, dropout, name="bottleneck_drop")
        # Expanding path: levels depth..1, each joined by its skip connection.
        crops = _skip_crops(depth, _shrink(padding, convs_per_block, kernel_size))
        levels = [(level, skips[level - 1], filters * 2 ** (level - 1), crops[level - 1])
                  for level in range(depth, 0, -1)]
    else:
        # A pretrained encoder; its stride-32 features are the bottleneck.
        features = _backbone_encoder(x, backbone, backbone_weights, freeze_encoder)
        x = features[-1]
        # Levels 4..1 join the stride 16..2 features; level 0 restores the
        # input resolution without a skip.
        levels = [(level, features[level - 1] if level else None,
                   max(1, filters * 2**level // 2), 0) for level in range(4, -1, -1)]
    x = _decoder(x, levels, upsampling=upsampling, attention=attention,
                 dropout=rate("decoder"), conv_kwargs=conv_kwargs)
    outputs = blocks.segmentation_head(
        x, num_classes, output_activation, kernel_initializer=kernel_initializer
    )
    return keras.Model(inputs, outputs, name=name)


def _encoder(x, filters: int, depth: int, dropout: float, conv_kwargs: dict):
    """The contracting path: `(pooled features, [skip features of levels 1..depth])`."""
    skips = []
    for level in range(1, depth + 1):
        prefix = f"enc{level}"
        x = blocks.conv_block(x, filters * 2 ** (level - 1), name=prefix, **conv_kwargs)
        x = blocks.dropout(x, dropout, name=f"{prefix}_drop")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
    return x, skips


def _backbone_encoder(x, backbone: str, weights, freeze: bool) -> list:
    """A `keras.applications` encoder: its features at strides 2..32."""
    features, encoder = build_encoder(x, backbone, weights)
    encoder.trainable = not freeze
    return features


def _decoder(x, levels, *, upsampling: str, attention: bool, dropout: float,
             conv_kwargs: dict):
    """The expanding path over `levels`: `(level, skip or None, filters,
    skip crop)`, deepest first; each level doubles the resolution."""
    for level, skip, width, crop in levels:
        prefix = f"dec{level}"
        x = blocks.decoder_block(
            x, skip, width, name=prefix, upsampling=upsampling,
            attention=attention and skip is not None, skip_crop=crop, **conv_kwargs,
        )
        x = blocks.dropout(x, dropout, name=f"{prefix}_drop")
    return x


def output_size(size: int, depth: int = 4, shrink: int = 0) -> int | None:
    """Spatial output size of a U-Net for one input dimension.

    Args:
        size: Input height or width.
        depth: Number of poolings.
        shrink: Pixels each block removes: 0 for `"same"` padding,
            `convs_per_block * (kernel_size - 1)` for `"valid"`.

    Returns:
        The output size, or `None` when the input cannot be pooled `depth`
        times and restored exactly (an odd size before a pooling, or a
        feature map that shrinks to nothing).
    """
    trace = _trace(size, depth, shrink)
    return trace[-1] if trace else None


def _trace(size: int, depth: int, shrink: int) -> list[int] | None:
    """Sizes along the U: `[enc_1..enc_depth, up_depth..up_1, output]`.

    `enc_l` is the size of the skip features of level `l` and `up_l` the
    size of the decoder features they are concatenated with. Returns `None`
    for sizes the architecture cannot take.
    """
    encoder, decoder = [], []
    for _ in range(depth):
        size -= shrink
        if size <= 0 or size % 2:
            return None
        encoder.append(size)
        size //= 2
    size -= shrink
    for _ in range(depth):
        if size <= 0:
            return None
        decoder.append(2 * size)
        size = 2 * size - shrink
    return encoder + decoder + [size] if size > 0 else None


def _skip_crops(depth: int, shrink: int) -> list[int]:
    """Per-level crop of the skip connections (0 with `"same"` padding).

    The crop does not depend on the input size, so any valid size gives it.
    """
    size = _nearest_valid(1, depth, shrink)[1]
    trace = _trace(size, depth, shrink)
    encoder, decoder = trace[:depth], trace[depth : 2 * depth][::-1]
    return [e - d for e, d in zip(encoder, decoder)]


def size_multiple(depth: int = 4, backbone: str | None = None) -> int:
    """Input heights and widths of a `padding="same"` U-Net are multiples of this.

    Args:
        depth: Number of poolings (ignored with a backbone).
        backbone: Backbone name, or `None`; a backbone always pools 5 times.

    Returns:
        `2**depth`, or 32 with a backbone.
    """
    return 2 ** (BACKBONE_DEPTH if backbone else depth)


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` computing in float32: a mixed-precision model rebuilt.

    A model trained with `mixed_float16` or `mixed_bfloat16` keeps that
    policy in every layer's config, so it computes in half precision
    wherever it is loaded, and the TFLite converter cannot translate its
    casts. Its weights are float32 in every policy: the copy has the same
    weights and architecture, and every layer policy set to float32.

    Args:
        model: A functional Keras model (a U-Net, backbones included).

    Returns:
        `model` itself when it already computes in float32 everywhere, else
        a new model with copies of its weights.
    """
    if all(layer.dtype_policy.name == "float32" for layer in nested_layers(model)):
        return model
    copy = model.__class__.from_config(_float32_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _float32_config(config):
    """A layer config with every mixed dtype policy replaced by float32."""
    if isinstance(config, list):
        return [_float32_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == "DTypePolicy":
        return {**config, "config": {**config["config"], "name": "float32"}}
    return {key: "float32" if key == "dtype" and str(value).startswith("mixed_")
            else _float32_config(value) for key, value in config.items()}


def valid_input_size(
    size: int,
    *,
    depth: int = 4,
    padding: str = "same",
    convs_per_block: int = 2,
    kernel_size: int = 3,
) -> tuple[int | None, int]:
    """The nearest input sizes at or below and above `size` that a U-Net accepts.

    Args:
        size: A desired input height or width.
        depth: Number of poolings.
        padding: `"same"` or `"valid"`.
        convs_per_block: Convolutions per block.
        kernel_size: Kernel size of the block convolutions.

    Returns:
        `(below, above)`: the largest valid size `<= size` (`None` if there
        is none) and the smallest valid size `>= size`.
    """
    shrink = _shrink(padding, convs_per_block, kernel_size)
    return _nearest_valid(size, depth, shrink)


def _shrink(padding: str, convs_per_block: int, kernel_size: int) -> int:
    return convs_per_block * (kernel_size - 1) if padding == "valid" else 0


def _nearest_valid(size: int, depth: int, shrink: int) -> tuple[int | None, int]:
    below = next(
        (s for s in range(size, 0, -1) if output_size(s, depth, shrink)), None
    )
    above = size
    while output_size(above, depth, shrink) is None:
        above += 1
    return below, above


def _size_error(axis: str, size: int, depth: int, shrink: int, padding: str) -> str:
    below, above = _nearest_valid(size, depth, shrink)
    nearest = f"{below} or {above}" if below else f"{above}"
    rule = (
        f"a multiple of 2**depth = {2**depth}"
        if padding == "same"
        else "such that every feature map before a pooling has an even size"
    )
    return (
        f"input {axis} {size} cannot be pooled {depth} times and restored "
        f"exactly with padding={padding!r}: it must be {rule}. Nearest valid "
        f"{axis}: {nearest} (pad or crop the images, or change depth)."
    )


def _one_of(option: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(
            f"{option}={value!r} is not supported; expected one of "
            f"{', '.join(repr(a) for a in allowed)}."
        )


def _positive_int(option: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option}={value!r} must be an integer >= {minimum}.")


def check_options(input_shape: Sequence[int | None] = (None, None, 1), num_classes: int = 1,
                  **options) -> None:
    """Checks `build_unet` arguments without building a model.

    Configurations call it before they load any data, so that a bad model
    option is refused at once.

    Args:
        input_shape: As for `build_unet`.
        num_classes: As for `build_unet`.
        **options: Keyword options of `build_unet`; those left out take its
            defaults.

    Raises:
        TypeError: If an option is not one of `build_unet`'s.
        ValueError: If an option is not one of its allowed values, or if a
            fixed input size cannot be pooled `depth` times and restored.
    """
    bound = inspect.signature(build_unet).bind(input_shape, num_classes, **options)
    bound.apply_defaults()
    values = bound.arguments
    if values["backbone"] is not None:
        values["depth"] = BACKBONE_DEPTH
    _validate_options(**values)


def _validate_options(**options) -> None:
    """Checks every `build_unet` option once, with messages naming it.

    Also checks that a fixed input size can be pooled and restored.
    """
    shape = options["input_shape"]
    if not isinstance(shape, (tuple, list)) or len(shape) != 3 or any(
        s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1)
        for s in shape[:2]
    ) or isinstance(shape[2], bool) or not isinstance(shape[2], int) or shape[2] < 1:
        raise ValueError(
            f"input_shape={shape!r} must be (height, width, channels) "
            "with positive integers (height and width may be None)."
        )
    for option in ("num_classes", "filters", "depth", "convs_per_block", "kernel_size"):
        _positive_int(option, options[option])
    if options["kernel_size"] % 2 == 0:
        raise ValueError(
            f"kernel_size={options['kernel_size']} must be odd so that "
            "'same' padding keeps the features centred."
        )
    _one_of("padding", options["padding"], PADDINGS)
    _one_of("normalization", options["normalization"], NORMALIZATIONS)
    _one_of("upsampling", options["upsampling"], UPSAMPLINGS)
    _one_of("dropout_position", options["dropout_position"], DROPOUT_POSITIONS)
    _one_of("output_activation", options["output_activation"], OUTPUT_ACTIVATIONS)
    _one_of("input_normalization", options["input_normalization"], INPUT_NORMALIZATIONS)
    if not isinstance(options["dropout"], (int, float)) or not 0.0 <= options["dropout"] < 1.0:
        raise ValueError(f"dropout={options['dropout']!r} must be in [0, 1).")
    _one_of("backbone", options["backbone"], (None, *BACKBONES))
    if options["backbone"] is not None:
        if options["padding"] != "same":
            raise ValueError(
                f"padding={options['padding']!r} is not supported with a backbone; use 'same'.")
        if options["input_normalization"] is not None:
            raise ValueError("input_normalization is not supported with a backbone: the "
                             "backbone scales its inputs as its pretrained weights expect.")
    depth, padding = options["depth"], options["padding"]
    shrink = _shrink(padding, options["convs_per_block"], options["kernel_size"])
    for axis, size in zip(("height", "width"), shape[:2]):
        if size is not None and output_size(size, depth, shrink) is None:
            raise ValueError(_size_error(axis, size, depth, shrink, padding))
