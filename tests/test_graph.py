"""Tests for keras_unet.export.graph: the rewrites compute what the model computes.

The reference is the untouched Keras model (its own `Conv2DTranspose`), and
LiteRT running the converted file; the weights are random but not trivial
(biases and activations included), so a wrong tap order or a lost bias
shows.
"""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_unet import build_unet
from keras_unet.export import convert, fixed_size_model, op_names
from keras_unet.export.graph import DepthToSpaceUpConvolution, litert_graph
from keras_unet.models.metadata import nested_layers


def random_weights(model, seed=0):
    """Every weight of `model` drawn at random (biases too; batch-norm
    variances positive)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(0, 0.3, weight.shape)
        if "variance" in weight.path:
            value = np.abs(value) + 0.5
        weight.assign(value.astype("float32"))
    return model


def upconvolutions(model, kind):
    return [layer for layer in nested_layers(model) if isinstance(layer, kind)]


@pytest.mark.parametrize("padding, use_bias, activation", [
    ("same", True, None), ("valid", True, "relu"), ("same", False, "sigmoid"),
])
def test_an_upconvolution_becomes_a_1x1_convolution_and_depth_to_space_with_the_same_values(
        padding, use_bias, activation):
    inputs = keras.Input((6, 10, 5))
    x = keras.layers.Conv2DTranspose(7, 2, strides=2, padding=padding, use_bias=use_bias,
                                     activation=activation, name="up")(inputs)
    model = random_weights(keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same")(x)))
    rewritten = litert_graph(model)

    assert [layer.name for layer in upconvolutions(rewritten, DepthToSpaceUpConvolution)] == ["up"]
    assert not upconvolutions(rewritten, keras.layers.Conv2DTranspose)
    x = np.random.default_rng(1).random((2, 6, 10, 5), np.float32)
    expected = np.asarray(model(x))
    np.testing.assert_allclose(np.asarray(rewritten(x)), expected, atol=1e-5)
    # The original keeps its own layer and weights.
    assert isinstance(model.get_layer("up"), keras.layers.Conv2DTranspose)
    np.testing.assert_array_equal(np.asarray(model(x)), expected)


def test_a_unet_inside_the_export_wrapper_is_rewritten_level_by_level_and_runs_in_litert():
    unet = random_weights(build_unet((None, None, 3), 3, filters=4, depth=3,
                                     normalization="batch", input_normalization="per_image"))
    exported = fixed_size_model(unet, (64, 96))  # the U-Net is a nested model there
    rewritten = litert_graph(exported)
    assert len(upconvolutions(rewritten, DepthToSpaceUpConvolution)) == 3
    x = np.random.default_rng(2).random((1, 64, 96, 3), np.float32)
    expected = np.asarray(exported(x))
    assert np.isfinite(expected).all() and np.ptp(expected[..., 0]) > 0.01  # not saturated
    np.testing.assert_allclose(np.asarray(rewritten(x)), expected, atol=1e-5)

    interpreter = Interpreter(model_content=convert(exported, "float32"))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    litert = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(litert, expected, atol=1e-5)


def test_the_converted_file_has_depth_to_space_and_no_transposed_convolution(tmp_path):
    unet = build_unet((64, 64, 3), 2, filters=4, depth=2)
    path = tmp_path / "m.tflite"
    path.write_bytes(convert(fixed_size_model(unet, (64, 64)), "float32"))
    ops = op_names(path)
    assert "DEPTH_TO_SPACE" in ops and "TRANSPOSE_CONV" not in ops


@pytest.mark.parametrize("layer", [
    keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"),  # overlapping taps
    keras.layers.Conv2DTranspose(4, 2, strides=1),
    keras.layers.Conv2DTranspose(4, 2, strides=2, dilation_rate=1, output_padding=1),
    keras.layers.UpSampling2D(2),
])
def test_other_upsampling_layers_are_left_as_they_are(layer):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layer(inputs))
    assert litert_graph(model) is model


def test_a_dynamic_size_model_keeps_its_transposed_convolutions():
    """LiteRT allocates it at a 1 x 1 placeholder, where a static graph of
    convolutions cannot be prepared."""
    unet = build_unet((None, None, 3), 2, filters=4, depth=2)
    dynamic = fixed_size_model(unet, None)
    assert litert_graph(dynamic) is dynamic
    assert upconvolutions(litert_graph(fixed_size_model(unet, (32, 32))),
                          DepthToSpaceUpConvolution)
