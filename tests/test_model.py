"""Tests for keras_unet.models.model (build_unet).

Tests marked `portable` use only Keras and NumPy; tests/test_backends.py runs
them again under the JAX and PyTorch backends.
"""

import keras
import numpy as np
import pytest

from keras_unet import DiceCELoss, IoU, build_unet, output_size, size_multiple, valid_input_size

TINY = dict(filters=4, depth=2)

OPTION_SETS = {
    "plain": {},
    "batchnorm": dict(normalization="batch"),
    "groupnorm": dict(normalization="group"),
    "nearest": dict(upsampling="nearest"),
    "bilinear": dict(upsampling="bilinear"),
    "attention": dict(attention=True),
    "residual": dict(residual=True),
    "dropout_all": dict(dropout=0.2, dropout_position="all"),
    "per_image": dict(input_normalization="per_image"),
    "per_image_percentile": dict(input_normalization="per_image_percentile"),
    "everything": dict(
        attention=True, residual=True, normalization="batch", upsampling="bilinear"
    ),
    "valid_everything": dict(
        padding="valid", attention=True, residual=True, normalization="group"
    ),
}


def conv_params(kernel, c_in, c_out, bias=True):
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def paper_unet_params(in_channels=1, classes=2, base=64, depth=4):
    """Parameter count of Ronneberger et al.'s U-Net, layer by layer."""
    total, c_in = 0, in_channels
    widths = [base * 2**i for i in range(depth + 1)]
    for w in widths[:-1]:  # contracting path: two 3x3 convs per level
        total += conv_params(3, c_in, w) + conv_params(3, w, w)
        c_in = w
    total += conv_params(3, c_in, widths[-1]) + conv_params(3, widths[-1], widths[-1])
    for w in reversed(widths[:-1]):  # expanding path
        total += conv_params(2, 2 * w, w)  # 2x2 up-convolution halves channels
        total += conv_params(3, 2 * w, w) + conv_params(3, w, w)
    return total + conv_params(1, base, classes)  # final 1x1 convolution


def test_classic_unet_maps_572_to_388_with_the_papers_parameter_count():
    model = build_unet((572, 572, 1), 2, filters=64, depth=4, padding="valid")
    assert model.output_shape == (None, 388, 388, 2)
    assert model.count_params() == paper_unet_params()


@pytest.mark.portable
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_output_shape_for_padding_and_classes(padding, num_classes):
    size = 64 if padding == "same" else valid_input_size(64, depth=2, padding="valid")[1]
    model = build_unet((size, size, 3), num_classes, padding=padding, **TINY)
    out = model(np.zeros((2, size, size, 3), "float32"))
    expected = size if padding == "same" else output_size(size, depth=2, shrink=4)
    assert tuple(out.shape) == (2, expected, expected, num_classes)


@pytest.mark.portable
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_option_builds_and_keeps_the_expected_shape(options):
    model = build_unet((None, None, 1), 2, **TINY, **options)
    for size in (48, 64) if options.get("padding") != "valid" else (44, 60):
        out = model(np.zeros((1, size, size, 1), "float32"))
        expected = output_size(size, 2, 4) if options.get("padding") else size
        assert tuple(out.shape) == (1, expected, expected, 2)


@pytest.mark.portable
def test_none_sized_model_runs_on_two_sizes_and_rectangles():
    model = build_unet((None, None, 3), 1, **TINY)
    assert tuple(model(np.zeros((1, 32, 48, 3), "float32")).shape) == (1, 32, 48, 1)
    assert tuple(model(np.zeros((1, 64, 16, 3), "float32")).shape) == (1, 64, 16, 1)


def test_sigmoid_and_softmax_outputs_are_probabilities():
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype="float32")
    binary = keras.ops.convert_to_numpy(build_unet((32, 32, 1), 1, **TINY)(x))
    multi = keras.ops.convert_to_numpy(build_unet((32, 32, 1), 3, **TINY)(x))
    assert binary.min() >= 0 and binary.max() <= 1
    np.testing.assert_allclose(multi.sum(-1), 1.0, atol=1e-5)


def test_output_activation_none_gives_logits():
    model = build_unet((32, 32, 1), 3, output_activation=None, **TINY)
    assert model.get_layer("head_act").get_config()["activation"] == "linear"


def test_layers_have_readable_names():
    model = build_unet((None, None, 1), 2, attention=True, **TINY)
    names = {layer.name for layer in model.layers}
    expected = {
        "enc1_conv1", "enc1_conv2", "enc1_pool", "enc2_conv1", "bottleneck_conv1",
        "dec2_up", "dec2_concat", "dec2_att_coef", "dec1_conv2", "head_conv",
    }
    assert expected <= names


@pytest.mark.parametrize(
    "option, value",
    [
        ("padding", "full"),
        ("normalization", "layer"),
        ("upsampling", "bicubic"),
        ("dropout_position", "head"),
        ("output_activation", "relu"),
        ("filters", 0),
        ("depth", 0),
        ("num_classes", 0),
        ("kernel_size", 4),
        ("dropout", 1.5),
        ("input_shape", (64, 64)),
        ("input_shape", None),
        ("input_shape", "64x64"),
        ("input_normalization", "batch"),
    ],
)
def test_invalid_option_raises_value_error_naming_it(option, value):
    kwargs = dict(input_shape=(64, 64, 1), **TINY)
    kwargs[option] = value
    with pytest.raises(ValueError, match=option):
        build_unet(**kwargs)


def test_unpoolable_same_size_names_the_nearest_valid_sizes():
    with pytest.raises(ValueError, match=r"height 100 .* 96 or 112"):
        build_unet((100, 96, 1), depth=4)


def test_unpoolable_valid_size_names_sizes_that_build():
    with pytest.raises(ValueError, match="width 570") as err:
        build_unet((572, 570, 1), padding="valid")
    below, above = valid_input_size(570, padding="valid")
    assert f"{below} or {above}" in str(err.value)
    for size in (below, above):
        assert build_unet((size, size, 1), padding="valid", filters=2).output_shape[1]


@pytest.mark.parametrize("depth, backbone", [(2, None), (4, None), (4, "mobilenet_v2")])
def test_size_multiple_is_the_smallest_step_between_sizes_that_build(depth, backbone):
    multiple = size_multiple(depth, backbone)
    kwargs = dict(depth=depth, backbone=backbone, filters=2)
    builds = []
    for size in range(multiple // 2, 2 * multiple + 1, multiple // 2):
        try:
            build_unet((size, size, 3), **kwargs)
            builds.append(size)
        except ValueError:
            pass
    assert builds == [multiple, 2 * multiple]


def test_output_size_matches_model_for_many_valid_sizes():
    for size in range(40, 140):
        expected = output_size(size, depth=2, shrink=4)
        if expected is None:
            continue
        model = build_unet((size, size, 1), padding="valid", **TINY)
        assert model.output_shape[1] == expected


@pytest.mark.portable
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_save_and_load_round_trip_gives_identical_outputs(options, tmp_path):
    model = build_unet((None, None, 2), 3, **TINY, **options)
    model.compile(
        optimizer="adam",
        loss=DiceCELoss(ignore_class=255),
        metrics=[IoU(num_classes=3, ignore_class=255)],
    )
    size = 60 if options.get("padding") == "valid" else 32
    x = np.random.default_rng(1).random((2, size, size, 2), dtype="float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x))
    )
    assert type(loaded.loss) is DiceCELoss and loaded.loss.ignore_class == 255


def test_tiny_model_loss_decreases_on_a_synthetic_batch():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype="float32")
    y = (x[..., 0] > 0.5).astype("int32")  # a mask the image itself determines
    model = build_unet((32, 32, 1), 1, **TINY)
    model.compile(keras.optimizers.Adam(1e-2), DiceCELoss())
    history = model.fit(x, y, epochs=15, batch_size=4, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]


@pytest.mark.parametrize("input_normalization", [None, "per_image", "per_image_percentile"])
def test_a_fresh_process_loads_a_compiled_model_after_import_keras_unet(
        tmp_path, run_python, input_normalization):
    model = build_unet((None, None, 1), 2, input_normalization=input_normalization, **TINY)
    model.compile("adam", DiceCELoss(ignore_class=255), metrics=[IoU(2)])
    model.save(tmp_path / "m.keras")
    code = ("import keras, keras_unet; m = keras.models.load_model(r'%s'); "
            "print(type(m.loss).__name__, [l.name for l in m.layers][1])" % (tmp_path / "m.keras"))
    loss, first_layer = run_python(code).strip().splitlines()[-1].split()
    assert loss == "DiceCELoss"
    assert (first_layer == "input_norm") == (input_normalization is not None)


@pytest.mark.parametrize("input_normalization", ["per_image", "per_image_percentile"])
def test_per_image_normalization_makes_the_model_indifferent_to_brightness(input_normalization):
    model = build_unet((32, 32, 3), 1, input_normalization=input_normalization, **TINY)
    image = np.random.default_rng(0).random((1, 32, 32, 3)).astype("float32") * 0.5
    brighter = image * 1.5 + 0.2  # another exposure of the same scene
    np.testing.assert_allclose(model.predict(image, verbose=0),
                               model.predict(brighter, verbose=0), atol=1e-5)
    plain = build_unet((32, 32, 3), 1, **TINY)
    assert "input_norm" in {layer.name for layer in model.layers}
    assert "input_norm" not in {layer.name for layer in plain.layers}


def test_input_normalization_is_refused_with_a_backbone():
    with pytest.raises(ValueError, match="input_normalization is not supported with a backbone"):
        build_unet((64, 64, 3), 1, backbone="mobilenet_v2", input_normalization="per_image")


def test_he_normal_weights_have_the_papers_spread_and_follow_the_seed():
    from keras_unet.models.blocks import HeNormal

    kernel = np.asarray(HeNormal()((3, 3, 64, 128)))
    std = np.sqrt(2.0 / (3 * 3 * 64))  # He et al.: sqrt(2 / fan_in)
    assert kernel.std() == pytest.approx(std, rel=0.03)
    assert np.abs(kernel).max() <= 2 * std / 0.87962566103423978 + 1e-6  # truncated at 2 sd
    keras.utils.set_random_seed(3)
    first = build_unet((None, None, 1), 1, **TINY).get_weights()
    keras.utils.set_random_seed(3)
    again = build_unet((None, None, 1), 1, **TINY).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    keras.utils.set_random_seed(4)
    other = build_unet((None, None, 1), 1, **TINY).get_weights()
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("options", [dict(filters=4, depth=2, normalization="batch"),
                                     dict(backbone="mobilenet_v2", filters=4)])
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_float32_copy_of_a_mixed_model_computes_exactly_like_a_float32_build(options, policy):
    from keras_unet import float32_copy

    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = build_unet((None, None, 3), 3, **options)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference = build_unet((None, None, 3), 3, **options)
    reference.set_weights(mixed.get_weights())
    copy = float32_copy(mixed)
    assert mixed.get_layer("dec1_conv1").compute_dtype != "float32"
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    x = np.random.default_rng(0).random((2, 64, 64, 3), np.float32)
    np.testing.assert_allclose(copy.predict(x, verbose=0), reference.predict(x, verbose=0),
                               atol=1e-6)
    # The half-precision model itself differs from float32 by its rounding.
    assert np.abs(mixed.predict(x, verbose=0) - reference.predict(x, verbose=0)).max() > 1e-6
    assert float32_copy(reference) is reference
