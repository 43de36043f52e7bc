"""Layer blocks that `build_unet` composes.

Each block is a plain function over Keras tensors (functional API). Every
layer gets a stable name derived from the block's `name` prefix, so saved
models, summaries and TFLite graphs stay legible. Only `keras.layers` is used,
which keeps the blocks portable across the TensorFlow, JAX and PyTorch
backends (`FusedBatchNormalization` takes TensorFlow's fused kernel in
training on the TensorFlow backend, and is the Keras layer elsewhere).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers


@keras.saving.register_keras_serializable(package="keras_unet")
class HeNormal(keras.initializers.Initializer):
    """He-normal initialization drawn with NumPy (the U-Net paper's choice).

    The distribution of `keras.initializers.HeNormal`: a normal distribution
    truncated at two standard deviations, scaled so that the standard
    deviation is `sqrt(2 / fan_in)`. The values come from NumPy's global
    random state, which `keras.utils.set_random_seed` seeds, so a seeded
    build gives the same weights on every backend. Under JAX, Keras' own
    initializer compiles its random function once per weight shape: the
    classic U-Net took 18 s to build on 2 CPU cores, 0.5 s with this one
    (`benchmarks/bench_build.py`).
    """

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive if len(shape) > 1 else shape[0]
        std = np.sqrt(2.0 / max(1, fan_in)) / 0.87962566103423978  # truncation's std
        values = np.random.standard_normal(shape)
        outside = np.abs(values) > 2
        while outside.any():  # redraw beyond two standard deviations
            values[outside] = np.random.standard_normal(int(outside.sum()))
            outside = np.abs(values) > 2
        return keras.ops.convert_to_tensor(values * std, dtype=dtype or "float32")

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="keras_unet")
class PerImageStandardization(layers.Layer):
    """Standardizes each image: `(x - mean) / max(std, min_std)` per image.

    Mean and standard deviation are taken over height, width and channels
    together (so colour stays colour), as `tf.image.per_image_standardization`
    does, with `keras.ops` (any backend) and built-in TFLite ops. It makes a
    model indifferent to an image's overall brightness and contrast (stains,
    exposure, 12-bit images stored in 16 bits).

    Args:
        min_std: Floor of the standard deviation (flat images stay finite).
        **kwargs: Keras layer arguments.
    """

    def __init__(self, min_std: float = 1e-2, **kwargs):
        super().__init__(**kwargs)
        self.min_std = min_std

    def call(self, x):
        mean = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.sqrt(keras.ops.mean(keras.ops.square(x - mean), axis=(1, 2, 3),
                                             keepdims=True))
        return (x - mean) / keras.ops.maximum(std, self.min_std)

    def get_config(self):
        return {**super().get_config(), "min_std": self.min_std}


@keras.saving.register_keras_serializable(package="keras_unet")
class PercentileAndStandardization(PerImageStandardization):
    """Each image two ways: standardized, and scaled by its percentiles.

    The output has twice the input's channels: first the image standardized
    as `PerImageStandardization` does, then the image mapped by its `low`
    and `high` percentiles (over height, width and channels) to 0 and 1, as
    CSBDeep and StarDist normalize microscopy. Percentiles put a dark
    background at 0 however much of the image the objects cover, so faint
    objects of a dim fluorescence image keep their contrast; the
    standardization is what suits stains and brightfield. The first
    convolution learns which to use where; no branch depends on a crop's
    content, so a training crop and a whole image are treated alike.

    The percentiles are read from a `sample_size` x `sample_size`
    nearest-neighbour sample of the image (exact pixel values): sorting a
    whole image (`TOPK_V2` in TFLite) costs more than the U-Net itself at
    256 x 256 (56 ms against 3.9 ms for the 64 x 64 sample, LiteRT, 2
    threads). Each percentile is one order statistic of the sample, taken
    with a `top_k` of the few values beyond it (124 and 26 of the 12,288 of
    a 64 x 64 RGB sample) rather than by sorting the sample: the same
    values, 0.14 ms instead of 1.17 ms in LiteRT (2 threads, AVX-512).

    Args:
        low: Percentile mapped to 0.
        high: Percentile mapped to 1.
        sample_size: Side of the sample the percentiles are read from.
        **kwargs: Arguments of `PerImageStandardization`.
    """

    def __init__(self, low: float = 1.0, high: float = 99.8, sample_size: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high, self.sample_size = low, high, sample_size

    def call(self, x):
        sample = keras.ops.image.resize(x, (self.sample_size, self.sample_size),
                                        interpolation="nearest")
        count = self.sample_size**2 * x.shape[-1]
        values = keras.ops.reshape(sample, (-1, count))

        def percentile(q):
            # The value at `rank` in ascending order ("nearest" percentile),
            # from the shorter end: the k-th smallest is minus the k-th
            # largest of the negated values.
            rank = round((count - 1) * q / 100)
            if rank < count // 2:
                value = -keras.ops.top_k(-values, rank + 1)[0][:, rank]
            else:
                value = keras.ops.top_k(values, count - rank)[0][:, count - rank - 1]
            return keras.ops.reshape(value, (-1, 1, 1, 1))

        low, high = percentile(self.low), percentile(self.high)
        scaled = (x - low) / keras.ops.maximum(high - low, self.min_std)
        return keras.ops.concatenate([super().call(x), scaled], axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else 2 * channels)

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high,
                "sample_size": self.sample_size}


@keras.saving.register_keras_serializable(package="keras_unet")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel in training.

    Keras 3 computes batch normalization in training from separate ops
    (moments, then the affine transform), and in mixed precision it first
    casts the activations to float32. On the TensorFlow backend this layer
    runs the training step's normalization as one `FusedBatchNormV3` kernel
    instead (forward and backward; float32, float16 or bfloat16 activations,
    float32 statistics), which trained the 16-filter U-Net 1.20x faster in
    float32 and 1.69x faster in `mixed_bfloat16` on a 2-core Xeon
    (`benchmarks/bench_torch.py`). The results are those of the Keras layer
    (the same weights, the same moving-statistics update with the biased
    batch variance); inference, other backends, masks and renormalization
    use the Keras layer's own path, so saved models and TFLite exports are
    unchanged. It takes the arguments of `keras.layers.BatchNormalization`.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (training and self.trainable and mask is None and not self.renorm
                 and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                 and self.axis in (-1, 3) and self.scale and self.center
                 and not self.synchronized
                 and inputs.dtype in ("float32", "float16", "bfloat16"))
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = self.moving_mean.shape[0]
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=tf.cast(self.gamma, "float32"), offset=tf.cast(self.beta, "float32"),
            mean=tf.zeros([channels]), variance=tf.ones([channels]), epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        # The kernel returns the unbiased batch variance; Keras keeps the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        return y


def _normalization(x, normalization: str | None, name: str):
    """Applies the chosen normalization layer (or nothing).

    Args:
        x: Tensor of shape `(B, H, W, C)`.
        normalization: `None`, `"batch"` or `"group"`.
        name: Layer name.

    Returns:
        Tensor of the same shape.
    """
    if normalization == "batch":
        # Momentum 0.9 (PyTorch's default) rather than Keras' 0.99: the moving
        # statistics settle within the short schedules segmentation uses.
        return FusedBatchNormalization(momentum=0.9, name=name)(x)
    if normalization == "group":
        # The largest group count <= 8 that divides the channels.
        groups = math.gcd(8, x.shape[-1])
        return layers.GroupNormalization(groups=groups, name=name)(x)
    return x


def conv_block(
    x,
    filters: int,
    *,
    name: str,
    convs: int = 2,
    kernel_size: int = 3,
    padding: str = "same",
    activation: str = "relu",
    normalization: str | None = None,
    kernel_initializer: str | keras.initializers.Initializer = "he_normal",
    residual: bool = False,
):
    """`convs` x (convolution -> normalization -> activation).

    With `residual=True` the block adds a shortcut (a 1x1 projection when the
    channel count changes, center-cropped with `padding="valid"`) before the
    last activation, as in ResNet-style U-Nets.

    Args:
        x: Tensor of shape `(B, H, W, C)`.
        filters: Output channels of every convolution.
        name: Prefix of the layer names (`{name}_conv1`, `{name}_act1`, ...).
        convs: Number of convolutions.
        kernel_size: Convolution kernel size.
        padding: `"same"` or `"valid"`.
        activation: Keras activation name.
        normalization: `None`, `"batch"` or `"group"`.
        kernel_initializer: Keras initializer name.
        residual: Whether to add a shortcut connection.

    Returns:
        Tensor of shape `(B, H', W', filters)`, where `H' = H` for `"same"`
        padding and `H' = H - convs * (kernel_size - 1)` for `"valid"`.
    """
    shortcut = x
    for i in range(1, convs + 1):
        x = layers.Conv2D(
            filters,
            kernel_size,
            padding=padding,
            use_bias=normalization is None,
            kernel_initializer=kernel_initializer,
            name=f"{name}_conv{i}",
        )(x)
        x = _normalization(x, normalization, f"{name}_norm{i}")
        if residual and i == convs:
            x = layers.Add(name=f"{name}_add")(
                [x, _shortcut(
                    shortcut,
                    x,
                    name,
                    padding,
                    normalization,
                    kernel_initializer,
                    shortcut_crop=convs * (kernel_size - 1),
                )
            ]
            )
        x = layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def _shortcut(x, target, name, padding, normalization, kernel_initializer, shortcut_crop):
    """Projects and crops `x` so it can be added to `target`."""
    if x.shape[-1] != target.shape[-1]:
        x = layers.Conv2D(
            target.shape[-1],
            1,
            use_bias=normalization is None,
            kernel_initializer=kernel_initializer,
            name=f"{name}_proj",
        )(x)
        x = _normalization(x, normalization, f"{name}_proj_norm")
    if padding == "valid":
        x = center_crop(x, shortcut_crop, name=f"{name}_proj_crop")
    return x


def center_crop(x, crop: int, *, name: str):
    """Removes `crop` pixels from the height and width of `x`, centred.

    With `padding="valid"` the size difference between a skip connection and
    the decoder features is a constant of the architecture, so it is passed
    in rather than read from (possibly `None`) static shapes.

    Args:
        x: Tensor of shape `(B, H, W, C)`.
        crop: Total pixels to remove per axis (odd crops remove one more
            pixel at the bottom/right).
        name: Layer name.

    Returns:
        Tensor of shape `(B, H - crop, W - crop, C)`.
    """
    edges = (crop // 2, crop - crop // 2)
    return layers.Cropping2D((edges, edges), name=name)(x)


def upsample(
    x,
    filters: int,
    *,
    name: str,
    mode: str = "transpose",
    kernel_initializer: str | keras.initializers.Initializer = "he_normal",
):
    """Doubles the spatial size and sets the channel count to `filters`.

    `"transpose"` is the paper's 2x2 up-convolution (`Conv2DTranspose`,
    stride 2). `"nearest"` and `"bilinear"` resize and follow with a 2x2
    convolution, which avoids the checkerboard artefacts of transposed
    convolutions.

    Args:
        x: Tensor of shape `(B, H, W, C)`.
        filters: Output channels.
        name: Prefix of the layer names (`{name}_up`, `{name}_upconv`).
        mode: `"transpose"`, `"nearest"` or `"bilinear"`.
        kernel_initializer: Keras initializer name.

    Returns:
        Tensor of shape `(B, 2H, 2W, filters)`.
    """
    if mode == "transpose":
        return layers.Conv2DTranspose(
            filters,
            2,
            strides=2,
            kernel_initializer=kernel_initializer,
            name=f"{name}_up",
        )(x)
    x = layers.UpSampling2D(2, interpolation=mode, name=f"{name}_up")(x)
    return layers.Conv2D(
        filters,
        2,
        padding="same",
        kernel_initializer=kernel_initializer,
        name=f"{name}_upconv",
    )(x)


def attention_gate(skip, gate, *, name: str, inter_channels: int | None = None):
    """Additive attention gate on a skip connection (Oktay et al., 2018).

    The gating signal (the upsampled decoder features) and the skip features
    are projected by 1x1 convolutions, added, passed through ReLU and a 1x1
    convolution with a sigmoid: the result is a per-pixel weight in [0, 1]
    that scales the skip features.

    Args:
        skip: Encoder features, shape `(B, H, W, C)`.
        gate: Decoder features at the same resolution, shape `(B, H, W, G)`.
        name: Prefix of the layer names (`{name}_att_*`).
        inter_channels: Channels of the intermediate projection; defaults to
            `C // 2` (at least 1).

    Returns:
        The gated skip features, shape `(B, H, W, C)`.
    """
    channels = skip.shape[-1]
    inter = inter_channels or max(1, channels // 2)
    theta = layers.Conv2D(inter, 1, name=f"{name}_att_skip")(skip)
    phi = layers.Conv2D(inter, 1, name=f"{name}_att_gate")(gate)
    act = layers.Activation("relu", name=f"{name}_att_relu")(
        layers.Add(name=f"{name}_att_add")([theta, phi])
    )
    alpha = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_att_coef")(act)
    return layers.Multiply(name=f"{name}_att_mul")([skip, alpha])


def decoder_block(
    x,
    skip,
    filters: int,
    *,
    name: str,
    upsampling: str = "transpose",
    attention: bool = False,
    padding: str = "same",
    skip_crop: int = 0,
    **conv_kwargs,
):
    """Upsamples, merges the skip connection and applies a conv block.

    Args:
        x: Decoder features, shape `(B, H, W, C)`.
        skip: Encoder features of the same level, shape `(B, S, S', C_s)`
            with `S >= 2H` (equal for `"same"`, larger for `"valid"`), or
            `None` for a level without a skip connection.
        filters: Channels of the upsampling and of the conv block.
        name: Prefix of the layer names (`dec2_up`, `dec2_concat`, ...).
        upsampling: See `upsample`.
        attention: Whether to gate the skip connection.
        padding: `"same"` or `"valid"`.
        skip_crop: Pixels to center-crop from the skip connection per axis
            (non-zero only for `"valid"` padding).
        **conv_kwargs: Passed to `conv_block`.

    Returns:
        Tensor of shape `(B, 2H', 2W', filters)` (`H' = H` for `"same"`).
    """
    kernel_initializer = conv_kwargs.get("kernel_initializer", "he_normal")
    x = upsample(
        x, filters, name=name, mode=upsampling, kernel_initializer=kernel_initializer
    )
    if skip is not None:
        if skip_crop:
            skip = center_crop(skip, skip_crop, name=f"{name}_crop")
        if attention:
            skip = attention_gate(skip, x, name=name)
        x = layers.Concatenate(name=f"{name}_concat")([skip, x])
    return conv_block(x, filters, name=name, padding=padding, **conv_kwargs)


def dropout(x, rate: float, *, name: str):
    """Adds a `Dropout` layer named `name`; returns `x` unchanged when `rate` is 0."""
    if rate <= 0:
        return x
    return layers.Dropout(rate, name=name)(x)


def segmentation_head(
    x, num_classes: int, activation: str | None, *,
    kernel_initializer: str | keras.initializers.Initializer,
) -> keras.KerasTensor:
    """1x1 convolution to class scores and the output activation.

    The activation runs in float32 so that mixed-precision models still
    return float32 probabilities.

    Args:
        x: Tensor of shape `(B, H, W, C)`.
        num_classes: Output channels.
        activation: `"sigmoid"`, `"softmax"` or `None` (logits).
        kernel_initializer: Keras initializer name.

    Returns:
        Tensor of shape `(B, H, W, num_classes)`.
    """
    x = layers.Conv2D(
        num_classes, 1, kernel_initializer=kernel_initializer, name="head_conv"
    )(x)
    return layers.Activation(activation or "linear", dtype="float32", name="head_act")(
        x
    )
