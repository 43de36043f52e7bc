"""Tests for keras_unet.models.blocks: the fused batch normalization.

The reference is Keras' own `BatchNormalization` with the same weights: the
fused layer must give its outputs, gradients and moving statistics.
"""

import keras
import numpy as np
import pytest

from keras_unet import build_unet
from keras_unet.models.blocks import FusedBatchNormalization

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
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


def test_fused_training_step_equals_the_keras_layer():
    reference, fused = pair()
    x = np.random.default_rng(1).normal(2, 3, (4, 8, 8, 3)).astype("float32")
    (y_ref, g_ref), (y_fused, g_fused) = step(reference, x), step(fused, x)
    np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
    for a, b in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(fused.get_weights(), reference.get_weights()):  # moving statistics too
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_bfloat16_activations_stay_bfloat16_and_close_to_float32():
    reference, fused = pair(fused_dtype="mixed_bfloat16")
    x = np.random.default_rng(2).normal(0, 1, (2, 8, 8, 3)).astype("float32")
    y_ref, _ = step(reference, x)
    y_fused, _ = step(fused, tf.cast(x, tf.bfloat16))
    assert y_fused.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y_fused, "float32"), y_ref, atol=0.05)


def test_inference_uses_the_moving_statistics_like_keras():
    reference, fused = pair()
    x = np.random.default_rng(3).normal(0, 1, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False),
                               atol=1e-6)


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
def test_the_training_graph_runs_the_fused_kernel(policy, dtype):
    """The checks above would also pass on Keras' path: this one says the
    fused kernel is the one that runs."""
    _, fused = pair(fused_dtype=policy)
    spec = tf.TensorSpec((2, 8, 8, 3), dtype)
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(spec).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}
