"""Tests for keras_unet.models.blocks: the fused batch normalization and the
percentile input normalization.

The reference of the fused layer is Keras' own `BatchNormalization` with the
same weights: it must give its outputs, gradients and moving statistics. The
percentiles are checked against NumPy's.
"""

import keras
import numpy as np
import pytest

from keras_unet import build_unet
from keras_unet.models.blocks import (
    FusedBatchNormalization,
    PercentileAndStandardization,
    PerImageStandardization,
)

tf = pytest.importorskip("tensorflow")
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="the fused kernel is TensorFlow's")


def pair(channels=3, fused_dtype=None):
    """A Keras and a fused layer with the same (non-trivial) weights."""
    reference = keras.layers.BatchNormalization(momentum=0.9)
    fused = FusedBatchNormalization(momentum=0.9, dtype=fused_dtype)
    for layer in (reference, fused):
        layer.build((None, 8, 8, channels))
    rng = np.random.default_rng(0)
    weights = [rng.normal(1, 0.3, channels), rng.normal(0, 0.3, channels),
               rng.normal(0, 1, channels), rng.uniform(0.5, 2, channels)]
    for layer in (reference, fused):
        layer.set_weights([w.astype("float32") for w in weights])
    return reference, fused


def step(layer, x):
    """Output and gradients (input, gamma, beta) of a training-mode call."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") ** 2 * tf.range(1.0, 4.0))
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y, grads


@tensorflow_only
def test_fused_training_step_equals_the_keras_layer():
    reference, fused = pair()
    x = np.random.default_rng(1).normal(2, 3, (4, 8, 8, 3)).astype("float32")
    (y_ref, g_ref), (y_fused, g_fused) = step(reference, x), step(fused, x)
    np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
    for a, b in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(fused.get_weights(), reference.get_weights()):  # moving statistics too
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@tensorflow_only
def test_fused_bfloat16_activations_stay_bfloat16_and_close_to_float32():
    reference, fused = pair(fused_dtype="mixed_bfloat16")
    x = np.random.default_rng(2).normal(0, 1, (2, 8, 8, 3)).astype("float32")
    y_ref, _ = step(reference, x)
    y_fused, _ = step(fused, tf.cast(x, tf.bfloat16))
    assert y_fused.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y_fused, "float32"), y_ref, atol=0.05)


@tensorflow_only
def test_inference_uses_the_moving_statistics_like_keras():
    reference, fused = pair()
    x = np.random.default_rng(3).normal(0, 1, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False),
                               atol=1e-6)


@tensorflow_only
def test_the_builder_uses_the_fused_layer_and_it_trains_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_unet((32, 32, 3), 2, filters=4, depth=2, normalization="batch")
        assert any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
        model.compile("adam", "sparse_categorical_crossentropy")
        x = np.random.default_rng(4).random((2, 32, 32, 3), np.float32)
        y = np.random.default_rng(5).integers(0, 2, (2, 32, 32))
        before = model.get_layer("enc1_norm1").moving_mean.numpy().copy()
        loss = model.train_on_batch(x, y)
        assert np.isfinite(loss)
        assert not np.allclose(model.get_layer("enc1_norm1").moving_mean.numpy(), before)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy, dtype", [(None, "float32"), ("mixed_bfloat16", "bfloat16")])
@tensorflow_only
def test_the_training_graph_runs_the_fused_kernel(policy, dtype):
    """The checks above would also pass on Keras' path: this one says the
    fused kernel is the one that runs."""
    _, fused = pair(fused_dtype=policy)
    spec = tf.TensorSpec((2, 8, 8, 3), dtype)
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(spec).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


def test_percentile_channels_follow_numpy_beside_the_standardized_ones():
    """A 64 x 64 image is its own sample: its percentiles are NumPy's."""
    image = np.random.default_rng(3).gamma(1.5, 0.05, (2, 64, 64, 3)).astype("float32")
    out = np.asarray(PercentileAndStandardization()(image))
    assert out.shape == (2, 64, 64, 6)
    np.testing.assert_allclose(out[..., :3], PerImageStandardization()(image), atol=1e-5)
    for x, y in zip(image, out):
        low, high = np.percentile(x, [1, 99.8], method="nearest")
        np.testing.assert_allclose(y[..., 3:], (x - low) / (high - low), rtol=1e-4, atol=1e-5)


def test_percentiles_put_a_dark_background_at_zero_and_faint_objects_in_range():
    """A dim fluorescence-like image: background at 0, nuclei between 0 and
    1, whatever the exposure; the statistics come from a sample."""
    rng = np.random.default_rng(4)
    image = rng.normal(2 / 255, 0.5 / 255, (1, 256, 256, 1))
    image[:, 40:120, 40:120] += 20 / 255  # a bright nucleus
    image[:, 160:200, 160:200] += 6 / 255  # a faint one
    image = image.astype("float32")
    layer = PercentileAndStandardization()
    for exposure in (1.0, 0.25, 3.0):
        scaled = np.asarray(layer(image * exposure))[0, ..., 1]
        assert abs(np.median(scaled[:30, :30])) < 0.1
        assert 0.2 < np.median(scaled[165:195, 165:195]) < 0.4
        assert 0.9 < np.median(scaled[50:110, 50:110]) < 1.1
    restored = keras.layers.deserialize(keras.layers.serialize(
        PercentileAndStandardization(low=2.0, high=99.0, sample_size=32)))
    assert (restored.low, restored.high, restored.sample_size) == (2.0, 99.0, 32)
