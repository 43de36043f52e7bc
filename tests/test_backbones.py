"""Tests for keras_unet.models.backbones and build_unet(backbone=...), weights=None."""

import socket

import keras
import numpy as np
import pytest

from keras_unet import DiceCELoss, build_unet
from keras_unet.export import ExportVerificationError
from keras_unet.models.backbones import (
    BACKBONES,
    SCRATCH_BN_MOMENTUM,
    STRIDES,
    BackboneWeightsError,
    feature_layers,
)

SIZE = 64
# One light backbone trains in the default suite (tracing the gradient of a
# backbone U-Net takes 30-60 s on 2 cores); the others run with `pytest -m slow`
# to keep CI within its budget.
LIGHT = ["mobilenet_v2"]
ALL = [b if b in LIGHT else pytest.param(b, marks=pytest.mark.slow) for b in BACKBONES]


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_backbone_unet_output_shape_and_skip_strides(backbone):
    model = build_unet((SIZE, SIZE, 3), 3, backbone=backbone, filters=8)
    assert model.output_shape == (None, SIZE, SIZE, 3)
    # Every encoder output sits at the stride it was chosen for.
    encoder = model.get_layer("encoder")
    sizes = sorted({o.shape[1] for o in encoder.outputs}, reverse=True)
    strides = [SIZE // s for s in sizes]
    assert set(strides) <= set(STRIDES) and 32 in strides and 4 in strides
    assert all(SIZE == s * st for s, st in zip(sizes, strides))


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50", "efficientnet_b0"])
def test_feature_layers_are_found_at_every_stride(backbone):
    from keras_unet.models.backbones import _instantiate

    probe = _instantiate(backbone, (224, 224, 3), None)
    found = feature_layers(probe)
    for stride, index in found.items():
        assert probe.layers[index].output.shape[1] == 224 // stride


@pytest.mark.parametrize("backbone", ALL)
def test_backbone_unet_trains_a_step_and_round_trips(backbone, tmp_path):
    model = build_unet((None, None, 1), 1, backbone=backbone, filters=4)
    model.compile("adam", DiceCELoss())
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 1), dtype=np.float32)
    y = (x[..., 0] > 0.5).astype("float32")
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_frozen_encoder_stays_put_while_the_decoder_learns():
    model = build_unet((SIZE, SIZE, 3), 1, backbone="mobilenet_v2", filters=4,
                       freeze_encoder=True)
    model.compile(keras.optimizers.Adam(1e-2), DiceCELoss())
    encoder = [w.copy() for w in model.get_layer("encoder").get_weights()]
    decoder = model.get_layer("dec1_conv1").get_weights()[0].copy()
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    model.train_on_batch(x, (x[..., 0] > 0.5).astype("float32"))
    for before, after in zip(encoder, model.get_layer("encoder").get_weights()):
        np.testing.assert_array_equal(before, after)  # BN statistics included
    assert not np.array_equal(decoder, model.get_layer("dec1_conv1").get_weights()[0])


def test_weights_from_a_path_are_loaded_into_the_encoder(tmp_path):
    source = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False,
                                            weights=None)
    path = tmp_path / "mobilenet_v2_notop.weights.h5"
    source.save_weights(path)
    model = build_unet((SIZE, SIZE, 3), 1, backbone="mobilenet_v2", backbone_weights=str(path))
    by_name = {w.path: w.numpy() for w in source.weights}
    encoder = model.get_layer("encoder")
    compared = 0
    for w in encoder.weights:
        key = w.path
        if key in by_name:
            np.testing.assert_array_equal(w.numpy(), by_name[key])
            compared += 1
    assert compared >= 0.9 * len(encoder.weights)


def test_an_encoder_from_scratch_gets_the_decoders_batch_norm_momentum(tmp_path):
    """Keras Applications' 0.999 suits pretrained statistics; from scratch it
    leaves inference-mode outputs near their initial statistics for
    thousands of steps. Loaded weights keep the model's own momentum."""
    def momenta(model):
        return {layer.momentum for layer in model.get_layer("encoder").layers
                if isinstance(layer, keras.layers.BatchNormalization)}

    scratch = build_unet((SIZE, SIZE, 3), 1, backbone="mobilenet_v2")
    assert momenta(scratch) == {SCRATCH_BN_MOMENTUM}
    source = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False,
                                            weights=None)
    path = tmp_path / "mobilenet_v2_notop.weights.h5"
    source.save_weights(path)
    loaded = build_unet((SIZE, SIZE, 3), 1, backbone="mobilenet_v2", backbone_weights=str(path))
    assert momenta(loaded) == {0.999}


def test_offline_imagenet_weights_give_the_documented_error(monkeypatch, tmp_path):
    import keras.src.backend.config as config

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # no cached weights

    def no_network(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(BackboneWeightsError, match="backbone_weights='path/to/file.h5'"):
        build_unet((SIZE, SIZE, 3), 1, backbone="mobilenet_v2", backbone_weights="imagenet")


def test_grey_images_are_repeated_to_rgb_for_the_backbone():
    model = build_unet((SIZE, SIZE, 1), 1, backbone="resnet50", filters=4)
    assert model.get_layer("grey_to_rgb").output.shape[-1] == 3


def test_backbone_options_are_validated():
    with pytest.raises(ValueError, match="backbone='vgg'"):
        build_unet((SIZE, SIZE, 3), backbone="vgg")
    with pytest.raises(ValueError, match="padding='valid' is not supported with a backbone"):
        build_unet((SIZE, SIZE, 3), backbone="mobilenet_v2", padding="valid")
    with pytest.raises(ValueError, match="height 48 .* 32 or 64"):
        build_unet((48, 64, 3), backbone="mobilenet_v2")


def settle_batch_norm(model: keras.Model, images: np.ndarray) -> None:
    """Sets every BatchNormalization's moving statistics to those of `images`
    (one training-mode pass with momentum 0), as a long training would."""
    def norms(layer):
        for inner in getattr(layer, "layers", []):
            yield from norms(inner)
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer

    layers = list(norms(model))
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def train_briefly(backbone: str, data, work_dir):
    """20 steps from random weights (nothing can be downloaded here)."""
    from keras_unet.training.train import TrainConfig, train

    config = TrainConfig(
        data=str(data), work_dir=str(work_dir), crop_size=64,
        batch_size=8, epochs=2, steps_per_epoch=10, lr=3e-3, tensorboard=False, verbose=0,
        model={"backbone": backbone, "filters": 8}, early_stopping=0, deterministic=True,
    )
    train(config)
    return config


def export_verified(run, out):
    """float32 and int8 through `export_run`, which raises on a failed verification."""
    from keras_unet.export import DEFAULT_AGREEMENT, export_run

    reports = export_run(run, out, precisions=("float32", "int8"), input_size=(128, 128),
                         verification_samples=8, latency_runs=0)
    for report in reports:
        assert report.agreement.mask_agreement >= DEFAULT_AGREEMENT[report.precision]


# After 20 steps ResNet50's BatchNorm moving statistics (momentum 0.99) are
# still near their initial values (mean 0, variance 1), which do not
# normalize: on its caffe-style 0-255 inputs the residual outputs used as
# skips reach ~5e4 in inference (calibrated range of conv4_block6_out), and
# the decoder concatenation, one int8 scale for all its inputs, crushes the
# decoder features. int8 agrees with Keras on 88 % of pixels and export_run
# refuses it. The test below shows that settled statistics fix it (#6).
UNSETTLED_FAILS = pytest.mark.xfail(
    raises=ExportVerificationError, strict=True,
    reason="ResNet50 with unsettled BatchNorm statistics exceeds the int8 range")
TRAINED = [pytest.param(b, marks=UNSETTLED_FAILS) if b == "resnet50" else b for b in BACKBONES]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", TRAINED)
def test_trained_backbone_exports_to_verified_float32_and_int8(backbone, nuclei_dataset,
                                                                tmp_path):
    train_briefly(backbone, nuclei_dataset, tmp_path / "run")
    export_verified(tmp_path / "run", tmp_path / "export")


@pytest.mark.slow
def test_resnet50_with_settled_batch_norm_exports_to_verified_int8(nuclei_dataset, tmp_path):
    from keras_unet.export import image_windows
    from keras_unet.training.train import load_training_data

    config = train_briefly("resnet50", nuclei_dataset, tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.keras"
    model = keras.models.load_model(best, compile=False)
    train_set, _ = load_training_data(config)  # statistics of training images only
    settle_batch_norm(model, image_windows(train_set.images, (128, 128), 3, limit=32,
                                           random_crops=True, seed=3))
    model.save(best)
    export_verified(tmp_path / "run", tmp_path / "export")
