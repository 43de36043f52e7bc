"""Exact rewrites of a Keras model into the ops LiteRT runs fastest.

The TFLite conversion (`keras_unet.export.tflite.convert`) converts the
model this module returns, not the model itself. Each rewrite computes the
same values from the same weights; only the ops in the `.tflite` file
change:

- A U-Net's 2x2, stride-2 up-convolution (`Conv2DTranspose`, the paper's
  "up-conv") becomes a 1x1 convolution to four times the channels followed
  by `DEPTH_TO_SPACE`: the four taps of each input pixel land on four
  distinct output pixels, so the transposed convolution is a plain matrix
  product and a reshuffle. XNNPACK's transposed-convolution kernel is slow
  on x86 (2.9x ONNX Runtime's on its own); the rewrite makes the whole
  bundled model 6-9 % faster in LiteRT in float32, float16 and int8
  (`benchmarks/bench_inference.py`, 2 threads, AVX-512 AMD EPYC). ONNX
  exports keep `ConvTranspose`, which ONNX Runtime runs faster.

Only models of a fixed height and width (the export's default) are
rewritten: LiteRT allocates a dynamic-size model at a 1 x 1 placeholder
input, which a graph of plain convolutions cannot be prepared at (its pooled
sizes reach 0), while transposed convolutions leave the shapes to run time.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_unet.models.metadata import nested_layers


def litert_graph(model: keras.Model) -> keras.Model:
    """`model` with the ops LiteRT runs slowly replaced by equivalent ones.

    Args:
        model: A functional or sequential Keras model (nested models are
            rewritten too).

    Returns:
        A model sharing `model`'s layers and weights but for the rewritten
        layers (see the module docstring), or `model` itself when nothing
        is rewritten (or its input size is not fixed).
    """
    if None in model.input_shape[1:3] or not any(
            _is_stride2_upconvolution(layer) for layer in nested_layers(model)):
        return model

    def rewrite(layer):
        if _is_stride2_upconvolution(layer):
            return DepthToSpaceUpConvolution.replacing(layer)
        return layer

    return keras.models.clone_model(model, clone_function=rewrite, recursive=True)


def _is_stride2_upconvolution(layer) -> bool:
    """Whether `layer` is a 2x2, stride-2 `Conv2DTranspose` with no dilation
    or output padding (channels last): its taps never overlap."""
    return (type(layer) is keras.layers.Conv2DTranspose
            and tuple(layer.kernel_size) == (2, 2) and tuple(layer.strides) == (2, 2)
            and tuple(layer.dilation_rate) == (1, 1) and layer.output_padding is None
            and layer.data_format == "channels_last")


class DepthToSpaceUpConvolution(keras.layers.Layer):
    """A 2x2, stride-2 up-convolution as a 1x1 convolution and depth-to-space.

    Output pixel `(2i + a, 2j + b)`, channel `o`, of the transposed
    convolution is `sum_c x[i, j, c] * K[a, b, o, c] + bias[o]`: channel
    `(2a + b) * filters + o` of a 1x1 convolution whose kernel holds
    `K[a, b, o, :]` there, moved into place by `depth_to_space` (block 2,
    NHWC). TensorFlow only (the backend of the TFLite conversion); built by
    `litert_graph`, never saved.

    Args:
        kernel: The `Conv2DTranspose` kernel, `(2, 2, filters, inputs)`.
        bias: Its bias `(filters,)`, or `None`.
        activation: Its activation, applied after the reshuffle (an
            element-wise function commutes with it).
        **kwargs: Keras layer arguments.
    """

    def __init__(self, kernel: np.ndarray, bias: np.ndarray | None, activation, **kwargs):
        super().__init__(**kwargs)
        inputs, filters = kernel.shape[3], kernel.shape[2]
        # (a, b, o, c) -> (c, (a, b, o)): the 1x1 kernel's columns in depth_to_space order.
        pointwise = np.transpose(kernel, (3, 0, 1, 2)).reshape(1, 1, inputs, 4 * filters)
        self.conv = keras.layers.Conv2D(4 * filters, 1, use_bias=bias is not None,
                                        dtype=self.dtype_policy, name=f"{self.name}_1x1")
        self.conv.build((None, None, None, inputs))
        self.conv.set_weights([pointwise] + ([np.tile(bias, 4)] if bias is not None else []))
        self.activation = activation

    @classmethod
    def replacing(cls, layer: keras.layers.Conv2DTranspose) -> DepthToSpaceUpConvolution:
        """The replacement of `layer`: its name, weights, activation and dtype."""
        kernel, *bias = (np.asarray(w) for w in layer.get_weights())
        return cls(kernel, bias[0] if bias else None, layer.activation, name=layer.name,
                   dtype=layer.dtype_policy)

    def call(self, x):
        return self.activation(tf.nn.depth_to_space(self.conv(x), 2))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, *(None if d is None else 2 * d for d in (height, width)),
                self.conv.filters // 4)
